//! The one mapping from errors to HTTP: RFC 9457 problem documents.
//!
//! Every error response Keel sends is `application/problem+json` with `type`, `title`,
//! `status`, `detail`, `instance`, `code` and `request_id`, plus `errors` naming each field at
//! fault. Causes of 5xx responses are logged with the request id and never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use keel_kernel::{DomainError, FieldError};
use serde::Serialize;

use crate::context;

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI identifying the problem type: `urn:keel:problem:<code>` (see `docs/errors.md`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// The request path.
    pub instance: Option<String>,
    /// A stable machine-readable code.
    pub code: String,
    /// The request id, to quote when reporting a problem.
    pub request_id: Option<String>,
    /// One entry per field at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extra members specific to the problem type.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem for the current request (request id and path come from the request context).
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        let context = context::current();
        Self {
            problem_type: format!("urn:keel:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: context.as_ref().map(|c| c.path.clone()),
            code: code.to_owned(),
            request_id: context.map(|c| c.request_id.to_string()),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// The HTTP response carrying this document.
    pub fn into_response(self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)))
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(body)
    }
}

/// Everything a request can fail with, as the HTTP layer sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A use case failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The body is not well-formed JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body's media type is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body exceeds `server.body_limit`.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request could not be read (broken stream, bad encoding).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No route matches the path.
    #[error("no route matches this path")]
    RouteNotFound,
    /// A framework-level error response whose body was not a problem document.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// The handler ran longer than `server.request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// The handler panicked.
    #[error("handler panicked")]
    Panic,
}

impl ApiError {
    /// Shorthand for a validation error on one field.
    pub fn invalid(field: &str, code: &str, message: impl Into<String>) -> Self {
        Self::Domain(DomainError::invalid(field, code, message))
    }

    fn problem(&self) -> Problem {
        match self {
            Self::Domain(error) => domain_problem(error),
            Self::MalformedJson(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body is not valid JSON: {detail}"),
            ),
            Self::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ),
            Self::PayloadTooLarge { limit } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body must not exceed {limit} bytes"),
            ),
            Self::BadRequest(detail) => {
                Problem::new(StatusCode::BAD_REQUEST, "bad_request", detail.clone())
            }
            Self::RouteNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "no endpoint exists at this path; the API reference lists every endpoint",
            ),
            Self::Status(status) => status_problem(*status),
            Self::Timeout => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "the request took too long to process; retry later",
            ),
            Self::Panic => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an unexpected error occurred; quote the request id when reporting it",
            ),
        }
    }
}

/// A generic problem for a bare status code (framework errors without a body of ours).
pub fn status_problem(status: StatusCode) -> Problem {
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "nothing exists at this path"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not support the request method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        s if s.is_server_error() => (
            "internal_error",
            "an unexpected error occurred; quote the request id when reporting it",
        ),
        _ => ("bad_request", "the request could not be processed"),
    };
    Problem::new(status, code, detail)
}

fn domain_problem(error: &DomainError) -> Problem {
    match error {
        DomainError::NotFound { resource } => Problem::new(
            StatusCode::NOT_FOUND,
            error.code(),
            format!("{resource} not found"),
        ),
        DomainError::Conflict { message, field, .. } => {
            let problem = Problem::new(StatusCode::CONFLICT, error.code(), message.clone());
            match field {
                Some(field) => problem.with_errors(vec![FieldError::new(
                    field.clone(),
                    error.code(),
                    message.clone(),
                )]),
                None => problem,
            }
        }
        DomainError::Validation(errors) => {
            let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error.code(),
                format!("invalid input in: {}", fields.join(", ")),
            )
            .with_errors(errors.clone())
        }
        DomainError::Unauthenticated => Problem::new(
            StatusCode::UNAUTHORIZED,
            error.code(),
            "authentication is required for this action",
        ),
        DomainError::InvalidCredentials { message, .. } => {
            Problem::new(StatusCode::UNAUTHORIZED, error.code(), *message)
        }
        DomainError::SecondFactorRequired { challenge } => {
            let mut problem = Problem::new(
                StatusCode::UNAUTHORIZED,
                error.code(),
                "the password is right; send a code from your authenticator (or a recovery code) with this challenge to POST /api/v1/auth/mfa/verify within 5 minutes",
            );
            problem
                .extensions
                .insert("challenge".to_owned(), challenge.clone().into());
            problem
        }
        DomainError::RateLimited { retry_after } => Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            error.code(),
            format!(
                "too many requests; retry in {} seconds",
                retry_after.as_secs().max(1)
            ),
        ),
        DomainError::Forbidden { permission } => Problem::new(
            StatusCode::FORBIDDEN,
            error.code(),
            format!("this action needs the `{permission}` permission"),
        ),
        DomainError::Refused { message, .. } => {
            Problem::new(StatusCode::FORBIDDEN, error.code(), *message)
        }
        DomainError::PreconditionFailed => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            error.code(),
            "the resource changed since you read it; fetch it again and retry",
        ),
        DomainError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.code(),
            "a required service is temporarily unavailable; retry shortly",
        ),
        DomainError::TooLarge { limit } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            error.code(),
            format!("the content is larger than the limit of {limit} bytes"),
        ),
        DomainError::UnsupportedMediaType { allowed } => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error.code(),
            format!(
                "this content is not accepted here (a file is judged by its bytes, not its name); accepted: {}",
                allowed.join(", ")
            ),
        ),
        DomainError::Upstream {
            timed_out: true, ..
        } => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            error.code(),
            "a service this request depends on did not answer in time; retry later",
        ),
        DomainError::Upstream { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            error.code(),
            "a service this request depends on failed; retry later",
        ),
        DomainError::Internal(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            error.code(),
            "an unexpected error occurred; quote the request id when reporting it",
        ),
    }
}

/// The error and its causes, outermost first, for logs.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.problem().status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let problem = self.problem();
        match self {
            Self::Domain(DomainError::Internal(_)) => {
                tracing::error!(error = %cause_chain(self), "request failed");
            }
            Self::Domain(DomainError::Unavailable(_)) => {
                tracing::warn!(error = %cause_chain(self), "dependency unavailable");
            }
            Self::Domain(DomainError::Upstream { .. }) => {
                tracing::warn!(error = %cause_chain(self), "upstream service failed");
            }
            _ => {}
        }
        let status = problem.status;
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED.as_u16() {
            // RFC 6750: a presented token that failed says so; a missing one gets the bare
            // challenge.
            let challenge = match self {
                Self::Domain(DomainError::InvalidCredentials { code, .. })
                    if *code != "invalid_credentials" =>
                {
                    r#"Bearer realm="keel", error="invalid_token""#
                }
                _ => r#"Bearer realm="keel""#,
            };
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Self::Domain(DomainError::RateLimited { retry_after }) = self
            && let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE.as_u16() {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body_of(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let error = ApiError::Domain(DomainError::internal("SELECT secret FROM vault failed"));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = body_of(response);
        assert!(!body.to_string().contains("SELECT"), "{body}");
        assert_eq!(body["code"], "internal_error");
    }

    #[test]
    fn unauthenticated_carries_a_challenge_and_unavailable_a_retry_hint() {
        let response = ApiError::Domain(DomainError::Unauthenticated).error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response =
            ApiError::Domain(DomainError::Unavailable("pool timed out".into())).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "5");
    }

    #[test]
    fn an_upstream_failure_is_502_or_504_and_never_repeats_the_upstream_answer() {
        use keel_kernel::http::OutboundError;
        let failed: DomainError = OutboundError::Unavailable {
            host: "payments.internal".into(),
            reason: "answered 500: Traceback (most recent call last)".into(),
        }
        .into();
        let response = ApiError::Domain(failed).error_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = body_of(response);
        assert_eq!(body["code"], "upstream_unavailable");
        let text = body.to_string();
        assert!(
            !text.contains("Traceback") && !text.contains("payments.internal"),
            "{text}"
        );
        let timeout: DomainError = OutboundError::Timeout {
            host: "payments.internal".into(),
        }
        .into();
        let response = ApiError::Domain(timeout).error_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body_of(response)["code"], "upstream_timeout");
    }

    #[test]
    fn validation_lists_every_field() {
        let error = ApiError::Domain(DomainError::Validation(vec![
            FieldError::new("title", "length", "too long"),
            FieldError::new("version", "format", "not semver"),
        ]));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body = body_of(response);
        assert_eq!(body["type"], "urn:keel:problem:validation_failed");
        assert_eq!(body["errors"][1]["field"], "version");
        assert_eq!(body["status"], 422);
    }
}
