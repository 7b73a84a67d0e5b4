//! What the gateway says itself: rate-limit headers, and the JSON error answers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use quota_client::{DenyReason, RateInfo};

/// The body of every answer: the upstream's, streamed, or a small one of ours.
pub type Body = Either<Incoming, Full<Bytes>>;

/// A small body of ours.
pub fn full(text: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(text.into()))
}

/// Milliseconds since the Unix epoch by the wall clock (reset times are wall times).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whole seconds until `at_ms`, rounded up (a client that waits this long is not early).
fn secs_until(at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms()).div_ceil(1000)
}

/// Adds the rate-limit headers of `info`, when a plan has a quota:
/// - `RateLimit-Policy: "quota";q=LIMIT` and `RateLimit: "quota";r=REMAINING;t=SECS`
///   (IETF httpapi draft, structured-field form; the window `w` is omitted because the
///   period is a calendar period, not a fixed number of seconds);
/// - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, and `X-RateLimit-Reset` in Unix epoch
///   seconds (as GitHub and most APIs send it).
pub fn rate_headers(headers: &mut HeaderMap, info: &RateInfo) {
    let (Some(limit), Some(remaining)) = (info.limit, info.remaining) else {
        return;
    };
    let remaining = remaining.min(limit);
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("ratelimit-policy", format!("\"quota\";q={limit}"));
    match info.reset_at_ms.filter(|&ms| ms > 0) {
        Some(reset) => {
            put(
                "ratelimit",
                format!("\"quota\";r={remaining};t={}", secs_until(reset)),
            );
            put("x-ratelimit-reset", reset.div_ceil(1000).to_string());
        }
        None => put("ratelimit", format!("\"quota\";r={remaining}")),
    }
    put("x-ratelimit-limit", limit.to_string());
    put("x-ratelimit-remaining", remaining.to_string());
}

/// A JSON error answer: `{"error": KIND, "message": TEXT}`.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    // Kinds and messages are fixed strings of this crate: no escaping needed, asserted.
    debug_assert!(!kind.contains(['"', '\\']) && !message.contains(['"', '\\']));
    let body = format!("{{\"error\":\"{kind}\",\"message\":\"{message}\"}}\n");
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The answer to a denied request: 403 for key problems, 429 with `Retry-After` for a
/// throttle or a spent quota, 503 when the cluster cannot be reached.
pub fn denied(reason: &DenyReason, info: &RateInfo) -> Response<Body> {
    let (status, message, retry_after) = match reason {
        DenyReason::MissingKey => (StatusCode::FORBIDDEN, "no API key was presented", None),
        DenyReason::InvalidKey => (StatusCode::FORBIDDEN, "the API key is not valid", None),
        DenyReason::Disabled => (StatusCode::FORBIDDEN, "the API key is disabled", None),
        DenyReason::Expired => (StatusCode::FORBIDDEN, "the API key has expired", None),
        DenyReason::NotCovered => (
            StatusCode::FORBIDDEN,
            "the API key is in no usage plan for this API stage",
            None,
        ),
        DenyReason::Throttled { retry_after, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests: throttled",
            Some(throttle_retry_secs(*retry_after)),
        ),
        DenyReason::QuotaExceeded { reset_at_ms, .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "the usage quota of this period is spent",
            Some(if *reset_at_ms == 0 {
                60
            } else {
                secs_until(*reset_at_ms).max(1)
            }),
        ),
        DenyReason::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the quota service cannot be reached",
            Some(1),
        ),
        DenyReason::InvalidCost => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the route's cost is invalid",
            None,
        ),
    };
    let mut r = error(status, reason.kind().as_str(), message);
    if let Some(secs) = retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    rate_headers(r.headers_mut(), info);
    r
}

/// `Retry-After` of a throttle: whole seconds rounded up, at least 1 (the header has no
/// fractions, and 0 would invite an immediate retry that is refused again).
pub fn throttle_retry_secs(retry_after: Duration) -> u64 {
    let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Property: the five rate-limit headers carry the limit, the remainder (never above
    // the limit) and the reset; nothing is sent without a quota.
    // Set-up: a RateInfo resetting in ~10 s, then one without a limit. Pass: exact values.
    #[test]
    fn headers() {
        let reset = now_ms() + 9_500;
        let mut h = HeaderMap::new();
        rate_headers(
            &mut h,
            &RateInfo {
                limit: Some(100),
                remaining: Some(42),
                reset_at_ms: Some(reset),
            },
        );
        assert_eq!(h["ratelimit-policy"], "\"quota\";q=100");
        assert_eq!(h["ratelimit"], "\"quota\";r=42;t=10");
        assert_eq!(h["x-ratelimit-limit"], "100");
        assert_eq!(h["x-ratelimit-remaining"], "42");
        assert_eq!(h["x-ratelimit-reset"], reset.div_ceil(1000).to_string());
        let mut h = HeaderMap::new();
        rate_headers(&mut h, &RateInfo::default());
        assert!(h.is_empty());
        assert_eq!(throttle_retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(throttle_retry_secs(Duration::from_millis(1001)), 2);
    }
}
