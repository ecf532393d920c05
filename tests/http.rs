//! The HTTP layer's header conformance: every directive, ETag/304 (strong, weak, lists,
//! `*`, malformed), If-Modified-Since, Vary and the refusal of public per-user routes,
//! what non-200 responses get, and the stats route. Run through axum with `oneshot`
//! (no sockets); tokio's clock is paused so ages and staleness are exact.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use cachemacro_runtime::cached;
use cachemacro_runtime::http::{stats_service, HttpCache};
use http_body_util::BodyExt;
use tower::ServiceExt;

static PRODUCT_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, soft_ttl = 10, fail_safe = 30, key = "product:<id>")]
async fn product(id: u64) -> Result<String, String> {
    if id == 1 {
        PRODUCT_LOADS.fetch_add(1, SeqCst);
    }
    if id == 404 {
        return Err("no such product".into());
    }
    Ok(format!("product {id} v{}", PRODUCT_LOADS.load(SeqCst)))
}

async fn product_page(Path(id): Path<u64>) -> Result<String, (StatusCode, String)> {
    product(id).await.map_err(|e| (StatusCode::NOT_FOUND, e))
}

fn app() -> Router {
    let layer = HttpCache::public("GET /products/{id}")
        .vary("Accept-Language")
        .layer()
        .expect("a public route without per-user headers is fine");
    Router::new()
        .route("/products/{id}", get(product_page).route_layer(layer))
        .route_service("/stats", stats_service())
}

async fn send(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    send_req("GET", path, headers).await
}

async fn send_req(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// A `Cache-Control` directive's seconds (0 if absent).
fn directive(hd: &HeaderMap, name: &str) -> u64 {
    h(hd, "cache-control")
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn age(hd: &HeaderMap) -> u64 {
    h(hd, "age").parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn directives_etag_and_304s() {
    let (s, hd, body) = send("/products/1", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.starts_with("product 1"));
    assert_eq!(h(&hd, "x-cache"), "MISS");
    assert_eq!(
        h(&hd, "cache-control"),
        "public, max-age=10, stale-while-revalidate=50, stale-if-error=30"
    );
    assert_eq!(h(&hd, "age"), "0");
    assert_eq!(h(&hd, "vary"), "accept-language");
    let etag = h(&hd, "etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 4,
        "{etag}"
    );
    // Produced in this second: no Last-Modified yet (the second could still see another value).
    assert_eq!(h(&hd, "last-modified"), "");
    let loads = PRODUCT_LOADS.load(SeqCst);

    tokio::time::advance(Duration::from_secs(3)).await;
    let (s, hd2, body2) = send("/products/1", &[]).await;
    assert_eq!((s, body2.as_str()), (StatusCode::OK, body.as_str()));
    assert_eq!(h(&hd2, "x-cache"), "HIT");
    assert_eq!(h(&hd2, "etag"), etag, "a hit carries its entry's tag");
    assert_eq!(h(&hd2, "age"), "3");
    assert_ne!(h(&hd2, "last-modified"), "");

    // If-None-Match: exact, weak form, in a list, `*`: 304, no body, source not called.
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let (s, hd, body) = send("/products/1", &[("if-none-match", inm)]).await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert!(body.is_empty());
        assert_eq!(h(&hd, "etag"), etag);
        // Content-Length, if any, is the 200's (RFC 9110 §8.6), never the empty body's 0.
        assert_eq!(h(&hd, "content-length"), body2.len().to_string());
        assert!(h(&hd, "cache-control").starts_with("public, max-age=10"));
    }
    // HEAD too.
    let (s, ..) = send_req("HEAD", "/products/1", &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    // Negative controls: another tag, and malformed values: a plain 200, never a 500.
    for inm in [
        "\"other\"",
        "garbage",
        "\"unterminated",
        "W/x",
        "\"a\" \"b\"",
    ] {
        let (s, _, body) = send("/products/1", &[("if-none-match", inm)]).await;
        assert_eq!(s, StatusCode::OK, "If-None-Match: {inm}");
        assert_eq!(body, body2);
    }
    assert_eq!(
        PRODUCT_LOADS.load(SeqCst),
        loads,
        "no 304 or hit called the source"
    );

    // If-Modified-Since: the Last-Modified itself and later → 304; earlier → 200;
    // malformed → 200; If-None-Match present (not matching) wins over a matching date.
    let lm = h(&hd2, "last-modified").to_owned();
    let (s, _, b) = send("/products/1", &[("if-modified-since", &lm)]).await;
    assert_eq!((s, b.as_str()), (StatusCode::NOT_MODIFIED, ""));
    let (s, ..) = send(
        "/products/1",
        &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, ..) = send("/products/1", &[("if-modified-since", "yesterday")]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, ..) = send(
        "/products/1",
        &[("if-modified-since", &lm), ("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Past soft_ttl: STALE, Age past max-age, the same entry (same tag) while it refreshes.
    tokio::time::advance(Duration::from_secs(10)).await;
    let (s, hd3, body3) = send("/products/1", &[]).await;
    assert_eq!((s, body3.as_str()), (StatusCode::OK, body.as_str()));
    assert_eq!(h(&hd3, "x-cache"), "STALE");
    assert_eq!(h(&hd3, "age"), "13");
    assert_eq!(h(&hd3, "etag"), etag);
    // The refresh lands: a new entry, a new tag; the old tag no longer matches.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let (s, hd4, body4) = send("/products/1", &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(body4, body);
    assert_ne!(h(&hd4, "etag"), etag);
    assert_eq!(h(&hd4, "x-cache"), "HIT");

    // After an invalidation: a load, a new tag.
    product_invalidate(1).await.unwrap();
    let (_, hd5, _) = send("/products/1", &[("if-none-match", h(&hd4, "etag"))]).await;
    assert_eq!(h(&hd5, "x-cache"), "MISS");
    assert_ne!(h(&hd5, "etag"), h(&hd4, "etag"));
}

#[tokio::test(start_paused = true)]
async fn errors_and_uncached_responses_are_no_store() {
    let (s, hd, _) = send("/products/404", &[("if-none-match", "*")]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h(&hd, "cache-control"), "no-store");
    assert_eq!(h(&hd, "etag"), "");
}

static FLAKY_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 5, fail_safe = 30)]
async fn flaky(id: u64) -> Result<String, String> {
    if FLAKY_LOADS.fetch_add(1, SeqCst) == 0 {
        Ok(format!("flaky {id}"))
    } else {
        Err("down".into())
    }
}

#[tokio::test(start_paused = true)]
async fn fail_safe_is_said_and_no_soft_ttl_means_no_swr() {
    let app = || {
        Router::new().route(
            "/f",
            get(|| async { flaky(1).await.unwrap_or_default() })
                .route_layer(HttpCache::private("GET /f").layer().unwrap()),
        )
    };
    let res = app()
        .oneshot(Request::get("/f").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let hd = res.headers().clone();
    assert_eq!(
        h(&hd, "cache-control"),
        "private, max-age=5, stale-if-error=30"
    );
    let etag = h(&hd, "etag").to_owned();
    tokio::time::advance(Duration::from_secs(7)).await;
    let res = app()
        .oneshot(Request::get("/f").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "x-cache"), "FAIL-SAFE");
    assert_eq!(h(res.headers(), "etag"), etag, "the same entry as before");
    assert_eq!(h(res.headers(), "age"), "7");
}

#[cached(ttl = 30, key = "me:<user>")]
async fn me(user: String) -> String {
    format!("hello {user}")
}

#[tokio::test]
async fn per_user_routes_are_private_and_public_ones_refused() {
    for (policy, header) in [
        (
            HttpCache::public("GET /me").vary("Authorization"),
            "authorization",
        ),
        (HttpCache::public("GET /me").vary("cookie"), "cookie"),
        (
            HttpCache::public("GET /me").per_user("X-User-Id"),
            "x-user-id",
        ),
    ] {
        let err = policy.layer().unwrap_err();
        assert_eq!(err.route, "GET /me");
        assert_eq!(err.header, header);
        assert!(err.to_string().contains("GET /me") && err.to_string().contains(header));
    }
    assert!(HttpCache::public("GET /x")
        .vary("bad header")
        .layer()
        .is_err());
    let layer = HttpCache::private("GET /me")
        .vary("Authorization")
        .layer()
        .unwrap();
    let app = Router::new().route(
        "/me",
        get(|headers: HeaderMap| async move {
            let user = h(&headers, "authorization").to_owned();
            me(user).await
        })
        .route_layer(layer),
    );
    let res = app
        .oneshot(
            Request::get("/me")
                .header("authorization", "Bearer alice")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "private, max-age=30");
    assert_eq!(h(res.headers(), "vary"), "authorization");
    // An existing Vary is kept and not repeated.
    let app = Router::new().route(
        "/v",
        get(|| async {
            (
                [(header::VARY, "Authorization, Accept")],
                me("v".into()).await,
            )
        })
        .route_layer(
            HttpCache::private("GET /v")
                .vary("authorization")
                .vary("origin")
                .layer()
                .unwrap(),
        ),
    );
    let res = app
        .oneshot(Request::get("/v").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let vary: Vec<_> = res
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(vary, ["Authorization, Accept", "origin"]);
}

#[cached(ttl = 20, key = "a:<x>")]
async fn part_a(x: u64) -> u64 {
    x
}
#[cached(ttl = 50, soft_ttl = 40, key = "b:<x>")]
async fn part_b(x: u64) -> u64 {
    x + 1
}

#[tokio::test(start_paused = true)]
async fn a_response_made_of_two_calls_takes_the_shorter_freshness() {
    let app = || {
        Router::new().route(
            "/ab",
            get(|| async { format!("{} {}", part_a(1).await, part_b(1).await) })
                .route_layer(HttpCache::public("GET /ab").layer().unwrap()),
        )
    };
    let res = app()
        .oneshot(Request::get("/ab").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "public, max-age=20");
    let etag = h(res.headers(), "etag").to_owned();
    tokio::time::advance(Duration::from_secs(2)).await;
    let res = app()
        .oneshot(Request::get("/ab").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "etag"), etag);
    assert_eq!(h(res.headers(), "age"), "2");
    part_b_invalidate(1).await.unwrap();
    let res = app()
        .oneshot(
            Request::get("/ab")
                .header("if-none-match", &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "one part changed: the tag changed"
    );
    assert_ne!(h(res.headers(), "etag"), etag);
}

#[tokio::test]
async fn stats_route_text_and_json() {
    let _ = send("/products/2", &[]).await;
    let (s, hd, text) = send("/stats", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h(&hd, "content-type").starts_with("text/plain"));
    assert!(
        text.starts_with("function") && text.contains("product"),
        "{text}"
    );
    let (_, hd, json) = send("/stats?format=json", &[]).await;
    assert_eq!(h(&hd, "content-type"), "application/json");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"].as_str().unwrap().ends_with("product")));
    let (s, _, prom) = send("/stats?format=prometheus", &[]).await;
    if cfg!(feature = "metrics") {
        assert_eq!(s, StatusCode::OK);
        assert!(prom.contains("cachemacro_hits{function=\""), "{prom}");
    } else {
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

#[cached(ttl = 30, key = "ns:<x>")]
async fn secret(x: u64) -> String {
    format!("secret {x}")
}

#[tokio::test]
async fn no_store_routes_and_non_get_methods() {
    let app = || {
        Router::new().route(
            "/s",
            get(|| async { secret(1).await })
                .post(|| async { secret(1).await })
                .route_layer(HttpCache::no_store("GET /s").layer().unwrap()),
        )
    };
    let res = app()
        .oneshot(Request::get("/s").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "no-store");
    assert_eq!(
        h(res.headers(), "etag"),
        "",
        "no validators for what nobody may store"
    );
    assert_eq!(h(res.headers(), "x-cache"), "MISS");
    let res = app()
        .oneshot(
            Request::get("/s")
                .header("if-none-match", "*")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h(res.headers(), "x-cache"), "HIT");
    // A POST is never answered 304, even with a matching precondition.
    let app2 = Router::new().route(
        "/p",
        axum::routing::post(|| async { secret(2).await })
            .route_layer(HttpCache::public("POST /p").layer().unwrap()),
    );
    let res = app2
        .oneshot(
            Request::post("/p")
                .header("if-none-match", "*")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

static SLOW_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 30, key = "slow:<x>")]
async fn slow(x: u64) -> u64 {
    SLOW_LOADS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    x
}

#[tokio::test]
async fn observe_tells_a_load_from_a_joined_call_and_a_hit() {
    use cachemacro_runtime::served::{observe, Outcome};
    let (a, b) = tokio::join!(observe(slow(1)), observe(slow(1)));
    assert_eq!(SLOW_LOADS.load(SeqCst), 1, "coalesced");
    let mut outcomes = [a.1.calls()[0].outcome, b.1.calls()[0].outcome];
    outcomes.sort_by_key(|o| *o == Outcome::Joined);
    assert_eq!(outcomes, [Outcome::Load, Outcome::Joined]);
    let loaded = if a.1.calls()[0].outcome == Outcome::Load {
        &a.1
    } else {
        &b.1
    };
    let joined = if a.1.calls()[0].outcome == Outcome::Joined {
        &a.1
    } else {
        &b.1
    };
    assert!(loaded.etag().is_some());
    assert_eq!(
        joined.etag(),
        loaded.etag(),
        "a joined call is told the entry the load stored (its tag, its deadlines)"
    );
    let (j, l) = (joined.calls()[0].fresh_for, loaded.calls()[0].fresh_for);
    assert!(j.abs_diff(l) < Duration::from_secs(1), "{j:?} vs {l:?}");
    let (_, hit) = observe(slow(1)).await;
    assert_eq!(hit.calls()[0].outcome, Outcome::Hit);
    assert_eq!(
        hit.etag(),
        loaded.etag(),
        "the hit reads the entry the load stored"
    );
    // Outside any scope nothing is recorded, and a call made twice in one scope is one entry.
    let (_, twice) = observe(async {
        slow(1).await;
        slow(1).await
    })
    .await;
    assert_eq!(twice.calls().len(), 1);
}

// ---- what the handler or the request says about whose response it is ---------------------

#[tokio::test]
async fn a_handlers_no_store_or_set_cookie_is_never_made_public() {
    let app = Router::new().route(
        "/c",
        get(|| async {
            (
                [(header::SET_COOKIE, "sid=alice; HttpOnly")],
                secret(7).await,
            )
        })
        .route_layer(HttpCache::public("GET /c").layer().unwrap()),
    );
    let res = app
        .oneshot(Request::get("/c").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cc = h(res.headers(), "cache-control");
    assert!(cc.starts_with("private, max-age="), "{cc}");
    let app = Router::new().route(
        "/n",
        get(|| async { ([(header::CACHE_CONTROL, "no-store")], secret(8).await) })
            .route_layer(HttpCache::public("GET /n").layer().unwrap()),
    );
    let res = app
        .oneshot(Request::get("/n").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "no-store");
    assert_eq!(
        h(res.headers(), "etag"),
        "",
        "no validator for what must not be stored"
    );
}

#[tokio::test(start_paused = true)]
async fn an_authenticated_request_to_a_public_route_is_not_shareable() {
    let (s, hd, _) = send("/products/3", &[("authorization", "Bearer alice")]).await;
    assert_eq!(s, StatusCode::OK);
    let cc = h(&hd, "cache-control");
    assert!(cc.starts_with("private, "), "{cc}");
    // The control: the same route without credentials is public.
    let (_, hd, _) = send("/products/3", &[]).await;
    assert!(h(&hd, "cache-control").starts_with("public, "));
}

#[tokio::test(start_paused = true)]
async fn calls_inside_a_nested_observe_still_make_the_etag() {
    use cachemacro_runtime::served::observe;
    let app = || {
        Router::new().route(
            "/o",
            get(|| async {
                let (b, _) = observe(part_b(9)).await;
                format!("{} {}", part_a(9).await, b)
            })
            .route_layer(HttpCache::public("GET /o").layer().unwrap()),
        )
    };
    let r = app()
        .oneshot(Request::get("/o").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let etag = h(r.headers(), "etag").to_owned();
    assert!(!etag.is_empty());
    part_b_invalidate(9).await.unwrap();
    let r = app()
        .oneshot(
            Request::get("/o")
                .header("if-none-match", &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "part b changed under a nested observe"
    );
}

#[tokio::test(start_paused = true)]
async fn representations_that_differ_by_a_vary_header_have_different_tags() {
    let (_, en, _) = send("/products/5", &[("accept-language", "en")]).await;
    let (_, de, _) = send("/products/5", &[("accept-language", "de")]).await;
    let (en, de) = (h(&en, "etag").to_owned(), h(&de, "etag").to_owned());
    assert!(!en.is_empty() && en != de, "{en} {de}");
    let (s, _, _) = send(
        "/products/5",
        &[("accept-language", "de"), ("if-none-match", &en)],
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the English tag does not validate the German page"
    );
    let (s, _, _) = send(
        "/products/5",
        &[("accept-language", "en"), ("if-none-match", &en)],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED, "the control");
}

static SLOW_DOC: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 600, key = "slowdoc:<id>")]
async fn slow_doc(id: u64) -> String {
    let v = SLOW_DOC.fetch_add(1, SeqCst);
    if v > 0 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    format!("doc {id} v{v}")
}

#[tokio::test(start_paused = true)]
async fn a_slow_reload_is_not_answered_304_to_if_modified_since() {
    let app = || {
        Router::new().route(
            "/d",
            get(|| async { slow_doc(1).await })
                .route_layer(HttpCache::public("GET /d").layer().unwrap()),
        )
    };
    let get_d = |ims: Option<String>| async move {
        let mut req = Request::get("/d");
        if let Some(ims) = ims {
            req = req.header("if-modified-since", ims);
        }
        app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    };
    get_d(None).await; // v0
    let refresh = tokio::spawn(slow_doc_refresh(1)); // v1 starts now, lands 5 s later
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = get_d(None).await;
    let lm = h(r.headers(), "last-modified").to_owned();
    assert_ne!(lm, "", "v0 is from an earlier second");
    tokio::time::advance(Duration::from_secs(4)).await;
    refresh.await.unwrap();
    let r = get_d(Some(lm)).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "v1 replaced what the client holds"
    );
}

// ---- what the cache no longer holds, or holds without knowing its age ---------------------

static DRIFT_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();
static DRIFT_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = 30, key = "drift:<x>")]
async fn drifting(x: u64) -> String {
    DRIFT_STARTED.notify_one();
    DRIFT_GATE.notified().await;
    format!("drift {x}")
}

async fn drift_page(Path(x): Path<u64>) -> String {
    drifting(x).await
}

fn drift_app() -> Router {
    Router::new().route(
        "/drift/{x}",
        get(drift_page).route_layer(HttpCache::public("GET /drift/{x}").layer().unwrap()),
    )
}

/// A load whose key is invalidated while it runs is served to its caller (as a direct
/// call would be), but the cache does not keep it, so neither may anyone downstream: the
/// response is `no-store`, without a validator. Before, it went out `public, max-age=30`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_invalidated_while_it_ran_is_served_no_store() {
    for invalidate in [false, true] {
        let x = u64::from(invalidate);
        let req = tokio::spawn(
            drift_app().oneshot(
                Request::get(format!("/drift/{x}"))
                    .body(Body::empty())
                    .unwrap(),
            ),
        );
        DRIFT_STARTED.notified().await;
        if invalidate {
            drifting_invalidate(x).await.unwrap();
        }
        DRIFT_GATE.notify_one();
        let res = req.await.unwrap().unwrap();
        let hd = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            format!("drift {x}").as_bytes(),
            "the caller gets its value"
        );
        if invalidate {
            assert_eq!(h(&hd, "cache-control"), "no-store");
            assert_eq!(h(&hd, "etag"), "");
        } else {
            // The negative control: the same route, not invalidated, is cacheable.
            assert_eq!(h(&hd, "cache-control"), "public, max-age=30");
            assert_ne!(h(&hd, "etag"), "");
        }
    }
}

#[cached(ttl = 30, key = "maybe:<x>")]
async fn maybe(x: u64) -> Option<String> {
    (x > 0).then(|| format!("maybe {x}"))
}

/// A value the policy does not cache (`None` without `cache_none`) is not advertised as
/// cacheable either.
#[tokio::test]
async fn a_value_the_policy_does_not_cache_is_no_store() {
    let app = || {
        Router::new().route(
            "/maybe/{x}",
            get(|Path(x): Path<u64>| async move { maybe(x).await.unwrap_or_default() })
                .route_layer(HttpCache::public("GET /maybe/{x}").layer().unwrap()),
        )
    };
    let res = app()
        .oneshot(Request::get("/maybe/0").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "no-store");
    let res = app()
        .oneshot(Request::get("/maybe/3").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(h(res.headers(), "cache-control"), "public, max-age=30");
}

static SLIDE_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 5, fail_safe = 30, key = "slide:<x>")]
async fn slide(x: u64) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if SLIDE_LOADS.fetch_add(1, SeqCst) == 0 {
        Ok(format!("slide {x}"))
    } else {
        Err("down".into())
    }
}

/// A caller that joined a load which failed and fell back on the fail-safe value is told
/// so (`FAIL-SAFE`, nothing left of its freshness), as the leader is; before, it was told
/// `Joined` and a full fresh period, and an HTTP response made of it said `Age: 0`.
#[tokio::test(start_paused = true)]
async fn a_caller_joining_a_fail_safe_fallback_is_not_told_it_is_fresh() {
    use cachemacro_runtime::served::{observe, Outcome};
    let (v, _) = observe(slide(1)).await;
    assert_eq!(v.unwrap(), "slide 1");
    tokio::time::advance(Duration::from_secs(7)).await;
    let (a, b) = tokio::join!(observe(slide(1)), observe(slide(1)));
    assert_eq!(SLIDE_LOADS.load(SeqCst), 2, "one failed load for both");
    for (v, seen) in [a, b] {
        assert_eq!(v.unwrap(), "slide 1");
        let call = &seen.calls()[0];
        assert_eq!(call.outcome, Outcome::FailSafe, "{call:?}");
        assert_eq!(call.fresh_for, Duration::ZERO, "{call:?}");
        let d = cachemacro_runtime::http::describe(&seen).unwrap();
        assert!(d.age >= d.max_age, "{d:?}");
    }
}

/// A body a compression layer around this one encodes by the request's `Accept-Encoding`
/// does not share its strong tag with the identity body.
#[tokio::test(start_paused = true)]
async fn representations_that_differ_by_accept_encoding_have_different_tags() {
    let (_, plain, _) = send("/products/31", &[]).await;
    let (_, gzip, _) = send("/products/31", &[("accept-encoding", "gzip")]).await;
    let (_, gzip2, _) = send("/products/31", &[("accept-encoding", "gzip")]).await;
    assert_eq!(h(&gzip, "x-cache"), "HIT", "the same entry");
    assert_ne!(h(&plain, "etag"), h(&gzip, "etag"));
    assert_eq!(h(&gzip, "etag"), h(&gzip2, "etag"));
    // And a tag is only matched for the encoding it was made for.
    let etag = h(&plain, "etag").to_owned();
    let (s, ..) = send(
        "/products/31",
        &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, ..) = send("/products/31", &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
}

#[cached(ttl = 30, hot_keys = 5, key = "account:<user>")]
async fn account(user: String) -> String {
    format!("account of {user}")
}

/// The stats route lists no keys unless asked to (keys name what users asked for).
#[tokio::test]
async fn the_stats_route_lists_hot_keys_only_when_asked() {
    for _ in 0..200 {
        account("alice-secret-id".into()).await;
    }
    let row = account_stats();
    assert!(
        row.hot_keys
            .iter()
            .chain(&row.hot_loads)
            .any(|(k, _)| k.contains("alice-secret-id")),
        "the sketch has it: {row:?}"
    );
    for (svc, listed) in [
        (stats_service(), false),
        (stats_service().with_hot_keys(), true),
    ] {
        for uri in ["/", "/?format=json"] {
            let res = svc
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.contains("account"), "{text}");
            assert_eq!(text.contains("alice-secret-id"), listed, "{uri}: {text}");
        }
    }
}

// ---- review findings (second round): what a response promises never outlasts the cache ---

static GONE_LOADS: AtomicUsize = AtomicUsize::new(0);
static GONE_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static GONE_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1s", fail_safe = 60, key = "gone:<x>")]
async fn gone(x: u64) -> Result<String, String> {
    if GONE_LOADS.fetch_add(1, SeqCst) == 0 {
        return Ok(format!("gone {x} v0"));
    }
    GONE_STARTED.notify_one();
    GONE_GATE.notified().await;
    Err("no such product".into()) // deleted: the source now fails for it
}

fn gone_app() -> Router {
    Router::new().route(
        "/gone/{x}",
        get(|Path(x): Path<u64>| async move {
            gone(x)
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
        })
        .route_layer(HttpCache::public("GET /gone/{x}").layer().unwrap()),
    )
}

/// A fail-safe value whose key was invalidated while its reload ran (and failed) is served
/// to the caller that ran the reload (fail-safe is for availability), but never validated
/// with a 304 nor offered to anyone downstream: `no-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_safe_value_invalidated_while_its_reload_ran_is_not_validated() {
    let r = gone_app()
        .oneshot(Request::get("/gone/1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let etag = h(r.headers(), "etag").to_owned();
    assert!(!etag.is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await; // expired, within fail_safe
    let req = Request::get("/gone/1")
        .header("if-none-match", &etag)
        .body(Body::empty())
        .unwrap();
    let pending = tokio::spawn(gone_app().oneshot(req));
    GONE_STARTED.notified().await;
    gone_invalidate(1).await.unwrap(); // the app drops v0 while the reload runs
    GONE_GATE.notify_one();
    let res = pending.await.unwrap().unwrap();
    assert_eq!(h(res.headers(), "x-cache"), "FAIL-SAFE");
    assert_ne!(
        res.status(),
        StatusCode::NOT_MODIFIED,
        "the client's copy was invalidated"
    );
    assert_eq!(h(res.headers(), "cache-control"), "no-store");
    assert_eq!(h(res.headers(), "etag"), "");
}

static RJ: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "1s", fail_safe = 60, key = "rj:<x>")]
async fn rejoin(x: u64) -> Result<String, String> {
    if RJ.fetch_add(1, SeqCst) == 0 {
        return Ok(format!("rj {x} v0"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Err("no such product".into())
}

/// A caller that waited on a load whose key was invalidated meanwhile goes round again
/// without the fallback it held from before: it is never handed the dropped value.
#[tokio::test(start_paused = true)]
async fn a_joined_caller_does_not_get_the_fail_safe_value_invalidated_while_it_waited() {
    use cachemacro_runtime::served::observe;
    assert_eq!(rejoin(1).await.unwrap(), "rj 1 v0");
    tokio::time::advance(Duration::from_millis(1500)).await; // expired, within fail_safe
    let leader = tokio::spawn(observe(rejoin(1)));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let joined = tokio::spawn(rejoin(1));
    tokio::time::sleep(Duration::from_millis(10)).await; // one loads, one waits
    rejoin_invalidate(1).await.unwrap();
    let (led, seen) = leader.await.unwrap();
    assert_eq!(
        led.unwrap(),
        "rj 1 v0",
        "the leader: fail-safe, for availability"
    );
    assert!(!seen.kept(), "…but not kept: no-store downstream");
    assert_eq!(
        joined.await.unwrap(),
        Err("no such product".into()),
        "v0 was invalidated while this caller waited"
    );
}

static SN: AtomicUsize = AtomicUsize::new(0);
static SN_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static SN_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1s", fail_safe = 60, stampede = none, key = "sn:<id>")]
async fn sn(id: u64) -> Result<u64, String> {
    if id != 0 || SN.fetch_add(1, SeqCst) == 0 {
        return Ok(id + 100);
    }
    SN_STARTED.notify_one();
    SN_GATE.notified().await;
    Err("down".into())
}

/// Invalidating other keys (which share generation stripes with this one) never turns a
/// fail-safe value into an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_keys_invalidation_does_not_turn_fail_safe_into_an_error() {
    assert_eq!(sn(0).await, Ok(100));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let call = tokio::spawn(sn(0));
    SN_STARTED.notified().await;
    for other in 1..=1024 {
        sn_invalidate(other).await.unwrap();
    }
    SN_GATE.notify_one();
    assert_eq!(call.await.unwrap(), Ok(100));
}

static PF: AtomicUsize = AtomicUsize::new(0);
static PF_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static PF_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1s", fail_safe = 60, key = "pf:<id>")]
async fn pf(id: u64) -> Result<u32, String> {
    let _ = id;
    if PF.fetch_add(1, SeqCst) == 0 {
        return Ok(1);
    }
    PF_STARTED.notify_one();
    PF_GATE.notified().await;
    Err("replica down".into())
}

/// A put while a reload fails: the caller that ran the reload still gets a value (fail_safe
/// is set), and a caller that joined gets the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_during_a_failing_reload_does_not_become_an_error() {
    assert_eq!(pf(0).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let leader = tokio::spawn(pf(0));
    PF_STARTED.notified().await;
    let joined = tokio::spawn(pf(0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    pf_put(0, 2).await.unwrap();
    PF_GATE.notify_one();
    assert_eq!(joined.await.unwrap(), Ok(2));
    assert!(leader.await.unwrap().is_ok(), "fail_safe set");
}

static NF_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 60, cache_none = true, none_ttl = 5, key = "nf:<x>")]
async fn not_yet(x: u64) -> Option<String> {
    NF_LOADS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    (x == 0).then(|| "found".to_owned())
}

fn nf_app() -> Router {
    Router::new().route(
        "/nf/{x}",
        get(|Path(x): Path<u64>| async move {
            not_yet(x)
                .await
                .unwrap_or_else(|| "nothing here yet".into())
        })
        .route_layer(HttpCache::public("GET /nf/{x}").layer().unwrap()),
    )
}

/// A caller that joined a load is told the entry the load stored: a `None` kept for
/// `none_ttl = 5` is not promised for the whole `ttl = 60`.
#[tokio::test(start_paused = true)]
async fn a_caller_that_joined_a_negative_load_is_not_promised_the_full_ttl() {
    let req = || Request::get("/nf/7").body(Body::empty()).unwrap();
    let (a, b) = tokio::join!(nf_app().oneshot(req()), nf_app().oneshot(req()));
    assert_eq!(NF_LOADS.load(SeqCst), 1, "coalesced");
    for r in [a.unwrap(), b.unwrap()] {
        let hd = r.headers();
        assert!(
            directive(hd, "max-age").saturating_sub(age(hd)) <= 5,
            "{} Age: {}",
            h(hd, "cache-control"),
            h(hd, "age")
        );
    }
    tokio::time::advance(Duration::from_secs(6)).await;
    let c = nf_app().oneshot(req()).await.unwrap();
    assert_eq!(
        h(c.headers(), "x-cache"),
        "MISS",
        "the cache itself reloaded after 5 s"
    );
}

static JFS_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = 20, soft_ttl = 5, fail_safe = 300, key = "jfs:<x>")]
async fn jfs(x: u64) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if JFS_LOADS.fetch_add(1, SeqCst) == 0 {
        Ok(format!("jfs {x}"))
    } else {
        Err("down".into())
    }
}

/// A fail-safe value (past its hard expiry) leaves no stale-while-revalidate window, for
/// the caller that loaded and for the one that joined.
#[tokio::test(start_paused = true)]
async fn a_joined_fail_safe_value_has_no_stale_window_left() {
    let app = || {
        Router::new().route(
            "/jfs",
            get(|| async { jfs(1).await.unwrap_or_default() })
                .route_layer(HttpCache::public("GET /jfs").layer().unwrap()),
        )
    };
    let req = || Request::get("/jfs").body(Body::empty()).unwrap();
    app().oneshot(req()).await.unwrap();
    tokio::time::advance(Duration::from_secs(25)).await; // past ttl = 20
    let (a, b) = tokio::join!(app().oneshot(req()), app().oneshot(req()));
    for r in [a.unwrap(), b.unwrap()] {
        let hd = r.headers();
        assert_eq!(h(hd, "x-cache"), "FAIL-SAFE");
        assert!(
            directive(hd, "max-age") + directive(hd, "stale-while-revalidate") <= age(hd),
            "{} Age: {}",
            h(hd, "cache-control"),
            h(hd, "age")
        );
    }
}

static TF_SLOW: AtomicBool = AtomicBool::new(false);
static TF_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(
    ttl = "3s",
    soft_ttl = "1s",
    fail_safe = "1h",
    timeout = "100ms",
    key = "tf:<x>"
)]
async fn timed(x: u64) -> Result<String, String> {
    if TF_SLOW.load(SeqCst) {
        TF_GATE.notified().await;
    }
    Ok(format!("timed {x}"))
}

/// A value past its hard expiry served because the source was slow (`timeout`) is said to
/// be `FAIL-SAFE`, with its true age and no stale window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fallback_past_ttl_is_fail_safe_with_no_stale_window() {
    let app = || {
        Router::new().route(
            "/t",
            get(|| async { timed(1).await.unwrap_or_default() })
                .route_layer(HttpCache::public("GET /t").layer().unwrap()),
        )
    };
    let req = || Request::get("/t").body(Body::empty()).unwrap();
    app().oneshot(req()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await; // past ttl, within fail_safe
    TF_SLOW.store(true, SeqCst);
    let res = app().oneshot(req()).await.unwrap();
    TF_GATE.notify_one();
    let hd = res.headers();
    assert_eq!(h(hd, "x-cache"), "FAIL-SAFE");
    assert!(
        directive(hd, "max-age") + directive(hd, "stale-while-revalidate") <= age(hd),
        "{} Age: {}",
        h(hd, "cache-control"),
        h(hd, "age")
    );
}

#[cached(
    ttl = 60,
    soft_ttl = 30,
    cache_none = true,
    none_ttl = 5,
    key = "nfs:<x>"
)]
async fn none_soft(x: u64) -> Option<String> {
    let _ = x;
    None
}

/// A negative entry kept `none_ttl = 5` is not offered a stale window past it.
#[tokio::test(start_paused = true)]
async fn a_negative_entry_is_not_offered_a_stale_window_past_none_ttl() {
    let app = || {
        Router::new().route(
            "/nfs",
            get(|| async { none_soft(1).await.unwrap_or_default() })
                .route_layer(HttpCache::public("GET /nfs").layer().unwrap()),
        )
    };
    let r = app()
        .oneshot(Request::get("/nfs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let hd = r.headers();
    let promised = (directive(hd, "max-age") + directive(hd, "stale-while-revalidate"))
        .saturating_sub(age(hd));
    assert!(
        promised <= 5,
        "{} Age: {}",
        h(hd, "cache-control"),
        h(hd, "age")
    );
}

#[cached(ttl = 60, soft_ttl = 30, jitter = 0.5, key = "jit:<x>")]
async fn jit(x: u64) -> u64 {
    x
}

/// With `jitter`, no key is offered downstream past its own hard expiry.
#[tokio::test(start_paused = true)]
async fn with_jitter_no_key_is_offered_past_its_hard_expiry() {
    let app = || {
        Router::new().route(
            "/jit/{x}",
            get(|Path(x): Path<u64>| async move { jit(x).await.to_string() })
                .route_layer(HttpCache::public("GET /jit/{x}").layer().unwrap()),
        )
    };
    let get_x = |x: u64| async move {
        app()
            .oneshot(
                Request::get(format!("/jit/{x}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    };
    let mut promised = Vec::new();
    for x in 0..64 {
        let r = get_x(x).await;
        let hd = r.headers();
        promised.push((
            (directive(hd, "max-age") + directive(hd, "stale-while-revalidate"))
                .saturating_sub(age(hd)),
            x,
        ));
    }
    promised.sort();
    let mut now = 0;
    for (until, x) in promised {
        let at = until.saturating_sub(1);
        if at > now {
            tokio::time::advance(Duration::from_secs(at - now)).await;
            now = at;
        }
        let r = get_x(x).await;
        assert_ne!(
            h(r.headers(), "x-cache"),
            "MISS",
            "key {x}: downstream may serve it until {until}s, the cache dropped it before {at}s"
        );
    }
}

static LMR_LOADS: AtomicUsize = AtomicUsize::new(0);
static LMR_READ: tokio::sync::Notify = tokio::sync::Notify::const_new();
static LMR_SEND: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = 600, key = "lmr:<x>")]
async fn lmr(x: u64) -> String {
    format!("lmr {x} v{}", LMR_LOADS.fetch_add(1, SeqCst))
}

fn lmr_app() -> Router {
    Router::new().route(
        "/lmr",
        get(|hd: HeaderMap| async move {
            let v = lmr(1).await;
            if hd.contains_key("x-hold") {
                LMR_READ.notify_one();
                LMR_SEND.notified().await; // more work after the call
            }
            v
        })
        .route_layer(HttpCache::public("GET /lmr").layer().unwrap()),
    )
}

async fn to_next_second() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 20)).await;
}

/// `Last-Modified` is only claimed for a value produced in a second that was over when the
/// handler read it: a value replaced within that second is not validated by
/// `If-Modified-Since`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_replaced_within_its_second_is_not_validated_by_if_modified_since() {
    to_next_second().await; // second S
    let a = tokio::spawn(
        lmr_app().oneshot(
            Request::get("/lmr")
                .header("x-hold", "1")
                .body(Body::empty())
                .unwrap(),
        ),
    );
    LMR_READ.notified().await; // v0 stored and read in S
    lmr_invalidate(1).await.unwrap();
    lmr_app()
        .oneshot(Request::get("/lmr").body(Body::empty()).unwrap())
        .await
        .unwrap(); // v1 stored in S
    to_next_second().await; // S+1
    LMR_SEND.notify_one();
    let a = a.await.unwrap().unwrap();
    let lm = h(a.headers(), "last-modified").to_owned();
    let body = a.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"lmr 1 v0");
    assert_eq!(lm, "", "v0 was read in the second it was produced in");
}

#[tokio::test(start_paused = true)]
async fn if_modified_since_with_two_members_is_ignored() {
    let _ = send("/products/42", &[]).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let (_, hd, _) = send("/products/42", &[]).await;
    let lm = h(&hd, "last-modified").to_owned();
    assert_ne!(lm, "");
    let (s, ..) = send("/products/42", &[("if-modified-since", &lm)]).await;
    assert_eq!(
        s,
        StatusCode::NOT_MODIFIED,
        "the control: one date validates"
    );
    let (s, ..) = send(
        "/products/42",
        &[
            ("if-modified-since", &lm),
            ("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn age_is_not_rounded_down_into_extra_freshness() {
    let _ = send("/products/43", &[]).await;
    tokio::time::advance(Duration::from_millis(9_400)).await;
    let (_, hd, _) = send("/products/43", &[]).await;
    let promised = 10u64.saturating_sub(age(&hd)); // max-age=10
    tokio::time::advance(Duration::from_millis(700)).await; // 10.1 s
    let (_, hd2, _) = send("/products/43", &[]).await;
    assert!(
        promised == 0 || h(&hd2, "x-cache") == "HIT",
        "promised {promised}s, cache says {}",
        h(&hd2, "x-cache")
    );
}

/// A `Vary` the handler writes itself also sets representations apart.
#[tokio::test(start_paused = true)]
async fn a_handlers_own_vary_goes_into_the_tag() {
    let app = || {
        Router::new().route(
            "/own-vary",
            get(|| async { ([(header::VARY, "Accept")], part_a(77).await.to_string()) })
                .route_layer(HttpCache::public("GET /own-vary").layer().unwrap()),
        )
    };
    let send_accept = |accept: &'static str| async move {
        app()
            .oneshot(
                Request::get("/own-vary")
                    .header("accept", accept)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    };
    let json = send_accept("application/json").await;
    let html = send_accept("text/html").await;
    let json2 = send_accept("application/json").await;
    assert_ne!(h(json.headers(), "etag"), h(html.headers(), "etag"));
    assert_eq!(h(json.headers(), "etag"), h(json2.headers(), "etag"));
}

// ---- review round 4 ----------------------------------------------------------------------

static AB: AtomicUsize = AtomicUsize::new(0);
static AB_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1s", fail_safe = 60, key = "ab:<x>")]
async fn abandoned(x: &str) -> Result<String, String> {
    match AB.fetch_add(1, SeqCst) {
        0 => return Ok(format!("ab {x} v0")),
        1 => {
            AB_STARTED.notify_one();
            std::future::pending::<()>().await;
        }
        _ => tokio::time::sleep(Duration::from_millis(50)).await,
    }
    Err("no such product".into())
}

fn ab_app() -> Router {
    Router::new().route(
        "/ab/{x}",
        get(|Path(x): Path<String>| async move {
            abandoned(&x)
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
        })
        .route_layer(HttpCache::public("GET /ab/{x}").layer().unwrap()),
    )
}

/// A waiter whose leader went away after the key was invalidated does not keep (and is not
/// validated with) the value it held from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_leader_went_away_after_an_invalidation_is_not_validated() {
    let req = |inm: Option<String>| {
        let mut r = Request::get("/ab/1");
        if let Some(e) = inm {
            r = r.header("if-none-match", e);
        }
        r.body(Body::empty()).unwrap()
    };
    let first = ab_app().oneshot(req(None)).await.unwrap();
    let etag = h(first.headers(), "etag").to_owned();
    tokio::time::sleep(Duration::from_millis(1200)).await; // expired, within fail_safe
    let leader = tokio::spawn(abandoned("1"));
    AB_STARTED.notified().await;
    let waiter = tokio::spawn(ab_app().oneshot(req(Some(etag))));
    while abandoned_stats().coalesced < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    abandoned_invalidate("1").await.unwrap();
    leader.abort(); // its client went away
    let res = waiter.await.unwrap().unwrap();
    assert_ne!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(h(res.headers(), "cache-control"), "no-store");
    assert_eq!(h(res.headers(), "etag"), "");
}

static RF: AtomicUsize = AtomicUsize::new(0);
static RF_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();
static RF_GATE: tokio::sync::Notify = tokio::sync::Notify::const_new();

#[cached(ttl = "1s", fail_safe = 60, key = "rf:<id>")]
async fn rf(id: u64) -> Result<u32, String> {
    let _ = id;
    match RF.fetch_add(1, SeqCst) {
        0 => Ok(1),
        1 => {
            RF_STARTED.notify_one();
            RF_GATE.notified().await;
            Err("db down".into())
        }
        _ => Err("db down".into()),
    }
}

/// A `*_refresh` that fails while others wait on a failing reload does not turn their
/// fail-safe value into an error: the cache still holds it, and serves it to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_does_not_turn_a_waiters_fail_safe_into_an_error() {
    assert_eq!(rf(0).await, Ok(1));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let leader = tokio::spawn(rf(0));
    RF_STARTED.notified().await;
    let joined = tokio::spawn(rf(0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rf_refresh(0).await.is_err(), "the source is down");
    RF_GATE.notify_one();
    assert_eq!(leader.await.unwrap(), Ok(1));
    assert_eq!(joined.await.unwrap(), Ok(1));
    assert_eq!(rf(0).await, Ok(1));
}
