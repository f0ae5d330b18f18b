// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! `/api/v1/projects` over HTTP: created, listed, scoped to its owner, validated, documented.
//! Tests of custom rules and routes are in `custom.rs`.

mod custom;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, error_fields, spawn_app};

const PATH: &str = "/api/v1/projects";

async fn create(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.authed(Method::POST, PATH, token)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn sample() -> Value {
    json!({"name": "Website relaunch", "description": "New design and content.", "status": "planned"})
}

#[tokio::test]
async fn a_project_is_created_listed_and_hidden_from_other_users() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    let body = sample();

    let response = create(&app, &ada, &body).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["etag"], "\"v1\"");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["owner_id"], ada_id.as_str());
    assert_eq!(created["name"], body["name"], "name");
    assert_eq!(created["description"], body["description"], "description");
    assert_eq!(created["status"], body["status"], "status");
    let path = format!("{PATH}/{}", created["id"].as_str().unwrap());

    let listed: Value = app
        .authed(Method::GET, PATH, &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], created["id"]);

    for (method, with_body) in [
        (Method::GET, false),
        (Method::PATCH, true),
        (Method::DELETE, false),
    ] {
        let mut request = app.authed(method, &path, &bob);
        if with_body {
            request = request.json(&json!({}));
        }
        assert_problem(request.send().await.unwrap(), 404, "not_found").await;
    }
    let bobs: Value = app
        .authed(Method::GET, PATH, &bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["total"], 0);
    let seen = app.authed(Method::GET, &path, &admin).send().await.unwrap();
    assert_eq!(seen.status(), 200);

    let stale = app
        .authed(Method::DELETE, &path, &ada)
        .header("if-match", "\"v7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let deleted = app
        .authed(Method::DELETE, &path, &ada)
        .header("if-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let restored = app
        .authed(Method::POST, &format!("{path}/restore"), &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
}

#[tokio::test]
async fn bad_input_is_422_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let body = sample();
    let mut owned = body.clone();
    owned["owner_id"] = json!(ada_id);
    let problem = assert_problem(create(&app, &ada, &owned).await, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["owner_id"]);
    let mut wrong = body.clone();
    wrong["name"] = json!(42);
    let problem = assert_problem(create(&app, &ada, &wrong).await, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["name"]);
    let mut long = body.clone();
    long["name"] = json!("x".repeat(201));
    let problem = assert_problem(create(&app, &ada, &long).await, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["name"]);
    let bulk = json!({ "items": [body.clone(), long, body] });
    let problem = assert_problem(
        app.authed(Method::POST, &format!("{PATH}/bulk"), &ada)
            .json(&bulk)
            .send()
            .await
            .unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&problem), ["items[1].name"]);
    let listed: Value = app
        .authed(Method::GET, PATH, &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 0, "nothing was stored");
}

#[tokio::test]
async fn the_projects_endpoints_are_documented() {
    let app = spawn_app().await;
    let document = app.get_json("/openapi.json", 200).await;
    for path in [
        PATH.to_owned(),
        format!("{PATH}/{{id}}"),
        format!("{PATH}/bulk"),
    ] {
        assert!(document["paths"][&path].is_object(), "{path} is documented");
    }
}
