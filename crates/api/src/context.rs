//! Per-request context: the request id, visible to every log line and error body.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

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
