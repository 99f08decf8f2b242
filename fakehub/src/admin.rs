//! Admin endpoints on the Hub listener, for users of a `fakehub serve` in another process:
//!
//! * `GET /_fakehub/requests`: the request log as a JSON array, one object per request in
//!   arrival order: `listener` (`"hub"` or `"cdn"`), `method`, `path` (raw, with the query),
//!   `range` (the `Range` header or null), `status` (0 while undecided or for a reset), `id` (the
//!   number in `X-Request-Id`), `start` and `end` (seconds since the fake Hub started, as floats;
//!   `end` is null while in flight), `body_bytes` (body bytes handed to the connection), `slow`
//!   (`"stall"`, `"crawl"` or null) and `fault` (the injected fault's name or null).
//! * `POST /_fakehub/requests/clear`: forgets the log; answers `{"cleared": N}`.
//!
//! No Hub path starts with `/_fakehub/` (Hub org and repo names cannot start with `_`). Admin
//! requests are answered at once: they are never shaped, faulted or logged.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::record::{RequestLog, RequestRecord};

/// The prefix of every admin path.
pub const ADMIN_PREFIX: &str = "/_fakehub/";

/// One record as the admin JSON shows it.
pub fn record_json(r: &RequestRecord) -> Value {
    json!({
        "listener": r.listener.name(),
        "method": r.method,
        "path": r.path,
        "range": r.range,
        "status": r.status,
        "id": r.id,
        "start": r.start.as_secs_f64(),
        "end": r.end.map(|e| e.as_secs_f64()),
        "body_bytes": r.body_bytes,
        "slow": r.slow.map(|s| s.name()),
        "fault": r.fault.as_ref().map(|f| f.name()),
    })
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// The answer to an admin request, or `None` when `path` is not under [`ADMIN_PREFIX`] (a Hub
/// request). Unknown admin paths get 404, a known path with another method 405.
pub(crate) fn route(log: &RequestLog, method: &Method, path: &str) -> Option<Response> {
    let rest = path.strip_prefix(ADMIN_PREFIX)?;
    let wrong_method = || {
        json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method Not Allowed"}),
        )
    };
    Some(match rest {
        "requests" if method == Method::GET => {
            let recs: Vec<Value> = log.snapshot().iter().map(record_json).collect();
            json_reply(StatusCode::OK, &Value::Array(recs))
        }
        "requests/clear" if method == Method::POST => {
            let n = log.clear();
            json_reply(StatusCode::OK, &json!({ "cleared": n }))
        }
        "requests" | "requests/clear" => wrong_method(),
        _ => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown fakehub admin path"}),
        ),
    })
}
