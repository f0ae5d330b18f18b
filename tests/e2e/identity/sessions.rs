//! Sessions over HTTP: sign-in, refresh rotation and reuse detection, sign-out, token
//! forgery, throttling, JWKS, and limits and revocations across replicas.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use keel_identity::security::AccessTokens as _;
use keel_infrastructure::identity::JwtTokens;
use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::support::{
    PASSWORD, assert_problem, error_fields, spawn_app, spawn_app_with, spawn_replica,
};

#[tokio::test]
async fn register_login_me_refresh_logout() {
    let app = spawn_app().await;
    let user = app.register("Ada@Example.com").await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["status"], "active");
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());

    let tokens = app.login_with("ada@example.com", PASSWORD).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();

    let me: Value = app
        .authed(Method::GET, ME, access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["roles"][0]["name"], "member");
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("api_keys:manage"))
    );

    let patched: Value = app
        .authed(Method::PATCH, ME, access)
        .json(&json!({ "full_name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["full_name"], "Ada Lovelace");

    let response = refresh(&app, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(me_status(&app, new_access).await, 200);

    let sessions: Value = app
        .authed(Method::GET, "/api/v1/auth/sessions", new_access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["items"][0]["current"], true);

    let logout = app
        .post("/api/v1/auth/logout", Some(new_access), &json!({}))
        .await;
    assert_eq!(logout.status(), 204);
    assert_eq!(
        me_status(&app, new_access).await,
        401,
        "the access token dies with its session"
    );
    assert_eq!(
        refresh(&app, rotated["refresh_token"].as_str().unwrap())
            .await
            .status(),
        401
    );

    assert_problem(app.get(ME).await, 401, "unauthenticated").await;

    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    for line in [
        r#"auth_events_total{event="register",outcome="success"}"#,
        r#"auth_events_total{event="login",outcome="success"}"#,
        r#"auth_events_total{event="refresh",outcome="success"}"#,
        r#"auth_events_total{event="refresh",outcome="failure"}"#,
        r#"auth_events_total{event="logout",outcome="success"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

#[tokio::test]
async fn a_reused_refresh_token_kills_the_whole_session() {
    // No grace window: the replay below counts as reuse at once (the window has its own test).
    let app = spawn_app_with(&[("APP__AUTH__REFRESH_TOKEN_GRACE", "0s")]).await;
    app.register("ada@example.com").await;
    let first = app.login_with("ada@example.com", PASSWORD).await;
    let second: Value = refresh(&app, first["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let newest_access = second["access_token"].as_str().unwrap();
    assert_eq!(me_status(&app, newest_access).await, 200);

    // The first refresh token was stolen and is replayed.
    let replay = refresh(&app, first["refresh_token"].as_str().unwrap()).await;
    assert_problem(replay, 401, "invalid_token").await;
    assert_eq!(
        refresh(&app, second["refresh_token"].as_str().unwrap())
            .await
            .status(),
        401,
        "newest refresh token killed"
    );
    assert_eq!(
        me_status(&app, newest_access).await,
        401,
        "the session's access token killed"
    );

    let admin = app.admin("root@example.com").await;
    let activity: Value = app
        .authed(
            Method::GET,
            "/api/v1/activity?action=auth.refresh_token_reused",
            &admin,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        activity["total"], 1,
        "the reuse is recorded as a security event"
    );
}

#[tokio::test]
async fn a_password_change_kills_other_sessions_access_tokens() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let laptop = app.token("ada@example.com").await;
    let phone = app.token("ada@example.com").await;

    let wrong = app
        .post(
            "/api/v1/auth/password/change",
            Some(&laptop),
            &json!({ "current_password": "not-it-at-all", "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    let problem = assert_problem(wrong, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["current_password"]);

    let changed = app
        .post(
            "/api/v1/auth/password/change",
            Some(&laptop),
            &json!({ "current_password": PASSWORD, "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_eq!(
        me_status(&app, &laptop).await,
        200,
        "the session that changed it lives on"
    );
    assert_eq!(
        me_status(&app, &phone).await,
        401,
        "every other session dies at once"
    );
    app.login_with("ada@example.com", "fresh-quartz-lamp-3")
        .await;
}

#[tokio::test]
async fn forged_tampered_foreign_and_expired_tokens_are_refused() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let valid = app.token("ada@example.com").await;
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let user: keel_kernel::UserId = claims["sub"].as_str().unwrap().parse().unwrap();
    let session: keel_kernel::SessionId = claims["sid"].as_str().unwrap().parse().unwrap();

    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{none_header}.{payload}.");

    let mut escalated = claims.clone();
    escalated["sub"] = json!(keel_kernel::UserId::new().to_string());
    let tampered = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&escalated).unwrap())
    );

    let mut other = app.settings.auth.clone();
    other.jwt_secret = "an-entirely-different-signing-secret-1234"
        .to_owned()
        .into();
    let foreign = JwtTokens::new(&other)
        .unwrap()
        .issue(user, session, Utc::now())
        .unwrap()
        .token;
    let expired = JwtTokens::new(&app.settings.auth)
        .unwrap()
        .issue(user, session, Utc::now() - chrono::TimeDelta::hours(2))
        .unwrap()
        .token;

    assert_eq!(me_status(&app, &valid).await, 200);
    for (name, token) in [
        ("alg none", alg_none.as_str()),
        ("tampered claims", tampered.as_str()),
        ("another key", foreign.as_str()),
        ("expired", expired.as_str()),
        ("garbage", "not.a.jwt"),
    ] {
        let response = app.authed(Method::GET, ME, token).send().await.unwrap();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{name}: {challenge}"
        );
        assert_problem(response, 401, "invalid_token").await;
    }
    let basic = app
        .client
        .get(app.url(ME))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn thirty_rapid_wrong_passwords_are_throttled() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let response = app
            .post(
                "/api/v1/auth/login",
                None,
                &json!({ "email": "ada@example.com", "password": "guess-guess-guess" }),
            )
            .await;
        if response.status() == 429 {
            retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(response.status().as_u16());
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("some attempts are throttled");
    assert!(
        first_429 <= 10,
        "backoff starts after at most 10 failures: {statuses:?}"
    );
    assert!(statuses[..first_429].iter().all(|s| *s == 401));
    let seconds: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
    assert!(seconds >= 1);
    // Even the right password waits out the backoff.
    let right = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(right, 429, "rate_limited").await;
}

#[tokio::test]
async fn a_suspended_users_live_token_stops_at_once() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada, token) = app.member("ada@example.com").await;
    assert_eq!(me_status(&app, &token).await, 200);
    let suspended = app
        .authed(Method::PATCH, &format!("/api/v1/users/{ada}"), &admin)
        .json(&json!({ "status": "suspended" }))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    assert_eq!(me_status(&app, &token).await, 401);
    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    assert_problem(login, 401, "account_inactive").await;
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
