//! Browser sessions (`auth.cookie_sessions`): for a single-page app, the refresh token lives in
//! an `HttpOnly` cookie that only `POST /auth/refresh` receives, and the access token in the
//! app's memory. Bearer and API-key clients never see a cookie.
//!
//! The refresh cookie is the only credential a browser sends on its own, so the refresh that
//! uses it is the only cookie-authenticated request, and it is guarded twice against
//! cross-site request forgery: the `Origin` must be one Keel serves (`app.public_url` or a CORS
//! origin), and `X-CSRF-Token` must carry the token derived from the refresh cookie (a signed
//! double submit: a sibling subdomain that plants a cookie cannot compute it).

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use keel_config::Settings;
use keel_identity::Tokens;
use keel_kernel::DomainError;
use sha2::Sha256;

use super::sessions::TokensView;
use crate::error::ApiError;

/// The refresh token's cookie: `Secure`-prefixed, sent only to the refresh path.
pub const REFRESH_COOKIE: &str = "__Secure-keel_refresh";
/// The CSRF token's cookie: readable by the app's script (after a reload it has no other
/// copy), host-only, every path.
pub const CSRF_COOKIE: &str = "__Host-keel_csrf";
/// The request header that must repeat the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The refusal of a refresh that may come from another site.
const CSRF_FAILED: DomainError = DomainError::Refused {
    code: "auth.csrf_failed",
    message: "a cookie-authenticated request needs the X-CSRF-Token header (from the __Host-keel_csrf cookie or the sign-in answer) and must come from one of this service's origins",
};

/// How the api treats browser sessions, from `auth.cookie_sessions`.
#[derive(Debug, Clone)]
pub struct CookieSessions {
    enabled: bool,
    /// Origins a cookie-authenticated request may come from, normalised.
    origins: Vec<String>,
    /// Cookie lifetime: the session's absolute limit (the server ends it sooner when idle).
    max_age: Duration,
    /// The one path the refresh cookie is sent to.
    refresh_path: String,
    /// `app.public_url`, without a trailing slash.
    public_url: String,
}

impl CookieSessions {
    /// The policy of `settings`.
    pub fn new(settings: &Settings) -> Self {
        let origins = std::iter::once(settings.app.public_url.as_str())
            .chain(
                settings
                    .server
                    .cors
                    .allowed_origins
                    .iter()
                    .map(String::as_str),
            )
            // `*` lets any site read responses; it never vouches for a cookie's request.
            .filter(|origin| *origin != "*")
            .filter_map(origin_of)
            .collect();
        Self {
            enabled: settings.auth.cookie_sessions,
            origins,
            max_age: settings.auth.refresh_token_max_ttl,
            refresh_path: format!("{}/auth/refresh", crate::API_PREFIX),
            public_url: settings.app.public_url.trim_end_matches('/').to_owned(),
        }
    }

    /// `app.public_url`, without a trailing slash.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether a browser may be sent to `url` after a sign-in: an absolute http(s) URL on one
    /// of this service's origins (never anywhere an attacker names: no open redirect).
    pub fn may_return_to(&self, url: &str) -> bool {
        !url.chars()
            .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
            && origin_of(url).is_some_and(|origin| {
                self.origins.contains(&origin)
                    && url.len() >= origin.len()
                    && url[..origin.len()].eq_ignore_ascii_case(&origin)
                    && matches!(
                        url.as_bytes().get(origin.len()),
                        None | Some(b'/' | b'?' | b'#')
                    )
            })
    }

    /// A browser sign-in that ends in cookie mode: the refresh and CSRF cookies set, and the
    /// browser sent on to `location` (303), where the app refreshes to get an access token.
    pub fn signed_in_redirect(&self, tokens: &Tokens, location: &str) -> HttpResponse {
        let csrf = csrf_token(&tokens.refresh_token);
        HttpResponse::SeeOther()
            .cookie(self.cookie(
                REFRESH_COOKIE,
                &tokens.refresh_token,
                &self.refresh_path,
                true,
            ))
            .cookie(self.cookie(CSRF_COOKIE, &csrf, "/", false))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::LOCATION, location.to_owned()))
            .finish()
    }

    /// Whether cookie mode is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Refuses a request for cookie mode while it is off, naming the field that asked.
    pub fn require(&self, field: &str) -> Result<(), ApiError> {
        if self.enabled {
            Ok(())
        } else {
            Err(ApiError::invalid(
                field,
                "cookie_sessions_disabled",
                "browser sessions are off on this server (auth.cookie_sessions); use the refresh token in the body",
            ))
        }
    }

    /// The answer to a sign-in or refresh in cookie mode: the access token and the CSRF token
    /// in the body, the refresh token only in its cookie.
    pub fn signed_in(&self, tokens: Tokens) -> HttpResponse {
        let csrf = csrf_token(&tokens.refresh_token);
        let mut response = HttpResponse::Ok();
        response
            .cookie(self.cookie(
                REFRESH_COOKIE,
                &tokens.refresh_token,
                &self.refresh_path,
                true,
            ))
            .cookie(self.cookie(CSRF_COOKIE, &csrf, "/", false))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        let mut view = TokensView::from(tokens);
        view.set_cookie_mode(csrf);
        response.json(view)
    }

    /// The refresh token of a cookie-authenticated refresh, once the request has shown it
    /// comes from one of this service's pages.
    pub fn refresh_token(&self, request: &HttpRequest) -> Result<String, ApiError> {
        let token = request
            .cookie(REFRESH_COOKIE)
            .map(|cookie| cookie.value().to_owned())
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::from(keel_identity::IdentityError::InvalidToken))?;
        if !self.same_origin(request) || !csrf_matches(request, &token) {
            return Err(ApiError::Domain(CSRF_FAILED));
        }
        Ok(token)
    }

    /// Tells the browser to forget both cookies (sign-out, or a refresh that failed).
    pub fn clear(&self, response: &mut HttpResponse) {
        for (name, path, http_only) in [
            (REFRESH_COOKIE, self.refresh_path.as_str(), true),
            (CSRF_COOKIE, "/", false),
        ] {
            let mut cookie = self.cookie(name, "", path, http_only);
            cookie.make_removal();
            // Only fails for a cookie that cannot be a header value; these are constants.
            let _ = response.add_cookie(&cookie);
        }
    }

    /// Whether `Origin` (or, without one, `Sec-Fetch-Site`) places the request on one of
    /// this service's pages. A client that is not a browser sends neither.
    fn same_origin(&self, request: &HttpRequest) -> bool {
        let headers = request.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            return origin
                .to_str()
                .ok()
                .and_then(origin_of)
                .is_some_and(|origin| self.origins.contains(&origin));
        }
        headers
            .get("sec-fetch-site")
            .is_none_or(|site| matches!(site.as_bytes(), b"same-origin" | b"none"))
    }

    fn cookie(&self, name: &str, value: &str, path: &str, http_only: bool) -> Cookie<'static> {
        let max_age = i64::try_from(self.max_age.as_secs()).unwrap_or(i64::MAX);
        Cookie::build(name.to_owned(), value.to_owned())
            .path(path.to_owned())
            .secure(true)
            .http_only(http_only)
            .same_site(SameSite::Strict)
            .max_age(actix_web::cookie::time::Duration::seconds(max_age))
            .finish()
    }
}

/// The CSRF token that goes with a refresh token: an HMAC keyed by the refresh token itself,
/// so nobody without the cookie can make one, and it changes with every rotation.
fn csrf_token(refresh_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(csrf_mac(refresh_token).finalize().into_bytes())
}

fn csrf_mac(refresh_token: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(refresh_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"keel.csrf.v1");
    mac
}

/// Whether the request's `X-CSRF-Token` is the one of `refresh_token` (compared in constant
/// time).
fn csrf_matches(request: &HttpRequest, refresh_token: &str) -> bool {
    request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|value| URL_SAFE_NO_PAD.decode(value.as_bytes()).ok())
        .is_some_and(|sent| csrf_mac(refresh_token).verify_slice(&sent).is_ok())
}

/// `scheme://host[:port]` of a URL or origin, lower-cased, without a default port: the form
/// browsers send in `Origin`.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host.to_owned(),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_compared_as_browsers_send_them() {
        assert_eq!(
            origin_of("https://App.Example.com:443/base/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("https://user@evil.example"), None);
    }

    #[test]
    fn a_csrf_token_belongs_to_one_refresh_token() {
        let token = csrf_token("refresh-a");
        assert_eq!(token, csrf_token("refresh-a"));
        assert_ne!(token, csrf_token("refresh-b"));
        assert!(
            csrf_mac("refresh-a")
                .verify_slice(&URL_SAFE_NO_PAD.decode(&token).unwrap())
                .is_ok()
        );
    }
}
