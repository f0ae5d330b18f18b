//! Request ids, security headers, compression, CORS and metrics.

use crate::support::{spawn_app, spawn_app_with};

#[tokio::test]
async fn request_ids_are_echoed_generated_or_replaced() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/api/v1/release-notes"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");

    let generated = app.get("/api/v1/release-notes").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let hostile = "x".repeat(500);
    let replaced = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", hostile.as_str())
        .send()
        .await
        .unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, hostile);
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = spawn_app().await;
    for path in ["/api/v1/release-notes", "/nope", "/health/ready"] {
        let response = app.get(path).await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(headers.contains_key("content-security-policy"), "{path}");
        // HSTS only in production (it means nothing over plain HTTP in development).
        assert!(!headers.contains_key("strict-transport-security"), "{path}");
    }
}

#[tokio::test]
async fn bodies_are_compressed_when_the_client_accepts_it() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.release_note(&format!("1.{i}.0"), &"Compression ".repeat(10), true)
            .await;
    }
    let response = app
        .client
        .get(app.url("/api/v1/release-notes"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = spawn_app_with(&[(
        "APP__SERVER__CORS__ALLOWED_ORIGINS",
        "https://app.example.com",
    )])
    .await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/release-notes"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    let allowed = app
        .client
        .get(app.url("/api/v1/release-notes"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let exposed = allowed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");

    let foreign = app
        .client
        .get(app.url("/api/v1/release-notes"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    // The browser enforces CORS: without the allow header it hides the response from the page.
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let foreign_preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/release-notes"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert!(
        !foreign_preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn metrics_label_route_templates_not_raw_paths() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    app.get(&format!("/api/v1/release-notes/{id}")).await;
    app.get("/definitely/not/a/route").await;
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"route="/api/v1/release-notes/{id}",status="404""#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&id.to_string()),
        "raw ids must not become labels"
    );
    assert!(!metrics.contains("/definitely/not/a/route"));
    assert!(metrics.contains(r#"route="unmatched""#));
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
}
