//! Identity over HTTP: accounts, sessions, roles, API keys and second factors, one file each.

pub mod accounts;
pub mod api_keys;
pub mod cookies;
pub mod mfa;
pub mod oidc;
pub mod roles;
pub mod sessions;

use actix_web::web;
use chrono::{DateTime, Utc};
use keel_identity::{IdentityError, Role, User, UserStatus};
use keel_kernel::{DomainError, UserId};
use keel_telemetry::names::AUTH_EVENTS_TOTAL;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;

use crate::error::ApiError;
use crate::openapi::string_enum;

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        Self::Domain(DomainError::from(error))
    }
}

/// Counts an authentication event by outcome (`auth_events_total`) and passes the result on.
fn counted<T>(event: &'static str, result: Result<T, IdentityError>) -> Result<T, IdentityError> {
    let outcome = match &result {
        Ok(_) => "success",
        Err(IdentityError::Rejected(DomainError::RateLimited { .. })) => "rate_limited",
        Err(IdentityError::Rejected(DomainError::Internal(_) | DomainError::Unavailable(_))) => {
            "error"
        }
        Err(_) => "failure",
    };
    metrics::counter!(AUTH_EVENTS_TOTAL, "event" => event, "outcome" => outcome).increment(1);
    result
}

fn user_status_schema() -> Schema {
    string_enum(UserStatus::NAMES)
}

/// An account as its owner or an administrator sees it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = User, example = json!({
    "id": "0193a6d0-0000-7000-8000-000000000001",
    "email": "ada@example.com",
    "full_name": "Ada Lovelace",
    "status": "active",
    "email_verified": true,
    "email_verified_at": "2026-11-20T09:31:00Z",
    "created_at": "2026-11-20T09:30:00Z",
    "updated_at": "2026-11-20T09:31:00Z",
    "deleted_at": null,
    "roles": [{"id": "0193a6cf-0000-7000-8000-00000000000a", "name": "member"}]
}))]
pub struct UserView {
    /// Identity.
    #[schema(value_type = Uuid)]
    id: UserId,
    /// Normalised (lower-case) address.
    email: String,
    /// Display name.
    full_name: Option<String>,
    /// Account status.
    #[schema(schema_with = user_status_schema)]
    status: UserStatus,
    /// Whether the address was confirmed.
    email_verified: bool,
    /// When it was confirmed.
    email_verified_at: Option<DateTime<Utc>>,
    /// Sign-up time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Soft deletion (administrators only see deleted accounts).
    deleted_at: Option<DateTime<Utc>>,
    /// Granted roles, where the endpoint includes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<RoleRef>>,
}

/// A role named in another resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleRef {
    /// Role id.
    #[schema(value_type = Uuid)]
    id: keel_identity::RoleId,
    /// Role name.
    name: String,
}

impl UserView {
    /// The view of an account, with its roles when given.
    pub fn new(user: User, roles: Option<Vec<Role>>) -> Self {
        Self {
            id: user.id,
            email: user.email.as_str().to_owned(),
            full_name: user.full_name,
            status: user.status,
            email_verified: user.email_verified_at.is_some(),
            email_verified_at: user.email_verified_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
            deleted_at: user.deleted_at,
            roles: roles.map(|roles| {
                roles
                    .into_iter()
                    .map(|r| RoleRef {
                        id: r.id,
                        name: r.name,
                    })
                    .collect()
            }),
        }
    }
}

/// The answer to a request whose effect happens later (a mail is sent).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    status: &'static str,
    /// What happens next.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
}

/// Registers identity's routes: sessions, accounts, roles, API keys.
pub fn configure(cfg: &mut web::ServiceConfig) {
    sessions::configure(cfg);
    accounts::configure(cfg);
    roles::configure(cfg);
    api_keys::configure(cfg);
    mfa::configure(cfg);
    oidc::configure(cfg);
}

/// Identity's operations, with the list parameters of `/users`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut document = sessions::SessionsDoc::openapi();
    document.merge(accounts::AccountsDoc::openapi());
    document.merge(roles::RolesDoc::openapi());
    document.merge(api_keys::ApiKeysDoc::openapi());
    document.merge(mfa::MfaDoc::openapi());
    document.merge(oidc::OidcDoc::openapi());
    crate::openapi::add_list_parameters(&mut document, "/users", &keel_identity::USER_LIST_SPEC);
    document
}

/// A route limited per client IP (sign-in and recovery endpoints).
fn limited(path: &str, route: actix_web::Route) -> impl actix_web::dev::HttpServiceFactory + use<> {
    web::resource(path)
        .wrap(actix_web::middleware::from_fn(
            crate::ratelimit::limit_by_ip,
        ))
        .route(route)
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<keel_identity::Identity>(
        state,
    )?])
}
