//! A ready route for the per-function stats: the operator's table as text, the same rows
//! as JSON, and (feature `metrics`) the Prometheus text exposition.
//!
//! ```text
//! let app = axum::Router::new().route_service("/cache/stats", cachemacro_runtime::http::stats_service());
//! ```
//!
//! `GET …` → the table (`text/plain`); `?format=json` or `Accept: application/json` →
//! JSON (an array of [`crate::Stats`]); `?format=prometheus` → the Prometheus exposition
//! (with the `metrics` feature; otherwise `404` saying so).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::stats;

/// The stats route ([`stats_service`]).
///
/// Hot keys (`hot_keys = N`) are left out unless asked for with
/// [`StatsService::with_hot_keys`]: a key names what was asked for (`user:42`,
/// `session:<token>`), which a route anyone can reach must not list. Mount the route
/// behind your own authentication before you turn them on.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsService {
    hot_keys: bool,
}

/// The stats route: mount it with one line (`route_service("/cache/stats", stats_service())`).
/// It shows counters, ratios and latencies, never keys (see [`StatsService::with_hot_keys`]).
pub fn stats_service() -> StatsService {
    StatsService::default()
}

impl StatsService {
    /// Also lists each function's hot keys (its `hot_keys = N` top keys by hits and by
    /// loads). Only behind authentication: keys carry what users asked for.
    #[must_use]
    pub fn with_hot_keys(mut self) -> Self {
        self.hot_keys = true;
        self
    }
}

/// A response body held in memory (the stats route's).
#[derive(Debug, Default)]
pub struct StatsBody(Option<Bytes>);

impl http_body::Body for StatsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .0
                .take()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Prometheus,
}

fn format_of<B>(req: &Request<B>) -> Format {
    let query = req.uri().query().unwrap_or("");
    for pair in query.split('&') {
        match pair {
            "format=json" => return Format::Json,
            "format=prometheus" => return Format::Prometheus,
            "format=text" => return Format::Text,
            _ => {}
        }
    }
    let json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if json {
        Format::Json
    } else {
        Format::Text
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<StatsBody> {
    let mut res = Response::new(StatsBody(Some(Bytes::from(body))));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The Prometheus text exposition of every function's stats: one gauge per numeric field
/// of [`crate::Stats`] (`cachemacro_<field>{function="…"}`).
#[cfg(feature = "metrics")]
pub fn prometheus(rows: &[crate::Stats]) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut series: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for s in rows {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(s) else {
            continue;
        };
        for (field, value) in fields {
            if let Some(v) = value.as_f64() {
                series.entry(field).or_default().push((s.name.clone(), v));
            }
        }
    }
    let mut out = String::new();
    for (field, points) in series {
        let name = format!("cachemacro_{field}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (function, v) in points {
            let escaped = function
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(out, "{name}{{function=\"{escaped}\"}} {v}");
        }
    }
    out
}

impl<B> Service<Request<B>> for StatsService {
    type Response = Response<StatsBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<StatsBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut rows = stats::all();
        if !self.hot_keys {
            for row in &mut rows {
                row.hot_keys.clear();
                row.hot_loads.clear();
            }
        }
        let res = match format_of(&req) {
            Format::Text => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                stats::table(&rows),
            ),
            Format::Json => match serde_json::to_string_pretty(&rows) {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(e) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("stats could not be serialized: {e}\n"),
                ),
            },
            #[cfg(feature = "metrics")]
            Format::Prometheus => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus(&rows),
            ),
            #[cfg(not(feature = "metrics"))]
            Format::Prometheus => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "the Prometheus exposition needs the `metrics` feature of cachemacro-runtime\n"
                    .to_owned(),
            ),
        };
        ready(Ok(res))
    }
}
