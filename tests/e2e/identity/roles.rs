//! Roles over HTTP: administration refused to members, the bootstrap admin, the last admin.

use reqwest::Method;
use serde_json::json;

use super::*;
use crate::support::{PASSWORD, assert_problem, error_fields, spawn_app, spawn_app_with};

#[tokio::test]
async fn members_are_refused_administration() {
    let app = spawn_app().await;
    app.admin("root@example.com").await;
    let (ada, token) = app.member("ada@example.com").await;
    for (method, path) in [
        (Method::GET, "/api/v1/users".to_owned()),
        (Method::GET, format!("/api/v1/users/{ada}")),
        (Method::DELETE, format!("/api/v1/users/{ada}")),
        (Method::GET, "/api/v1/roles".to_owned()),
        (Method::GET, "/api/v1/permissions".to_owned()),
    ] {
        let response = send(&app, method.clone(), &path, &token, None).await;
        assert_problem(response, 403, "forbidden").await;
    }
    let patch = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/users/{ada}"),
        &token,
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_problem(patch, 403, "forbidden").await;
    let anonymous = app.get("/api/v1/users").await;
    assert_problem(anonymous, 401, "unauthenticated").await;
}

#[tokio::test]
async fn the_bootstrap_admin_can_do_everything() {
    let app = spawn_app_with(&[
        ("APP__BOOTSTRAP__ADMIN_EMAIL", "boot@example.com"),
        ("APP__BOOTSTRAP__ADMIN_PASSWORD", PASSWORD),
    ])
    .await;
    let admin = app.token("boot@example.com").await;
    let (ada, member) = app.member("ada@example.com").await;

    let users = json_of(
        send(&app, Method::GET, "/api/v1/users?sort=email", &admin, None).await,
        200,
    )
    .await;
    assert_eq!(users["total"], 2);
    assert_eq!(users["items"][0]["email"], "ada@example.com");
    let permissions = json_of(
        send(&app, Method::GET, "/api/v1/permissions", &admin, None).await,
        200,
    )
    .await;
    let names: Vec<&str> = permissions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for expected in [
        "users:write",
        "roles:write",
        "api_keys:manage",
        "activity:read",
        "release_notes:write",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }

    // A new role with one permission, granted to a member, takes effect on their next request.
    let role = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/roles",
            &admin,
            Some(json!({ "name": "editor", "permissions": ["release_notes:write"] })),
        )
        .await,
        201,
    )
    .await;
    let bad = send(
        &app,
        Method::POST,
        "/api/v1/roles",
        &admin,
        Some(json!({ "name": "x", "permissions": ["nope:nope"] })),
    )
    .await;
    assert_eq!(
        error_fields(&assert_problem(bad, 422, "validation_failed").await),
        ["permissions[0]"]
    );
    let note = json!({ "version": "1.0.0", "title": "Editors write", "change_type": "feature" });
    assert_problem(
        send(
            &app,
            Method::POST,
            "/api/v1/release-notes",
            &member,
            Some(note.clone()),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let granted = send(
        &app,
        Method::POST,
        &format!("/api/v1/users/{ada}/roles"),
        &admin,
        Some(json!({ "role_id": role["id"] })),
    )
    .await;
    assert_eq!(granted.status(), 200);
    let created = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/release-notes",
            &member,
            Some(note),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["status"], "draft");
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/users/{ada}/roles/{}", role["id"].as_str().unwrap()),
        &admin,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    let denied = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/release-notes/{}", created["id"].as_str().unwrap()),
        &member,
        Some(json!({ "title": "x" })),
    )
    .await;
    assert_problem(denied, 403, "forbidden").await;

    // Soft delete and restore.
    assert_eq!(
        send(
            &app,
            Method::DELETE,
            &format!("/api/v1/users/{ada}"),
            &admin,
            None
        )
        .await
        .status(),
        204
    );
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/me", &member, None)
            .await
            .status(),
        401
    );
    let gone = json_of(
        send(
            &app,
            Method::GET,
            &format!("/api/v1/users/{ada}"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(gone["deleted_at"].is_string());
    let back = json_of(
        send(
            &app,
            Method::POST,
            &format!("/api/v1/users/{ada}/restore"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(back["deleted_at"].is_null());
    app.login_with("ada@example.com", PASSWORD).await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let me = json_of(
        send(&app, Method::GET, "/api/v1/auth/me", &admin, None).await,
        200,
    )
    .await;
    let id = me["id"].as_str().unwrap();
    let suspend = send(
        &app,
        Method::PATCH,
        &format!("/api/v1/users/{id}"),
        &admin,
        Some(json!({ "status": "suspended" })),
    )
    .await;
    assert_problem(suspend, 409, "user.last_admin").await;
    let delete = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/users/{id}"),
        &admin,
        None,
    )
    .await;
    assert_problem(delete, 409, "user.last_admin").await;
    let roles = json_of(
        send(&app, Method::GET, "/api/v1/roles", &admin, None).await,
        200,
    )
    .await;
    let admin_role = roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "admin")
        .unwrap();
    let edit = send(
        &app,
        Method::PUT,
        &format!(
            "/api/v1/roles/{}/permissions",
            admin_role["id"].as_str().unwrap()
        ),
        &admin,
        Some(json!({ "permissions": [] })),
    )
    .await;
    assert_problem(edit, 409, "role.system").await;
}
