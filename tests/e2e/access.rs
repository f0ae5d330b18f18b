//! Authorization over HTTP: roles and permissions, administration, API keys, the activity
//! log, release-note writes, JWKS, and rate limits (in memory and across replicas in Redis).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    PASSWORD, TestApp, assert_problem, error_fields, spawn_app, spawn_app_with, spawn_replica,
};

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{}", response.url());
    response.json().await.unwrap()
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.authed(method, path, token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

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

#[tokio::test]
async fn activity_shows_login_events_scoped_to_the_caller() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let _ = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": "wrong-guess-123" }),
        )
        .await;

    let own = json_of(
        send(&app, Method::GET, "/api/v1/activity", &ada, None).await,
        200,
    )
    .await;
    let actions: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"auth.login"), "{actions:?}");
    assert!(
        actions.contains(&"auth.login_failed"),
        "failed logins on my account are mine to see: {actions:?}"
    );
    assert!(
        own["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_user_id"] == ada_id.as_str()
                || e["subject_user_id"] == ada_id.as_str())
    );
    let entry = &own["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "auth.login")
        .unwrap();
    assert!(entry["request_id"].is_string() && entry["ip"] == "127.0.0.1");

    let everything = json_of(
        send(
            &app,
            Method::GET,
            "/api/v1/activity?action=auth.login&limit=100",
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(
        everything["total"].as_u64().unwrap() >= 2,
        "the admin sees everyone's logins"
    );
    assert_eq!(
        send(&app, Method::DELETE, "/api/v1/activity", &admin, None)
            .await
            .status(),
        405,
        "append-only"
    );
}

#[tokio::test]
async fn release_note_writes_need_the_permission_and_publish_by_patch() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let created = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/release-notes",
            &admin,
            Some(json!({ "version": "2.0.0", "title": "Big", "change_type": "breaking" })),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get_json("/api/v1/release-notes", 200).await["total"],
        0,
        "drafts are not public"
    );
    let published = json_of(
        send(
            &app,
            Method::PATCH,
            &format!("/api/v1/release-notes/{id}"),
            &admin,
            Some(json!({ "published": true })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(published["status"], "published");
    assert_eq!(app.get_json("/api/v1/release-notes", 200).await["total"], 1);
    let activity = json_of(
        send(
            &app,
            Method::GET,
            &format!("/api/v1/activity?resource_id={id}&sort=created_at"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    let actions: Vec<&str> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["release_note.created", "release_note.published"]);
    assert_eq!(
        send(
            &app,
            Method::DELETE,
            &format!("/api/v1/release-notes/{id}"),
            &admin,
            None
        )
        .await
        .status(),
        204
    );
}

#[tokio::test]
async fn jwks_lists_public_keys_for_eddsa_tokens() {
    let app = spawn_app().await;
    assert_problem(app.get("/.well-known/jwks.json").await, 404, "not_found").await;

    let private_key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBclgnKLUgGzVbjLZ6XT03lChc88be/q77dqBQBMkqQY\n-----END PRIVATE KEY-----\n";
    let app = spawn_app_with(&[
        ("APP__AUTH__JWT_ALGORITHM", "EdDSA"),
        ("APP__AUTH__JWT_PRIVATE_KEY", private_key),
        ("APP__AUTH__JWT_KEY_ID", "test-2026"),
    ])
    .await;
    let jwks = app.get_json("/.well-known/jwks.json", 200).await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kid"].as_str(),
            key["kty"].as_str(),
            key["crv"].as_str()
        ),
        (Some("test-2026"), Some("OKP"), Some("Ed25519"))
    );
    assert!(key.get("d").is_none(), "no private material");
    app.register("ada@example.com").await;
    let token = app.token("ada@example.com").await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("EdDSA"), Some("test-2026"))
    );
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/me", &token, None)
            .await
            .status(),
        200
    );
}

async fn login_attempt(app: &TestApp) -> reqwest::Response {
    app.post(
        "/api/v1/auth/login",
        None,
        &json!({ "email": "nobody@example.com", "password": "irrelevant-1234" }),
    )
    .await
}

#[tokio::test]
async fn per_ip_limits_answer_429_with_rate_limit_headers() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "3"),
        ("APP__AUTH__LOGIN_BACKOFF_AFTER", "10"),
    ])
    .await;
    for remaining in ["2", "1", "0"] {
        let response = login_attempt(&app).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
    }
    let limited = login_attempt(&app).await;
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(limited.headers().contains_key("ratelimit-reset"));
    assert_problem(limited, 429, "rate_limited").await;
    // Other endpoints are not limited.
    assert_eq!(app.get("/api/v1/release-notes").await.status(), 200);
}

#[tokio::test]
async fn with_redis_limits_and_revocations_hold_across_replicas() {
    // Needs a Redis server: CI sets TEST_REDIS_URL (the in-memory variant is tested above).
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
    let vars = [
        ("REDIS_URL", redis.as_str()),
        ("APP__REDIS__KEY_PREFIX", prefix.as_str()),
        ("APP__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "4"),
        ("APP__AUTH__LOGIN_BACKOFF_AFTER", "10"),
        ("APP__AUTH__SESSION_CACHE_TTL", "1h"),
    ];
    let first = spawn_app_with(&vars).await;
    let second = spawn_replica(&first, &vars).await;
    assert_eq!(
        first.get_json("/health/ready", 200).await["checks"][1]["name"],
        "redis"
    );

    for app in [&first, &second, &first, &second] {
        assert_eq!(login_attempt(app).await.status(), 401);
    }
    assert_problem(login_attempt(&first).await, 429, "rate_limited").await;
    assert_problem(login_attempt(&second).await, 429, "rate_limited").await;

    // A session revoked through one replica stops working on the other at once, even with a
    // long cache lifetime: the cache is shared.
    let token = {
        let app = spawn_replica(
            &first,
            &[
                ("REDIS_URL", redis.as_str()),
                ("APP__REDIS__KEY_PREFIX", prefix.as_str()),
            ],
        )
        .await;
        app.register("ada@example.com").await;
        app.token("ada@example.com").await
    };
    assert_eq!(
        send(&second, Method::GET, "/api/v1/auth/me", &token, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        first
            .post("/api/v1/auth/logout", Some(&token), &json!({}))
            .await
            .status(),
        204
    );
    assert_eq!(
        send(&second, Method::GET, "/api/v1/auth/me", &token, None)
            .await
            .status(),
        401
    );
}
