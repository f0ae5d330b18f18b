//! The HTTP edge under attack: forged `X-Forwarded-For`, rate-limit evasion by address
//! rotation, the operations surface on the public port, and production settings that would
//! leave a deployment open.

use keel_config::{Settings, Sources};
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_app_with};

/// `POST /auth/login` with one `X-Forwarded-For` header line per entry of `forwarded_for`.
async fn login_from(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded_for: &[&str],
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({ "email": email, "password": password }));
    for line in forwarded_for {
        request = request.header("x-forwarded-for", *line);
    }
    request.send().await.unwrap()
}

/// A failed login (unknown account, so no per-account backoff) from `forwarded_for`; returns
/// its status and `RateLimit-Remaining`.
async fn failed_login_from(app: &TestApp, attempt: &str, forwarded_for: &[&str]) -> (u16, String) {
    let response = login_from(
        app,
        &format!("nobody-{attempt}@example.com"),
        "wrong-guess-123",
        forwarded_for,
    )
    .await;
    let remaining = response
        .headers()
        .get("ratelimit-remaining")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), remaining)
}

/// The `ip` of the caller's only session and of their newest `auth.login` activity entry.
async fn recorded_ips(app: &TestApp, token: &str) -> (Value, Value) {
    let sessions: Value = app.get_authed_json("/api/v1/auth/sessions", token).await;
    let activity: Value = app
        .get_authed_json("/api/v1/activity?action=auth.login", token)
        .await;
    (
        sessions["items"][0]["ip"].clone(),
        activity["items"][0]["ip"].clone(),
    )
}

#[tokio::test]
async fn rotating_forwarded_for_from_an_untrusted_peer_gets_no_fresh_rate_limit_buckets() {
    // No trusted proxies (the default): the attacker writes a new X-Forwarded-For per request.
    let app = spawn_app().await;
    let limit = app.settings.rate_limit.auth_per_ip_per_minute;
    for i in 0..limit {
        let forged = [
            format!("203.0.113.{}", i % 250),
            format!("2001:db8:{i:x}::1"),
        ];
        let (status, remaining) =
            failed_login_from(&app, &i.to_string(), &[&forged[0], &forged[1]]).await;
        assert_eq!(status, 401, "attempt {i}");
        assert_eq!(
            remaining,
            (limit - 1 - i).to_string(),
            "attempt {i} counts against the peer's one bucket"
        );
    }
    let response = login_from(
        &app,
        "nobody-else@example.com",
        "wrong-guess-123",
        &["198.51.100.200"],
    )
    .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_forged_forwarded_for_never_reaches_sessions_or_the_activity_log() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let response = login_from(&app, "ada@example.com", PASSWORD, &["198.51.100.77"]).await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let (session_ip, activity_ip) =
        recorded_ips(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(session_ip, "127.0.0.1", "the session records the peer");
    assert_eq!(
        activity_ip, "127.0.0.1",
        "the activity log records the peer"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
    let app = spawn_app_with(&[("APP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    app.register("ada@example.com").await;
    // The client sent `X-Forwarded-For: 198.51.100.77`; the proxy appended the address it
    // saw, on a second header line.
    let response = login_from(
        &app,
        "ada@example.com",
        PASSWORD,
        &["198.51.100.77", "203.0.113.7"],
    )
    .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let (session_ip, activity_ip) =
        recorded_ips(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(session_ip, "203.0.113.7");
    assert_eq!(activity_ip, "203.0.113.7");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_and_each_ipv6_64_has_one_bucket() {
    let app = spawn_app_with(&[
        ("APP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32"),
        ("APP__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "3"),
    ])
    .await;
    // Rotating the forged left-most hop does not make 203.0.113.7 someone else.
    for i in 0..3 {
        let line = format!("198.51.100.{i}, 203.0.113.7");
        assert_eq!(
            failed_login_from(&app, &format!("v4-{i}"), &[&line])
                .await
                .0,
            401
        );
    }
    // Through a second trusted proxy hop, it is still the same client.
    assert_eq!(
        failed_login_from(&app, "v4-chain", &["10.9.9.9, 203.0.113.7, 127.0.0.1"])
            .await
            .0,
        429
    );
    // Another client has its own bucket.
    assert_eq!(
        failed_login_from(&app, "v4-other", &["203.0.113.8"])
            .await
            .0,
        401
    );
    // A hop the proxy should have written but is unreadable: the peer's bucket, not a fresh
    // one per garbage value and not the exhausted client's.
    assert_eq!(
        failed_login_from(&app, "garbage", &["203.0.113.7, not-an-address"]).await,
        (401, "2".to_owned())
    );

    // IPv6: one subscriber holds a whole /64; rotating inside it gets no fresh quota.
    for i in 1..=3 {
        let client = format!("2001:db8:1:2::{i:x}");
        assert_eq!(
            failed_login_from(&app, &format!("v6-{i}"), &[&client])
                .await
                .0,
            401
        );
    }
    assert_eq!(
        failed_login_from(&app, "v6-rotated", &["2001:db8:1:2:ffff:ffff:ffff:ffff"])
            .await
            .0,
        429
    );
    assert_eq!(
        failed_login_from(&app, "v6-next", &["2001:db8:1:3::1"])
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn metrics_and_the_health_report_are_served_on_the_ops_listener_only() {
    let app = spawn_app().await;
    assert_ne!(app.base, app.ops_base);
    app.get("/api/v1/release-notes").await;

    for path in ["/metrics", "/health"] {
        assert_problem(app.get(path).await, 404, "route_not_found").await;
    }
    // Load balancers and orchestrators keep probing the public port.
    assert_eq!(app.get_json("/health/live", 200).await["status"], "ok");
    assert_eq!(app.get_json("/health/ready", 200).await["status"], "ok");

    let metrics = app.ops_get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"route="/api/v1/release-notes",status="200""#),
        "the ops listener reports the api's traffic: {metrics}"
    );
    let report: Value = app.ops_get("/health").await.json().await.unwrap();
    assert!(report["version"].is_string(), "{report}");
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(app.ops_get(path).await.status(), 200, "{path}");
    }
    // The ops listener serves nothing else.
    let api = app
        .client
        .get(app.ops_url("/api/v1/release-notes"))
        .send()
        .await
        .unwrap();
    assert_problem(api, 404, "route_not_found").await;
}

#[tokio::test]
async fn disabled_docs_are_not_served() {
    let app = spawn_app_with(&[("APP__DOCS__ENABLED", "false")]).await;
    for path in [
        "/openapi.json",
        "/docs",
        "/docs/",
        "/docs/swagger-ui-bundle.js",
    ] {
        assert_problem(app.get(path).await, 404, "route_not_found").await;
    }
    assert_eq!(app.get_json("/health/live", 200).await["status"], "ok");
}

/// A production configuration that passes every check, plus `extra`.
fn production(
    extra: &[(&'static str, &'static str)],
) -> Result<Settings, keel_config::ConfigError> {
    let mut vars = vec![
        ("APP_ENV", "production"),
        (
            "APP__AUTH__JWT_SECRET",
            "Zx8Kq2Lw9Rt4Yp7Mn3Vb6Hc1Jd5Fg0Sa2Qe",
        ),
        (
            "APP__AUTH__PEPPERS__P1",
            "Qm4Lx8Rw2Tz6Yb1Nc5Vd9Hf3Jg7Ks0Pa4E",
        ),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://app.example.com"),
        ("DATABASE_URL", "postgres://keel@db/keel"),
    ];
    vars.extend_from_slice(extra);
    Settings::load_from(&Sources::from_vars(vars))
}

#[test]
fn production_hides_the_docs_and_refuses_an_open_edge_naming_the_key() {
    let settings = production(&[]).unwrap();
    assert!(!settings.docs.enabled, "no public docs unless docs.enabled");
    assert_eq!(settings.ops.host, "0.0.0.0", "scrapers reach the ops port");
    assert!(
        production(&[("APP__DOCS__ENABLED", "true")])
            .unwrap()
            .docs
            .enabled
    );

    for (var, value, key) in [
        ("APP__RATE_LIMIT__ENABLED", "false", "rate_limit.enabled"),
        (
            "APP__SERVER__CORS__ALLOWED_ORIGINS",
            "*",
            "server.cors.allowed_origins",
        ),
        (
            "APP__APP__PUBLIC_URL",
            "http://app.example.com",
            "app.public_url",
        ),
    ] {
        let err = production(&[(var, value)]).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, [key], "{var}={value}: {err}");
    }
}
