//! The events listener on a half-open connection: Redis silent, the socket still open (a
//! crashed host, a dropped NAT entry). Heartbeats notice it, `subscribed()` says so, and
//! events flow again once the network heals. Every connection the cache opens has TCP
//! keepalive on, so the kernel notices dead peers even on idle connections.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::Duration;

use cachemacro_runtime::{cached, configure, events, Config};
use common::proxy::Proxy;
use common::redis::Server;
use common::until_real;

struct World {
    server: Server,
    proxy: Proxy,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let server = Server::start();
        let proxy = Proxy::start(server.port);
        configure(
            Config::default()
                .redis_url(proxy.url())
                .prefix("hb:")
                .heartbeat(Duration::from_millis(100)),
        )
        .unwrap();
        World { server, proxy }
    })
}

static SEEN: AtomicU64 = AtomicU64::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_noticed_and_replaced() {
    let w = world();
    let listener = events::Router::new()
        .on("thing.{id}", |_e| async {
            SEEN.fetch_add(1, SeqCst);
            Ok(())
        })
        .listen("hb-events");
    until_real("subscribed", || listener.subscribed()).await;
    assert_eq!(w.server.cli(&["publish", "hb-events", "thing.1"]), "1");
    until_real("the event was applied", || SEEN.load(SeqCst) == 1).await;

    // Half-open: nothing flows, nothing closes.
    w.proxy.freeze();
    until_real("the listener noticed", || !listener.subscribed()).await;
    w.proxy.unfreeze();
    until_real("subscribed again", || listener.subscribed()).await;
    assert_eq!(w.server.cli(&["publish", "hb-events", "thing.2"]), "1");
    until_real("events flow again", || SEEN.load(SeqCst) >= 2).await;
}

#[cached(ttl = 60, key = "ka:<id>", backend = redis)]
async fn kept_alive(id: u64) -> u64 {
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_redis_has_tcp_keepalive() {
    let w = world();
    assert_eq!(kept_alive(1).await, 1);
    assert_eq!(kept_alive(1).await, 1);
    // This process's established connections to the proxy, with their timers.
    let out = std::process::Command::new("ss")
        .args(["-tnop", "state", "established"])
        .args(["dst", &format!("127.0.0.1:{}", w.proxy.port())])
        .output()
        .expect("ss (iproute2) on PATH");
    let me = format!("pid={},", std::process::id());
    let text = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = text.lines().filter(|l| l.contains(&me)).collect();
    assert!(
        !ours.is_empty(),
        "no connection of this process in:\n{text}"
    );
    for line in &ours {
        assert!(line.contains("keepalive"), "no keepalive on: {line}");
    }
}
