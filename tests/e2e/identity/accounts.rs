//! Accounts over HTTP: registration, password reset by mail, email verification.

use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::support::{PASSWORD, assert_problem, error_fields, spawn_app, spawn_app_with};

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
