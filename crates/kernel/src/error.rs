//! The error vocabulary shared by every domain.
//!
//! Each domain crate keeps its own `thiserror` enum for the failures only it knows about and
//! converts it into [`DomainError`]; the api crate maps `DomainError` to HTTP in exactly one place.

use std::fmt;

use serde::Serialize;

/// Any error, boxed, for causes the caller only logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path of the field at fault, e.g. `title` or `items[2].name`.
    pub field: String,
    /// A sentence a person can act on.
    pub message: String,
    /// A stable machine-readable code, e.g. `length` or `unknown_parameter`.
    pub code: String,
}

impl FieldError {
    /// A field error from its three parts.
    pub fn new(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            code: code.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What can go wrong in a use case, in terms every adapter understands.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The row does not exist or lies outside the caller's scope (the two are indistinguishable
    /// on purpose: a caller must not learn that something it may not see exists).
    #[error("{resource} not found")]
    NotFound {
        /// The kind of thing looked up, e.g. `release note`.
        resource: &'static str,
    },
    /// The change collides with existing state (a unique value taken, a state already reached).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code, e.g. `release_note.version_taken`.
        code: &'static str,
        /// A sentence a person can act on.
        message: String,
        /// The input field whose value caused the conflict, when there is one.
        field: Option<String>,
    },
    /// The input broke one or more rules.
    #[error("invalid input: {}", join_fields(.0))]
    Validation(Vec<FieldError>),
    /// The caller is anonymous and the action needs an identity.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were presented but are not valid (wrong password, bad or revoked token).
    /// Every cause of one kind answers identically, so callers learn nothing from the answer.
    #[error("{message}")]
    InvalidCredentials {
        /// Stable machine-readable code, e.g. `invalid_credentials`, `invalid_token`.
        code: &'static str,
        /// A sentence a person can act on.
        message: &'static str,
    },
    /// The password was right and the account has a second factor: sign-in continues at
    /// `POST /auth/mfa/verify` with `challenge` (401 `auth.mfa_required`).
    #[error("a second factor is required")]
    SecondFactorRequired {
        /// The single-use, short-lived token naming this sign-in attempt.
        challenge: String,
    },
    /// Too many attempts; try again after `retry_after`.
    #[error("too many requests; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        /// How long until a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// The caller is known but lacks a permission.
    #[error("missing permission `{permission}`")]
    Forbidden {
        /// The permission that was required.
        permission: String,
    },
    /// The caller is known and the action is refused for a reason other than a missing
    /// permission (an API key on account self-service, an unverified account).
    #[error("{message}")]
    Refused {
        /// Stable machine-readable code, e.g. `auth.session_required`.
        code: &'static str,
        /// A sentence a person can act on.
        message: &'static str,
    },
    /// The caller's copy is stale (optimistic concurrency).
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    /// A dependency (database, cache) cannot be reached right now; retrying later may work.
    #[error("a required service is unavailable")]
    Unavailable(#[source] BoxError),
    /// The request's content is larger than the limit (413).
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The content is of a kind not accepted here, judged from its bytes (415).
    #[error("content type not accepted (accepted: {})", allowed.join(", "))]
    UnsupportedMediaType {
        /// The media types that are accepted.
        allowed: &'static [&'static str],
    },
    /// A service this one calls failed or did not answer in time (502/504); its answer is
    /// logged, never passed on.
    #[error("a service this request depends on {}", if *timed_out { "did not answer in time" } else { "failed" })]
    Upstream {
        /// No answer in time (504), rather than a failure (502).
        timed_out: bool,
        /// What happened, for logs.
        #[source]
        cause: BoxError,
    },
    /// A bug or an unexpected state; details are logged, never shown.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

fn join_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    /// The refusal for an account whose email address is not confirmed yet.
    pub const EMAIL_UNVERIFIED: Self = Self::Refused {
        code: "auth.email_unverified",
        message: "confirm your email address first: this account may only read its profile, request or confirm verification, refresh and sign out",
    };

    /// A validation error about a single field.
    pub fn invalid(
        field: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Validation(vec![FieldError::new(field, code, message)])
    }

    /// An internal error from any cause.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    /// A stable, machine-readable code for this error (the `code` member of a problem document).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict { code, .. } => code,
            Self::Validation(_) => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidCredentials { code, .. } => code,
            Self::SecondFactorRequired { .. } => "auth.mfa_required",
            Self::RateLimited { .. } => "rate_limited",
            Self::Forbidden { .. } => "forbidden",
            Self::Refused { code, .. } => code,
            Self::PreconditionFailed => "precondition_failed",
            Self::Unavailable(_) => "service_unavailable",
            Self::TooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::Upstream {
                timed_out: true, ..
            } => "upstream_timeout",
            Self::Upstream { .. } => "upstream_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_display_lists_every_field() {
        let err = DomainError::Validation(vec![
            FieldError::new("title", "length", "must not be empty"),
            FieldError::new("version", "format", "must be a semantic version"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid input: title: must not be empty; version: must be a semantic version"
        );
        assert_eq!(err.code(), "validation_failed");
    }

    #[test]
    fn conflict_keeps_its_own_code() {
        let err = DomainError::Conflict {
            code: "release_note.version_taken",
            message: "taken".into(),
            field: Some("version".into()),
        };
        assert_eq!(err.code(), "release_note.version_taken");
    }
}
