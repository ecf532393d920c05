//! Memcached hits against their baseline, measured in one run on a `memcached` of the
//! bench's own (started on a free port, killed at the end):
//!
//! * `memcached/1_task`: `#[cached(backend = memcached)]` hit vs. a raw `mg <key> v` of
//!   the same bytes by the same client (the tier's own, `__bench::RawClient`: the same
//!   transport, per-runtime connection pools and timeouts), one task;
//! * `memcached/64_tasks`: the same with 64 concurrent tasks spawned on a 2-worker
//!   multi-thread runtime (each on its own key).
//!
//! As benches/redis.rs, it also prints *interleaved* ratios at the end (rounds alternating
//! baseline and cachemacro, the median ratio): the figures quoted in docs/BENCHMARKS.md.
//!
//! ```text
//! cargo bench --features memcached --bench memcached
//! cargo bench --features memcached --bench memcached -- interleaved   # only those
//! ```

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachemacro_runtime::__bench::RawClient;
use cachemacro_runtime::{cached, configure, Config};
use criterion::Criterion;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("user number {id}"),
        tags: vec!["a".into(), "bb".into(), "ccc".into()],
    }
}

#[cached(ttl = 3600, key = "bench:mc:<id>", backend = memcached)]
async fn remote(id: u64) -> Profile {
    profile(id)
}

/// A `memcached` on a free port, killed when dropped.
struct Server(Child, u16);

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("memcached");
        cmd.args(["-p", &port.to_string(), "-U", "0", "-l", "127.0.0.1"]);
        // `CACHEMACRO_BENCH_MC_THREADS=1`: memcached's worker threads (its default is 4).
        // Each connection is served by one of them, so with one thread the raw client's
        // connection and the cache's are served alike (with several, which thread serves
        // which connection, and on which CPU it runs next to the caller's worker, sways a
        // one-task round by 2×).
        if let Ok(t) = std::env::var("CACHEMACRO_BENCH_MC_THREADS") {
            cmd.args(["-t", &t]);
        }
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("memcached on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self(child, port)
    }

    fn url(&self) -> String {
        format!("memcached://127.0.0.1:{}", self.1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn benches(c: &mut Criterion) {
    let server = Server::start();
    let url = server.url();
    configure(Config::default().memcached_url(&url)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = Arc::new(RawClient::new(&url));
    rt.block_on(async {
        for id in 0..64 {
            remote(id).await;
            // The raw baseline reads the very bytes the cache stored, under another key.
            let bytes = raw.get(&format!("bench:mc:{id}")).await.expect("stored");
            set(&server, &format!("raw:{id}"), &bytes);
        }
    });

    let mut g = c.benchmark_group("memcached");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("1_task/raw_get", |b| {
        let raw = raw.clone();
        b.to_async(&rt).iter(|| {
            let raw = raw.clone();
            async move { black_box(raw.get("raw:1").await) }
        })
    });
    g.bench_function("1_task/cachemacro", |b| {
        b.to_async(&rt).iter(|| remote(black_box(1)))
    });
    // 64 tasks, each reading its own key in a loop; time per call.
    // 64 tasks, each reading its own key in a loop; time per call. `two_keys`: the raw
    // read pipelined with a tag version's, as a hit's request.
    let per_call_with = |iters: u64, cached: bool, two_keys: bool| {
        let raw = raw.clone();
        rt.block_on(async move {
            let per_task = iters.div_ceil(64).max(1);
            let start = Instant::now();
            let tasks: Vec<_> = (0..64u64)
                .map(|id| {
                    let raw = raw.clone();
                    let key = format!("raw:{id}");
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            if cached {
                                black_box(remote(id).await);
                            } else if two_keys {
                                black_box(raw.get_with(&key, Some(b"cm:tag \x01fn:x")).await);
                            } else {
                                black_box(raw.get(&key).await);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            start
                .elapsed()
                .div_f64((per_task * 64) as f64 / iters as f64)
        })
    };
    let per_call = |iters: u64, cached: bool| per_call_with(iters, cached, false);
    g.bench_function("64_tasks/raw_get", |b| {
        b.iter_custom(|n| per_call(n, false))
    });
    g.bench_function("64_tasks/cachemacro", |b| {
        b.iter_custom(|n| per_call(n, true))
    });
    g.finish();

    // One task spawned on the multi-thread runtime (as the 64 are), 2,000 calls.
    let one_task = |cached: bool| {
        let raw = raw.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..2000 {
                    if cached {
                        black_box(remote(1).await);
                    } else {
                        black_box(raw.get("raw:1").await);
                    }
                }
                start.elapsed() / 2000
            })
            .await
            .unwrap()
        })
    };
    let (r1, b1, o1) = interleaved(20, || one_task(false), || one_task(true));
    // The same, alternating raw and cachemacro call by call in one task (each call timed):
    // both sides see the same worker and the same scheduler state, which a round of its
    // own does not (a spawned task's round runs ~20 or ~60 µs per call depending on which
    // worker it lands on and which one holds the I/O driver, whichever side it times).
    let alternating = || {
        let raw = raw.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                let (mut tb, mut to) = (Duration::ZERO, Duration::ZERO);
                for i in 0..4000 {
                    let start = Instant::now();
                    if i % 2 == 0 {
                        black_box(raw.get("raw:1").await);
                        tb += start.elapsed();
                    } else {
                        black_box(remote(1).await);
                        to += start.elapsed();
                    }
                }
                (tb / 2000, to / 2000)
            })
            .await
            .unwrap()
        })
    };
    let mut alt: Vec<(Duration, Duration)> = (0..20).map(|_| alternating()).collect();
    alt.sort_by(|a, b| {
        (a.1.as_secs_f64() / a.0.as_secs_f64()).total_cmp(&(b.1.as_secs_f64() / b.0.as_secs_f64()))
    });
    let (ba, oa) = alt[alt.len() / 2];
    let ra = oa.as_secs_f64() / ba.as_secs_f64();
    // What a hit's second key (its function's tag version, in the same request) costs.
    let two_keys = || {
        let raw = raw.clone();
        rt.block_on(async move {
            tokio::spawn(async move {
                let start = Instant::now();
                for _ in 0..2000 {
                    black_box(raw.get_with("raw:1", Some(b"cm:tag \x01fn:x")).await);
                }
                start.elapsed() / 2000
            })
            .await
            .unwrap()
        })
    };
    let (r2, b2, o2) = interleaved(20, || one_task(false), two_keys);
    let (r64, b64, o64) = interleaved(
        20,
        || per_call(64 * 300, false) / (64 * 300),
        || per_call(64 * 300, true) / (64 * 300),
    );
    let (r64k, b64k, o64k) = interleaved(
        20,
        || per_call(64 * 300, false) / (64 * 300),
        || per_call_with(64 * 300, false, true) / (64 * 300),
    );
    println!("\ninterleaved, median of 20 rounds (cachemacro hit / raw mg by the same client):");
    println!("  1 task:   {r1:.3}  (raw {b1:?}, cachemacro {o1:?} per call)");
    println!("  1 task, calls alternating in one task: {ra:.3}  (raw {ba:?}, cachemacro {oa:?} per call)");
    println!("  64 tasks: {r64:.3}  (raw {b64:?}, cachemacro {o64:?} per call)");
    println!("  a raw mg of the value and a tag version in one request / a raw mg, 1 task: {r2:.3}  ({b2:?} vs {o2:?})");
    println!("  the same, 64 tasks: {r64k:.3}  ({b64k:?} vs {o64k:?})\n");
    drop(server);
}

/// `ms key <len> T0` over a plain socket.
fn set(server: &Server, key: &str, value: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.1)).unwrap();
    let mut req = format!("ms {key} {} T0\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut ok = [0u8; 4];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"HD\r\n");
}

/// Median of `rounds` ratios `ours / baseline`, each round timing both, in alternating
/// order.
fn interleaved(
    rounds: usize,
    mut baseline: impl FnMut() -> Duration,
    mut ours: impl FnMut() -> Duration,
) -> (f64, Duration, Duration) {
    let mut ratios = Vec::new();
    let (mut tb, mut to) = (Duration::ZERO, Duration::ZERO);
    for r in 0..rounds {
        let (b, o) = if r % 2 == 0 {
            let b = baseline();
            (b, ours())
        } else {
            let o = ours();
            (baseline(), o)
        };
        tb += b;
        to += o;
        if std::env::var_os("CACHEMACRO_BENCH_ROUNDS").is_some() {
            println!("  round {r}: baseline {b:?}, ours {o:?}");
        }
        ratios.push(o.as_secs_f64() / b.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        tb / rounds as u32,
        to / rounds as u32,
    )
}

/// CPU seconds (user + system) of this process so far.
fn cpu_now() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) as f64 / 100.0
}

/// `CACHEMACRO_BENCH_CPU=1`: one-task rounds, alternating, with the wall time and this
/// process's CPU time per call of each side; `=ours` or `=raw`: only that side, for 20 s
/// (e.g. under `perf record`); `=64`: the same with 64 tasks (`=ours64`, `=raw64`: one
/// side for 20 s).
fn cpu_mode(side: &str) {
    let server = Server::start();
    let url = server.url();
    configure(Config::default().memcached_url(&url)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let raw = Arc::new(RawClient::new(&url));
    rt.block_on(async {
        remote(1).await;
        let bytes = raw.get("bench:mc:1").await.expect("stored");
        set(&server, "raw:1", &bytes);
    });
    let round = |cached: bool, n: u32| {
        let raw = raw.clone();
        rt.block_on(async move {
            let (t, c) = (Instant::now(), cpu_now());
            for _ in 0..n {
                if cached {
                    black_box(remote(1).await);
                } else {
                    black_box(raw.get("raw:1").await);
                }
            }
            (t.elapsed() / n, (cpu_now() - c) * 1e6 / f64::from(n))
        })
    };
    if side == "ours" || side == "raw" {
        let end = Instant::now() + Duration::from_secs(20);
        let mut calls = 0u64;
        while Instant::now() < end {
            round(side == "ours", 10_000);
            calls += 10_000;
        }
        println!("{calls} calls");
        return;
    }
    // 64 tasks, each on its own key, as in `memcached/64_tasks`.
    let round64 = |cached: bool, per_task: u32| {
        let raw = raw.clone();
        rt.block_on(async move {
            let (t, c) = (Instant::now(), cpu_now());
            let tasks: Vec<_> = (0..64u64)
                .map(|id| {
                    let raw = raw.clone();
                    let key = format!("raw:{id}");
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            if cached {
                                black_box(remote(id).await);
                            } else {
                                black_box(raw.get(&key).await);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let n = f64::from(per_task * 64);
            (t.elapsed().div_f64(n), (cpu_now() - c) * 1e6 / n)
        })
    };
    rt.block_on(async {
        for id in 0..64 {
            remote(id).await;
            let bytes = raw.get(&format!("bench:mc:{id}")).await.expect("stored");
            set(&server, &format!("raw:{id}"), &bytes);
        }
    });
    if side == "ours64" || side == "raw64" {
        let end = Instant::now() + Duration::from_secs(20);
        let mut calls = 0u64;
        while Instant::now() < end {
            round64(side == "ours64", 300);
            calls += 64 * 300;
        }
        println!("{calls} calls");
        return;
    }
    if side == "64" {
        for r in 0..10 {
            let (rw, rc) = round64(false, 300);
            let (ow, oc) = round64(true, 300);
            println!(
                "64 tasks, round {r}: raw {rw:?} {rc:.1} µs CPU/call; cachemacro {ow:?} {oc:.1} µs CPU/call"
            );
        }
        return;
    }
    for r in 0..10 {
        let (rw, rc) = round(false, 20_000);
        let (ow, oc) = round(true, 20_000);
        println!(
            "round {r}: raw {rw:?} {rc:.1} µs CPU/call; cachemacro {ow:?} {oc:.1} µs CPU/call"
        );
    }
}

fn main() {
    if let Ok(side) = std::env::var("CACHEMACRO_BENCH_CPU") {
        cpu_mode(&side);
        return;
    }
    // `-- interleaved` is a filter no criterion group matches: only the interleaved rounds.
    benches(&mut Criterion::default().configure_from_args());
    Criterion::default().configure_from_args().final_summary();
}
