//! Write throughput: write-through against write-behind, same run, same Redis.
//!
//! Both store N (key, value) writes in a `redis-server` of the bench's own, standing in for
//! the source of truth, and keep a cached function's entry current:
//!
//! * write-through: per write, `SET` on the source (awaited), then `*_put` into the cache;
//! * write-behind: per write, `WriteBehind::write` (memory speed) and `*_put`; the buffer
//!   flushes to the source in pipelined batches of up to 500; the time includes the final
//!   flush, so every write is durable when the clock stops.
//!
//! ```text
//! cargo bench --bench writes
//! ```

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, write_through, WriteBehind};
use criterion::Criterion;
use redis::AsyncCommands;
use support::Server;

#[cached(ttl = 600, key = "balance:<id>")]
async fn balance(id: u64) -> u64 {
    id
}

const WRITES: u64 = 2_000;

fn main() {
    let server = Server::start();
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });

    let through = |n: u64| {
        let conn = conn.clone();
        rt.block_on(async move {
            let start = Instant::now();
            for i in 0..n {
                let id = i;
                let mut c = conn.clone();
                let save =
                    async move { c.set::<_, _, ()>(format!("src:{id}"), i).await.map(|_| i) };
                black_box(write_through(save, |v| balance_put(id, *v)).await.unwrap());
            }
            start.elapsed()
        })
    };
    let behind = |n: u64| {
        let conn = conn.clone();
        rt.block_on(async move {
            let start = Instant::now();
            let wb = WriteBehind::builder(move |batch: Vec<(u64, u64)>| {
                let mut c = conn.clone();
                async move {
                    let mut pipe = redis::pipe();
                    for (id, v) in batch {
                        pipe.set(format!("src:{id}"), v).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                }
            })
            .max_batch(500)
            .build();
            for i in 0..n {
                let id = i;
                wb.write(id, i).await.unwrap();
                balance_put(id, i).await.unwrap();
            }
            black_box(wb.shutdown().await);
            start.elapsed()
        })
    };

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("writes");
    g.sample_size(20);
    g.bench_function("write_through", |b| {
        b.iter_custom(|iters| through(iters * WRITES) / WRITES as u32)
    });
    g.bench_function("write_behind", |b| {
        b.iter_custom(|iters| behind(iters * WRITES) / WRITES as u32)
    });
    g.finish();

    // Interleaved rounds, median ratio (see benches/redis.rs for why).
    let mut ratios = Vec::new();
    let (mut tt, mut tb) = (Duration::ZERO, Duration::ZERO);
    for r in 0..10 {
        let (t, b) = if r % 2 == 0 {
            let t = through(WRITES);
            (t, behind(WRITES))
        } else {
            let b = behind(WRITES);
            (through(WRITES), b)
        };
        tt += t;
        tb += b;
        ratios.push(t.as_secs_f64() / b.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d / (10 * WRITES as u32);
    println!(
        "\ninterleaved, median of 10 rounds of {WRITES} writes: write-behind is {:.1}x the throughput of write-through \
         (write-through {:?} per write, write-behind {:?} per write, final flush included)\n",
        ratios[ratios.len() / 2],
        per(tt),
        per(tb)
    );
    c.final_summary();
}
