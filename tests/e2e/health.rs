//! `/health/live`, `/health/ready` (public port and operations listener), `/health` (operations
//! listener only).

use crate::support::{assert_problem, spawn_app};

#[tokio::test]
async fn liveness_readiness_and_the_report_answer() {
    let app = spawn_app().await;

    let live = app.get_json("/health/live", 200).await;
    assert_eq!(live["status"], "ok");

    let ready = app.get_json("/health/ready", 200).await;
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["checks"][0]["name"], "database");
    assert_eq!(ready["checks"][0]["status"], "ok");

    let report: serde_json::Value = app.ops_get("/health").await.json().await.unwrap();
    assert_eq!(report["status"], "ok");
    assert!(report["version"].is_string());
    assert!(report["checks"][0]["latency_ms"].is_number());
}

#[tokio::test]
async fn readiness_names_the_database_when_it_goes_away() {
    let app = spawn_app().await;
    if !app.database.is_postgres() {
        // An open SQLite file cannot be taken away from a running process; this outage is
        // exercised against PostgreSQL (TEST_DATABASE_URL), and the 503 mapping itself by
        // keel-api's unit tests.
        return;
    }
    app.database
        .drop_now()
        .await
        .expect("the database is dropped");
    let response = app.get("/health/ready").await;
    assert_eq!(response.headers()["retry-after"], "5");
    let problem = assert_problem(response, 503, "not_ready").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("database"),
        "{problem}"
    );
    assert_eq!(problem["checks"][0]["status"], "fail");
    // Liveness is unaffected: restarting the process would not bring the database back.
    app.get_json("/health/live", 200).await;
}
