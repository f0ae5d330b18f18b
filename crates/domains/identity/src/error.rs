//! Failures of identity use cases.

use keel_kernel::{DomainError, RepoError};

/// What an identity use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Unknown email or wrong password: one answer for both.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// An access, refresh or API-key token that is malformed, expired, revoked or reused.
    #[error("the token is invalid, expired or revoked")]
    InvalidToken,
    /// The right password for an account that may not sign in (suspended, closed).
    #[error("this account cannot sign in")]
    AccountInactive,
    /// The use case needs a signed-in session, and the caller used an API key.
    #[error("this action needs a signed-in session")]
    SessionRequired,
    /// The session's password proof is older than `auth.reauthentication_window`.
    #[error("sign in again to do this")]
    ReauthenticationRequired,
    /// Only administrators may grant or revoke `admin` or change the `member` role.
    #[error("only administrators may do this")]
    AdminOnly,
    /// A reset or verification token that is unknown, expired or used.
    #[error("the link is invalid, expired or already used")]
    InvalidOneTimeToken,
    /// Another account has this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Not found (or outside the caller's scope).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change would leave no active administrator.
    #[error("the last active administrator cannot lose that role, be suspended or be deleted")]
    LastAdmin,
    /// Keel manages this role's permissions.
    #[error("the `{0}` role is managed by Keel")]
    SystemRole(String),
    /// Another role has this name.
    #[error("a role named `{0}` already exists")]
    RoleNameTaken(String),
    /// The password was right; the sign-in continues with a second factor and this challenge.
    #[error("a second factor is required")]
    MfaRequired(String),
    /// A second-factor code (or its challenge) that is wrong, used, or expired.
    #[error("the code or the challenge is invalid or expired")]
    InvalidMfaCode,
    /// An authenticator is already on.
    #[error("two-factor authentication is already on")]
    MfaAlreadyEnabled,
    /// No authenticator to confirm, use or remove.
    #[error("two-factor authentication is not set up")]
    MfaNotEnrolled,
    /// A provider's user seen for the first time, where `allow_signup` is off.
    #[error("this provider's users need an account linked before they can sign in")]
    SignupClosed,
    /// A provider's new user claims an address a Keel account already holds.
    #[error("an account with this address exists and is not linked to this provider's user")]
    ExternalEmailTaken,
    /// A provider sign-in that the provider refused, or whose code or ID token is not valid.
    #[error("the sign-in with the identity provider failed")]
    ProviderSignInFailed,
    /// A provider sign-in callback whose `state` is unknown, used, expired or not this browser's.
    #[error("the sign-in state is invalid, expired or already used")]
    ProviderStateInvalid,
    /// Shared failures: validation, permissions, storage, rate limits.
    #[error(transparent)]
    Rejected(#[from] DomainError),
}

impl From<RepoError> for IdentityError {
    fn from(error: RepoError) -> Self {
        Self::Rejected(error.into())
    }
}

impl From<IdentityError> for DomainError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::InvalidCredentials => DomainError::InvalidCredentials {
                code: "invalid_credentials",
                message: "invalid email or password",
            },
            IdentityError::InvalidToken => DomainError::InvalidCredentials {
                code: "invalid_token",
                message: "the token is invalid, expired or revoked",
            },
            IdentityError::AccountInactive => DomainError::InvalidCredentials {
                code: "account_inactive",
                message: "this account cannot sign in",
            },
            IdentityError::SessionRequired => DomainError::Refused {
                code: "auth.session_required",
                message: "this action needs a signed-in session; API keys cannot perform it",
            },
            IdentityError::ReauthenticationRequired => DomainError::InvalidCredentials {
                code: "auth.reauthentication_required",
                message: "sign in again (or change your password) to do this: the session's sign-in is older than the re-authentication window",
            },
            IdentityError::AdminOnly => DomainError::Refused {
                code: "role.admin_only",
                message: "only administrators may grant or revoke the admin role or change the member role",
            },
            IdentityError::InvalidOneTimeToken => DomainError::invalid(
                "token",
                "invalid_token",
                "is invalid, expired or already used",
            ),
            IdentityError::EmailTaken => DomainError::Conflict {
                code: "user.email_taken",
                message: "an account with this email already exists".to_owned(),
                field: Some("email".to_owned()),
            },
            IdentityError::NotFound(resource) => DomainError::NotFound { resource },
            IdentityError::LastAdmin => DomainError::Conflict {
                code: "user.last_admin",
                message: "the last active administrator cannot lose that role, be suspended or be deleted"
                    .to_owned(),
                field: None,
            },
            IdentityError::SystemRole(name) => DomainError::Conflict {
                code: "role.system",
                message: format!("the `{name}` role is managed by Keel and cannot be changed"),
                field: None,
            },
            IdentityError::RoleNameTaken(name) => DomainError::Conflict {
                code: "role.name_taken",
                message: format!("a role named `{name}` already exists"),
                field: Some("name".to_owned()),
            },
            IdentityError::MfaRequired(challenge) => DomainError::SecondFactorRequired { challenge },
            IdentityError::InvalidMfaCode => DomainError::InvalidCredentials {
                code: "auth.mfa_invalid",
                message: "the code or the challenge is invalid, used or expired",
            },
            IdentityError::MfaAlreadyEnabled => DomainError::Conflict {
                code: "mfa.already_enabled",
                message: "two-factor authentication is already on; turn it off first to enrol another authenticator".to_owned(),
                field: None,
            },
            IdentityError::MfaNotEnrolled => DomainError::Conflict {
                code: "mfa.not_enrolled",
                message: "two-factor authentication is not set up (enrol with POST /api/v1/auth/mfa/totp)".to_owned(),
                field: None,
            },
            IdentityError::SignupClosed => DomainError::Refused {
                code: "auth.signup_closed",
                message: "this identity provider's users get in only once their account is linked (auth.oidc.providers.<name>.allow_signup is off)",
            },
            IdentityError::ExternalEmailTaken => DomainError::Conflict {
                code: "auth.external_email_taken",
                message: "an account with this address already exists and is not linked to this provider's user; accounts are never linked by address".to_owned(),
                field: Some("email".to_owned()),
            },
            IdentityError::ProviderSignInFailed => DomainError::InvalidCredentials {
                code: "auth.oidc_failed",
                message: "the sign-in with the identity provider failed or was refused; start it again",
            },
            IdentityError::ProviderStateInvalid => DomainError::InvalidCredentials {
                code: "auth.oidc_state_invalid",
                message: "the sign-in's state is unknown, expired, already used or not this browser's; start it again",
            },
            IdentityError::Rejected(inner) => inner,
        }
    }
}
