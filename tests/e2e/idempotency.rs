//! `Idempotency-Key`: retries never create twice, a reused key for another request is refused,
//! a concurrent duplicate waits its turn, keys belong to their caller.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, error_fields, spawn_app};

async fn create_project(app: &TestApp, token: &str, key: &str, name: &str) -> reqwest::Response {
    app.authed(Method::POST, "/api/v1/projects", token)
        .header("idempotency-key", key)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap()
}

/// Rows in `idempotency_keys`, counted in SQL.
async fn key_rows(app: &TestApp) -> i64 {
    use sea_orm::ConnectionTrait;
    let row = app
        .pool
        .query_one_raw(sea_orm::Statement::from_string(
            app.pool.get_database_backend(),
            "SELECT COUNT(*) FROM idempotency_keys",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn project_count(app: &TestApp, token: &str) -> u64 {
    let page: Value = app.get_authed_json("/api/v1/projects", token).await;
    page["total"].as_u64().unwrap()
}

#[tokio::test]
async fn a_retried_create_replays_the_first_answer_instead_of_creating_twice() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    let first = create_project(&app, &token, "create-website-1", "Website").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers().get("location").cloned();
    let first: Value = first.json().await.unwrap();

    let retry = create_project(&app, &token, "create-website-1", "Website").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers().get("location").cloned(), location);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(project_count(&app, &token).await, 1);

    // The same key for another request is a client bug, said as such.
    let other = create_project(&app, &token, "create-website-1", "Other").await;
    let problem = assert_problem(other, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["Idempotency-Key"]);
    assert_eq!(problem["errors"][0]["code"], "key_reused");

    // Keys belong to their caller: another member's same key is another key.
    let (_, bob) = app.member("bob@example.com").await;
    assert_eq!(
        create_project(&app, &bob, "create-website-1", "Website")
            .await
            .status(),
        201
    );
    assert_eq!(project_count(&app, &bob).await, 1);
    // Without a key, nothing changes.
    let plain = app
        .authed(Method::POST, "/api/v1/projects", &token)
        .json(&json!({ "name": "Website" }))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 201);
    assert_eq!(project_count(&app, &token).await, 2);
}

#[tokio::test]
async fn concurrent_duplicates_create_once_and_failed_requests_free_their_key() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    let attempts = (0..12).map(|_| create_project(&app, &token, "burst-7", "Launch"));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| [201, 409].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201), "{statuses:?}");
    assert_eq!(project_count(&app, &token).await, 1, "{statuses:?}");

    // A refused request keeps nothing: fixed and retried under the same key, it runs.
    let invalid = create_project(&app, &token, "fix-me", "").await;
    assert_eq!(invalid.status(), 422);
    let fixed = create_project(&app, &token, "fix-me", "Fixed").await;
    assert_eq!(fixed.status(), 201);
    assert!(fixed.headers().get("idempotent-replayed").is_none());

    // Keys are bounded; sign-in answers (credentials) are never stored.
    let long = create_project(&app, &token, &"k".repeat(256), "Long").await;
    let problem = assert_problem(long, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["Idempotency-Key"]);
}

#[tokio::test]
async fn abandoned_claims_are_taken_over_and_late_finishers_cannot_touch_them() {
    use keel_infrastructure::idempotency::SeaIdempotencyStore;
    use keel_kernel::idempotency::{Claim, IdempotencyStore, StoredResponse};

    let app = spawn_app().await;
    let store = SeaIdempotencyStore::new(app.pool.clone());
    let lease = std::time::Duration::from_secs(150);
    let t0 = chrono::Utc::now();
    let minutes = |m: i64| t0 + chrono::Duration::minutes(m);
    let Claim::Started(first) = store.claim("user:a", "k", "f1", t0, lease).await.unwrap() else {
        panic!("a first claim starts")
    };
    assert_eq!(
        store
            .claim("user:a", "k", "f1", minutes(1), lease)
            .await
            .unwrap(),
        Claim::InProgress
    );
    // The process holding it died: after the lease, a retry takes it over.
    let Claim::Started(second) = store
        .claim("user:a", "k", "f1", minutes(3), lease)
        .await
        .unwrap()
    else {
        panic!("an abandoned claim is taken over")
    };
    let answer = StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"id\":1}".to_vec(),
    };
    // The first, finishing late, can neither release nor complete its successor's claim.
    store.release("user:a", "k", &first).await.unwrap();
    store
        .complete("user:a", "k", &first, &answer)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim("user:a", "k", "f1", minutes(4), lease)
            .await
            .unwrap(),
        Claim::InProgress
    );
    store
        .complete("user:a", "k", &second, &answer)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim("user:a", "k", "f1", minutes(4), lease)
            .await
            .unwrap(),
        Claim::Completed(answer)
    );
    assert_eq!(
        store
            .claim("user:a", "k", "f2", minutes(4), lease)
            .await
            .unwrap(),
        Claim::Mismatch
    );
    assert!(matches!(
        store
            .claim("user:b", "k", "f2", minutes(4), lease)
            .await
            .unwrap(),
        Claim::Started(_)
    ));
    // A day later the key is new again; the purge removes what expired.
    assert!(matches!(
        store
            .claim("user:a", "k", "f2", minutes(25 * 60), lease)
            .await
            .unwrap(),
        Claim::Started(_)
    ));
    assert_eq!(
        store.purge(minutes(60)).await.unwrap(),
        1,
        "user:b's key is older"
    );
    assert_eq!(key_rows(&app).await, 1);
}

#[tokio::test]
async fn keys_belong_to_one_credential_and_credentials_are_never_stored() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    let key: Value = app
        .authed(Method::POST, "/api/v1/api-keys", &token)
        .json(&json!({ "name": "ci" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(
        create_project(&app, &token, "shared-key", "From the session")
            .await
            .status(),
        201
    );
    // The same key from the user's API key is another key: no replay of the session's answer.
    let by_key = app
        .client
        .post(app.url("/api/v1/projects"))
        .header("x-api-key", secret)
        .header("idempotency-key", "shared-key")
        .json(&json!({ "name": "From the session" }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.status(), 201);
    assert!(by_key.headers().get("idempotent-replayed").is_none());

    // Sign-in answers are never stored, even through an encoded path.
    let before = key_rows(&app).await;
    for path in ["/api/v1/auth/login", "/api/v1/%61uth/login"] {
        let login = app
            .client
            .post(app.url(path))
            .header("idempotency-key", "login-1")
            .json(&json!({ "email": "ada@example.com", "password": crate::support::PASSWORD }))
            .send()
            .await
            .unwrap();
        assert!([200, 404].contains(&login.status().as_u16()), "{path}");
    }
    assert_eq!(key_rows(&app).await, before, "no credential stored");
}

#[tokio::test]
async fn a_claim_marked_in_a_committed_transaction_is_never_run_again_even_after_its_lease() {
    use keel_infrastructure::SeaUnitOfWork;
    use keel_infrastructure::idempotency::SeaIdempotencyStore;
    use keel_kernel::UnitOfWork as _;
    use keel_kernel::idempotency::{Claim, IdempotencyStore};

    let app = spawn_app().await;
    let store = SeaIdempotencyStore::new(app.pool.clone());
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let lease = std::time::Duration::from_secs(150);
    let t0 = chrono::Utc::now();
    let later = t0 + chrono::Duration::minutes(3);

    // The effect commits with the mark; the process dies before storing the answer.
    let Claim::Started(token) = store.claim("user:a", "k1", "f", t0, lease).await.unwrap() else {
        panic!("a first claim starts")
    };
    let mut tx = unit_of_work.begin().await.unwrap();
    store
        .mark_committed(tx.as_mut(), "user:a", "k1", &token)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.claim("user:a", "k1", "f", t0, lease).await.unwrap(),
        Claim::InProgress,
        "still within its lease: it may yet store its answer"
    );
    assert_eq!(
        store
            .claim("user:a", "k1", "f", later, lease)
            .await
            .unwrap(),
        Claim::AnswerLost,
        "after the lease a retry must not run it a second time"
    );
    // A marked claim whose transaction rolled back committed nothing: taken over after the
    // lease like any abandoned claim.
    let Claim::Started(token) = store.claim("user:a", "k2", "f", t0, lease).await.unwrap() else {
        panic!("a first claim starts")
    };
    let mut tx = unit_of_work.begin().await.unwrap();
    store
        .mark_committed(tx.as_mut(), "user:a", "k2", &token)
        .await
        .unwrap();
    drop(tx);
    let Claim::Started(successor) = store
        .claim("user:a", "k2", "f", later, lease)
        .await
        .unwrap()
    else {
        panic!("an abandoned claim is taken over")
    };
    // The original, finishing late, cannot commit its effect next to its successor's.
    let mut tx = unit_of_work.begin().await.unwrap();
    assert!(
        store
            .mark_committed(tx.as_mut(), "user:a", "k2", &token)
            .await
            .is_err()
    );
    drop(tx);
    let mut tx = unit_of_work.begin().await.unwrap();
    store
        .mark_committed(tx.as_mut(), "user:a", "k2", &successor)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The answer of a marked claim is still stored and replayed when the process lives.
    let Claim::Started(token) = store.claim("user:a", "k3", "f", t0, lease).await.unwrap() else {
        panic!("a first claim starts")
    };
    let mut tx = unit_of_work.begin().await.unwrap();
    store
        .mark_committed(tx.as_mut(), "user:a", "k3", &token)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let answer = keel_kernel::idempotency::StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: b"{}".to_vec(),
    };
    store
        .complete("user:a", "k3", &token, &answer)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim("user:a", "k3", "f", later, lease)
            .await
            .unwrap(),
        Claim::Completed(answer)
    );
}

#[tokio::test]
async fn a_retry_after_a_crash_between_commit_and_answer_is_told_so_and_creates_nothing() {
    use sea_orm::{ConnectionTrait, DatabaseBackend};

    let app = spawn_app().await;
    let (_, token) = app.member("crash@example.com").await;
    // Storing the answer fails, as if the process died right after the use case committed.
    let statements: &[&str] = match app.pool.get_database_backend() {
        DatabaseBackend::Postgres => &[
            "CREATE FUNCTION keel_test_no_answer() RETURNS trigger AS $$ BEGIN \
             IF NEW.state = 'completed' THEN RAISE EXCEPTION 'simulated crash'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER keel_test_no_answer BEFORE UPDATE ON idempotency_keys \
             FOR EACH ROW EXECUTE FUNCTION keel_test_no_answer()",
        ],
        _ => &[
            "CREATE TRIGGER keel_test_no_answer BEFORE UPDATE ON idempotency_keys \
             WHEN NEW.state = 'completed' BEGIN SELECT RAISE(ABORT, 'simulated crash'); END",
        ],
    };
    for sql in statements {
        app.pool.execute_unprepared(sql).await.unwrap();
    }
    assert_eq!(
        create_project(&app, &token, "crash-1", "Once")
            .await
            .status(),
        201
    );
    // The use case's own transaction marked the claim: the wiring, not a test's SQL.
    let state = app
        .pool
        .query_one_raw(sea_orm::Statement::from_string(
            app.pool.get_database_backend(),
            "SELECT state FROM idempotency_keys",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(state, "committed");
    // Within the lease a retry waits its turn; after it, it is told, and nothing runs twice.
    assert_problem(
        create_project(&app, &token, "crash-1", "Once").await,
        409,
        "idempotency.in_progress",
    )
    .await;
    let backdated = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    app.pool
        .execute_unprepared(&format!(
            "UPDATE idempotency_keys SET claimed_at = '{backdated}'"
        ))
        .await
        .unwrap();
    assert_problem(
        create_project(&app, &token, "crash-1", "Once").await,
        409,
        "idempotency.answer_lost",
    )
    .await;
    assert_eq!(project_count(&app, &token).await, 1, "never run twice");
}
