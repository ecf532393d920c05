//! An axum service whose HTTP caching comes from its `#[cached]` policies: a public
//! product page (shared caches may keep it, `ETag`/`304` from the cache entry), a
//! per-user page (private, `Vary: authorization`), the stats route, and an invalidation
//! endpoint. Each request is logged on stdout (what the cache served, whether it was a 304).
//!
//! ```text
//! cargo run --example http --features http -- 127.0.0.1:3000
//! curl -i localhost:3000/products/7          # X-Cache: MISS, ETag, Cache-Control: public, max-age=3, …
//! curl -i localhost:3000/products/7 -H 'If-None-Match: "…"'   # 304, no body
//! curl -i localhost:3000/me -H 'Authorization: Bearer alice'  # private
//! curl localhost:3000/cache/stats            # the stats table (?format=json)
//! curl -X POST localhost:3000/products/7/invalidate
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, Response};
use axum::routing::{get, post};
use axum::Router;
use cachemacro_runtime::cached;
use cachemacro_runtime::http::{stats_service, HttpCache};

static VERSION: AtomicU64 = AtomicU64::new(0);

/// The product page: fresh for 3 s, then served stale while one refresh runs, up to 10 s;
/// if the source fails, the last value stands in for a minute.
#[cached(ttl = 10, soft_ttl = 3, fail_safe = 60, key = "product:<id>")]
async fn product(id: u64) -> Result<String, String> {
    let v = VERSION.fetch_add(1, Relaxed) + 1;
    println!("source: product {id} (load #{v})");
    Ok(format!("<h1>Product {id}</h1><p>rendered by load #{v}</p>"))
}

/// A per-user page: the key is the user.
#[cached(ttl = 30, key = "me:<user>")]
async fn me(user: String) -> String {
    println!("source: me {user}");
    format!("<h1>Hello, {user}</h1>")
}

async fn product_page(Path(id): Path<u64>) -> Result<Html<String>, StatusCode> {
    product(id)
        .await
        .map(Html)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn me_page(headers: HeaderMap) -> Result<Html<String>, StatusCode> {
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?
        .to_owned();
    Ok(Html(me(user).await))
}

async fn invalidate(Path(id): Path<u64>) -> StatusCode {
    match product_invalidate(id).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// One line per request: what the cache said, and whether it was a conditional request.
async fn log(req: Request, next: Next) -> Response {
    let line = format!(
        "{} {} inm={} ims={}",
        req.method(),
        req.uri(),
        req.headers().contains_key("if-none-match"),
        req.headers().contains_key("if-modified-since"),
    );
    let res = next.run(req).await;
    let x = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    println!(
        "request: {line} -> {} x-cache={} etag={}",
        res.status().as_u16(),
        x("x-cache"),
        x("etag")
    );
    res
}

fn app() -> Result<Router, cachemacro_runtime::http::PolicyError> {
    let products = HttpCache::public("GET /products/{id}").layer()?;
    let private = HttpCache::private("GET /me")
        .vary("Authorization")
        .layer()?;
    Ok(Router::new()
        .route("/products/{id}", get(product_page).route_layer(products))
        .route("/products/{id}/invalidate", post(invalidate))
        .route("/me", get(me_page).route_layer(private))
        .route_service("/cache/stats", stats_service())
        .layer(middleware::from_fn(log)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app()?).await?;
    Ok(())
}
