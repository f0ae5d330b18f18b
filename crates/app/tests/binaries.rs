//! The real `api` and `worker` binaries, as a user runs them: no configuration, signals,
//! command-line subcommands, exit codes.
// Test code reports failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use keel_infrastructure::testing::TestDatabase;
use serde_json::Value;

const API: &str = env!("CARGO_BIN_EXE_api");
const WORKER: &str = env!("CARGO_BIN_EXE_worker");

/// A child process killed if the test ends without stopping it.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with a clean environment: only what the test sets, as on a fresh machine.
fn command(binary: &str, dir: &Path, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command.current_dir(dir).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

fn start(binary: &str, dir: &Path, log_name: &str, vars: &[(&str, &str)]) -> Process {
    start_with(binary, &[], dir, log_name, vars)
}

/// Starts `binary` with `args` (as an image's CMD does).
fn start_with(
    binary: &str,
    args: &[&str],
    dir: &Path,
    log_name: &str,
    vars: &[(&str, &str)],
) -> Process {
    let log = dir.join(log_name);
    let file = std::fs::File::create(&log).unwrap();
    let child = command(binary, dir, vars)
        .args(args)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("the binary starts");
    Process { child, log }
}

fn log_lines(process: &Process) -> Vec<Value> {
    std::fs::read_to_string(&process.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits for a JSON log line with `message`, returning it.
fn wait_for_log(process: &mut Process, message: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = log_lines(process)
            .into_iter()
            .find(|l| l["message"] == message)
        {
            return line;
        }
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!(
                "exited with {status} before logging {message:?}:\n{}",
                std::fs::read_to_string(&process.log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no {message:?} log line in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(process: &mut Process) -> ExitStatus {
    let pid = process.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(binary: &str, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    command(binary, dir, vars).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn get(url: &str, request_id: Option<&str>) -> (u16, String, Value) {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Serves the walking skeleton and stops cleanly on SIGTERM.
async fn serve_and_stop(dir: &Path, vars: &[(&str, &str)]) {
    let mut api = start(API, dir, "api.log", vars);
    let listening = wait_for_log(&mut api, "api listening");
    let base = format!("http://127.0.0.1:{}", listening["port"]);
    let ops = format!("http://127.0.0.1:{}", listening["ops_port"]);

    let (status, _, body) = get(&format!("{base}/health/ready"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get(&format!("{ops}/health/ready"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get(&format!("{base}/api/v1/release-notes"), Some("bin-trace-7")).await;
    assert_eq!(status, 200);
    assert!(body["items"].is_array(), "{body}");
    for (path, status) in [
        ("/api/v1/release-notes/not-an-id".to_owned(), 422),
        (format!("/api/v1/release-notes/{}", uuid_like()), 404),
        ("/no/such/route".to_owned(), 404),
    ] {
        let (got, content_type, body) = get(&format!("{base}{path}"), None).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
    }
    // Metrics are on the operations listener only.
    let (status, _, _) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 404);
    let (_, _, metrics) = get(&format!("{ops}/metrics"), None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"route="/api/v1/release-notes/{id}""#),
        "{metrics}"
    );

    // The request id is on the request's log lines.
    let traced = log_lines(&api)
        .into_iter()
        .find(|l| l["message"] == "request finished" && l["span"]["request_id"] == "bin-trace-7");
    let traced = traced.expect("an access log line carrying the caller's request id");
    assert_eq!(traced["route"], "/api/v1/release-notes");
    assert_eq!(traced["status"], 200);

    let status = terminate(&mut api);
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
}

fn uuid_like() -> &'static str {
    "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
}

#[tokio::test]
async fn api_runs_with_no_configuration_at_all_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Only the ports are chosen, so parallel tests never collide on 8080 and 8082.
    serve_and_stop(
        dir.path(),
        &[("APP__SERVER__PORT", "0"), ("APP__OPS__PORT", "0")],
    )
    .await;
    let data = dir.path().join("data");
    assert!(
        data.join("keel.db").is_file(),
        "SQLite file at ./data/keel.db"
    );
    // Header bytes 18 and 19 are 2 for a WAL-mode database (the -wal file itself is removed
    // by the clean shutdown's checkpoint).
    let header = std::fs::read(data.join("keel.db")).unwrap();
    assert_eq!(&header[18..20], &[2, 2], "WAL mode");
}

#[tokio::test]
async fn api_serves_the_same_on_the_test_database() {
    // PostgreSQL when TEST_DATABASE_URL is set (CI runs both); SQLite in a temp dir otherwise.
    let database = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    serve_and_stop(
        dir.path(),
        &[
            ("APP__SERVER__PORT", "0"),
            ("APP__OPS__PORT", "0"),
            ("DATABASE_URL", database.url()),
        ],
    )
    .await;
}

#[tokio::test]
async fn worker_runs_beside_the_api_on_the_same_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start(
        API,
        dir.path(),
        "api.log",
        &[("APP__SERVER__PORT", "0"), ("APP__OPS__PORT", "0")],
    );
    wait_for_log(&mut api, "api listening");
    let mut worker = start(
        WORKER,
        dir.path(),
        "worker.log",
        &[("APP__WORKER__PORT", "0")],
    );
    let running = wait_for_log(&mut worker, "worker running");
    let base = format!("http://127.0.0.1:{}", running["ops_port"]);

    let (status, _, body) = get(&format!("{base}/health/ready"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"][0]["name"], "database");
    let (status, _, metrics) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.as_str().unwrap().contains("db_pool_connections"),
        "{metrics}"
    );

    assert!(
        terminate(&mut worker).success(),
        "worker exits 0 on SIGTERM"
    );
    assert!(
        log_lines(&worker)
            .iter()
            .any(|l| l["message"] == "worker stopped")
    );
    assert!(terminate(&mut api).success());
}

#[test]
fn config_check_redacts_secrets_and_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "an-actual-secret-value-that-must-not-print-0123456789";
    let output = run(
        API,
        dir.path(),
        &["config", "check"],
        &[
            ("APP__AUTH__JWT_SECRET", secret),
            ("DATABASE_URL", "postgres://keel:hunter2@db.internal/keel"),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("jwt_secret = \"[redacted]\""), "{stdout}");
    assert!(
        stdout.contains("postgres://keel:redacted@db.internal/keel"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(secret) && !stdout.contains("hunter2"),
        "{stdout}"
    );
    for key in ["[ops]", "port = 8082", "trusted_proxies = []", "[docs]"] {
        assert!(stdout.contains(key), "config check shows {key}: {stdout}");
    }

    let output = run(
        API,
        dir.path(),
        &["config", "check"],
        &[("APP__SERVER__PORT", "eighty")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("server.port") && stderr.contains("APP__SERVER__PORT"),
        "{stderr}"
    );

    let output = run(API, dir.path(), &[], &[("APP_ENV", "production")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("auth.jwt_secret") && stderr.contains("database.url"),
        "{stderr}"
    );

    let output = run(WORKER, dir.path(), &[], &[("APP__WORKER__PORTT", "1")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("worker.portt"));
}

#[test]
fn migrate_and_seed_commands() {
    let dir = tempfile::tempdir().unwrap();
    let no_auto = [("APP__DATABASE__AUTO_MIGRATE", "false")];

    let output = run(API, dir.path(), &["migrate", "status"], &no_auto);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("pending  m20261123_000001_create_release_notes"));

    let output = run(API, dir.path(), &["migrate"], &no_auto);
    assert!(text(&output.stdout).contains("applied  m20261123_000001_create_release_notes"));
    let output = run(API, dir.path(), &["migrate", "up"], &no_auto);
    assert_eq!(text(&output.stdout), "database is up to date\n");

    let output = run(API, dir.path(), &["seed"], &no_auto);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("created  release note 0.1.0"));
    let output = run(API, dir.path(), &["seed"], &no_auto);
    assert!(text(&output.stdout).contains("exists   release note 0.1.0"));

    let status = run(API, dir.path(), &["migrate", "status"], &no_auto);
    let newest = text(&status.stdout)
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("applied  "))
        .unwrap()
        .to_owned();
    let output = run(API, dir.path(), &["migrate", "down"], &no_auto);
    assert!(text(&output.stdout).contains(&format!("reverted {newest}")));

    let output = run(
        API,
        dir.path(),
        &["migrate", "fresh"],
        &[
            ("APP_ENV", "production"),
            (
                "APP__AUTH__JWT_SECRET",
                "k3Jx9Qw2Lm8Zp4Rt6Vy1Nb5Hc7Gd0Fs2Ae",
            ),
            (
                "APP__AUTH__PEPPERS__P1",
                "9fQ2mL7xR4tW8yB1nC6vK3hJ5gD0sA2eZ",
            ),
            ("APP__AUTH__ACTIVE_PEPPER", "p1"),
            ("APP__APP__PUBLIC_URL", "https://app.example.com"),
            ("APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION", "true"),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("--force"));
}

/// Sends `body` as JSON with an optional bearer token; returns status and JSON body.
/// Creates `root@example.com` with `api create-admin`, as an operator does, and signs in.
async fn admin_token(dir: &Path, vars: &[(&str, &str)], base: &str) -> String {
    use std::io::Write as _;
    let mut create = command(API, dir, vars)
        .args([
            "create-admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"plum-orbit-kettle-7\n")
        .unwrap();
    assert!(create.wait().unwrap().success());
    let (status, tokens) = post_json(
        &format!("{base}/api/v1/auth/login"),
        None,
        &serde_json::json!({"email": "root@example.com", "password": "plum-orbit-kettle-7"}),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}

async fn post_json(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn job_state(base: &str, token: &str, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/jobs/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_for_state(base: &str, token: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = job_state(base, token, id).await;
        if job["state"] == state {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job never reached {state}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_job_survives_its_worker_being_killed_mid_run() {
    a_job_survives_a_killed_worker(&[]).await;
}

#[tokio::test]
async fn a_job_in_redis_survives_its_worker_being_killed_mid_run() {
    // Needs a Redis server: CI sets TEST_REDIS_URL.
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("skipped: TEST_REDIS_URL is not set");
        return;
    };
    let prefix = format!("keel-killed-{}", std::process::id());
    a_job_survives_a_killed_worker(&[
        ("APP__JOBS__BACKEND", "redis"),
        ("REDIS_URL", &redis),
        ("APP__REDIS__KEY_PREFIX", &prefix),
    ])
    .await;
}

/// A worker killed mid-job: another runs it (the attempt counts); a worker stopped mid-job
/// finishes it first.
async fn a_job_survives_a_killed_worker(extra: &[(&str, &str)]) {
    // PostgreSQL when TEST_DATABASE_URL is set (CI runs both); SQLite in a temp dir otherwise.
    let database = TestDatabase::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = vec![
        ("DATABASE_URL", database.url()),
        ("APP__SERVER__PORT", "0"),
        ("APP__OPS__PORT", "0"),
        ("APP__WORKER__PORT", "0"),
        ("APP__JOBS__POLL_INTERVAL", "50ms"),
        ("APP__JOBS__HEARTBEAT_INTERVAL", "1s"),
        ("APP__JOBS__MISSED_HEARTBEATS", "2"),
    ];
    vars.extend_from_slice(extra);
    let mut api = start(API, dir.path(), "api.log", &vars);
    let listening = wait_for_log(&mut api, "api listening");
    let base = format!("http://127.0.0.1:{}", listening["port"]);
    let token = admin_token(dir.path(), &vars, &base).await;

    let mut first = start(WORKER, dir.path(), "worker-1.log", &vars);
    wait_for_log(&mut first, "worker running");
    let (status, job) = post_json(
        &format!("{base}/api/v1/admin/jobs/probe"),
        Some(&token),
        &serde_json::json!({"sleep_ms": 4000}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_state(&base, &token, &id, "running").await;

    // SIGKILL: no cleanup and no acknowledgement; the job stays claimed by a dead worker.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(job_state(&base, &token, &id).await["state"], "running");

    let mut second = start(WORKER, dir.path(), "worker-2.log", &vars);
    wait_for_log(&mut second, "worker running");
    let job = wait_for_state(&base, &token, &id, "succeeded").await;
    assert_eq!(job["attempts"], 2, "the killed attempt counts: {job}");

    // SIGTERM while a job runs: the worker stops taking jobs, lets it finish, exits 0.
    let (status, job) = post_json(
        &format!("{base}/api/v1/admin/jobs/probe"),
        Some(&token),
        &serde_json::json!({"sleep_ms": 1500}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_state(&base, &token, &id, "running").await;
    assert!(terminate(&mut second).success(), "exit 0 after draining");
    let job = job_state(&base, &token, &id).await;
    assert_eq!(
        job["state"], "succeeded",
        "the running job finished first: {job}"
    );
    assert_eq!(job["attempts"], 1);
    assert!(terminate(&mut api).success());
}

#[test]
fn unusable_schedule_and_mail_settings_stop_the_worker_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (vars, key) in [
        (
            vec![(
                "APP__JOBS__SCHEDULES__NO_SUCH_SCHEDULE__CRON",
                "0 * * * * *",
            )],
            "jobs.schedules.no_such_schedule",
        ),
        (
            vec![(
                "APP__JOBS__SCHEDULES__PURGE_FINISHED_JOBS__CRON",
                "every tuesday",
            )],
            "jobs.schedules.purge_finished_jobs.cron",
        ),
        (vec![("APP__MAIL__FROM", "not a mailbox")], "mail.from"),
    ] {
        let mut all = vars.clone();
        all.push(("APP__WORKER__PORT", "0"));
        let output = run(WORKER, dir.path(), &[], &all);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{vars:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(key),
            "{vars:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn mail_preview_writes_an_eml_and_a_broken_template_override_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let listed = run(API, dir.path(), &["mail", "preview"], &[]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("identity/password_reset"));

    let output = run(
        API,
        dir.path(),
        &["mail", "preview", "identity/password_reset"],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let path = dir
        .path()
        .join("data/mail/preview-identity-password_reset.eml");
    assert_eq!(
        text(&output.stdout).trim(),
        "./data/mail/preview-identity-password_reset.eml"
    );
    // Quoted-printable soft line breaks undone.
    let eml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("=\r\n", "")
        .replace("=\n", "");
    assert!(eml.contains("Subject: Reset your password"), "{eml}");
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(eml.contains("sample-token"), "{eml}");

    // A team's override, found in the default folder without any configuration.
    let overrides = dir.path().join("templates/mail/identity");
    std::fs::create_dir_all(&overrides).unwrap();
    std::fs::write(
        overrides.join("password_reset.subject.txt"),
        "Forgot it? {{ expires_in_minutes }} min",
    )
    .unwrap();
    let out = dir.path().join("custom.eml");
    let output = run(
        API,
        dir.path(),
        &[
            "mail",
            "preview",
            "identity/password_reset",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("Subject: Forgot it? 30 min")
    );

    let unknown = run(
        API,
        dir.path(),
        &["mail", "preview", "billing/invoice"],
        &[],
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("identity/password_reset"),
        "lists what exists"
    );

    // A broken override stops both processes at startup with exit 2, naming the file.
    std::fs::write(overrides.join("password_reset.html"), "<p>{{ link }</p>").unwrap();
    for binary in [API, WORKER] {
        let output = run(
            binary,
            dir.path(),
            &[],
            &[
                ("APP__WORKER__PORT", "0"),
                ("APP__SERVER__PORT", "0"),
                ("APP__OPS__PORT", "0"),
            ],
        );
        assert_eq!(
            output.status.code(),
            Some(2),
            "{binary}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains("identity/password_reset.html"),
            "{binary}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn production_refuses_an_open_edge_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let production = [
        ("APP_ENV", "production"),
        (
            "APP__AUTH__JWT_SECRET",
            "k3Jx9Qw2Lm8Zp4Rt6Vy1Nb5Hc7Gd0Fs2Ae",
        ),
        (
            "APP__AUTH__PEPPERS__P1",
            "9fQ2mL7xR4tW8yB1nC6vK3hJ5gD0sA2eZ",
        ),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://app.example.com"),
        ("APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION", "true"),
    ];
    let output = run(API, dir.path(), &["config", "check"], &production);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("[docs]\nenabled = false"),
        "docs are off: {stdout}"
    );
    assert!(stdout.contains("[ops]\nhost = \"0.0.0.0\""), "{stdout}");

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
        (
            "APP__SERVER__TRUST_FORWARDED_HEADERS",
            "true",
            "server.trusted_proxies",
        ),
    ] {
        // Ports 0: should a refusal regress, the server starts without colliding.
        let mut vars = production.to_vec();
        vars.extend([
            ("APP__SERVER__PORT", "0"),
            ("APP__OPS__PORT", "0"),
            (var, value),
        ]);
        let output = run(API, dir.path(), &[], &vars);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(var),
            "{var}={value}: {stderr}"
        );
    }
}

/// An OTLP/HTTP receiver (JSON encoding) on a random loopback port, collecting every span.
struct Receiver {
    url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start() -> Self {
        use actix_web::{App, HttpResponse, HttpServer, web};
        let spans: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>> = Default::default();
        let collected = spans.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            let collected = collected.clone();
            App::new()
                .app_data(web::PayloadConfig::new(16 << 20))
                .route(
                    "/v1/traces",
                    web::post().to(move |body: web::Bytes| {
                        let collected = collected.clone();
                        async move {
                            let export: Value = serde_json::from_slice(&body).unwrap_or_default();
                            for resource in export["resourceSpans"].as_array().into_iter().flatten()
                            {
                                let service = resource["resource"]["attributes"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .find(|a| a["key"] == "service.name")
                                    .and_then(|a| a["value"]["stringValue"].as_str())
                                    .unwrap_or_default()
                                    .to_owned();
                                for scope in resource["scopeSpans"].as_array().into_iter().flatten()
                                {
                                    for span in scope["spans"].as_array().into_iter().flatten() {
                                        collected
                                            .lock()
                                            .unwrap()
                                            .push((service.clone(), span.clone()));
                                    }
                                }
                            }
                            HttpResponse::Ok().json(serde_json::json!({}))
                        }
                    }),
                )
        })
        .listen(listener)
        .unwrap()
        .workers(1)
        .disable_signals()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            spans,
            server: handle,
        }
    }

    /// Waits (up to 30 s) until `found` accepts the spans received so far.
    async fn wait_for<T>(&self, found: impl Fn(&[(String, Value)]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = found(&self.spans.lock().unwrap()) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "spans never arrived: {:#?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn span_named<'a>(
    spans: &'a [(String, Value)],
    trace: &str,
    name: &str,
) -> Option<&'a (String, Value)> {
    spans.iter().find(|(_, s)| {
        s["traceId"] == trace && s["name"].as_str().is_some_and(|n| n.starts_with(name))
    })
}

#[tokio::test]
async fn a_request_its_statements_and_the_job_it_enqueues_share_one_exported_trace() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let ports = [
        ("APP__SERVER__PORT", "0"),
        ("APP__OPS__PORT", "0"),
        ("APP__WORKER__PORT", "0"),
        ("APP__JOBS__POLL_INTERVAL", "50ms"),
        // Export every 200 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("APP__TELEMETRY__OTLP__PROTOCOL", "http/json"),
    ];
    // The api is configured through Keel's key, the worker through the standard variable.
    let mut api_vars = ports.to_vec();
    api_vars.push(("APP__TELEMETRY__OTLP__ENDPOINT", receiver.url.as_str()));
    let mut worker_vars = ports.to_vec();
    worker_vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()));
    let mut api = start(API, dir.path(), "api.log", &api_vars);
    let listening = wait_for_log(&mut api, "api listening");
    let base = format!("http://127.0.0.1:{}", listening["port"]);
    let mut worker = start(WORKER, dir.path(), "worker.log", &worker_vars);
    wait_for_log(&mut worker, "worker running");

    let client = reqwest::Client::new();
    let registered = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({ "email": "ada@example.com", "password": "plum-orbit-kettle-7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    // The caller's own trace: Keel's spans must join it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let forgot = client
        .post(format!("{base}/api/v1/auth/password/forgot"))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&serde_json::json!({ "email": "ada@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), 202);

    let (request, job) = receiver
        .wait_for(|spans| {
            let request = span_named(spans, trace, "POST /api/v1/auth/password/forgot")?.clone();
            let job = span_named(spans, trace, "job identity.send_token_mail")?.clone();
            span_named(spans, trace, "mail.send")?;
            Some((request, job))
        })
        .await;
    assert_eq!(request.0, "keel-api");
    assert_eq!(
        request.1["parentSpanId"], caller_span,
        "the request continues the caller's trace"
    );
    let request_id = request.1["spanId"].as_str().unwrap().to_owned();
    let spans = receiver.spans.lock().unwrap().clone();
    let statements: Vec<_> = spans
        .iter()
        .filter(|(_, s)| {
            s["parentSpanId"] == request_id.as_str()
                && s["name"].as_str().is_some_and(|n| n.ends_with(" sqlite"))
        })
        .collect();
    assert!(
        !statements.is_empty(),
        "database statements under the request: {spans:#?}"
    );
    assert_eq!(job.0, "keel-worker");
    assert_eq!(
        job.1["parentSpanId"],
        request_id.as_str(),
        "the job is a child of the request that enqueued it"
    );
    let mail = span_named(&spans, trace, "mail.send").unwrap();
    assert_eq!(mail.1["parentSpanId"], job.1["spanId"]);
    // The ids are on the log lines too.
    let logged = log_lines(&api).into_iter().find(|l| {
        l["message"] == "request finished" && l["route"] == "/api/v1/auth/password/forgot"
    });
    let logged = logged.expect("an access line");
    assert_eq!(logged["span"]["trace_id"], trace);
    assert_eq!(logged["span"]["span_id"], request_id.as_str());
    assert_eq!(logged["span"]["credential"], "none");
    assert_eq!(logged["span"]["client_ip"], "127.0.0.1");

    assert!(terminate(&mut worker).success());
    assert!(terminate(&mut api).success());
    receiver.server.stop(false).await;
}

#[tokio::test]
async fn sigterm_turns_readiness_503_first_and_fails_no_request_of_a_client_that_listens() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = start(
        API,
        dir.path(),
        "api.log",
        &[
            ("APP__SERVER__PORT", "0"),
            ("APP__OPS__PORT", "0"),
            ("APP__SERVER__DRAIN_DELAY", "2s"),
        ],
    );
    let listening = wait_for_log(&mut api, "api listening");
    let base = format!("http://127.0.0.1:{}", listening["port"]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // A load balancer's view: probe readiness, send traffic while ready, stop when it is not.
    let load = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let (mut served, mut failed) = (0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match client.get(format!("{base}/health/ready")).send().await {
                    Ok(response) if response.status() == 503 => return (served, failed, true),
                    Ok(response) if response.status() == 200 => {}
                    other => failed.push(format!("readiness: {other:?}")),
                }
                for _ in 0..5 {
                    match client
                        .get(format!("{base}/api/v1/release-notes"))
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 200 => served += 1,
                        other => failed.push(format!("request: {other:?}")),
                    }
                }
            }
            (served, failed, false)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = api.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (served, failed, saw_not_ready) = load.await.unwrap();
    assert!(saw_not_ready, "readiness turned 503 after SIGTERM");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(served > 0);
    // While draining, requests are still served.
    let (status, _, _) = get(&format!("{base}/api/v1/release-notes"), None).await;
    assert_eq!(status, 200, "still serving during the drain delay");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = api.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after the drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn version_names_the_commit_and_migrations_need_only_the_database() {
    let dir = tempfile::tempdir().unwrap();
    for binary in [API, WORKER] {
        let output = run(binary, dir.path(), &["--version"], &[]);
        assert!(output.status.success());
        let stdout = text(&output.stdout);
        assert!(
            stdout.contains(env!("CARGO_PKG_VERSION")) && stdout.contains("(git "),
            "{stdout}"
        );
    }
    // The migrations image: production, the database URL, nothing else.
    let url = format!("sqlite://{}/keel.db?mode=rwc", dir.path().display());
    let output = run(
        API,
        dir.path(),
        &["migrate", "up"],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", url.as_str()),
            ("APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION", "true"),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Serving still refuses the same configuration: it lacks the secrets.
    let output = run(
        API,
        dir.path(),
        &["config", "check"],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", url.as_str()),
            ("APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION", "true"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("auth.jwt_secret"));
}

#[tokio::test]
async fn the_images_commands_start_as_the_manifests_start_them() {
    // What deploy/Dockerfile and the manifests run: `api migrate up` with only the database,
    // then `api serve` and `worker run` in production mode with secrets as files.
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let url = format!("sqlite://{}/keel.db?mode=rwc", dir.path().display());
    for (name, value) in [
        ("database_url", url.as_str()),
        ("jwt_secret", "k3Jx9Qw2Lm8Zp4Rt6Vy1Nb5Hc7Gd0Fs2Ae"),
        ("pepper_p1", "9fQ2mL7xR4tW8yB1nC6vK3hJ5gD0sA2eZ"),
    ] {
        std::fs::write(secrets.join(name), value).unwrap();
    }
    let file = |name: &str| secrets.join(name).display().to_string();
    let (database_url, jwt_secret, pepper) =
        (file("database_url"), file("jwt_secret"), file("pepper_p1"));
    let database = [
        ("APP_ENV", "production"),
        ("APP__DATABASE__URL_FILE", database_url.as_str()),
        ("APP__DATABASE__ALLOW_SQLITE_IN_PRODUCTION", "true"),
    ];
    let migrated = run(API, dir.path(), &["migrate", "up"], &database);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));

    let mut vars = database.to_vec();
    vars.extend([
        ("APP__AUTH__JWT_SECRET_FILE", jwt_secret.as_str()),
        ("APP__AUTH__PEPPERS__P1_FILE", pepper.as_str()),
        ("APP__AUTH__ACTIVE_PEPPER", "p1"),
        ("APP__APP__PUBLIC_URL", "https://keel.example.com"),
        ("APP__SERVER__PORT", "0"),
        ("APP__OPS__PORT", "0"),
        ("APP__WORKER__PORT", "0"),
        ("APP__SERVER__DRAIN_DELAY", "1s"),
    ]);
    let mut api = start_with(API, &["serve"], dir.path(), "api.log", &vars);
    let listening = wait_for_log(&mut api, "api listening");
    let base = format!("http://127.0.0.1:{}", listening["port"]);
    let ops = format!("http://127.0.0.1:{}", listening["ops_port"]);
    let mut worker = start_with(WORKER, &["run"], dir.path(), "worker.log", &vars);
    let running = wait_for_log(&mut worker, "worker running");
    let worker_ops = format!("http://127.0.0.1:{}", running["ops_port"]);

    for url in [
        format!("{base}/health/ready"),
        format!("{ops}/health/ready"),
        format!("{worker_ops}/health/ready"),
    ] {
        let (status, _, body) = get(&url, None).await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    // Production: the docs are off, metrics only on the ops port.
    assert_eq!(get(&format!("{base}/openapi.json"), None).await.0, 404);
    let (_, _, metrics) = get(&format!("{ops}/metrics"), None).await;
    assert!(
        metrics.as_str().unwrap().contains("build_info{"),
        "{metrics}"
    );
    assert!(terminate(&mut worker).success());
    assert!(terminate(&mut api).success());
}

/// The process's peak resident memory (kB) since the last reset.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends a multipart upload of `size` bytes over a raw connection, `chunk` bytes at a time (the
/// client holds no more than one chunk either); returns the status line and the body.
fn stream_upload(port: u16, path: &str, token: &str, size: usize) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let boundary = "keel-test-boundary-7f3a";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let length = format!("Content-Length: {}\r\n", head.len() + size + tail.len());
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n{length}Connection: close\r\n\r\n{head}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let chunk = vec![b'k'; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        // The server may answer (413) and close before everything is sent.
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = stream.write_all(tail.as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test]
async fn a_20_mib_upload_streams_through_the_api_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("APP__SERVER__PORT", "0"),
        ("APP__OPS__PORT", "0"),
        ("APP__SERVER__WORKERS", "1"),
    ];
    let mut api = start(API, dir.path(), "api.log", &vars);
    let listening = wait_for_log(&mut api, "api listening");
    let port: u16 = listening["port"].as_u64().unwrap().try_into().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let token = admin_token(dir.path(), &vars, &base).await;
    let (status, project) = post_json(
        &format!("{base}/api/v1/projects"),
        Some(&token),
        &serde_json::json!({"name": "Big files"}),
    )
    .await;
    assert_eq!(status, 201, "{project}");
    let path = format!(
        "/api/v1/projects/{}/attachments",
        project["id"].as_str().unwrap()
    );

    // Warm up: the first uploads start the blocking threads that write parts and their
    // allocator heaps (about 2 MiB each, once). Small ones: whatever they leave allocated
    // could hide a server that buffers, so they stay far below the 20 MiB measured.
    for warm_up in [1024 * 1024, 2 * 1024 * 1024] {
        let (status, body) = tokio::task::spawn_blocking({
            let (path, token) = (path.clone(), token.clone());
            move || stream_upload(port, &path, &token, warm_up)
        })
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let pid = api.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak_rss_kb(pid);
    let size = 20 * 1024 * 1024;
    let (status, body) = tokio::task::spawn_blocking({
        let (path, token) = (path.clone(), token.clone());
        move || stream_upload(port, &path, &token, size)
    })
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let grown = peak_rss_kb(pid).saturating_sub(before);
    assert!(
        grown < 5 * 1024,
        "peak RSS grew by {grown} kB for a 20 MiB upload"
    );
    assert!(body.contains(&format!("\"size_bytes\":{size}")), "{body}");
    let stored: u64 = walk_sizes(&dir.path().join("data/files"));
    assert_eq!(
        stored,
        (size + 3 * 1024 * 1024) as u64,
        "every file is on disk, whole"
    );

    let status = terminate(&mut api);
    assert!(status.success());
}

fn walk_sizes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        walk_sizes(&path)
                    } else {
                        entry.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
