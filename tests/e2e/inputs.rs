//! Bounded inputs: every string in a request body has a documented maximum, enforced before
//! any store, counter or activity entry is touched (a 900 KB "email" on failed logins used to
//! write 900 KB activity rows and counter keys).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, assert_problem, error_fields, spawn_app};

/// Rows in the activity table, counted in SQL (not through the API, which pages).
async fn activity_rows(app: &TestApp) -> i64 {
    use sea_orm::ConnectionTrait;
    let backend = app.pool.get_database_backend();
    let row = app
        .pool
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM activity",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Sends `body` to `path`, with `token` when given.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// Asserts a 422 whose errors name `field` with code `length`.
async fn assert_too_long(response: reqwest::Response, field: &str, what: &str) {
    let status = response.status().as_u16();
    assert_eq!(status, 422, "{what}: status");
    let problem = assert_problem(response, 422, "validation_failed").await;
    let named: Vec<&Value> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["field"] == field)
        .collect();
    assert!(
        named.iter().any(|e| e["code"] == "length"),
        "{what}: expected a `length` error on `{field}`, got {:?}",
        error_fields(&problem)
    );
}

fn huge_email(bytes: usize) -> String {
    format!("{}@example.com", "x".repeat(bytes))
}

#[tokio::test]
async fn oversized_emails_are_refused_before_any_row_or_counter_is_written() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let before = activity_rows(&app).await;

    // Under the 1 MiB body limit, so the field rule (not the size limit) answers.
    let email = huge_email(300 * 1024);
    for (path, body) in [
        (
            "/api/v1/auth/login",
            json!({ "email": email, "password": "wrong-guess-123" }),
        ),
        (
            "/api/v1/auth/register",
            json!({ "email": email, "password": PASSWORD }),
        ),
        ("/api/v1/auth/password/forgot", json!({ "email": email })),
    ] {
        assert_too_long(
            send(&app, Method::POST, path, None, &body).await,
            "email",
            path,
        )
        .await;
    }

    // The reported attack: five failed logins with a 900 KB "email".
    let email = huge_email(900 * 1024);
    for _ in 0..5 {
        let response = send(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            &json!({ "email": email, "password": "wrong-guess-123" }),
        )
        .await;
        // 900 KB fits under the 1 MiB body limit: the field rule answers.
        assert_too_long(response, "email", "900 KB login").await;
    }
    // One character over the limit is refused just the same.
    let local = "a".repeat(64);
    let at_limit = format!("{local}@{}.example.com", "b".repeat(254 - 64 - 1 - 12));
    assert_eq!(at_limit.chars().count(), 254);
    let response = send(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        &json!({ "email": format!("{at_limit}x"), "password": "wrong-guess-123" }),
    )
    .await;
    assert_too_long(response, "email", "255 characters").await;

    assert_eq!(
        activity_rows(&app).await,
        before,
        "no refused request wrote an activity entry"
    );
}

#[tokio::test]
async fn an_over_long_field_on_each_write_endpoint_is_422_naming_it() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let (admin, ada) = (admin.as_str(), ada.as_str());
    let long = |n: usize| "x".repeat(n);
    let many = |n: usize| -> Vec<String> { (0..n).map(|i| format!("p{i}:read")).collect() };
    let project: Value = send(
        &app,
        Method::POST,
        "/api/v1/projects",
        Some(ada),
        &json!({ "name": "Website" }),
    )
    .await
    .json()
    .await
    .unwrap();
    let project_id = project["id"].as_str().unwrap().to_owned();
    let note = app.release_note("1.0.0", "First", false).await;
    let someone = uuid::Uuid::now_v7();

    let cases: Vec<(Method, String, Option<&str>, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/auth/register".into(),
            None,
            json!({ "email": "new@example.com", "password": long(1025) }),
            "password",
        ),
        (
            Method::POST,
            "/api/v1/auth/register".into(),
            None,
            json!({ "email": "new@example.com", "password": PASSWORD, "full_name": long(201) }),
            "full_name",
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            None,
            json!({ "email": "ada@example.com", "password": long(1025) }),
            "password",
        ),
        (
            Method::POST,
            "/api/v1/auth/refresh".into(),
            None,
            json!({ "refresh_token": long(513) }),
            "refresh_token",
        ),
        (
            Method::PATCH,
            "/api/v1/auth/me".into(),
            Some(ada),
            json!({ "full_name": long(201) }),
            "full_name",
        ),
        (
            Method::POST,
            "/api/v1/auth/password/change".into(),
            Some(ada),
            json!({ "current_password": long(1025), "new_password": PASSWORD }),
            "current_password",
        ),
        (
            Method::POST,
            "/api/v1/auth/password/reset".into(),
            None,
            json!({ "token": long(513), "new_password": PASSWORD }),
            "token",
        ),
        (
            Method::POST,
            "/api/v1/auth/verify-email/confirm".into(),
            None,
            json!({ "token": long(513) }),
            "token",
        ),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(ada),
            json!({ "name": long(101) }),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(ada),
            json!({ "name": "ci", "scopes": many(101) }),
            "scopes",
        ),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(ada),
            json!({ "name": "ci", "scopes": [format!("{}:read", long(300))] }),
            "scopes",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{ada_id}"),
            Some(admin),
            json!({ "full_name": long(201) }),
            "full_name",
        ),
        (
            Method::POST,
            "/api/v1/roles".into(),
            Some(admin),
            json!({ "name": long(65) }),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/roles".into(),
            Some(admin),
            json!({ "name": "editor", "description": long(501) }),
            "description",
        ),
        (
            Method::POST,
            "/api/v1/roles".into(),
            Some(admin),
            json!({ "name": "editor", "permissions": many(101) }),
            "permissions",
        ),
        (
            Method::PUT,
            format!("/api/v1/roles/{someone}/permissions"),
            Some(admin),
            json!({ "permissions": many(101) }),
            "permissions",
        ),
        (
            Method::POST,
            "/api/v1/release-notes".into(),
            Some(admin),
            json!({ "version": "2.0.0", "title": long(201), "change_type": "feature" }),
            "title",
        ),
        (
            Method::POST,
            "/api/v1/release-notes".into(),
            Some(admin),
            json!({ "version": long(65), "title": "T", "change_type": "feature" }),
            "version",
        ),
        (
            Method::POST,
            "/api/v1/release-notes".into(),
            Some(admin),
            json!({ "version": "2.0.0", "title": "T", "body": long(100_001), "change_type": "feature" }),
            "body",
        ),
        (
            Method::PATCH,
            format!("/api/v1/release-notes/{}", note.id),
            Some(admin),
            json!({ "title": long(201) }),
            "title",
        ),
        (
            Method::POST,
            "/api/v1/projects".into(),
            Some(ada),
            json!({ "name": long(201) }),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/projects".into(),
            Some(ada),
            json!({ "name": "P", "description": long(10_001) }),
            "description",
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{project_id}"),
            Some(ada),
            json!({ "name": long(201) }),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/projects/bulk".into(),
            Some(ada),
            json!({ "items": [{ "name": "ok" }, { "name": long(201) }] }),
            "items[1].name",
        ),
    ];
    let before = activity_rows(&app).await;
    for (method, path, token, body, field) in cases {
        let what = format!("{method} {path} ({field})");
        assert_too_long(send(&app, method, &path, token, &body).await, field, &what).await;
    }
    assert_eq!(activity_rows(&app).await, before, "nothing was recorded");

    // Query strings that reach a store are bounded the same way.
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/projects?q={}", long(201)),
            ada,
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["q"]);
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/activity?action={}", long(201)),
            ada,
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["action"]);
}

#[tokio::test]
async fn the_openapi_document_shows_the_maximums() {
    let app = spawn_app().await;
    let document = app.get_json("/openapi.json", 200).await;
    let schemas = &document["components"]["schemas"];
    assert_eq!(schemas["Login"]["properties"]["email"]["maxLength"], 254);
    assert_eq!(
        schemas["Login"]["properties"]["password"]["maxLength"],
        1024
    );
    assert_eq!(
        schemas["Registration"]["properties"]["email"]["maxLength"],
        254
    );
    assert_eq!(
        schemas["PasswordReset"]["properties"]["token"]["maxLength"],
        512
    );
    assert_eq!(
        schemas["CreateRole"]["properties"]["permissions"]["maxItems"],
        100
    );
    assert_eq!(
        schemas["CreateProject"]["properties"]["name"]["maxLength"],
        200
    );
    let q = document["paths"]["/api/v1/projects"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "q")
        .unwrap()
        .clone();
    assert_eq!(q["schema"]["maxLength"], 200, "{q}");
}
