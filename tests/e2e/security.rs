//! The attacks of the security review, replayed against the real app: each test reproduces
//! one and checks the refusal (`docs/security.md` points here).

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestApp, assert_problem, spawn_app, spawn_app_with, spawn_replica};

/// The id of the role called `name`, as an administrator sees it.
async fn role_id(app: &TestApp, admin: &str, name: &str) -> String {
    let roles: Value = app.get_authed_json("/api/v1/roles", admin).await;
    roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no role {name}: {roles}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Creates a role with `permissions` and grants it to a new member; returns (user id, token).
async fn member_with_role(
    app: &TestApp,
    admin: &str,
    email: &str,
    role: &str,
    permissions: &[&str],
) -> (String, String) {
    let created = app
        .authed(Method::POST, "/api/v1/roles", admin)
        .json(&json!({ "name": role, "permissions": permissions }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "role {role}");
    let role_id: Value = created.json().await.unwrap();
    let (id, _) = app.member(email).await;
    let granted = app
        .authed(Method::POST, &format!("/api/v1/users/{id}/roles"), admin)
        .json(&json!({ "role_id": role_id["id"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200, "grant {role}");
    (id, app.token(email).await)
}

async fn permissions_of(app: &TestApp, token: &str) -> Vec<String> {
    let me: Value = app.get_authed_json("/api/v1/auth/me", token).await;
    me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn account_managers_cannot_escalate_to_admin() {
    let app = spawn_app().await;
    let root = app.admin("root@example.com").await;
    let admin_role = role_id(&app, &root, "admin").await;
    let member_role = role_id(&app, &root, "member").await;

    // A holder of users:write grants admin to themselves.
    let (eve, eve_token) = member_with_role(
        &app,
        &root,
        "eve@example.com",
        "account-managers",
        &["users:read", "users:write"],
    )
    .await;
    let before = permissions_of(&app, &eve_token).await;
    let grant = app
        .authed(
            Method::POST,
            &format!("/api/v1/users/{eve}/roles"),
            &eve_token,
        )
        .json(&json!({ "role_id": admin_role }))
        .send()
        .await
        .unwrap();
    assert_problem(grant, 403, "role.admin_only").await;
    assert_eq!(permissions_of(&app, &eve_token).await, before);

    // Nor a role carrying a permission she lacks.
    let powerful = app
        .authed(Method::POST, "/api/v1/roles", &root)
        .json(&json!({ "name": "releasers", "permissions": ["release_notes:write"] }))
        .send()
        .await
        .unwrap();
    let powerful: Value = powerful.json().await.unwrap();
    let grant = app
        .authed(
            Method::POST,
            &format!("/api/v1/users/{eve}/roles"),
            &eve_token,
        )
        .json(&json!({ "role_id": powerful["id"] }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(grant, 403, "forbidden").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("release_notes:write")
    );

    // Nor suspend the administrator, who holds more than she does.
    let root_id = app.get_authed_json("/api/v1/auth/me", &root).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let suspend = app
        .authed(
            Method::PATCH,
            &format!("/api/v1/users/{root_id}"),
            &eve_token,
        )
        .json(&json!({ "status": "suspended" }))
        .send()
        .await
        .unwrap();
    assert_problem(suspend, 403, "forbidden").await;

    // A holder of roles:write rewrites `member` to hold everything, or defines a new role with
    // permissions they lack.
    let (_, rita) = member_with_role(
        &app,
        &root,
        "rita@example.com",
        "role-editors",
        &["roles:read", "roles:write"],
    )
    .await;
    let rewrite = app
        .authed(
            Method::PUT,
            &format!("/api/v1/roles/{member_role}/permissions"),
            &rita,
        )
        .json(&json!({ "permissions": ["users:write", "roles:write", "api_keys:manage"] }))
        .send()
        .await
        .unwrap();
    assert_problem(rewrite, 403, "role.admin_only").await;
    let create = app
        .authed(Method::POST, "/api/v1/roles", &rita)
        .json(&json!({ "name": "everything", "permissions": ["users:write", "roles:write"] }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(create, 403, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("users:write"));

    // An administrator's API key scoped to users:write gets no more than that scope.
    let key: Value = app
        .authed(Method::POST, "/api/v1/api-keys", &root)
        .json(&json!({ "name": "provisioning", "scopes": ["users:read", "users:write"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (bob, _) = app.member("bob@example.com").await;
    let grant = app
        .client
        .post(app.url(&format!("/api/v1/users/{bob}/roles")))
        .header("x-api-key", key["key"].as_str().unwrap())
        .json(&json!({ "role_id": admin_role }))
        .send()
        .await
        .unwrap();
    assert_problem(grant, 403, "role.admin_only").await;

    // The administrator still can.
    let grant = app
        .authed(Method::POST, &format!("/api/v1/users/{bob}/roles"), &root)
        .json(&json!({ "role_id": admin_role }))
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 200);
}

async fn login(app: &TestApp, email: &str, password: &str, client: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", client)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

/// Settings that make the test's peer (127.0.0.1) a trusted proxy, so `X-Forwarded-For` names
/// the client.
const BEHIND_PROXY: (&str, &str) = ("APP__SERVER__TRUSTED_PROXIES", "127.0.0.1/32");

/// 25 concurrent sign-ins for one account from one stranger's address, one of them with the
/// right password; returns (status, `Retry-After`) of each.
async fn concurrent_guesses(apps: &[&TestApp], right_one_at: usize) -> Vec<(u16, u64)> {
    let attempts = (0..25).map(|i| {
        let app = apps[i % apps.len()];
        let password = if i == right_one_at {
            PASSWORD
        } else {
            "wrong-guess-000"
        };
        async move {
            let response = login(app, "ada@example.com", password, "198.51.100.7").await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (response.status().as_u16(), retry_after)
        }
    });
    join_all(attempts).await
}

#[tokio::test]
async fn concurrent_guesses_cannot_outrun_the_login_backoff_nor_lock_out_the_owner() {
    let app = spawn_app_with(&[BEHIND_PROXY]).await;
    app.register("ada@example.com").await;
    let statuses = concurrent_guesses(&[&app], 24).await;
    let evaluated = statuses.iter().filter(|(s, _)| *s != 429).count();
    assert!(
        evaluated <= 5,
        "at most login_backoff_after checked: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|(s, _)| [200, 401, 429].contains(s)),
        "{statuses:?}"
    );
    // The stranger's address waits a short first step, not a quarter of an hour.
    assert!(
        statuses
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, retry_after)| (1..=2).contains(retry_after)),
        "{statuses:?}"
    );
    // The owner, from their own address, is not locked out by the stranger's guesses.
    assert_eq!(
        login(&app, "ada@example.com", PASSWORD, "203.0.113.5")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn with_redis_the_login_backoff_holds_across_replicas() {
    // Needs a Redis server: CI sets TEST_REDIS_URL (the in-memory variant is tested above).
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
    let vars = [
        ("REDIS_URL", redis.as_str()),
        ("APP__REDIS__KEY_PREFIX", prefix.as_str()),
        BEHIND_PROXY,
    ];
    let first = spawn_app_with(&vars).await;
    let second = spawn_replica(&first, &vars).await;
    first.register("ada@example.com").await;
    let statuses = concurrent_guesses(&[&first, &second], 24).await;
    let evaluated = statuses.iter().filter(|(s, _)| *s != 429).count();
    assert!(evaluated <= 5, "shared count across replicas: {statuses:?}");
    assert_eq!(
        login(&second, "ada@example.com", PASSWORD, "203.0.113.5")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn password_change_is_no_oracle_and_a_hashing_flood_is_refused_fast() {
    let app = spawn_app_with(&[
        ("APP__AUTH__HASHING_CONCURRENCY", "1"),
        ("APP__AUTH__HASHING_QUEUE_LIMIT", "2"),
        // This test is about the hasher, not the per-IP limit every request here shares.
        ("APP__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE", "1000"),
    ])
    .await;
    let (_, token) = app.member("ada@example.com").await;
    let change = |current: &'static str| {
        app.authed(Method::POST, "/api/v1/auth/password/change", &token)
            .json(&json!({ "current_password": current, "new_password": "fresh-quartz-lamp-3" }))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(change("wrong-guess-000").await.unwrap().status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 422).count(),
        5,
        "{statuses:?}"
    );
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right password waits out the backoff.
    assert_problem(change(PASSWORD).await.unwrap(), 429, "rate_limited").await;

    // Twenty accounts change their passwords at once (two hashes each) while an unrelated
    // member signs in: one hash runs, two wait, the rest are told to come back at once
    // instead of queueing behind the flood.
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(app.member(&format!("flood{i}@example.com")).await.1);
    }
    app.register("grace@example.com").await;
    let flood = tokens.iter().map(|token| {
        let app = &app;
        async move {
            let response = app
                .authed(Method::POST, "/api/v1/auth/password/change", token)
                .json(
                    &json!({ "current_password": PASSWORD, "new_password": "fresh-quartz-lamp-3" }),
                )
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("retry-after"),
            )
        }
    });
    let grace = json!({ "email": "grace@example.com", "password": PASSWORD });
    let unrelated = app.post("/api/v1/auth/login", None, &grace);
    let (results, unrelated) = tokio::join!(join_all(flood), unrelated);
    let busy: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "{results:?}");
    assert!(
        busy.iter().all(|(_, retry)| *retry),
        "503 carries Retry-After"
    );
    assert!(
        results.iter().all(|(s, _)| [204, 503].contains(s)),
        "{results:?}"
    );
    // The unrelated sign-in either went through or was told to retry; it never waited
    // behind twenty changes.
    assert!([200, 503].contains(&unrelated.status().as_u16()));
    // The flood is over: an ordinary sign-in goes through.
    app.token("grace@example.com").await;
}

#[tokio::test]
async fn distributed_guessing_slows_unknown_clients_but_not_the_owners_known_one() {
    let app = spawn_app_with(&[BEHIND_PROXY]).await;
    app.register("ada@example.com").await;
    // The owner signs in from home: that address is now known to the account.
    assert_eq!(
        login(&app, "ada@example.com", PASSWORD, "203.0.113.5")
            .await
            .status(),
        200
    );
    // Sixty addresses guess once each: no address reaches its own threshold, but the account
    // sees 50 attempts an hour (ten times login_backoff_after) and starts slowing strangers.
    let mut statuses = Vec::new();
    for i in 0..60 {
        let client = format!("198.51.{}.{}", 100 + i / 200, 1 + i % 200);
        let response = login(&app, "ada@example.com", "wrong-guess-000", &client).await;
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // The owner's known address is not slowed by the crowd.
    assert_eq!(
        login(&app, "ada@example.com", PASSWORD, "203.0.113.5")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_share_one_successor_and_never_jam_the_pool() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let tokens = app.login_with("ada@example.com", PASSWORD).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshes = (0..45).map(|_| {
        let app = &app;
        let token = refresh_token.clone();
        async move {
            let response = app
                .post(
                    "/api/v1/auth/refresh",
                    None,
                    &json!({ "refresh_token": token }),
                )
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body["refresh_token"].as_str().map(str::to_owned))
        }
    });
    let (results, ready) = tokio::join!(join_all(refreshes), app.get("/health/ready"));
    assert_eq!(ready.status(), 200, "readiness stays up during the burst");
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let successors: std::collections::BTreeSet<_> =
        results.iter().filter_map(|(_, t)| t.clone()).collect();
    assert_eq!(successors.len(), 1, "every tab got the same successor");
    // The successor works; the session lives on.
    let next = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": successors.first().unwrap() }),
        )
        .await;
    assert_eq!(next.status(), 200);
}

/// Creates an API key as `token`; returns the response.
async fn create_key(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/api-keys", token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn api_keys_need_a_fresh_session_expire_and_die_with_a_reset() {
    let app = spawn_app_with(&[("APP__AUTH__REAUTHENTICATION_WINDOW", "2s")]).await;
    let (_, token) = app.member("ada@example.com").await;
    let key: Value = create_key(&app, &token, json!({ "name": "ci" }))
        .await
        .json()
        .await
        .unwrap();
    let expires_at = chrono::DateTime::parse_from_rfc3339(key["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let days = (expires_at - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "default lifetime: {key}");
    let too_far = create_key(
        &app,
        &token,
        json!({ "name": "forever", "expires_at": "2099-01-01T00:00:00Z" }),
    )
    .await;
    let problem = assert_problem(too_far, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "expires_at");
    assert_eq!(problem["errors"][0]["code"], "too_far");

    // A key is no session: it cannot manage the account that owns it.
    let secret = key["key"].as_str().unwrap();
    let with_key = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .header("x-api-key", secret)
    };
    let me = with_key(Method::GET, "/api/v1/auth/me")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let session_id = app.get_authed_json("/api/v1/auth/sessions", &token).await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path, body) in [
        (Method::GET, "/api/v1/auth/sessions".to_owned(), None),
        (
            Method::DELETE,
            format!("/api/v1/auth/sessions/{session_id}"),
            None,
        ),
        (Method::POST, "/api/v1/auth/logout-all".to_owned(), None),
        (Method::POST, "/api/v1/auth/logout".to_owned(), None),
        (
            Method::PATCH,
            "/api/v1/auth/me".to_owned(),
            Some(json!({ "full_name": "Eve" })),
        ),
        (
            Method::POST,
            "/api/v1/auth/verify-email/request".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/auth/password/change".to_owned(),
            Some(json!({ "current_password": PASSWORD, "new_password": "fresh-quartz-lamp-3" })),
        ),
        (
            Method::POST,
            "/api/v1/api-keys".to_owned(),
            Some(json!({ "name": "minted" })),
        ),
    ] {
        let mut request = with_key(method.clone(), &path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let problem = assert_problem(response, 403, "auth.session_required").await;
        assert!(problem["detail"].is_string(), "{method} {path}");
    }

    // A stolen access token whose sign-in is older than the window cannot mint a key.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = create_key(&app, &token, json!({ "name": "stolen" })).await;
    assert_problem(late, 401, "auth.reauthentication_required").await;
    let fresh = app.token("ada@example.com").await;
    assert_eq!(
        create_key(&app, &fresh, json!({ "name": "ok" }))
            .await
            .status(),
        201
    );

    // Account recovery: a reset ends every key (and session).
    app.post(
        "/api/v1/auth/password/forgot",
        None,
        &json!({ "email": "ada@example.com" }),
    )
    .await;
    let worker = app.start_worker().await;
    app.wait_for_mails(1).await;
    let reset = app
        .post(
            "/api/v1/auth/password/reset",
            None,
            &json!({ "token": app.token_from_last_mail(), "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    assert_eq!(reset.status(), 204);
    worker.stop().await;
    let me = with_key(Method::GET, "/api/v1/auth/me")
        .send()
        .await
        .unwrap();
    assert_problem(me, 401, "invalid_token").await;
    let listed = app
        .authed(Method::GET, "/api/v1/auth/me", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 401, "sessions ended too");
}

/// The reset tokens of the mails written so far, oldest first.
fn reset_tokens(app: &TestApp) -> Vec<String> {
    app.mails()
        .iter()
        .filter_map(|mail| {
            let start = mail.find("reset-password?token=")? + "reset-password?token=".len();
            Some(
                mail[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect(),
            )
        })
        .collect()
}

async fn forgot(app: &TestApp) -> reqwest::Response {
    app.post(
        "/api/v1/auth/password/forgot",
        None,
        &json!({ "email": "ada@example.com" }),
    )
    .await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post(
        "/api/v1/auth/password/reset",
        None,
        &json!({ "token": token, "new_password": password }),
    )
    .await
}

#[tokio::test]
async fn a_reset_or_password_change_ends_every_other_reset_link() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    forgot(&app).await;
    forgot(&app).await;
    let worker = app.start_worker().await;
    app.wait_for_mails(2).await;
    let links = reset_tokens(&app);
    assert_eq!(links.len(), 2);
    assert_eq!(
        reset(&app, &links[1], "fresh-quartz-lamp-3").await.status(),
        204
    );
    let older = reset(&app, &links[0], "attacker-chosen-pass-1").await;
    let problem = assert_problem(older, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "token");

    // A link still out there dies with a password change too.
    forgot(&app).await;
    app.wait_for_mails(3).await;
    let pending = reset_tokens(&app).pop().unwrap();
    assert_eq!(
        app.authed(Method::GET, "/api/v1/auth/me", &token)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "the reset ended the old session"
    );
    let token = app
        .login_with("ada@example.com", "fresh-quartz-lamp-3")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = app
        .authed(Method::POST, "/api/v1/auth/password/change", &token)
        .json(&json!({ "current_password": "fresh-quartz-lamp-3", "new_password": "second-quartz-lamp-4" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    assert_eq!(
        reset(&app, &pending, "attacker-chosen-pass-1")
            .await
            .status(),
        422
    );
    worker.stop().await;
}

/// Every byte a copy of the database holds: the SQLite files, or a `pg_dump`.
fn database_copy(app: &TestApp) -> Vec<u8> {
    let url = app.database.url();
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap();
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(file) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(file);
            }
        }
        assert!(!bytes.is_empty(), "read the SQLite files at {path}");
        bytes
    } else {
        let dump = std::process::Command::new("pg_dump")
            .arg("--data-only")
            .arg(url)
            .output()
            .expect("pg_dump (PostgreSQL's client tools) runs");
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        dump.stdout
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_copy_of_the_database_holds_no_usable_link_token() {
    let app = spawn_app().await;
    app.member("ada@example.com").await;
    app.post(
        "/api/v1/auth/password/forgot",
        None,
        &json!({ "email": "ada@example.com" }),
    )
    .await;
    // Before any worker ran: the job waits in the outbox.
    let before_delivery = database_copy(&app);
    let worker = app.start_worker().await;
    app.wait_for_mails(1).await;
    worker.stop().await;
    // After delivery: the finished job stays in the job tables until purged.
    let after_delivery = database_copy(&app);
    let token = app.token_from_last_mail();
    assert!(token.len() >= 32, "{token}");
    assert!(
        !contains(&before_delivery, &token),
        "the outbox holds the token"
    );
    assert!(
        !contains(&after_delivery, &token),
        "the job tables hold the token"
    );
    // And the link works.
    let reset = app
        .post(
            "/api/v1/auth/password/reset",
            None,
            &json!({ "token": token, "new_password": "fresh-quartz-lamp-3" }),
        )
        .await;
    assert_eq!(reset.status(), 204);
}

#[tokio::test]
async fn an_unverified_account_may_only_read_its_profile_verify_refresh_and_sign_out() {
    let app = spawn_app_with(&[("APP__AUTH__REQUIRE_EMAIL_VERIFICATION", "true")]).await;
    app.register("ada@example.com").await;
    let tokens = app.login_with("ada@example.com", PASSWORD).await;
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let me = app
        .authed(Method::GET, "/api/v1/auth/me", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/projects",
            Some(json!({ "name": "Launch" })),
        ),
        (Method::GET, "/api/v1/projects", None),
        (
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({ "name": "ci" })),
        ),
        (Method::GET, "/api/v1/auth/sessions", None),
        (
            Method::PATCH,
            "/api/v1/auth/me",
            Some(json!({ "full_name": "Ada" })),
        ),
        (Method::POST, "/api/v1/auth/logout-all", None),
        (Method::GET, "/api/v1/activity", None),
        (Method::GET, "/api/v1/api-keys", None),
        (
            Method::POST,
            "/api/v1/release-notes",
            Some(
                json!({ "version": "1.0.0", "title": "First", "body": "", "change_type": "feature" }),
            ),
        ),
        (
            Method::POST,
            "/api/v1/auth/password/change",
            Some(json!({ "current_password": PASSWORD, "new_password": "fresh-quartz-lamp-3" })),
        ),
    ] {
        let mut request = app.authed(method.clone(), path, &token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
        assert_problem(response, 403, "auth.email_unverified").await;
    }

    // Refresh works while pending.
    let refreshed = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": tokens["refresh_token"] }),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let token = refreshed.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Confirming the address opens the account.
    let requested = app
        .authed(Method::POST, "/api/v1/auth/verify-email/request", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(requested.status(), 202);
    let worker = app.start_worker().await;
    app.wait_for_mails(1).await;
    worker.stop().await;
    let confirmed = app
        .post(
            "/api/v1/auth/verify-email/confirm",
            None,
            &json!({ "token": app.token_from_last_mail() }),
        )
        .await;
    assert_eq!(confirmed.status(), 204);
    let project = app
        .authed(Method::POST, "/api/v1/projects", &token)
        .json(&json!({ "name": "Launch" }))
        .send()
        .await
        .unwrap();
    assert_eq!(project.status(), 201);
    let logout = app
        .authed(Method::POST, "/api/v1/auth/logout", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
}

/// `docs/security.md` points every claim at a test; a renamed or deleted test must not leave
/// the page pointing at nothing.
#[test]
fn the_threat_model_points_at_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let page = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let mut module = String::new();
    let mut checked = 0;
    // Code spans are the odd pieces between backticks.
    for reference in page.split('`').skip(1).step_by(2) {
        if reference.contains('<') {
            continue;
        }
        let (file, function) = if let Some(path) = reference.strip_prefix("e2e::") {
            let Some((m, f)) = path.rsplit_once("::") else {
                continue;
            };
            module = m.replace("::", "/");
            (format!("tests/e2e/{module}.rs"), f)
        } else if let Some(f) = reference.strip_prefix("…::") {
            (format!("tests/e2e/{module}.rs"), f)
        } else if let Some((path, f)) = reference.split_once(".rs::") {
            (format!("{path}.rs"), f)
        } else {
            continue;
        };
        if function.is_empty() {
            continue;
        }
        let source = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|_| panic!("docs/security.md names {file}, which does not exist"));
        assert!(
            source.contains(&format!("fn {function}(")),
            "docs/security.md names {file}::{function}, which does not exist"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} test references found");
}
