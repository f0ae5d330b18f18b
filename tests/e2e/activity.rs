//! The activity log's privacy and retention: a member sees what an administrator did to their
//! account without the administrator's id, address and browser; entries older than
//! `activity.retention` are purged by Keel only, by the worker's schedule.

use std::time::Duration;

use chrono::Utc;
use keel_infrastructure::SeaUnitOfWork;
use keel_infrastructure::activity::SeaActivity;
use keel_kernel::activity::{ActivityLog, NewActivity};
use keel_kernel::auth::SYSTEM;
use keel_kernel::{Actor, Caller, DomainError, SessionId, UnitOfWork, UserId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    TestApp, assert_problem, error_fields, json_of, send, spawn_app, spawn_app_with,
};

async fn get(app: &TestApp, path: &str, token: &str) -> Value {
    let response = app.authed(Method::GET, path, token).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_member_sees_an_admins_change_without_the_admins_id_address_or_browser() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let admin_id = get(&app, "/api/v1/auth/me", &admin).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ada_id, ada) = app.member("ada@example.com").await;

    let response = app
        .authed(Method::PATCH, &format!("/api/v1/users/{ada_id}"), &admin)
        .header("user-agent", "admin-console/1.0")
        .json(&json!({ "full_name": "Ada Lovelace" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let path = format!("/api/v1/activity?action=user.updated&subject_user_id={ada_id}");
    let seen_by_ada = get(&app, &path, &ada).await;
    assert_eq!(seen_by_ada["total"], 1, "{seen_by_ada}");
    let entry = &seen_by_ada["items"][0];
    for hidden in ["actor_user_id", "actor_api_key_id", "ip", "user_agent"] {
        assert!(entry[hidden].is_null(), "{hidden} is hidden: {entry}");
    }
    assert_eq!(entry["actor_type"], "user", "someone changed it: {entry}");
    assert_eq!(entry["subject_user_id"], ada_id.as_str());
    assert!(entry["changes"].is_object(), "{entry}");

    let seen_by_admin = get(&app, &path, &admin).await;
    let entry = &seen_by_admin["items"][0];
    assert_eq!(entry["actor_user_id"], admin_id.as_str(), "{entry}");
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["user_agent"], "admin-console/1.0");

    // Ada's own acts keep every detail.
    let own = get(&app, "/api/v1/activity?action=auth.login", &ada).await;
    let login = &own["items"][0];
    assert_eq!(login["actor_user_id"], ada_id.as_str(), "{own}");
    assert_eq!(login["ip"], "127.0.0.1");

    // Filtering by a guessed actor would reveal who acted: only her own id is accepted.
    let probe = app
        .authed(
            Method::GET,
            &format!("/api/v1/activity?actor_user_id={admin_id}"),
            &ada,
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(probe, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["actor_user_id"]);
    get(
        &app,
        &format!("/api/v1/activity?actor_user_id={ada_id}"),
        &ada,
    )
    .await;
}

/// Records an entry with action `action`, dated `days` days ago.
async fn record_aged(app: &TestApp, action: &'static str, days: i64) {
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let log = SeaActivity::new(app.pool.clone());
    let mut tx = unit_of_work.begin().await.unwrap();
    let at = Utc::now() - chrono::Duration::days(days);
    log.record(tx.as_mut(), &SYSTEM, NewActivity::new(action, "test", at))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn total(app: &TestApp, admin: &str, action: &str) -> u64 {
    get(app, &format!("/api/v1/activity?action={action}"), admin).await["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn only_keel_purges_entries_past_the_retention() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    record_aged(&app, "test.old", 100).await;
    record_aged(&app, "test.fresh", 1).await;
    let cutoff = Utc::now() - chrono::Duration::days(90);

    let member = Caller::new(Actor::User {
        id: UserId::new(),
        session: SessionId::new(),
        permissions: keel_kernel::PermissionSet::empty(),
    });
    assert!(matches!(
        app.services
            .activity
            .for_caller(&member)
            .purge_older_than(cutoff)
            .await,
        Err(DomainError::Forbidden { .. })
    ));
    assert_eq!(total(&app, &admin, "test.old").await, 1, "nothing went");

    let purged = app
        .services
        .activity
        .for_caller(&SYSTEM)
        .purge_older_than(cutoff)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(total(&app, &admin, "test.old").await, 0);
    assert_eq!(total(&app, &admin, "test.fresh").await, 1);
    assert!(total(&app, &admin, "user.admin_created").await >= 1);
}

#[tokio::test]
async fn the_worker_purges_by_schedule_with_the_configured_retention() {
    let app = spawn_app_with(&[
        ("APP__ACTIVITY__RETENTION", "30d"),
        (
            "APP__JOBS__SCHEDULES__PURGE_OLD_ACTIVITY__CRON",
            "* * * * * *",
        ),
    ])
    .await;
    let admin = app.admin("root@example.com").await;
    record_aged(&app, "test.old", 31).await;
    record_aged(&app, "test.fresh", 29).await;

    let worker = app.start_worker().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while total(&app, &admin, "test.old").await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop().await;
    assert_eq!(
        total(&app, &admin, "test.old").await,
        0,
        "older than 30 days"
    );
    assert_eq!(total(&app, &admin, "test.fresh").await, 1, "within 30 days");
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
