//! The HTTP layer over a value read from Redis (`backend = redis`, no in-process tier): a
//! stale copy keeps its true age, so a downstream cache is never offered it past its hard
//! expiry. Starts its own redis-server.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::routing::get;
use axum::Router;
use cachemacro_runtime::http::HttpCache;
use cachemacro_runtime::{cached, configure, Config};
use tower::ServiceExt;

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

fn directive(hd: &HeaderMap, name: &str) -> u64 {
    h(hd, "cache-control")
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn server() -> &'static common::redis::Server {
    static S: std::sync::OnceLock<common::redis::Server> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let s = common::redis::Server::start();
        configure(Config::default().redis_url(s.url()).prefix("httpr:")).unwrap();
        s
    })
}

#[cached(ttl = "6s", soft_ttl = "1s", key = "l2s:<x>", backend = redis)]
async fn l2_stale(x: u64) -> String {
    format!("l2 {x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_from_redis_keeps_its_age() {
    server();
    let app = || {
        Router::new().route(
            "/l2",
            get(|| async { l2_stale(1).await })
                .route_layer(HttpCache::public("GET /l2").layer().unwrap()),
        )
    };
    let req = || Request::get("/l2").body(Body::empty()).unwrap();
    app().oneshot(req()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5300)).await; // stale; hard expiry in 0.7 s
    let r = app().oneshot(req()).await.unwrap();
    let hd = r.headers();
    assert_eq!(h(hd, "x-cache"), "STALE");
    let age: u64 = h(hd, "age").parse().unwrap();
    let promised =
        (directive(hd, "max-age") + directive(hd, "stale-while-revalidate")).saturating_sub(age);
    assert!(promised <= 1, "{} Age: {age}", h(hd, "cache-control"));
}
