//! `/auth/login`, `/auth/refresh`, sign-out and the session list.

use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use chrono::{DateTime, Utc};
use keel_identity::{Identity, SessionView, Tokens};
use keel_kernel::SessionId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::cookies::CookieSessions;
use super::*;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// A token pair (in cookie mode, the access token and a CSRF token; the refresh token is in
/// its cookie).
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
    /// Opaque; single use, for `POST /auth/refresh`. Absent in cookie mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// Cookie mode only: send it as `X-CSRF-Token` with `POST /auth/refresh` (also in the
    /// `__Host-keel_csrf` cookie, for after a page reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
}

impl TokensView {
    /// The cookie-mode body: no refresh token, a CSRF token.
    pub(super) fn set_cookie_mode(&mut self, csrf_token: String) {
        self.refresh_token = None;
        self.csrf_token = Some(csrf_token);
    }
}

impl From<Tokens> for TokensView {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access_token,
            refresh_token: Some(tokens.refresh_token),
            csrf_token: None,
            token_type: "Bearer",
            expires_in: tokens.expires_in,
        }
    }
}

/// The answer to a sign-in: tokens in the body, or with `cookie` the browser-session form.
pub(super) fn signed_in(cookies: &CookieSessions, cookie: bool, tokens: Tokens) -> HttpResponse {
    if cookie {
        cookies.signed_in(tokens)
    } else {
        HttpResponse::Ok().json(TokensView::from(tokens))
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
    /// Browser apps, when `auth.cookie_sessions` is on: the refresh token goes in an
    /// `HttpOnly` cookie instead of the body.
    #[serde(default)]
    cookie: bool,
}

/// Body of `POST /auth/refresh`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Refresh)]
struct RefreshBody {
    /// The refresh token of the last sign-in or refresh. Leave it out in cookie mode: the
    /// cookie carries it, and `X-CSRF-Token` must too.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    refresh_token: Option<String>,
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
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn login(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    cookies: web::Data<CookieSessions>,
    ValidatedJson(body): ValidatedJson<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    if body.cookie {
        cookies.require("cookie")?;
    }
    let tokens = counted(
        "login",
        identity
            .for_caller(&caller)
            .login(&body.email, &body.password)
            .await,
    )?;
    Ok(signed_in(&cookies, body.cookie, tokens))
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
        (status = 403, response = crate::openapi::Forbidden),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn refresh(
    request: HttpRequest,
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    cookies: web::Data<CookieSessions>,
    ValidatedJson(body): ValidatedJson<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let (token, from_cookie) = match body.refresh_token {
        Some(token) => (token, false),
        None if cookies.enabled() => (cookies.refresh_token(&request)?, true),
        None => {
            return Err(ApiError::invalid(
                "refresh_token",
                "required",
                "send the refresh token of the last sign-in or refresh",
            ));
        }
    };
    match counted(
        "refresh",
        identity.for_caller(&caller).refresh(&token).await,
    ) {
        Ok(tokens) => Ok(signed_in(&cookies, from_cookie, tokens)),
        Err(error) => {
            let error = ApiError::from(error);
            let mut response = error.error_response();
            // A cookie whose session is over is dead weight: the app must sign in again.
            if from_cookie && response.status() == actix_web::http::StatusCode::UNAUTHORIZED {
                cookies.clear(&mut response);
            }
            Ok(response)
        }
    }
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
    cookies: web::Data<CookieSessions>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout().await)?;
    Ok(signed_out(&cookies))
}

/// 204, clearing a browser session's cookies when cookie mode is on.
fn signed_out(cookies: &CookieSessions) -> HttpResponse {
    let mut response = HttpResponse::NoContent().finish();
    if cookies.enabled() {
        cookies.clear(&mut response);
    }
    response
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
    cookies: web::Data<CookieSessions>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout_all().await)?;
    Ok(signed_out(&cookies))
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
