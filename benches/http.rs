//! What a `304 Not Modified` answered from the cache costs on the server, against a plain
//! cached `200` of the same route in the same run (multi-thread runtime, 2 workers): the
//! request goes through axum's router and the HTTP layer; the handler's cached call is an
//! L1 hit either way. Also the same route without the layer, for the layer's own cost.
//!
//! ```text
//! cargo bench --bench http --features http
//! ```
//!
//! Results: docs/BENCHMARKS.md ("HTTP: a 304 against a cached 200").

use std::hint::black_box;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use cachemacro_runtime::cached;
use cachemacro_runtime::http::HttpCache;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A 13 KiB page: what a 304 does not send.
#[cached(ttl = 600, soft_ttl = 300, key = "page:<id>")]
async fn page(id: u64) -> std::sync::Arc<String> {
    std::sync::Arc::new(format!("<p>product {id}</p>").repeat(16 * 1024 / 20))
}

async fn handler(Path(id): Path<u64>) -> String {
    page(id).await.as_str().to_owned()
}

fn routers() -> (Router, Router) {
    let layer = HttpCache::public("GET /p/{id}").layer().unwrap();
    (
        Router::new().route("/p/{id}", get(handler).route_layer(layer)),
        Router::new().route("/p/{id}", get(handler)),
    )
}

/// One request; the status and the body's length.
async fn one(router: &Router, inm: Option<&str>) -> (StatusCode, usize) {
    let mut req = Request::get("/p/7");
    if let Some(tag) = inm {
        req = req.header("if-none-match", tag);
    }
    let res = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, body.len())
}

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cached_route, bare_route) = routers();
    let etag = rt.block_on(async {
        let res = cached_route
            .clone()
            .oneshot(Request::get("/p/7").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.headers()["etag"].to_str().unwrap().to_owned()
    });
    // What is measured is what it claims to be: a 200 with the page, a 304 with no body.
    let (s200, n200) = rt.block_on(one(&cached_route, None));
    let (s304, n304) = rt.block_on(one(&cached_route, Some(&etag)));
    assert_eq!((s200, s304), (StatusCode::OK, StatusCode::NOT_MODIFIED));
    assert!(n200 > 10_000 && n304 == 0, "{n200} {n304}");
    println!("200 body: {n200} bytes; 304 body: {n304} bytes");

    let mut g = c.benchmark_group("http");
    g.bench_function("cached 200 (baseline)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(one(&cached_route, None).await) })
    });
    g.bench_function("304 from the cache", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(one(&cached_route, Some(&etag)).await) })
    });
    g.bench_function("200 without the layer", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(one(&bare_route, None).await) })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(4));
    targets = http
}
criterion_main!(benches);
