//! Background jobs: mail delivered by the worker, retries, dead jobs, the outbox's
//! all-or-nothing enqueue, job visibility, and the worker's health and metrics.

use keel_infrastructure::SeaUnitOfWork;
use keel_infrastructure::jobs::SeaJobQueue;
use keel_jobs::{JobRepository, JobState, Probe};
use keel_kernel::UnitOfWork;
use keel_kernel::jobs::{JobQueue, NewJob};
use serde_json::{Value, json};

use crate::support::{assert_problem, spawn_app};

async fn probe(app: &crate::support::TestApp, token: &str, body: Value) -> String {
    let response = app
        .post("/api/v1/admin/jobs/probe", Some(token), &body)
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

fn finished(job: &Value) -> bool {
    job["state"] == "succeeded" || job["state"] == "dead"
}

#[tokio::test]
async fn reset_mail_waits_for_a_worker_and_its_link_works_once() {
    let app = spawn_app().await;
    app.register("ada@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/password/forgot",
            None,
            &json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.mails().is_empty(), "no worker, no mail");

    // The job is committed and visible to operators as enqueued.
    let admin = app.admin("root@example.com").await;
    let page = app
        .authed(
            reqwest::Method::GET,
            "/api/v1/admin/jobs?kind=identity.send_token_mail",
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["state"], "enqueued");
    let job_id = page["items"][0]["id"].as_str().unwrap().to_owned();

    let worker = app.start_worker().await;
    let mails = app.wait_for_mails(1).await;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].contains("/reset-password?token="));
    let job = app.wait_for_job(&job_id, &admin, finished).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);

    let token = app.token_from_last_mail();
    let reset = json!({ "token": token, "new_password": "fresh-quartz-lamp-3" });
    let first = app.post("/api/v1/auth/password/reset", None, &reset).await;
    assert_eq!(first.status(), 204);
    let again = app.post("/api/v1/auth/password/reset", None, &reset).await;
    assert_problem(again, 422, "validation_failed").await;
    app.login_with("ada@example.com", "fresh-quartz-lamp-3")
        .await;

    // The worker answers health and metrics on its own port.
    let ready = app
        .client
        .get(format!("{}/health/ready", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = app
        .client
        .get(format!("{}/metrics", worker.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"jobs_total{queue="high",job="identity.send_token_mail",outcome="succeeded"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("jobs_queued{queue="), "{metrics}");
    worker.stop().await;
}

#[tokio::test]
async fn failing_jobs_retry_then_succeed_and_permanent_failures_die() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let _worker = app.start_worker().await;

    let flaky = probe(
        &app,
        &admin,
        json!({ "fail_attempts": 2, "max_attempts": 3 }),
    )
    .await;
    let doomed = probe(&app, &admin, json!({ "permanent": true })).await;
    let exhausted = probe(
        &app,
        &admin,
        json!({ "fail_attempts": 5, "max_attempts": 2 }),
    )
    .await;

    let job = app.wait_for_job(&flaky, &admin, finished).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 3);
    assert_eq!(job["last_error"], Value::Null);

    let job = app.wait_for_job(&doomed, &admin, finished).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 1, "permanent failures are not retried");
    assert!(job["last_error"].as_str().unwrap().contains("permanently"));

    let job = app.wait_for_job(&exhausted, &admin, finished).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 2);

    let dead: Value = app
        .authed(
            reqwest::Method::GET,
            "/api/v1/admin/jobs?state=dead",
            &admin,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["total"], 2, "{dead}");

    // A succeeded job is not retried (409); a dead one is, and runs again.
    let conflict = app
        .authed(
            reqwest::Method::POST,
            &format!("/api/v1/admin/jobs/{flaky}/retry"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_problem(conflict, 409, "job.not_dead").await;
    let retried = app
        .authed(
            reqwest::Method::POST,
            &format!("/api/v1/admin/jobs/{exhausted}/retry"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    let job = app
        .wait_for_job(&exhausted, &admin, |j| {
            j["state"] == "dead" && j["attempts"] == 2
        })
        .await;
    assert_eq!(
        job["state"], "dead",
        "ran its fresh attempts and died again: {job}"
    );

    // Finished jobs can be deleted.
    let deleted = app
        .authed(
            reqwest::Method::DELETE,
            &format!("/api/v1/admin/jobs/{doomed}"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .authed(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{doomed}"),
            &admin,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_rolled_back_use_case_enqueues_nothing() {
    let app = spawn_app().await;
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let store = app.services.jobs.clone();
    let probe = Probe {
        fail_attempts: 0,
        permanent: false,
        sleep_ms: 0,
    };

    let mut tx = unit_of_work.begin().await.unwrap();
    let rolled_back = SeaJobQueue
        .enqueue(tx.as_mut(), NewJob::of(&probe).unwrap())
        .await
        .unwrap();
    drop(tx);
    assert_eq!(store.get(rolled_back).await.unwrap(), None);

    let mut tx = unit_of_work.begin().await.unwrap();
    let committed = SeaJobQueue
        .enqueue(tx.as_mut(), NewJob::of(&probe).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let job = store.get(committed).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Enqueued);

    // The relay moves it into its queue exactly once.
    assert_eq!(store.relay(100).await.unwrap(), 1);
    assert_eq!(store.relay(100).await.unwrap(), 0);
    assert_eq!(
        store.get(committed).await.unwrap().unwrap().state,
        JobState::Pending
    );
}

#[tokio::test]
async fn jobs_are_visible_to_their_owner_and_operators_only() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (_, member) = app.member("mallory@example.com").await;
    let id = probe(&app, &admin, json!({})).await;

    let own = app
        .authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let other = app
        .authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), &member)
        .send()
        .await
        .unwrap();
    assert_problem(other, 404, "not_found").await;
    let anonymous = app.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(anonymous.status(), 401);
    let list = app
        .authed(reqwest::Method::GET, "/api/v1/admin/jobs", &member)
        .send()
        .await
        .unwrap();
    assert_problem(list, 403, "forbidden").await;
    let probe_as_member = app
        .post("/api/v1/admin/jobs/probe", Some(&member), &json!({}))
        .await;
    assert_problem(probe_as_member, 403, "forbidden").await;

    for bad in ["state=finished", "queue=urgent", "limit=1000", "owner=me"] {
        refused_list(&app, &admin, bad, bad.split('=').next().unwrap()).await;
    }
    let bad_body = app
        .post(
            "/api/v1/admin/jobs/probe",
            Some(&admin),
            &json!({ "max_attempts": 0 }),
        )
        .await;
    let body = assert_problem(bad_body, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "max_attempts");
    for (bad, field) in [
        (json!({ "queue": "urgent" }), "queue"),
        (json!({ "sleep_ms": -1 }), "sleep_ms"),
        (json!({ "owner_id": "x" }), "owner_id"),
    ] {
        let response = app
            .post("/api/v1/admin/jobs/probe", Some(&admin), &bad)
            .await;
        let body = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], field, "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_schedule_runs_once_per_tick_with_two_workers() {
    let app = crate::support::spawn_app_with(&[(
        "APP__JOBS__SCHEDULES__PURGE_FINISHED_JOBS__CRON",
        "* * * * * *",
    )])
    .await;
    let first = app.start_worker().await;
    let second = app.start_worker().await;
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    first.stop().await;
    second.stop().await;

    if let Some(redis) = app.services.jobs.redis() {
        // Each tick's key is claimed with SETNX before its job is pushed: a second push of a
        // tick would be a job without a key of its own.
        let query = keel_kernel::ListQuery::parse(
            &keel_jobs::LIST_SPEC,
            [("kind", "jobs.purge"), ("limit", "100")],
        )
        .unwrap();
        let jobs = app.services.jobs.list(&query).await.unwrap().total;
        let mut connection = redis.connection();
        let pattern = format!(
            "{}:jobs:*:idempotency:purge_finished_jobs@*",
            app.settings.redis.key_prefix
        );
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(
            jobs >= 2,
            "a per-second schedule ticked {jobs} times in 3.5 s"
        );
        assert_eq!(
            jobs,
            keys.len() as u64,
            "each tick ran once across both workers"
        );
        return;
    }
    use sea_orm::ConnectionTrait;
    let backend = app.pool.get_database_backend();
    let table = match backend {
        sea_orm::DatabaseBackend::Postgres => "apalis.jobs",
        _ => "Jobs",
    };
    let count = |sql: String| {
        let pool = app.pool.clone();
        async move {
            let row = pool
                .query_one_raw(sea_orm::Statement::from_string(backend, sql))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    let ticks = count(format!(
        "SELECT COUNT(*) FROM {table} WHERE idempotency_key LIKE 'purge_finished_jobs@%'"
    ))
    .await;
    let distinct = count(format!(
        "SELECT COUNT(DISTINCT idempotency_key) FROM {table} \
         WHERE idempotency_key LIKE 'purge_finished_jobs@%'"
    ))
    .await;
    assert!(
        ticks >= 2,
        "a per-second schedule ticked {ticks} times in 3.5 s"
    );
    assert_eq!(ticks, distinct, "each tick ran once across both workers");
}

/// A real SMTP server (Python's aiosmtpd) on a free port, storing messages in a maildir.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmtpServer {
    /// Starts aiosmtpd, or `None` when it is not installed (`pip install aiosmtpd`); with
    /// `KEEL_REQUIRE_SMTP=1` (CI) a missing server fails the test instead.
    // Saying why the test is skipped is the point of the message.
    #[allow(clippy::print_stderr)]
    fn start() -> Option<Self> {
        let available = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                std::env::var_os("KEEL_REQUIRE_SMTP").is_none(),
                "KEEL_REQUIRE_SMTP is set but aiosmtpd is not installed"
            );
            eprintln!("skipping: aiosmtpd not installed (pip install aiosmtpd)");
            return None;
        }
        let port = crate::support::free_port();
        let maildir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("box"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        crate::support::wait_for_port(port, "aiosmtpd");
        Some(Self {
            child,
            port,
            maildir,
        })
    }

    /// Messages received so far.
    fn messages(&self) -> Vec<String> {
        let new = self.maildir.path().join("box").join("new");
        std::fs::read_dir(new)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .map(|m| {
                        m.replace("=\r\n", "")
                            .replace("=\n", "")
                            .replace("=3D", "=")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn mail_is_relayed_over_smtp_once() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let port = smtp.port.to_string();
    let app = crate::support::spawn_app_with(&[
        ("APP__MAIL__TRANSPORT", "smtp"),
        ("APP__MAIL__SMTP__HOST", "127.0.0.1"),
        ("APP__MAIL__SMTP__PORT", &port),
        ("APP__MAIL__SMTP__TLS", "none"),
    ])
    .await;
    let _worker = app.start_worker().await;
    app.register("ada@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/password/forgot",
            None,
            &json!({ "email": "ada@example.com" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let messages = loop {
        let messages = smtp.messages();
        if !messages.is_empty() || std::time::Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(messages.len(), 1, "one message relayed");
    let message = &messages[0];
    assert!(message.contains("To: ada@example.com"), "{message}");
    assert!(
        message.contains("Subject: Reset your password"),
        "{message}"
    );
    assert!(message.contains("/reset-password?token="), "{message}");
    assert!(message.contains("Message-ID: <"), "{message}");
    assert!(
        app.mails().is_empty(),
        "nothing written to the file transport"
    );
}

/// Every id of `/admin/jobs?{query}`, following `next_cursor` to the end.
async fn all_pages(app: &crate::support::TestApp, token: &str, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            Some(cursor) => format!("/api/v1/admin/jobs?{query}&cursor={cursor}"),
            None => format!("/api/v1/admin/jobs?{query}"),
        };
        let page = app.get_authed_json(&url, token).await;
        assert_eq!(page["total"], 5, "{page}");
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return ids,
        }
    }
    panic!("the cursor never ended: {ids:?}");
}

#[tokio::test]
async fn the_job_list_speaks_the_list_language_across_outbox_and_queue() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(probe(&app, &admin, json!({ "queue": "high" })).await);
    }
    // Three move into apalis' queue (pending), two stay in the outbox (enqueued).
    assert_eq!(app.services.jobs.relay(100).await.unwrap(), 3);
    for _ in 0..2 {
        ids.push(probe(&app, &admin, json!({ "queue": "low" })).await);
    }

    let newest_first = all_pages(&app, &admin, "limit=2").await;
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(newest_first, expected, "newest first, each job once");
    let oldest_first = all_pages(&app, &admin, "limit=2&sort=created_at").await;
    assert_eq!(oldest_first, ids, "oldest first with sort=created_at");
    let offset = app
        .get_authed_json("/api/v1/admin/jobs?limit=2&offset=3", &admin)
        .await;
    assert_eq!(offset["items"][0]["id"], expected[3].as_str());
    assert_eq!(offset["offset"], 3);

    for (query, total) in [
        ("state=enqueued", 2),
        ("state=pending", 3),
        ("state__in=enqueued,pending", 5),
        ("queue=high", 3),
        ("queue__in=high,low&state=enqueued", 2),
        ("kind=jobs.probe&queue=low", 2),
        ("state=dead", 0),
        // Filters on one field all hold, as on every list.
        ("state=pending&state__in=pending,enqueued", 3),
        ("state=dead&state__in=running,succeeded", 0),
    ] {
        let page = app
            .get_authed_json(&format!("/api/v1/admin/jobs?{query}"), &admin)
            .await;
        assert_eq!(page["total"], total, "{query}: {page}");
        assert_eq!(page["items"].as_array().unwrap().len(), total, "{query}");
    }
    for (bad, field) in [
        ("sort=kind", "sort"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("created_at=2026-01-01T00:00:00Z", "created_at"),
        ("kind__gte=a", "kind__gte"),
        ("offset=10001", "offset"),
    ] {
        refused_list(&app, &admin, bad, field).await;
    }
}

/// `GET /admin/jobs?{query}` is 422 naming `field` first.
async fn refused_list(app: &crate::support::TestApp, token: &str, query: &str, field: &str) {
    let response = app
        .authed(
            reqwest::Method::GET,
            &format!("/api/v1/admin/jobs?{query}"),
            token,
        )
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
}

#[tokio::test]
async fn a_failed_attempt_waits_out_its_policy_backoff() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let probe = Probe {
        fail_attempts: 1,
        permanent: false,
        sleep_ms: 0,
    };
    let mut job = NewJob::of(&probe).unwrap();
    job.policy.backoff = std::time::Duration::from_secs(3600);
    job.policy.max_backoff = std::time::Duration::from_secs(3600);
    let mut tx = unit_of_work.begin().await.unwrap();
    let id = SeaJobQueue.enqueue(tx.as_mut(), job).await.unwrap();
    tx.commit().await.unwrap();
    let _worker = app.start_worker().await;

    // Whichever storage holds the queue, the retry waits the policy's backoff (±50 % jitter),
    // not the storage's own delay.
    let id = id.to_string();
    let deferred = |job: &Value| {
        job["state"] == "retrying"
            && job["run_at"]
                .as_str()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .is_some_and(|at| at > chrono::Utc::now() + chrono::Duration::minutes(20))
    };
    let job = app.wait_for_job(&id, &admin, deferred).await;
    assert!(deferred(&job), "retrying half an hour or more later: {job}");
    assert_eq!(job["attempts"], 1, "{job}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = app
        .get_authed_json(&format!("/api/v1/jobs/{id}"), &admin)
        .await;
    assert_eq!(later["state"], "retrying", "not run again early: {later}");
    assert_eq!(later["attempts"], 1, "{later}");
}

/// A Redis server of the test's own on a free port, stopped and started again at will.
pub(crate) struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
}

impl PrivateRedis {
    /// `None` where `redis-server` is not installed (CI, which has it, sets
    /// `TEST_REDIS_URL`: there a missing binary fails the test instead).
    pub(crate) fn start() -> Option<Self> {
        let mut redis = Self {
            child: None,
            port: crate::support::free_port(),
        };
        if !redis.run() {
            assert!(
                std::env::var_os("TEST_REDIS_URL").is_none(),
                "TEST_REDIS_URL is set but redis-server is not installed"
            );
            return None;
        }
        Some(redis)
    }

    fn run(&mut self) -> bool {
        let port = self.port.to_string();
        let Ok(child) = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
            .args(["--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        crate::support::wait_for_port(self.port, "redis-server");
        true
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn committed_jobs_wait_in_the_outbox_while_redis_is_down() {
    use keel_infrastructure::jobs::{JobStore, RedisQueues};
    use sea_orm::ConnectionTrait;
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let app = spawn_app().await;
    let queues = RedisQueues::connect(
        &redis.url(),
        "keel-outage",
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    let store = JobStore::new(&app.pool).on_redis(queues);
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let probe = Probe {
        fail_attempts: 0,
        permanent: false,
        sleep_ms: 0,
    };
    let mut tx = unit_of_work.begin().await.unwrap();
    let id = SeaJobQueue
        .enqueue(tx.as_mut(), NewJob::of(&probe).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    redis.stop();
    assert!(
        store.relay(100).await.is_err(),
        "nothing can be relayed to a Redis that is down"
    );
    let backend = app.pool.get_database_backend();
    let outbox = app
        .pool
        .query_one_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM job_outbox",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(
        outbox, 1,
        "the failed relay left the committed job in the outbox"
    );

    assert!(redis.run(), "redis-server starts again");
    let mut moved = 0;
    // The connection reconnects on its own; the first commands may still fail.
    for _ in 0..50 {
        if let Ok(n) = store.relay(100).await {
            moved += n;
            if moved > 0 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(moved, 1, "the job reaches Redis once it is back");
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(store.relay(100).await.unwrap(), 0, "and only once");
}
