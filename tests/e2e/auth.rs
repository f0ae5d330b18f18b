//! Accounts, sessions and tokens over HTTP: the flows of the identity issue.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use keel_identity::ports::AccessTokens as _;
use keel_infrastructure::security::JwtTokens;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, assert_problem, error_fields, spawn_app, spawn_app_with};

const ME: &str = "/api/v1/auth/me";

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.authed(Method::GET, ME, token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/refresh",
        None,
        &json!({ "refresh_token": refresh_token }),
    )
    .await
}

#[tokio::test]
async fn register_login_me_refresh_logout() {
    let app = spawn_app().await;
    let user = app.register("Ada@Example.com").await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["status"], "active");
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());

    let tokens = app.login_with("ada@example.com", PASSWORD).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();

    let me: Value = app
        .authed(Method::GET, ME, access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["roles"][0]["name"], "member");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("api_keys:manage"))
    );

    let patched: Value = app
        .authed(Method::PATCH, ME, access)
        .json(&json!({ "full_name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["full_name"], "Ada Lovelace");

    let response = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(me_status(&app, new_access).await, 200);

    let sessions: Value = app
        .authed(Method::GET, "/api/v1/auth/sessions", new_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["items"][0]["current"], true);

    let logout = app
        .post("/api/v1/auth/logout", Some(new_access), &json!({}))
        .await;
    assert_eq!(logout.status(), 204);
    assert_eq!(
        me_status(&app, new_access).await,
        401,
        "the access token dies with its session"
    );
    assert_eq!(
        refresh(&app, rotated["refresh_token"].as_str().unwrap())
            .await
            .status(),
        401
    );

    assert_problem(app.get(ME).await, 401, "unauthenticated").await;

    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    for line in [
        r#"auth_events_total{event="register",outcome="success"}"#,
        r#"auth_events_total{event="login",outcome="success"}"#,
        r#"auth_events_total{event="refresh",outcome="success"}"#,
        r#"auth_events_total{event="refresh",outcome="failure"}"#,
        r#"auth_events_total{event="logout",outcome="success"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

#[tokio::test]
async fn a_reused_refresh_token_kills_the_whole_session() {
    // No grace window: the replay below counts as reuse at once (the window has its own test).
    let app = spawn_app_with(&[("APP__AUTH__REFRESH_TOKEN_GRACE", "0s")]).await;
    app.register("ada@example.com").await;
    let first = app.login_with("ada@example.com", PASSWORD).await;
    let second: Value = refresh(&app, first["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let newest_access = second["access_token"].as_str().unwrap();
    assert_eq!(me_status(&app, newest_access).await, 200);

    // The first refresh token was stolen and is replayed.
    let replay = refresh(&app, first["refresh_token"].as_str().unwrap()).await;
    assert_problem(replay, 401, "invalid_token").await;
    assert_eq!(
        refresh(&app, second["refresh_token"].as_str().unwrap())
            .await
            .status(),
        401,
        "newest refresh token killed"
    );
    assert_eq!(
        me_status(&app, newest_access).await,
        401,
        "the session's access token killed"
    );

    let admin = app.admin("root@example.com").await;
    let activity: Value = app
        .authed(
            Method::GET,
            "/api/v1/activity?action=auth.refresh_token_reused",
            &admin,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        activity["total"], 1,
        "the reuse is recorded as a security event"
    );
}

#[tokio::test]
async fn a_password_change_kills_other_sessions_access_tokens() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let laptop = app.token("ada@example.com").await;
    let phone = app.token("ada@example.com").await;

    let wrong = app
        .post(
            "/api/v1/auth/password/change",
            Some(&laptop),
            &json!({ "current_password": "not-it-at-all", "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    let problem = assert_problem(wrong, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["current_password"]);

    let changed = app
        .post(
            "/api/v1/auth/password/change",
            Some(&laptop),
            &json!({ "current_password": PASSWORD, "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_eq!(
        me_status(&app, &laptop).await,
        200,
        "the session that changed it lives on"
    );
    assert_eq!(
        me_status(&app, &phone).await,
        401,
        "every other session dies at once"
    );
    app.login_with("ada@example.com", "fresh-quartz-lamp-3")
        .await;
}

#[tokio::test]
async fn forgot_and_reset_by_mail_work_once() {
    let app = spawn_app().await;
    let _worker = app.start_worker().await;
    app.register("ada@example.com").await;
    let old_session = app.token("ada@example.com").await;

    for email in ["nobody@example.com", "ada@example.com"] {
        let response = app
            .post(
                "/api/v1/auth/password/forgot",
                None,
                &json!({ "email": email }),
            )
            .await;
        assert_eq!(response.status(), 202, "always 202, account or not");
    }
    let mails = app.wait_for_mails(1).await;
    assert_eq!(mails.len(), 1, "a mail only for the real account");
    assert!(mails[0].contains("To: ada@example.com"));
    assert!(mails[0].contains("http://127.0.0.1:8080/reset-password?token="));
    let token = app.token_from_last_mail();

    let weak = app
        .post(
            "/api/v1/auth/password/reset",
            None,
            &json!({ "token": token, "new_password": "short" }),
        )
        .await;
    assert_eq!(
        error_fields(&assert_problem(weak, 422, "validation_failed").await),
        ["new_password"]
    );
    let reset = app
        .post(
            "/api/v1/auth/password/reset",
            None,
            &json!({ "token": token, "new_password": "new-amber-kite-42" }),
        )
        .await;
    assert_eq!(reset.status(), 204);
    let again = app
        .post(
            "/api/v1/auth/password/reset",
            None,
            &json!({ "token": token, "new_password": "other-amber-kite-43" }),
        )
        .await;
    assert_eq!(
        error_fields(&assert_problem(again, 422, "validation_failed").await),
        ["token"]
    );

    assert_eq!(
        me_status(&app, &old_session).await,
        401,
        "a reset ends every session"
    );
    let old = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(old.status(), 401);
    app.login_with("ada@example.com", "new-amber-kite-42").await;
}

#[tokio::test]
async fn email_verification_when_required() {
    let app = spawn_app_with(&[("APP__AUTH__REQUIRE_EMAIL_VERIFICATION", "true")]).await;
    let _worker = app.start_worker().await;
    let user = app.register("ada@example.com").await;
    assert_eq!(user["status"], "pending_verification");
    assert!(app.wait_for_mails(1).await[0].contains("/verify-email?token="));
    let token = app.token_from_last_mail();
    let confirm = app
        .post(
            "/api/v1/auth/verify-email/confirm",
            None,
            &json!({ "token": token }),
        )
        .await;
    assert_eq!(confirm.status(), 204);
    let access = app.token("ada@example.com").await;
    let me: Value = app
        .authed(Method::GET, ME, &access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["status"], "active");
    assert_eq!(me["email_verified"], true);
    let twice = app
        .post(
            "/api/v1/auth/verify-email/confirm",
            None,
            &json!({ "token": token }),
        )
        .await;
    assert_eq!(twice.status(), 422);
}

#[tokio::test]
async fn registration_refuses_bad_input_and_mass_assignment() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({ "email": "a@example.com", "password": PASSWORD, "roles": ["admin"] }),
            "roles",
        ),
        (
            json!({ "email": "a@example.com", "password": PASSWORD, "status": "active" }),
            "status",
        ),
        (
            json!({ "email": "a@example.com", "password": "password1234" }),
            "password",
        ),
        (
            json!({ "email": "a@example.com", "password": "short" }),
            "password",
        ),
        (
            json!({ "email": "not-an-email", "password": PASSWORD }),
            "email",
        ),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/auth/register", None, &body).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field], "{body}");
    }
    app.register("a@example.com").await;
    let taken = app
        .post(
            "/api/v1/auth/register",
            None,
            &json!({ "email": "A@EXAMPLE.com", "password": PASSWORD }),
        )
        .await;
    let problem = assert_problem(taken, 409, "user.email_taken").await;
    assert_eq!(error_fields(&problem), ["email"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let strip = |mut body: Value| {
        body.as_object_mut().unwrap().remove("request_id");
        body
    };
    let wrong = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": "wrong-but-long-1" }),
        )
        .await;
    let wrong = strip(assert_problem(wrong, 401, "invalid_credentials").await);
    let unknown = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "nobody@example.com", "password": "wrong-but-long-1" }),
        )
        .await;
    let unknown = strip(assert_problem(unknown, 401, "invalid_credentials").await);
    assert_eq!(wrong, unknown);
}

#[tokio::test]
async fn forged_tampered_foreign_and_expired_tokens_are_refused() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let valid = app.token("ada@example.com").await;
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let user: keel_kernel::UserId = claims["sub"].as_str().unwrap().parse().unwrap();
    let session: keel_kernel::SessionId = claims["sid"].as_str().unwrap().parse().unwrap();

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{payload}.");

    let mut escalated = claims.clone();
    escalated["sub"] = json!(keel_kernel::UserId::new().to_string());
    let tampered = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&escalated).unwrap())
    );

    let mut other = app.settings.auth.clone();
    other.jwt_secret = "an-entirely-different-signing-secret-1234"
        .to_owned()
        .into();
    let foreign = JwtTokens::new(&other)
        .unwrap()
        .issue(user, session, Utc::now())
        .unwrap()
        .token;
    let expired = JwtTokens::new(&app.settings.auth)
        .unwrap()
        .issue(user, session, Utc::now() - chrono::TimeDelta::hours(2))
        .unwrap()
        .token;

    assert_eq!(me_status(&app, &valid).await, 200);
    for (name, token) in [
        ("alg none", alg_none.as_str()),
        ("tampered claims", tampered.as_str()),
        ("another key", foreign.as_str()),
        ("expired", expired.as_str()),
        ("garbage", "not.a.jwt"),
    ] {
        let response = app.authed(Method::GET, ME, token).send().await.unwrap();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert_problem(response, 401, "invalid_token").await;
    }
    let basic = app
        .client
        .get(app.url(ME))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn thirty_rapid_wrong_passwords_are_throttled() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let response = app
            .post(
                "/api/v1/auth/login",
                None,
                &json!({ "email": "ada@example.com", "password": "guess-guess-guess" }),
            )
            .await;
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(response.status().as_u16());
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("some attempts are throttled");
    assert!(
        first_429 <= 10,
        "backoff starts after at most 10 failures: {statuses:?}"
    );
    assert!(statuses[..first_429].iter().all(|s| *s == 401));
    let seconds: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
    assert!(seconds >= 1);
    // Even the right password waits out the backoff.
    let right = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(right, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_suspended_users_live_token_stops_at_once() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada, token) = app.member("ada@example.com").await;
    assert_eq!(me_status(&app, &token).await, 200);
    let suspended = app
        .authed(Method::PATCH, &format!("/api/v1/users/{ada}"), &admin)
        .json(&json!({ "status": "suspended" }))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    assert_eq!(me_status(&app, &token).await, 401);
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(login, 401, "account_inactive").await;
}
