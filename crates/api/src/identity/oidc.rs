//! Sign-in with an external identity provider (OpenID Connect authorization code with PKCE):
//! `GET /auth/oidc/{provider}/start` sends the browser to the provider, and the provider sends
//! it back to `GET /auth/oidc/{provider}/callback`, which opens a Keel session.
//!
//! The `state` is checked twice: it must be one this service started and has not used (kept
//! server-side with the nonce and the PKCE verifier), and it must be the one in this browser's
//! `__Host-keel_oidc_state` cookie, so nobody can finish a sign-in in someone else's browser.

use actix_web::ResponseError as _;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use keel_identity::service::ProviderSignIn;
use keel_identity::{Identity, IdentityError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::cookies::CookieSessions;
use super::counted;
use super::sessions::TokensView;
use crate::error::ApiError;
use crate::extract::Caller;

/// The cookie binding a started sign-in to the browser that started it.
pub const STATE_COOKIE: &str = "__Host-keel_oidc_state";

/// How long a started sign-in may take (the server forgets it after as long).
const STATE_COOKIE_SECONDS: i64 = 10 * 60;

/// Query of `GET /auth/oidc/{provider}/start`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StartQuery {
    /// Where the browser goes after a cookie-mode sign-in: an absolute URL on `app.public_url`
    /// or a CORS origin. Default: `app.public_url`.
    #[param(max_length = 2048)]
    return_to: Option<String>,
}

/// Query of `GET /auth/oidc/{provider}/callback`, as the provider sends it (other parameters
/// providers add are ignored).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    /// The authorization code.
    code: Option<String>,
    /// The state the sign-in started with.
    state: Option<String>,
    /// The provider's refusal (`access_denied`, ...).
    error: Option<String>,
}

fn state_cookie(value: &str, max_age: i64) -> Cookie<'static> {
    Cookie::build(STATE_COOKIE, value.to_owned())
        .path("/")
        .secure(true)
        .http_only(true)
        // Lax, not Strict: the provider's redirect back is a cross-site navigation, and a
        // Strict cookie would not come with it.
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(max_age))
        .finish()
}

/// The query string as `T`; 422 naming what is wrong with it.
fn query<T: serde::de::DeserializeOwned>(request: &HttpRequest) -> Result<T, ApiError> {
    serde_urlencoded::from_str::<T>(request.query_string())
        .map_err(|e| ApiError::invalid("query", "invalid_parameter", e.to_string()))
}

fn redirect_uri(cookies: &CookieSessions, provider: &str) -> String {
    format!(
        "{}{}/auth/oidc/{provider}/callback",
        cookies.public_url(),
        crate::API_PREFIX
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/oidc/{provider}/start",
    tag = "auth",
    operation_id = "oidc_start",
    summary = "Sign in with an identity provider: a redirect to it",
    description = "Starts the authorization code flow with PKCE at a configured provider (`auth.oidc.providers.<provider>`): answers 302 to the provider's authorization page and sets the `__Host-keel_oidc_state` cookie that the callback checks.",
    params(
        ("provider" = String, Path, description = "The provider's configured name."),
        StartQuery,
    ),
    responses(
        (status = 302, description = "To the provider's authorization page.",
            headers(("Location" = String, description = "The provider's authorization URL."))),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 502, response = crate::openapi::BadGateway),
    )
)]
async fn start(
    Caller(caller): Caller,
    request: HttpRequest,
    provider: web::Path<String>,
    identity: web::Data<Identity>,
    cookies: web::Data<CookieSessions>,
) -> Result<HttpResponse, ApiError> {
    let query = query::<StartQuery>(&request)?;
    let return_to = match query.return_to {
        Some(url) if url.len() <= 2048 && cookies.may_return_to(&url) => url,
        Some(_) => {
            return Err(ApiError::invalid(
                "return_to",
                "not_allowed",
                "must be an absolute URL on app.public_url or one of the CORS origins",
            ));
        }
        None => format!("{}/", cookies.public_url()),
    };
    let provider = provider.into_inner();
    let redirect = counted(
        "oidc_start",
        identity
            .for_caller(&caller)
            .start_provider_sign_in(&provider, &redirect_uri(&cookies, &provider), &return_to)
            .await,
    )?;
    Ok(HttpResponse::Found()
        .cookie(state_cookie(&redirect.state, STATE_COOKIE_SECONDS))
        .insert_header((header::LOCATION, redirect.url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/oidc/{provider}/callback",
    tag = "auth",
    operation_id = "oidc_callback",
    summary = "Finish a sign-in with an identity provider",
    description = "Where the provider sends the browser back. The `state` must match the browser's `__Host-keel_oidc_state` cookie and a sign-in this service started and has not finished. With `auth.cookie_sessions` on, answers 303 to the `return_to` of the start with the browser-session cookies set (the app then calls `POST /auth/refresh`); otherwise answers the token pair as `POST /auth/login` does. An account with a Keel second factor on is asked for it as after a password (401 `auth.mfa_required` with a `challenge`; in cookie mode, in the redirect's fragment).",
    params(
        ("provider" = String, Path, description = "The provider's configured name."),
        CallbackQuery,
    ),
    responses(
        (status = 200, description = "Signed in (cookie sessions off).", body = TokensView),
        (status = 303, description = "Signed in (cookie sessions on): on to `return_to`; with a Keel second factor on, to `return_to#mfa_challenge=<challenge>` for `POST /auth/mfa/verify`."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 502, response = crate::openapi::BadGateway),
    )
)]
async fn callback(
    Caller(caller): Caller,
    request: HttpRequest,
    provider: web::Path<String>,
    identity: web::Data<Identity>,
    cookies: web::Data<CookieSessions>,
) -> Result<HttpResponse, ApiError> {
    let query = query::<CallbackQuery>(&request)?;
    let bound = request
        .cookie(STATE_COOKIE)
        .map(|cookie| cookie.value().to_owned());
    let result = async {
        if query.error.is_some() {
            return Err(IdentityError::ProviderSignInFailed);
        }
        let state = query.state.as_deref().unwrap_or_default();
        // Another browser's state, or none: a sign-in someone else started (login CSRF).
        if bound.as_deref() != Some(state) {
            return Err(IdentityError::ProviderStateInvalid);
        }
        identity
            .for_caller(&caller)
            .finish_provider_sign_in(&provider, state, query.code.as_deref().unwrap_or_default())
            .await
    }
    .await;
    let mut response = match counted("oidc_callback", result) {
        Ok((ProviderSignIn::SignedIn(tokens), return_to)) => {
            if cookies.enabled() {
                cookies.signed_in_redirect(&tokens, &return_to)
            } else {
                HttpResponse::Ok()
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .json(TokensView::from(tokens))
            }
        }
        // A browser arrives here by navigation: in cookie mode it goes back to the app, which
        // reads the challenge from the fragment (never sent to a server) and finishes with
        // `POST /auth/mfa/verify` and `"cookie": true`.
        Ok((ProviderSignIn::SecondFactor { challenge }, return_to)) if cookies.enabled() => {
            let base = return_to.split('#').next().unwrap_or_default();
            HttpResponse::SeeOther()
                .insert_header((
                    header::LOCATION,
                    format!("{base}#mfa_challenge={challenge}"),
                ))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Ok((ProviderSignIn::SecondFactor { challenge }, _)) => {
            ApiError::from(IdentityError::MfaRequired(challenge)).error_response()
        }
        Err(error) => ApiError::from(error).error_response(),
    };
    // Whatever happened, this browser is done with its state: a retry starts again.
    let mut gone = state_cookie("", 0);
    gone.make_removal();
    // Only fails for a cookie that cannot be a header value; this one is a constant.
    let _ = response.add_cookie(&gone);
    Ok(response)
}

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::limited(
        "/auth/oidc/{provider}/start",
        web::get().to(start),
    ))
    .service(super::limited(
        "/auth/oidc/{provider}/callback",
        web::get().to(callback),
    ));
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(start, callback))]
pub(super) struct OidcDoc;
