//! `/api/v1/auth/*`: sign-up, sign-in, tokens, sessions, profile, password and email flows.

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{
    Identity, IdentityError, Me, Registration, Role, SessionView, Tokens, User, UserStatus,
};
use keel_kernel::{DomainError, SessionId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use validator::Validate;

use keel_telemetry::names::AUTH_EVENTS_TOTAL;

use crate::error::ApiError;
use crate::openapi::string_enum;

use crate::extract::{Caller, IdPath, ValidatedJson, double_option};
use crate::ratelimit::limit_by_ip;

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

/// Registers the `/auth` routes. Sign-in and recovery endpoints are rate limited per IP.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let limited = |path: &str, route: actix_web::Route| {
        web::resource(path).wrap(from_fn(limit_by_ip)).route(route)
    };
    cfg.service(limited("/auth/register", web::post().to(register)))
        .service(limited("/auth/login", web::post().to(login)))
        .service(limited("/auth/refresh", web::post().to(refresh)))
        .service(limited(
            "/auth/password/forgot",
            web::post().to(forgot_password),
        ))
        .service(limited(
            "/auth/password/reset",
            web::post().to(reset_password),
        ))
        .service(limited(
            "/auth/verify-email/confirm",
            web::post().to(confirm_email),
        ))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/logout-all").route(web::post().to(logout_all)))
        .service(web::resource("/auth/sessions").route(web::get().to(sessions)))
        .service(web::resource("/auth/sessions/{id}").route(web::delete().to(revoke_session)))
        .service(
            web::resource("/auth/me")
                .route(web::get().to(me))
                .route(web::patch().to(update_me)),
        )
        .service(limited(
            "/auth/password/change",
            web::post().to(change_password),
        ))
        .service(
            web::resource("/auth/verify-email/request").route(web::post().to(request_verification)),
        );
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

/// The caller's account with its effective permissions.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Me)]
struct MeView {
    #[serde(flatten)]
    user: UserView,
    /// Every permission the caller holds, e.g. `projects:write`.
    permissions: Vec<String>,
}

impl From<Me> for MeView {
    fn from(me: Me) -> Self {
        Self {
            user: UserView::new(me.user, Some(me.roles)),
            permissions: me.permissions.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Tokens, example = json!({
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig",
    "refresh_token": "mU3c0o6Yl0Z3X8f2bJ1kq9Q4r7T5w2E8y6U1i3O0p4A",
    "token_type": "Bearer",
    "expires_in": 900
}))]
struct TokensView {
    /// A JWT for `Authorization: Bearer`.
    access_token: String,
    /// Opaque; single use, for `POST /auth/refresh`.
    refresh_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
}

impl From<Tokens> for TokensView {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer",
            expires_in: tokens.expires_in,
        }
    }
}

/// A signed-in session.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
struct SessionJson {
    /// Session id.
    #[schema(value_type = Uuid)]
    id: SessionId,
    /// Whether this request uses it.
    current: bool,
    /// The client's `User-Agent` at sign-in.
    user_agent: Option<String>,
    /// The client's address at sign-in.
    ip: Option<String>,
    /// Sign-in time.
    created_at: DateTime<Utc>,
    /// Last refresh.
    last_used_at: DateTime<Utc>,
    /// When it ends unless refreshed.
    expires_at: DateTime<Utc>,
}

/// The caller's sessions.
#[derive(Debug, Serialize, ToSchema)]
struct SessionList {
    /// Live sessions, newest first.
    items: Vec<SessionJson>,
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

impl From<SessionView> for SessionJson {
    fn from(view: SessionView) -> Self {
        let s = view.session;
        Self {
            id: s.id,
            current: view.current,
            user_agent: s.user_agent,
            ip: s.ip,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
        }
    }
}

/// Body of `POST /auth/register`. Anything else (`roles`, `status`, …) is refused.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Registration, example = json!({"email": "ada@example.com", "password": "plum-orbit-kettle-7", "full_name": "Ada Lovelace"}))]
struct RegisterBody {
    /// Unique, case-insensitively.
    #[validate(length(max = crate::limits::EMAIL))]
    #[schema(max_length = 254, format = Email)]
    email: String,
    /// 12 to 128 characters by default (`auth.password_min_length`, `password_max_length`);
    /// common passwords are refused.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
    /// Display name.
    #[serde(default)]
    #[validate(length(max = crate::limits::FULL_NAME))]
    #[schema(max_length = 200)]
    full_name: Option<String>,
}

/// Body of `POST /auth/login`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Login, example = json!({"email": "ada@example.com", "password": "plum-orbit-kettle-7"}))]
struct LoginBody {
    /// The account's address.
    #[validate(length(max = crate::limits::EMAIL))]
    #[schema(max_length = 254)]
    email: String,
    /// Its password.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(max_length = 1024)]
    password: String,
}

/// Body of `POST /auth/refresh`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Refresh)]
struct RefreshBody {
    /// The refresh token of the last sign-in or refresh.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    refresh_token: String,
}

/// Body of `PATCH /auth/me`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProfileChange, example = json!({"full_name": "Ada King"}))]
struct UpdateMeBody {
    /// New display name, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[validate(length(max = crate::limits::FULL_NAME))]
    #[schema(value_type = Option<String>, max_length = 200)]
    full_name: Option<Option<String>>,
}

/// Body of `POST /auth/password/change`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordChange)]
struct ChangePasswordBody {
    /// The password in use.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(max_length = 1024)]
    current_password: String,
    /// The new one (same policy as sign-up).
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// Body of `POST /auth/password/forgot`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordForgot)]
struct ForgotBody {
    /// The account's address.
    #[validate(length(max = crate::limits::EMAIL))]
    #[schema(max_length = 254, format = Email)]
    email: String,
}

/// Body of `POST /auth/password/reset`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordReset)]
struct ResetBody {
    /// The `token` of the mailed link.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    token: String,
    /// The new password (same policy as sign-up).
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// Body of `POST /auth/verify-email/confirm`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmailConfirmation)]
struct TokenBody {
    /// The `token` of the mailed link.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    operation_id = "register",
    summary = "Create an account",
    request_body = RegisterBody,
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created; sign in next.", body = UserView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn register(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let user = counted(
        "register",
        identity
            .for_caller(&caller)
            .register(Registration {
                email: body.email,
                password: body.password,
                full_name: body.full_name,
            })
            .await,
    )?;
    Ok(HttpResponse::Created().json(UserView::new(user, None)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    operation_id = "login",
    summary = "Sign in: an access token and a refresh token",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in.", body = TokensView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn login(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let tokens = counted(
        "login",
        identity
            .for_caller(&caller)
            .login(&body.email, &body.password)
            .await,
    )?;
    Ok(HttpResponse::Ok().json(TokensView::from(tokens)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    operation_id = "refresh_tokens",
    summary = "Rotate a refresh token (reuse of a rotated one revokes the session)",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens; the old refresh token is spent.", body = TokensView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn refresh(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let tokens = counted(
        "refresh",
        identity
            .for_caller(&caller)
            .refresh(&body.refresh_token)
            .await,
    )?;
    Ok(HttpResponse::Ok().json(TokensView::from(tokens)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    operation_id = "logout",
    summary = "Revoke the current session",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn logout(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout().await)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout-all",
    tag = "auth",
    operation_id = "logout_all",
    summary = "Revoke every session of the caller",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn logout_all(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout_all().await)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/sessions",
    tag = "auth",
    operation_id = "list_sessions",
    summary = "List the caller's live sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions.", body = SessionList),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn sessions(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let sessions = identity.for_caller(&caller).sessions().await?;
    Ok(HttpResponse::Ok().json(SessionList {
        items: sessions.into_iter().map(SessionJson::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/auth/sessions/{id}",
    tag = "auth",
    operation_id = "revoke_session",
    summary = "Revoke one of the caller's sessions",
    params(("id" = Uuid, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn revoke_session(
    Caller(caller): Caller,
    IdPath(id): IdPath<SessionId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).revoke_session(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "get_me",
    summary = "The caller's account, roles and effective permissions",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The account.", body = MeView),
    )
)]
async fn me(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let me = identity.for_caller(&caller).me().await?;
    Ok(HttpResponse::Ok().json(MeView::from(me)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "update_me",
    summary = "Change the caller's profile",
    request_body = UpdateMeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = MeView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn update_me(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<UpdateMeBody>,
) -> Result<HttpResponse, ApiError> {
    let service = identity.for_caller(&caller);
    let me = match body.full_name {
        Some(full_name) => service.update_me(full_name).await?,
        None => service.me().await?,
    };
    Ok(HttpResponse::Ok().json(MeView::from(me)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/change",
    tag = "auth",
    operation_id = "change_password",
    summary = "Change the password; every other session is revoked",
    request_body = ChangePasswordBody,
    security(("bearer" = [])),
    responses(
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 204, description = "Changed."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn change_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_change",
        identity
            .for_caller(&caller)
            .change_password(&body.current_password, &body.new_password)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/forgot",
    tag = "auth",
    operation_id = "forgot_password",
    summary = "Mail a single-use reset link (always 202: no account discovery)",
    request_body = ForgotBody,
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Accepted.", body = Accepted),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn forgot_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ForgotBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_forgot",
        identity
            .for_caller(&caller)
            .forgot_password(&body.email)
            .await,
    )?;
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "accepted",
        detail: Some("if an account uses this address, a reset link is on its way"),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset",
    tag = "auth",
    operation_id = "reset_password",
    summary = "Set a new password with a reset token; every session is revoked",
    request_body = ResetBody,
    responses(
        (status = 204, description = "Reset."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn reset_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ResetBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_reset",
        identity
            .for_caller(&caller)
            .reset_password(&body.token, &body.new_password)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email/request",
    tag = "auth",
    operation_id = "request_email_verification",
    summary = "Mail an email-verification link",
    security(("bearer" = [])),
    responses(
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 202, description = "Accepted.", body = Accepted),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn request_verification(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity
        .for_caller(&caller)
        .request_email_verification()
        .await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "accepted",
        detail: None,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email/confirm",
    tag = "auth",
    operation_id = "confirm_email",
    summary = "Confirm an email address with its token",
    request_body = TokenBody,
    responses(
        (status = 204, description = "Verified."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn confirm_email(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "email_verify",
        identity
            .for_caller(&caller)
            .confirm_email(&body.token)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

/// The OpenAPI document of the `/auth` routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(
    register,
    login,
    refresh,
    logout,
    logout_all,
    sessions,
    revoke_session,
    me,
    update_me,
    change_password,
    forgot_password,
    reset_password,
    request_verification,
    confirm_email
))]
pub struct AuthDoc;
