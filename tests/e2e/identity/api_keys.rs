//! API keys over HTTP: shown once, narrowed to the owner's permissions, private.

use reqwest::Method;
use serde_json::json;

use super::*;
use crate::support::{assert_problem, error_fields, spawn_app};

#[tokio::test]
async fn api_keys_are_shown_once_narrowed_and_private() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;

    let escalate = send(
        &app,
        Method::POST,
        "/api/v1/api-keys",
        &ada,
        Some(json!({ "name": "ci", "scopes": ["users:write"] })),
    )
    .await;
    assert_eq!(
        error_fields(&assert_problem(escalate, 422, "validation_failed").await),
        ["scopes[0]"]
    );

    let created = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/api-keys",
            &ada,
            Some(json!({ "name": "ci" })),
        )
        .await,
        201,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("keel_"));
    let listed = json_of(
        send(&app, Method::GET, "/api/v1/api-keys", &ada, None).await,
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(
        listed["items"][0].get("key").is_none(),
        "the key is shown once only"
    );

    let with_key = |path: &str| {
        app.client
            .get(app.url(path))
            .header("x-api-key", key.clone())
    };
    let me = json_of(with_key("/api/v1/auth/me").send().await.unwrap(), 200).await;
    assert_eq!(me["email"], "ada@example.com");
    assert_problem(
        app.client
            .get(app.url("/api/v1/auth/me"))
            .header("x-api-key", format!("{key}x"))
            .send()
            .await
            .unwrap(),
        401,
        "invalid_token",
    )
    .await;

    // A key scoped to nothing cannot even list keys.
    let narrow = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/api-keys",
            &ada,
            Some(json!({ "name": "read-only", "scopes": [] })),
        )
        .await,
        201,
    )
    .await;
    let narrow_key = narrow["key"].as_str().unwrap();
    let listing = app
        .client
        .get(app.url("/api/v1/api-keys"))
        .header("x-api-key", narrow_key)
        .send()
        .await
        .unwrap();
    assert_problem(listing, 403, "forbidden").await;

    let id = created["id"].as_str().unwrap();
    assert_problem(
        send(
            &app,
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            &bob,
            None,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        send(
            &app,
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            &ada,
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        with_key("/api/v1/auth/me").send().await.unwrap().status(),
        401,
        "a deleted key stops working"
    );
}
