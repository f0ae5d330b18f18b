//! Outbound HTTP: the port features call other services through. The adapter
//! (`keel_infrastructure::http_client`) pools connections per host, times out, retries what is
//! safe to retry, opens a circuit per failing host, propagates the trace and counts everything;
//! a feature only says what to send.
//!
//! ```ignore
//! let response = http
//!     .send(OutboundRequest::get("https://rates.example.com/v1/eur"))
//!     .await?            // OutboundError -> DomainError::Upstream (502/504), never the body
//!     .error_for_status()?; // a 5xx that survived the retries is an upstream failure too
//! let rates: Rates = response.json()?;
//! ```

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, DomainError};

/// An HTTP method, with what the client needs to know about retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }

    /// Whether sending it twice has the effect of sending it once (RFC 9110 §9.2.2), so a
    /// failed attempt may be repeated without an idempotency key.
    pub fn is_idempotent(self) -> bool {
        matches!(self, Self::Get | Self::Head | Self::Put | Self::Delete)
    }
}

/// A request to another service.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The method.
    pub method: Method,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Extra headers (the client adds `traceparent`, `User-Agent` and `Idempotency-Key`).
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Sent as `Idempotency-Key`; it makes a `POST` or `PATCH` safe to retry.
    pub idempotency_key: Option<String>,
    /// Overrides `http_client.request_timeout` for each attempt.
    pub timeout: Option<Duration>,
}

impl OutboundRequest {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            idempotency_key: None,
            timeout: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// `POST url` (retried only with an [`OutboundRequest::idempotency_key`]).
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(mut self, body: &impl Serialize) -> Result<Self, OutboundError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|error| OutboundError::Invalid(format!("unserializable body: {error}")))?;
        self.body = Some(bytes);
        Ok(self.header("content-type", "application/json"))
    }

    /// Sets a raw body.
    #[must_use]
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends `key` as `Idempotency-Key`, which lets the client retry a `POST` or `PATCH`.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Each attempt's time limit.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether a failed attempt may be sent again.
    pub fn is_retryable(&self) -> bool {
        self.method.is_idempotent() || self.idempotency_key.is_some()
    }
}

/// What the other service answered (any status: a 404 is an answer, not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// The host that answered (for errors and logs).
    pub host: String,
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (bounded by `http_client.max_response_bytes`).
    pub body: Vec<u8>,
}

impl OutboundResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response itself when its status is below 500; a 5xx is an upstream failure.
    pub fn error_for_status(self) -> Result<Self, OutboundError> {
        if self.status >= 500 {
            return Err(OutboundError::Unavailable {
                host: self.host,
                reason: format!("answered {}", self.status),
            });
        }
        Ok(self)
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, OutboundError> {
        serde_json::from_slice(&self.body).map_err(|error| OutboundError::Unavailable {
            host: self.host.clone(),
            reason: format!("answered a body that is not the expected JSON: {error}"),
        })
    }
}

/// Why a request to another service failed. Maps to `DomainError::Upstream`: 504 for a
/// timeout, 502 otherwise, with a stable code and never the other service's words.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// No answer within the time limit (after any retries).
    #[error("{host} did not answer in time")]
    Timeout {
        /// The host called.
        host: String,
    },
    /// The host could not be reached or kept failing (after any retries).
    #[error("{host} is unavailable: {reason}")]
    Unavailable {
        /// The host called.
        host: String,
        /// What went wrong, for logs.
        reason: String,
    },
    /// The host failed so often lately that calls to it are refused for a while.
    #[error("calls to {host} are suspended after repeated failures")]
    CircuitOpen {
        /// The host called.
        host: String,
    },
    /// The answer was larger than `http_client.max_response_bytes`.
    #[error("{host} answered more than {limit} bytes")]
    TooLarge {
        /// The host called.
        host: String,
        /// The limit.
        limit: u64,
    },
    /// The request itself is malformed (not an absolute http(s) URL, a bad header): a bug.
    #[error("invalid outbound request: {0}")]
    Invalid(String),
}

impl OutboundError {
    /// The host concerned, when the request got that far.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Timeout { host }
            | Self::Unavailable { host, .. }
            | Self::CircuitOpen { host }
            | Self::TooLarge { host, .. } => Some(host),
            Self::Invalid(_) => None,
        }
    }
}

impl From<OutboundError> for DomainError {
    fn from(error: OutboundError) -> Self {
        match error {
            OutboundError::Invalid(_) => DomainError::internal(error),
            OutboundError::Timeout { .. } => DomainError::Upstream {
                timed_out: true,
                cause: Box::new(error),
            },
            _ => DomainError::Upstream {
                timed_out: false,
                cause: Box::new(error),
            },
        }
    }
}

/// Sends requests to other services.
#[async_trait]
pub trait HttpClient: Send + Sync + std::fmt::Debug {
    /// Sends `request`, retrying and timing out as configured.
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError>;
}

/// Any boxed error as an upstream failure, for adapters built on other clients.
pub fn upstream(cause: impl Into<BoxError>) -> DomainError {
    DomainError::Upstream {
        timed_out: false,
        cause: cause.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_requests_are_retryable() {
        assert!(OutboundRequest::get("http://x").is_retryable());
        assert!(OutboundRequest::new(Method::Delete, "http://x").is_retryable());
        assert!(!OutboundRequest::post("http://x").is_retryable());
        assert!(!OutboundRequest::new(Method::Patch, "http://x").is_retryable());
        assert!(
            OutboundRequest::post("http://x")
                .idempotency_key("k")
                .is_retryable()
        );
    }

    #[test]
    fn failures_map_to_502_or_504_codes_without_the_upstream_text() {
        let timeout: DomainError = OutboundError::Timeout { host: "a".into() }.into();
        assert_eq!(timeout.code(), "upstream_timeout");
        let failed: DomainError = OutboundError::Unavailable {
            host: "a".into(),
            reason: "answered 500".into(),
        }
        .into();
        assert_eq!(failed.code(), "upstream_unavailable");
        let open: DomainError = OutboundError::CircuitOpen { host: "a".into() }.into();
        assert_eq!(open.code(), "upstream_unavailable");
        let bug: DomainError = OutboundError::Invalid("no scheme".into()).into();
        assert_eq!(bug.code(), "internal_error");
        let response = OutboundResponse {
            host: "a".into(),
            status: 503,
            headers: vec![("retry-after".into(), "1".into())],
            body: b"secret stack trace".to_vec(),
        };
        assert_eq!(response.header("Retry-After"), Some("1"));
        let error = response.error_for_status().unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
