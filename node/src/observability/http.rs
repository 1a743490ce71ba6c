//! Per-request span, metrics and access log.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::Instrument;

tokio::task_local! {
    /// The route label the dispatcher chose for the request being served.
    static ROUTE: Arc<Mutex<&'static str>>;
}

/// Called by handlers once they know which endpoint a request is for.
pub fn label_request(route: &'static str, repository: &str) {
    let _ = ROUTE.try_with(|r| {
        if let Ok(mut slot) = r.lock() {
            *slot = route;
        }
    });
    if !repository.is_empty() {
        tracing::Span::current().record("repository", repository);
    }
}

fn content_length(headers: &axum::http::HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub async fn track_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let initial = match req.uri().path() {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/v2" | "/v2/" => "base",
        _ => "unknown",
    };
    let bytes_in = content_length(req.headers());
    let span = tracing::info_span!(
        "http",
        method = %method,
        path = %req.uri().path(),
        route = tracing::field::Empty,
        repository = tracing::field::Empty,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let slot = Arc::new(Mutex::new(initial));
    let resp = ROUTE.scope(slot.clone(), next.run(req)).instrument(span.clone()).await;
    let route = slot.lock().map(|r| *r).unwrap_or("unknown");
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    span.record("route", route);
    span.record("status", status);
    span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    let status_label = status.to_string();
    let labels = [("method", method.to_string()), ("route", route.to_string()), ("status", status_label)];
    metrics::counter!("meridian_http_requests_total", &labels).increment(1);
    metrics::histogram!("meridian_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    metrics::counter!("meridian_http_request_bytes_total", "route" => route).increment(bytes_in);
    metrics::counter!("meridian_http_response_bytes_total", "route" => route).increment(content_length(resp.headers()));
    // Successful requests log at debug so a busy node's log stays readable; refusals
    // and failures at info (the error itself is logged where it is mapped).
    span.in_scope(|| {
        if status >= 400 {
            tracing::info!("request")
        } else {
            tracing::debug!("request")
        }
    });
    resp
}
