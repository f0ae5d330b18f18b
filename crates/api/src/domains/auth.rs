//! `/api/v1/auth/*`: sign-up, sign-in, tokens, sessions, profile, password and email flows.

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{
    Identity, IdentityError, Me, Registration, Role, SessionView, Tokens, User, UserStatus,
};
use keel_kernel::{DomainError, SessionId, UserId};
use serde::{Deserialize, Serialize};
use validator::Validate;

use keel_telemetry::names::AUTH_EVENTS_TOTAL;

use crate::error::ApiError;
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
        .service(web::resource("/auth/password/change").route(web::post().to(change_password)))
        .service(
            web::resource("/auth/verify-email/request").route(web::post().to(request_verification)),
        );
}

/// An account as its owner or an administrator sees it (never the password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    id: UserId,
    email: String,
    full_name: Option<String>,
    status: UserStatus,
    email_verified: bool,
    email_verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<RoleRef>>,
}

/// A role named in another resource.
#[derive(Debug, Serialize)]
pub struct RoleRef {
    id: keel_identity::RoleId,
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

#[derive(Debug, Serialize)]
struct MeView {
    #[serde(flatten)]
    user: UserView,
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

#[derive(Debug, Serialize)]
struct TokensView {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
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

#[derive(Debug, Serialize)]
struct SessionJson {
    id: SessionId,
    current: bool,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
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
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    password: String,
    #[serde(default)]
    full_name: Option<String>,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct UpdateMeBody {
    #[serde(default, deserialize_with = "double_option")]
    full_name: Option<Option<String>>,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ForgotBody {
    email: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    token: String,
    new_password: String,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

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

async fn logout(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout().await)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn logout_all(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    counted("logout", identity.for_caller(&caller).logout_all().await)?;
    Ok(HttpResponse::NoContent().finish())
}

async fn sessions(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let sessions = identity.for_caller(&caller).sessions().await?;
    let items: Vec<SessionJson> = sessions.into_iter().map(SessionJson::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn revoke_session(
    Caller(caller): Caller,
    IdPath(id): IdPath<SessionId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).revoke_session(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn me(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let me = identity.for_caller(&caller).me().await?;
    Ok(HttpResponse::Ok().json(MeView::from(me)))
}

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
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "status": "accepted",
        "detail": "if an account uses this address, a reset link is on its way",
    })))
}

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

async fn request_verification(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity
        .for_caller(&caller)
        .request_email_verification()
        .await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "status": "accepted" })))
}

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
