//! Browser sessions (`auth.cookie_sessions`): the refresh token in an `HttpOnly` cookie, the
//! refresh it authenticates guarded by `Origin` and a CSRF token, and bearer clients as before.

use reqwest::Method;
use serde_json::{Value, json};

use super::ME;
use crate::support::{PASSWORD, TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

const REFRESH: &str = "/api/v1/auth/refresh";
const REFRESH_COOKIE: &str = "__Secure-keel_refresh";
const CSRF_COOKIE: &str = "__Host-keel_csrf";

/// The `Set-Cookie` lines of a response, by cookie name.
fn set_cookies(response: &reqwest::Response) -> Vec<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|line| {
            let line = line.to_str().unwrap().to_owned();
            let name = line.split('=').next().unwrap().to_owned();
            (name, line)
        })
        .collect()
}

/// The value of cookie `name` set by `response`.
fn cookie_value(cookies: &[(String, String)], name: &str) -> String {
    let line = &cookies
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is set: {cookies:?}"))
        .1;
    line.split(';').next().unwrap()[name.len() + 1..].to_owned()
}

/// A browser tab's state: the cookies it holds and the CSRF token it read.
struct Browser {
    refresh_cookie: String,
    csrf: String,
    access_token: String,
}

impl Browser {
    fn from(response_cookies: &[(String, String)], body: &Value) -> Self {
        let csrf = body["csrf_token"]
            .as_str()
            .expect("a CSRF token")
            .to_owned();
        assert_eq!(cookie_value(response_cookies, CSRF_COOKIE), csrf);
        Self {
            refresh_cookie: cookie_value(response_cookies, REFRESH_COOKIE),
            csrf,
            access_token: body["access_token"].as_str().unwrap().to_owned(),
        }
    }
}

/// Signs in in cookie mode; checks the cookies' attributes.
async fn sign_in(app: &TestApp, email: &str) -> Browser {
    let response = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": email, "password": PASSWORD, "cookie": true }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    let refresh = &cookies.iter().find(|(n, _)| n == REFRESH_COOKIE).unwrap().1;
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth/refresh",
    ] {
        assert!(refresh.contains(attribute), "{attribute} in {refresh}");
    }
    let csrf = &cookies.iter().find(|(n, _)| n == CSRF_COOKIE).unwrap().1;
    assert!(
        csrf.contains("Secure") && csrf.contains("SameSite=Strict") && csrf.contains("Path=/"),
        "{csrf}"
    );
    assert!(!csrf.contains("HttpOnly"), "the app's script reads it");
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "never in the body: {body}"
    );
    Browser::from(&cookies, &body)
}

/// `POST /auth/refresh` with the refresh cookie, an `Origin` and a CSRF token (either may be
/// left out).
async fn refresh(
    app: &TestApp,
    cookie: &str,
    origin: Option<&str>,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(REFRESH))
        .header("cookie", format!("{REFRESH_COOKIE}={cookie}"))
        .json(&json!({}));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    request.send().await.unwrap()
}

fn clears_both(response: &reqwest::Response) -> bool {
    let cookies = set_cookies(response);
    [REFRESH_COOKIE, CSRF_COOKIE].iter().all(|name| {
        cookies
            .iter()
            .any(|(n, line)| n == name && line.contains("Max-Age=0"))
    })
}

#[tokio::test]
async fn a_browser_session_refreshes_from_its_cookie_and_refuses_cross_site_posts() {
    let app = spawn_app_with(&[("APP__AUTH__COOKIE_SESSIONS", "true")]).await;
    let own = app.settings.app.public_url.clone();
    app.register("ada@example.com").await;
    let tab = sign_in(&app, "ada@example.com").await;
    let me = app
        .authed(Method::GET, ME, &tab.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    let renewed = refresh(&app, &tab.refresh_cookie, Some(&own), Some(&tab.csrf)).await;
    assert_eq!(renewed.status(), 200);
    let cookies = set_cookies(&renewed);
    let body: Value = renewed.json().await.unwrap();
    assert!(body.get("refresh_token").is_none());
    let tab2 = Browser::from(&cookies, &body);
    assert_ne!(tab2.refresh_cookie, tab.refresh_cookie, "rotated");
    assert_ne!(tab2.csrf, tab.csrf, "the CSRF token follows the rotation");

    // A page on another site can make the browser send the cookie, but not read the token.
    let forged = [
        (Some("https://evil.example"), None),
        (Some("https://evil.example"), Some(tab2.csrf.as_str())),
        (Some("null"), Some(tab2.csrf.as_str())),
        (Some(own.as_str()), None),
        (Some(own.as_str()), Some("")),
        // The token of the rotated-away session, or of nothing at all.
        (Some(own.as_str()), Some(tab.csrf.as_str())),
        (Some(own.as_str()), Some("AAAA")),
        (Some(own.as_str()), Some("not base64 !")),
    ];
    for (origin, csrf) in forged {
        let refused = refresh(&app, &tab2.refresh_cookie, origin, csrf).await;
        assert_problem(refused, 403, "auth.csrf_failed").await;
    }
    let fetch_cross_site = app
        .client
        .post(app.url(REFRESH))
        .header(
            "cookie",
            format!("{REFRESH_COOKIE}={}", tab2.refresh_cookie),
        )
        .header("sec-fetch-site", "cross-site")
        .header("x-csrf-token", &tab2.csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(fetch_cross_site, 403, "auth.csrf_failed").await;

    // None of the refusals spent the token; a client that is no browser sends no Origin.
    let renewed = refresh(&app, &tab2.refresh_cookie, None, Some(&tab2.csrf)).await;
    assert_eq!(renewed.status(), 200);
    let cookies = set_cookies(&renewed);
    let tab3 = Browser::from(&cookies, &renewed.json().await.unwrap());

    // Sign-out clears both cookies; the old cookie is then refused and cleared again.
    let out = app
        .authed(Method::POST, "/api/v1/auth/logout", &tab3.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(clears_both(&out), "{:?}", set_cookies(&out));
    let dead = refresh(&app, &tab3.refresh_cookie, Some(&own), Some(&tab3.csrf)).await;
    assert!(clears_both(&dead));
    assert_problem(dead, 401, "invalid_token").await;

    // No cookie at all: not signed in.
    let none = app.post(REFRESH, None, &json!({})).await;
    assert_problem(none, 401, "invalid_token").await;
}

#[tokio::test]
async fn bearer_clients_are_unaffected_and_cookie_mode_is_refused_while_off() {
    let app = spawn_app_with(&[("APP__AUTH__COOKIE_SESSIONS", "true")]).await;
    app.register("ada@example.com").await;
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(login.status(), 200);
    assert!(set_cookies(&login).is_empty());
    let tokens: Value = login.json().await.unwrap();
    assert!(tokens.get("csrf_token").is_none());
    let renewed = app
        .post(
            REFRESH,
            None,
            &json!({ "refresh_token": tokens["refresh_token"] }),
        )
        .await;
    assert_eq!(renewed.status(), 200);
    assert!(set_cookies(&renewed).is_empty());
    let renewed: Value = renewed.json().await.unwrap();
    assert!(renewed["refresh_token"].is_string());

    let off = spawn_app().await;
    off.register("ada@example.com").await;
    let asked = off
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD, "cookie": true }),
        )
        .await;
    let problem = assert_problem(asked, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["cookie"]);
    // A cookie someone planted means nothing while the mode is off.
    let planted = refresh(&off, "anything", Some(&off.settings.app.public_url), None).await;
    let problem = assert_problem(planted, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["refresh_token"]);
}

#[tokio::test]
async fn an_app_on_another_origin_of_the_site_may_refresh_with_its_token() {
    let app = spawn_app_with(&[
        ("APP__AUTH__COOKIE_SESSIONS", "true"),
        (
            "APP__SERVER__CORS__ALLOWED_ORIGINS",
            "https://app.example.com",
        ),
        ("APP__SERVER__CORS__ALLOW_CREDENTIALS", "true"),
    ])
    .await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url(REFRESH))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-csrf-token",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("x-csrf-token"), "{allowed}");

    app.register("ada@example.com").await;
    let tab = sign_in(&app, "ada@example.com").await;
    let renewed = refresh(
        &app,
        &tab.refresh_cookie,
        Some("https://app.example.com"),
        Some(&tab.csrf),
    )
    .await;
    assert_eq!(renewed.status(), 200);
    // A CORS origin of the same name on another port or scheme is another origin.
    let tab = Browser::from(&set_cookies(&renewed), &renewed.json().await.unwrap());
    for origin in ["http://app.example.com", "https://app.example.com:8443"] {
        let refused = refresh(&app, &tab.refresh_cookie, Some(origin), Some(&tab.csrf)).await;
        assert_problem(refused, 403, "auth.csrf_failed").await;
    }
}
