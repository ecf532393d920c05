//! `rediss://`: TLS to a redis-server with a private CA given by `Config::tls_root_cert`.
//! Needs the `tls` feature (on under `--all-features`) and the `openssl` command.
#![cfg(feature = "tls")]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::{cached, configure, health, Config};
use common::redis::{free_port, Server};
use common::until_real;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cachemacro test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

static CALLS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 60, key = "secure:<id>", backend = redis)]
async fn secure(id: u64) -> u64 {
    CALLS.fetch_add(1, SeqCst);
    id
}

#[cached(ttl = 60, key = "secure-t:<id>", backend = tiered)]
async fn secure_tiered(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_over_tls_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("cachemacro-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let tls_port = free_port();
    let file = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let server = Server::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &file("server.crt"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    configure(
        Config::default()
            .redis_url(format!("rediss://127.0.0.1:{tls_port}"))
            .tls_root_cert(std::fs::read(dir.join("ca.crt")).unwrap())
            .heartbeat(Duration::from_millis(100)),
    )
    .unwrap();

    assert_eq!(secure(1).await, 1);
    assert_eq!(secure(1).await, 1);
    assert_eq!(CALLS.load(SeqCst), 1, "the second call was a hit over TLS");
    assert_eq!(secure_stats().backend_errors, 0);
    assert_eq!(server.cli(&["exists", "secure:1"]), "1");

    secure_tiered(1).await;
    until_real("the backplane subscribed over TLS", || {
        health().iter().any(|h| h.subscribed == Some(true))
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
