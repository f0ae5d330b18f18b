//! Second factor end to end: enrolment, the two-step sign-in, recovery codes, throttling,
//! turning it off, an administrator's reset, and the shapes every refusal has.

use reqwest::Method;
use serde_json::{Value, json};

use super::ME;
use crate::support::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_app_with};

/// What an authenticator app holding `secret` shows now (or `offset` steps away).
pub(super) fn code(secret: &str, offset: i64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    let totp = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        0,
        30,
        bytes,
        None,
        String::new(),
    )
    .expect("TOTP parameters");
    let at = chrono::Utc::now().timestamp() + offset * 30;
    totp.generate(u64::try_from(at).expect("after 1970"))
}

/// Signs up `email`, turns MFA on; returns (access token, secret, recovery codes).
async fn enrolled(app: &TestApp, email: &str) -> (String, String, Vec<String>) {
    let (_, token) = app.member(email).await;
    let enrolment = app
        .post("/api/v1/auth/mfa/totp", Some(&token), &json!({}))
        .await;
    assert_eq!(enrolment.status(), 200);
    let enrolment: Value = enrolment.json().await.unwrap();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/"),
        "{enrolment}"
    );
    // The code of the previous step: the test's first sign-in uses the current one.
    let confirmed = app
        .post(
            "/api/v1/auth/mfa/totp/confirm",
            Some(&token),
            &json!({ "code": code(&secret, -1) }),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let confirmed: Value = confirmed.json().await.unwrap();
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (token, secret, codes)
}

/// Signs in with the password: expects 401 `auth.mfa_required`; returns the challenge.
async fn challenge(app: &TestApp, email: &str) -> String {
    let response = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": email, "password": PASSWORD }),
        )
        .await;
    let body = assert_problem(response, 401, "auth.mfa_required").await;
    assert!(body.get("access_token").is_none());
    body["challenge"].as_str().expect("a challenge").to_owned()
}

async fn verify(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/api/v1/auth/mfa/verify", None, &body).await
}

#[tokio::test]
async fn sign_in_needs_the_code_and_a_recovery_code_works_once() {
    let app = spawn_app().await;
    let (_, secret, codes) = enrolled(&app, "ada@example.com").await;

    let first = challenge(&app, "ada@example.com").await;
    let bad = verify(&app, json!({ "challenge": first, "code": "000000" })).await;
    assert_problem(bad, 401, "auth.mfa_invalid").await;
    // One code string throughout: recomputed, it could belong to the next step.
    let current = code(&secret, 0);
    let signed_in = verify(&app, json!({ "challenge": first, "code": current })).await;
    assert_eq!(signed_in.status(), 200);
    let tokens: Value = signed_in.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        app.authed(Method::GET, ME, token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The challenge is spent; the code too, on a new challenge.
    let spent = verify(&app, json!({ "challenge": first, "code": current })).await;
    assert_problem(spent, 401, "auth.mfa_invalid").await;
    let second = challenge(&app, "ada@example.com").await;
    let replayed = verify(&app, json!({ "challenge": second, "code": current })).await;
    assert_problem(replayed, 401, "auth.mfa_invalid").await;

    // A recovery code, typed loosely, works once.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let recovered = verify(&app, json!({ "challenge": second, "recovery_code": typed })).await;
    assert_eq!(recovered.status(), 200);
    let third = challenge(&app, "ada@example.com").await;
    let reused = verify(
        &app,
        json!({ "challenge": third, "recovery_code": codes[0] }),
    )
    .await;
    assert_problem(reused, 401, "auth.mfa_invalid").await;

    // Exactly one of code and recovery_code; a forged challenge is just invalid.
    let both = verify(
        &app,
        json!({ "challenge": third, "code": "123456", "recovery_code": codes[1] }),
    )
    .await;
    assert_problem(both, 422, "validation_failed").await;
    let forged = verify(
        &app,
        json!({ "challenge": "x".repeat(43), "code": "123456" }),
    )
    .await;
    assert_problem(forged, 401, "auth.mfa_invalid").await;
    let huge = verify(
        &app,
        json!({ "challenge": "x".repeat(100_000), "code": "1" }),
    )
    .await;
    assert_eq!(
        huge.status(),
        422,
        "an oversized challenge is refused before any lookup"
    );
}

#[tokio::test]
async fn ten_wrong_codes_are_throttled() {
    let app = spawn_app().await;
    let (_, secret, _) = enrolled(&app, "ada@example.com").await;
    let challenge = challenge(&app, "ada@example.com").await;
    for attempt in 0..10 {
        let wrong = verify(&app, json!({ "challenge": challenge, "code": "000000" })).await;
        assert_eq!(wrong.status(), 401, "wrong code {attempt}");
    }
    let right = verify(
        &app,
        json!({ "challenge": challenge, "code": code(&secret, 0) }),
    )
    .await;
    assert_eq!(
        right.status(),
        429,
        "the eleventh attempt waits, right or not"
    );
    assert!(right.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn turning_it_off_needs_the_password_and_an_admin_can_reset_it() {
    let app = spawn_app().await;
    let (token, _, _) = enrolled(&app, "ada@example.com").await;
    let wrong = app
        .authed(Method::DELETE, "/api/v1/auth/mfa/totp", &token)
        .json(&json!({ "password": "not-my-password-1" }))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 422, "validation_failed").await;
    let again = app
        .post("/api/v1/auth/mfa/totp", Some(&token), &json!({}))
        .await;
    assert_problem(again, 409, "mfa.already_enabled").await;
    let off = app
        .authed(Method::DELETE, "/api/v1/auth/mfa/totp", &token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 204);
    app.login_with("ada@example.com", PASSWORD).await;

    let (_, _, _) = enrolled(&app, "grace@example.com").await;
    let grace = challenge(&app, "grace@example.com").await;
    assert!(!grace.is_empty());
    let users: Value = {
        let admin = app.admin("root@example.com").await;
        let listed = app.get_authed_json("/api/v1/users?q=grace", &admin).await;
        let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
        let (_, member) = app.member("mallory@example.com").await;
        let refused = app
            .authed(Method::DELETE, &format!("/api/v1/users/{id}/mfa"), &member)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "members cannot reset anyone's MFA");
        let reset = app
            .authed(Method::DELETE, &format!("/api/v1/users/{id}/mfa"), &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 204);
        listed
    };
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    app.login_with("grace@example.com", PASSWORD).await;

    // Each owner is told of every change, through the worker's mail jobs.
    let _worker = app.start_worker().await;
    let mails = app.wait_for_mails(4).await;
    let notice = |to: &str, subject: &str| {
        mails
            .iter()
            .any(|mail| mail.contains(&format!("To: {to}")) && mail.contains(subject))
    };
    assert!(
        notice("ada@example.com", "Two-step sign-in is on"),
        "{mails:?}"
    );
    assert!(notice("ada@example.com", "Two-step sign-in was turned off"));
    assert!(notice(
        "grace@example.com",
        "An administrator reset your two-step sign-in"
    ));
}

#[tokio::test]
async fn a_role_that_requires_mfa_grants_nothing_until_it_is_on() {
    let app = crate::support::spawn_app_with(&[("APP__AUTH__MFA__REQUIRED_ROLES", "admin")]).await;
    let admin = app.admin("root@example.com").await;
    let users = app
        .authed(Method::GET, "/api/v1/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 403, "admin without a second factor");
    // A session that never passed the second factor: it must not inherit the role.
    let other = app.token("root@example.com").await;
    let enrolment: Value = app
        .post("/api/v1/auth/mfa/totp", Some(&admin), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let secret = enrolment["secret"].as_str().unwrap();
    let on = app
        .post(
            "/api/v1/auth/mfa/totp/confirm",
            Some(&admin),
            &json!({ "code": code(secret, 0) }),
        )
        .await;
    assert_eq!(on.status(), 200);
    let users = app
        .authed(Method::GET, "/api/v1/users", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200, "the role counts once MFA is on");
    assert_eq!(
        super::me_status(&app, &other).await,
        401,
        "turning MFA on ended the password-only session"
    );
}

#[tokio::test]
async fn a_browser_session_gets_its_cookie_after_the_second_step() {
    let app = spawn_app_with(&[("APP__AUTH__COOKIE_SESSIONS", "true")]).await;
    let (_, secret, _) = enrolled(&app, "ada@example.com").await;
    let asked = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD, "cookie": true }),
        )
        .await;
    assert!(
        asked.headers().get("set-cookie").is_none(),
        "no cookie before the second factor"
    );
    let body = assert_problem(asked, 401, "auth.mfa_required").await;
    let signed_in = verify(
        &app,
        json!({ "challenge": body["challenge"], "code": code(&secret, 0), "cookie": true }),
    )
    .await;
    assert_eq!(signed_in.status(), 200);
    let cookies: Vec<String> = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Secure-keel_refresh=") && c.contains("HttpOnly")),
        "{cookies:?}"
    );
    let tokens: Value = signed_in.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none() && tokens["csrf_token"].is_string());
}

#[tokio::test]
async fn concurrent_answers_open_one_session_and_spend_a_recovery_code_once() {
    let app = spawn_app().await;
    let (_, secret, codes) = enrolled(&app, "ada@example.com").await;
    let statuses = |a: &reqwest::Response, b: &reqwest::Response| {
        let mut both = [a.status().as_u16(), b.status().as_u16()];
        both.sort_unstable();
        both
    };

    // One challenge answered twice at once with the same code.
    let pending = challenge(&app, "ada@example.com").await;
    let body = json!({ "challenge": pending, "code": code(&secret, 0) });
    let (a, b) = tokio::join!(verify(&app, body.clone()), verify(&app, body));
    assert_eq!(statuses(&a, &b), [200, 401], "one session, not two");

    // One recovery code on two challenges at once.
    let (first, second) = tokio::join!(
        challenge(&app, "ada@example.com"),
        challenge(&app, "ada@example.com")
    );
    let (a, b) = tokio::join!(
        verify(
            &app,
            json!({ "challenge": first, "recovery_code": codes[0] })
        ),
        verify(
            &app,
            json!({ "challenge": second, "recovery_code": codes[0] })
        )
    );
    assert_eq!(statuses(&a, &b), [200, 401], "a recovery code works once");
}
