//! Identity end to end: sessions, browser sessions, accounts, roles, API keys and second
//! factors, one file each.

mod accounts;
mod api_keys;
mod cookies;
mod mfa;
mod oidc;
mod roles;
mod sessions;

use reqwest::Method;
use serde_json::json;

use crate::support::{TestApp, json_of, send};

pub(super) const ME: &str = "/api/v1/auth/me";

pub(super) async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.authed(Method::GET, ME, token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(super) async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/refresh",
        None,
        &json!({ "refresh_token": refresh_token }),
    )
    .await
}

pub(super) async fn login_attempt(app: &TestApp) -> reqwest::Response {
    app.post(
        "/api/v1/auth/login",
        None,
        &json!({ "email": "nobody@example.com", "password": "irrelevant-1234" }),
    )
    .await
}
