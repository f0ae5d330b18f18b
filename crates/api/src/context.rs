//! Per-request context: the request id, visible to every log line and error body.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload};

/// Longest caller-supplied request id accepted; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id correlating a request's logs, error body and `X-Request-Id` response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The caller's id when it is reasonable (1 to 128 visible ASCII characters), else a new
    /// one: a hostile header must not break log lines or flood storage.
    pub fn from_header(value: Option<&str>) -> Self {
        match value {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID_LEN
                    && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Self(id.to_owned())
            }
            _ => Self::generate(),
        }
    }

    /// A fresh id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request's W3C trace context: the caller's `traceparent` when valid, else a new trace.
/// Logged as `trace_id` on the request span and handed to jobs the request enqueues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    span_id: String,
    flags: String,
}

impl TraceParent {
    /// The incoming `traceparent` header if it is a valid version-00 value, else a new trace.
    /// This request gets its own span id either way, as a child of the caller's.
    pub fn from_header(value: Option<&str>) -> Self {
        let span_id = random_hex(16);
        if let Some([version, trace_id, parent, flags]) = value
            .map(|v| v.trim().split('-').collect::<Vec<_>>())
            .as_deref()
            .and_then(|parts| <[&str; 4]>::try_from(parts).ok())
            && version.eq_ignore_ascii_case("00")
            && is_hex(trace_id, 32)
            && is_hex(parent, 16)
            && is_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent.bytes().any(|b| b != b'0')
        {
            return Self {
                trace_id: trace_id.to_ascii_lowercase(),
                span_id,
                flags: flags.to_ascii_lowercase(),
            };
        }
        Self {
            trace_id: random_hex(32),
            span_id,
            flags: "01".to_owned(),
        }
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The `traceparent` value naming this request's span as the parent.
    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_hex(len: usize) -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(len);
    hex
}

/// What error bodies need to know about the request being served.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id.
    pub request_id: RequestId,
    /// The request path, without the query string (which may carry secrets).
    pub path: String,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Runs `future` with `context` as the current request context.
pub async fn scope<F: Future>(context: RequestContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// The context of the request being served, if any.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate);
        ready(Ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparents_are_continued_and_others_replaced() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace = TraceParent::from_header(Some(incoming));
        assert_eq!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let value = trace.header_value();
        assert!(value.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(
            !value.contains("b7ad6b7169203331"),
            "the request is a new span"
        );
        for bad in [
            "",
            "garbage",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ] {
            let trace = TraceParent::from_header(Some(bad));
            assert_ne!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(trace.trace_id().len(), 32);
        }
    }

    #[test]
    fn reasonable_caller_ids_are_kept_and_others_replaced() {
        assert_eq!(RequestId::from_header(Some("abc-123")).as_str(), "abc-123");
        for bad in ["", "has space", "new\nline", &"x".repeat(129), "ünïcode"] {
            let id = RequestId::from_header(Some(bad));
            assert_ne!(id.as_str(), bad);
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
        }
        assert!(uuid::Uuid::parse_str(RequestId::from_header(None).as_str()).is_ok());
    }
}
