//! `/auth/login`, `/auth/refresh`, sign-out and the session list.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{Identity, SessionView, Tokens};
use keel_kernel::SessionId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::*;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// A token pair.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Tokens, example = json!({
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.sig",
    "refresh_token": "mU3c0o6Yl0Z3X8f2bJ1kq9Q4r7T5w2E8y6U1i3O0p4A",
    "token_type": "Bearer",
    "expires_in": 900
}))]
pub(super) struct TokensView {
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

/// Registers the session routes. Sign-in and refresh are rate limited per IP.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(limited("/auth/login", web::post().to(login)))
        .service(limited("/auth/refresh", web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/logout-all").route(web::post().to(logout_all)))
        .service(web::resource("/auth/sessions").route(web::get().to(sessions)))
        .service(web::resource("/auth/sessions/{id}").route(web::delete().to(revoke_session)));
}

/// The OpenAPI document of the session routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(login, refresh, logout, logout_all, sessions, revoke_session))]
pub(super) struct SessionsDoc;
