//! The Memcached tier's transport, through its own client without the cache
//! (`__bench::RawClient`: the same connections, pools and timeouts as the tier's reads):
//! a request cancelled midway never leaves its answer for the next request on that
//! connection (one task, and many tasks sharing a runtime's pool); one client serves
//! several tokio runtimes in turn, a runtime without an I/O driver, a paused clock and no
//! runtime at all; a server killed mid-request costs callers a bounded wait, and calls
//! recover once it is back.
#![cfg(feature = "memcached")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachemacro_runtime::__bench::RawClient;
use common::memcached::Server;

/// A fake memcached on a free port: answers `mg <key> v` with the key itself as the value,
/// in order, and a key starting with `slow` only after 300 ms. Counts its connections.
fn fake() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("memcached://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            counted.fetch_add(1, SeqCst);
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let Some(key) = line.split(' ').nth(1) else {
                        return;
                    };
                    if key.starts_with("slow") {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let reply = format!("VA {} f0\r\n{key}\r\n", key.len());
                    if out.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, conns)
}

fn own(key: &str) -> Option<Vec<u8>> {
    Some(key.as_bytes().to_vec())
}

#[tokio::test]
async fn a_cancelled_request_never_leaves_its_answer_for_the_next() {
    let (url, conns) = fake();
    let raw = RawClient::new(&url);
    // The first calls go through the I/O thread while this runtime is probed; later ones
    // use this runtime's own connections. Both are exercised below.
    for i in 0..20 {
        let key = format!("warm{i}");
        assert_eq!(raw.get(&key).await, own(&key));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for i in 0..10 {
        let slow = format!("slow{i}");
        assert!(
            tokio::time::timeout(Duration::from_millis(30), raw.get(&slow))
                .await
                .is_err(),
            "the slow request is cancelled by its caller"
        );
        let key = format!("next{i}");
        assert_eq!(
            raw.get(&key).await,
            own(&key),
            "the next request reads its own answer, not the cancelled one's"
        );
    }
    // Negative control: each cancelled request cost its connection (dropped, not pooled).
    assert!(conns.load(SeqCst) >= 10, "{}", conns.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_sharing_a_runtimes_connections_each_read_their_own_answers() {
    let (url, _) = fake();
    let raw = Arc::new(RawClient::new(&url));
    raw.get("warm").await;
    tokio::time::sleep(Duration::from_millis(20)).await; // the probe done
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let raw = raw.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    if (t + i) % 7 == 0 {
                        let slow = format!("slow{t}.{i}");
                        let cut = tokio::time::timeout(Duration::from_millis(5), raw.get(&slow));
                        assert!(cut.await.is_err());
                    } else {
                        let key = format!("k{t}.{i}");
                        assert_eq!(raw.get(&key).await, own(&key));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn one_client_serves_runtimes_in_turn_one_without_io_and_callers_on_none() {
    let server = Server::start();
    server.set("t:k", b"v", 0);
    let raw = RawClient::new(&server.url());
    let v = || Some(b"v".to_vec());
    for _ in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..20 {
                assert_eq!(raw.get("t:k").await, v());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        drop(rt); // its connections go with it; the next runtime gets its own
    }
    // No I/O driver: the probe fails (tokio panics in the probe task, printed once), and
    // every call goes through the cache's own I/O thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..20 {
            assert_eq!(raw.get("t:k").await, v());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // No runtime at all.
    for _ in 0..5 {
        assert_eq!(block_on(raw.get("t:k")), v());
    }
}

#[tokio::test(start_paused = true)]
async fn a_paused_clock_does_not_time_requests_out() {
    // The operation timeout is a timer of the cache's own runtime: a caller's paused clock,
    // which jumps to its next timer whenever its runtime idles, cannot fire it. (A timeout
    // on the caller's clock would fire at once here: every get below would be `None`.)
    let server = Server::start();
    server.set("p:k", b"v", 0);
    let raw = RawClient::new(&server.url());
    for _ in 0..20 {
        assert_eq!(raw.get("p:k").await, Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_request_costs_a_bounded_wait_then_calls_recover() {
    let mut server = Server::start();
    server.set("o:k", b"v", 0);
    let raw = Arc::new(RawClient::new(&server.url()));
    for _ in 0..20 {
        assert_eq!(raw.get("o:k").await, Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Callers in flight while the server dies.
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let raw = raw.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut failed = false;
                while started.elapsed() < Duration::from_millis(400) {
                    let call = Instant::now();
                    if raw.get("o:k").await.is_none() {
                        failed = true;
                        // The client's timeout is 1 s: a dead server costs at most that.
                        assert!(call.elapsed() < Duration::from_millis(1500));
                    }
                }
                failed
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .unwrap();
    let mut any_failed = false;
    for c in callers {
        any_failed |= c.await.unwrap();
    }
    assert!(any_failed, "calls failed while the server was down");
    let _server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.restart();
        server.set("o:k", b"w", 0);
        server
    })
    .await
    .unwrap();
    // Back: later calls open fresh connections and succeed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if raw.get("o:k").await == Some(b"w".to_vec()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls recovered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        assert_eq!(raw.get("o:k").await, Some(b"w".to_vec()));
    }
}

/// A minimal executor: polls `fut` on this thread, parking in between.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
