//! The OpenAPI document and the interactive docs: complete, matching the router, committed.
//! (That `/docs` renders in a real browser without touching another host is checked by
//! `cargo xtask docs-check`, which needs Chromium.)

use std::path::Path;

use reqwest::Method;
use serde_json::Value;

use crate::support::spawn_app;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn the_document_covers_every_area_with_both_security_schemes() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");

    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/me",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{id}",
        "/api/v1/release-notes",
        "/api/v1/release-notes/{id}",
        "/api/v1/projects",
        "/api/v1/projects/{id}",
        "/api/v1/projects/{id}/restore",
        "/api/v1/projects/bulk",
        "/api/v1/users",
        "/api/v1/roles",
        "/api/v1/activity",
        "/api/v1/webhooks/{source}",
        "/api/v1/webhooks/endpoints",
        "/api/v1/ws",
        "/health/ready",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }

    // Every operation documents its success and its errors; protected ones name a scheme.
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            // A WebSocket's success is the upgrade; a provider sign-in's start, its redirect.
            assert!(
                responses
                    .keys()
                    .any(|code| code.starts_with('2') || code == "101" || code == "302"),
                "{method} {path} has a success response"
            );
            assert!(
                responses.contains_key("500"),
                "{method} {path} documents 500"
            );
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has an id"
            );
            if operation.get("security").is_some() {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} documents 401"
                );
            }
        }
    }
    let create = &paths["/api/v1/projects"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateProject"
    );
    assert!(create["responses"]["201"]["headers"]["ETag"].is_object());
    let list_parameters: Vec<&str> = paths["/api/v1/projects"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "limit",
        "offset",
        "cursor",
        "sort",
        "q",
        "status",
        "name__in",
        "created_at__gte",
    ] {
        assert!(list_parameters.contains(&name), "list parameter {name}");
    }
    let patch = &paths["/api/v1/projects/{id}"]["patch"];
    assert!(patch["responses"]["412"].is_object());
    let problem = &document["components"]["schemas"]["Problem"];
    assert!(problem["properties"]["errors"].is_object());
    assert!(document["components"]["schemas"]["Project"]["example"].is_object());

    // Every reference resolves.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = reference.split('"').next().unwrap();
        let (section, name) = target.split_once('/').unwrap();
        assert!(
            document["components"][section][name].is_object(),
            "dangling reference {target}"
        );
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let document: Value = app.get_json("/openapi.json", 200).await;
    let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    for (path, item) in document["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", id).replace("{role_id}", id);
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app
                .client
                .request(method.clone(), app.url(&concrete))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                status != 405 && body["code"] != "route_not_found",
                "{method} {concrete}: {status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_committed_document_is_current() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        committed == keel_api::openapi::document_json(),
        "docs/openapi.json is stale: run `cargo xtask openapi` and commit the result"
    );
}

#[tokio::test]
async fn the_docs_are_served_from_the_binary() {
    let app = spawn_app().await;
    let redirect = app.client.get(app.url("/docs")).send().await.unwrap();
    // reqwest follows the redirect to the page itself.
    assert_eq!(redirect.status(), 200);
    assert!(redirect.url().path().ends_with("/docs/"));
    let csp = redirect.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("http"),
        "{csp}"
    );
    let page = redirect.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    assert!(
        !page.contains("https://"),
        "the page loads nothing from another host"
    );

    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let response = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.unwrap();
        assert!(body.len() > 100, "{asset} is embedded");
        if asset == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body}");
        }
    }
    // The JSON API keeps its strict policy.
    let api = app.get("/health/live").await;
    assert_eq!(
        api.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}
