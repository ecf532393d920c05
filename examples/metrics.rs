//! Serves every cached function's stats as Prometheus text on http://127.0.0.1:9898/metrics
//! while a small workload runs (memory backend, no setup).
//!
//! ```text
//! cargo run --example metrics --features metrics
//! curl -s localhost:9898/metrics | grep cachemacro_
//! ```
//!
//! Stops after 60 s, or pass a number of seconds: `cargo run --example metrics --features
//! metrics -- 5`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use cachemacro_runtime::cached;
use metrics_exporter_prometheus::PrometheusBuilder;

#[cached(ttl = "2s", soft_ttl = "1s", key = "product:<id>", stampede = xfetch, max_capacity = 50)]
async fn product(id: u64) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await; // the catalogue service
    format!("product {id}")
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("a metrics recorder");
    cachemacro_runtime::metrics::describe();

    // A workload: 80% of reads on 10 hot products, the rest over 1,000.
    tokio::spawn(async {
        loop {
            let id = if fastrand::u8(..10) < 8 {
                fastrand::u64(..10)
            } else {
                fastrand::u64(..1000)
            };
            product(id).await;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });

    let listener = TcpListener::bind("127.0.0.1:9898").expect("port 9898 free");
    listener.set_nonblocking(true).unwrap();
    println!("serving http://127.0.0.1:9898/metrics for {seconds} s");
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                // Scrape time: bring the facade up to date, then render.
                cachemacro_runtime::metrics::export();
                let body = prometheus.render();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    cachemacro_runtime::metrics::export();
    let text = prometheus.render();
    for line in text.lines().filter(|l| {
        l.starts_with("cachemacro_hit_ratio")
            || l.starts_with("cachemacro_evictions_total")
            || l.starts_with("cachemacro_stampede_signal_total")
            || l.contains("hit_latency_seconds{")
    }) {
        println!("{line}");
    }
}
