//! The test harness: spawn the app, talk to it, reach its services directly for setup.

use std::time::Duration;

use keel_app::api::ServerHandle;
use keel_app::{ApiApplication, WorkerApplication};
use keel_config::{Settings, Sources};
use keel_infrastructure::testing::TestDatabase;
use keel_infrastructure::{DatabaseConnection, connect};
use keel_release_notes::testing::NewReleaseNoteFactory;
use keel_release_notes::{ChangeType, ReleaseNote, ReleaseNoteService};
use reqwest::Method;
use serde_json::Value;

/// A running app with its own database.
pub(crate) struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub(crate) base: String,
    /// `http://127.0.0.1:<ops port>`: the operations listener (`/metrics`, `/health/*`).
    pub(crate) ops_base: String,
    /// An HTTP client with a short timeout.
    pub(crate) client: reqwest::Client,
    /// The domain services on the same database, for arranging state.
    pub(crate) services: Services,
    /// A pool on the app's database.
    pub(crate) pool: DatabaseConnection,
    /// The settings the app runs with.
    pub(crate) settings: Settings,
    /// Where the app writes mail (`.eml` files).
    mail_dir: tempfile::TempDir,
    /// Where the app keeps files (`storage.local.dir`).
    pub(crate) files_dir: tempfile::TempDir,
    handle: ServerHandle,
    /// Kept last so the database outlives everything using it.
    pub(crate) database: TestDatabase,
}

/// Starts the app with test defaults.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app with extra configuration variables (`APP__…`).
pub(crate) async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create().await.expect("a test database");
    spawn_app_on(database, vars).await
}

/// A second process on the same database and configuration (a replica).
pub(crate) async fn spawn_replica(of: &TestApp, vars: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::existing(of.database.url());
    spawn_app_on(database, vars).await
}

async fn spawn_app_on(database: TestDatabase, vars: &[(&str, &str)]) -> TestApp {
    let mail_dir = tempfile::tempdir().expect("a mail directory");
    let files_dir = tempfile::tempdir().expect("a files directory");
    let mut all: Vec<(String, String)> = [
        ("APP_ENV", "test"),
        ("APP__SERVER__PORT", "0"),
        ("APP__SERVER__WORKERS", "1"),
        ("APP__DATABASE__MAX_CONNECTIONS", "5"),
        ("APP__WORKER__PORT", "0"),
        ("APP__OPS__PORT", "0"),
        // Fast job turnaround for tests: idle polls every 50 ms, a silent worker is dead
        // after 2 s.
        ("APP__JOBS__POLL_INTERVAL", "50ms"),
        ("APP__JOBS__HEARTBEAT_INTERVAL", "1s"),
        ("APP__JOBS__MISSED_HEARTBEATS", "2"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    all.push(("APP__DATABASE__URL".to_owned(), database.url().to_owned()));
    // The job suite's Redis pass (`cargo xtask test --jobs-on-redis`): the queues in Redis,
    // under a prefix of this database's own, which its replicas share.
    if std::env::var("TEST_JOBS_BACKEND").is_ok_and(|b| b == "redis") {
        let redis =
            std::env::var("TEST_REDIS_URL").expect("TEST_JOBS_BACKEND=redis needs TEST_REDIS_URL");
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(database.url(), &mut hasher);
        let prefix = format!("keel-test-{:016x}", std::hash::Hasher::finish(&hasher));
        all.push(("APP__JOBS__BACKEND".to_owned(), "redis".to_owned()));
        all.push(("APP__REDIS__URL".to_owned(), redis));
        all.push(("APP__REDIS__KEY_PREFIX".to_owned(), prefix));
    }
    all.push((
        "APP__MAIL__DIR".to_owned(),
        mail_dir.path().display().to_string(),
    ));
    all.push((
        "APP__STORAGE__LOCAL__DIR".to_owned(),
        files_dir.path().display().to_string(),
    ));
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::load_from(&Sources::from_vars(all)).expect("valid test settings");
    // `TEST_LOG=1 cargo test ...` shows the app's logs (all tests share one subscriber).
    if std::env::var_os("TEST_LOG").is_some() {
        keel_telemetry::init_logging(&settings, keel_telemetry::LogTarget::Stderr)
            .expect("test logging");
    }

    let app = ApiApplication::build(settings.clone())
        .await
        .expect("the app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let ops_base = format!("http://127.0.0.1:{}", app.ops_port());
    let handle = app.handle();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());

    let pool = connect(&settings.database, "keel-test")
        .await
        .expect("a test pool");
    TestApp {
        base,
        ops_base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client"),
        services: Services::of(&state),
        settings,
        mail_dir,
        files_dir,
        pool,
        handle,
        database,
    }
}

impl TestApp {
    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The absolute URL of `path` on the operations listener.
    pub(crate) fn ops_url(&self, path: &str) -> String {
        format!("{}{path}", self.ops_base)
    }

    /// `GET path` on the operations listener.
    pub(crate) async fn ops_get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.ops_url(path))
            .send()
            .await
            .expect("the request completes")
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the request completes")
    }

    /// `GET path`, expecting `status`, returning the JSON body.
    pub(crate) async fn get_json(&self, path: &str, status: u16) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status().as_u16(), status, "GET {path}");
        response.json().await.expect("a JSON body")
    }

    /// `POST path` with a raw body and content type.
    pub(crate) async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the request completes")
    }

    /// Release-note use cases as Keel itself (every permission).
    pub(crate) fn release_notes(&self) -> ReleaseNoteService<'_> {
        self.services.release_notes.for_system()
    }

    /// Creates a release note, published or not.
    pub(crate) async fn release_note(
        &self,
        version: &str,
        title: &str,
        publish: bool,
    ) -> ReleaseNote {
        let notes = self.release_notes();
        let note = notes
            .create(
                NewReleaseNoteFactory::new()
                    .version(version)
                    .title(title)
                    .change_type(ChangeType::Feature)
                    .build(),
            )
            .await
            .expect("the note is created");
        if publish {
            notes.publish(note.id).await.expect("the note is published")
        } else {
            note
        }
    }
}

/// A password every test account uses (passes the policy).
pub(crate) const PASSWORD: &str = "plum-orbit-kettle-7";

impl TestApp {
    /// `POST path` with a JSON body and an optional bearer token.
    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the request completes")
    }

    /// A request with a bearer token.
    pub(crate) fn authed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `GET path` with a bearer token; returns the JSON body, whatever the status.
    pub(crate) async fn get_authed_json(&self, path: &str, token: &str) -> Value {
        self.authed(reqwest::Method::GET, path, token)
            .send()
            .await
            .expect("the request completes")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Signs up `email` with [`PASSWORD`], expecting 201; returns the user JSON.
    pub(crate) async fn register(&self, email: &str) -> Value {
        let response = self
            .post(
                "/api/v1/auth/register",
                None,
                &serde_json::json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(response.status(), 201, "register {email}");
        response.json().await.expect("a user")
    }

    /// Signs in, expecting 200; returns `{access_token, refresh_token, …}`.
    pub(crate) async fn login_with(&self, email: &str, password: &str) -> Value {
        let response = self
            .post(
                "/api/v1/auth/login",
                None,
                &serde_json::json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status(), 200, "login {email}");
        response.json().await.expect("tokens")
    }

    /// Signs in with [`PASSWORD`]; returns the access token.
    pub(crate) async fn token(&self, email: &str) -> String {
        self.login_with(email, PASSWORD).await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Signs up and signs in a member; returns (user id, access token).
    pub(crate) async fn member(&self, email: &str) -> (String, String) {
        let user = self.register(email).await;
        (
            user["id"].as_str().expect("an id").to_owned(),
            self.token(email).await,
        )
    }

    /// Creates an administrator as `api create-admin` does and signs in; returns the token.
    pub(crate) async fn admin(&self, email: &str) -> String {
        self.services
            .identity
            .for_system()
            .create_admin(email, PASSWORD)
            .await
            .expect("an administrator");
        self.token(email).await
    }

    /// The mails written so far, as raw `.eml` text (quoted-printable soft breaks undone).
    pub(crate) fn mails(&self) -> Vec<String> {
        let mut mails: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(self.mail_dir.path())
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                        .filter_map(|e| {
                            let modified = e.metadata().ok()?.modified().ok()?;
                            let text = std::fs::read_to_string(e.path()).ok()?;
                            Some((
                                modified,
                                text.replace("=\r\n", "")
                                    .replace("=\n", "")
                                    .replace("=3D", "="),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
        mails.sort_by_key(|(modified, _)| *modified);
        mails.into_iter().map(|(_, text)| text).collect()
    }

    /// The `token` of the link in the newest mail.
    pub(crate) fn token_from_last_mail(&self) -> String {
        let mail = self.mails().pop().expect("a mail");
        let start = mail.find("?token=").expect("a link with a token") + "?token=".len();
        mail[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// A worker process running in the test (same code as the `worker` binary); stops on drop.
pub(crate) struct TestWorker {
    /// `http://127.0.0.1:<ops port>` (health and metrics).
    pub(crate) base: String,
    shutdown: tokio_util::sync::CancellationToken,
    stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Stops taking jobs, lets running ones finish, and waits for the worker to exit.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(stopped) = self.stopped.take() {
            stopped
                .await
                .expect("the worker task")
                .expect("a clean stop");
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Starts a worker on the app's database and configuration.
    pub(crate) async fn start_worker(&self) -> TestWorker {
        let worker = WorkerApplication::build(self.settings.clone())
            .await
            .expect("the worker starts");
        let base = format!("http://127.0.0.1:{}", worker.ops_port());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stopped = tokio::spawn(worker.run(shutdown.clone()));
        TestWorker {
            base,
            shutdown,
            stopped: Some(stopped),
        }
    }

    /// Waits (up to 15 s) until at least `count` mails were written; returns them all.
    pub(crate) async fn wait_for_mails(&self, count: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let mails = self.mails();
            if mails.len() >= count || std::time::Instant::now() > deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /api/v1/jobs/{id}` (as `token`) until `done` accepts the job or 15 s pass;
    /// returns the last body.
    pub(crate) async fn wait_for_job(
        &self,
        id: &str,
        token: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let job: Value = self
                .authed(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), token)
                .send()
                .await
                .expect("the request completes")
                .json()
                .await
                .expect("a job");
            if done(&job) || std::time::Instant::now() > deadline {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.handle.stop(false));
        }
    }
}

/// Asserts `response` is a problem document with `status` and `code`; returns its body.
pub(crate) async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response has X-Request-Id");
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    for member in ["type", "title", "detail", "instance"] {
        assert!(
            body.get(member).is_some(),
            "problem lacks `{member}`: {body}"
        );
    }
    body
}

/// The `field` of every entry in a problem's `errors`.
pub(crate) fn error_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON body of `response`, after checking its status.
pub(crate) async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{}", response.url());
    response.json().await.unwrap()
}

/// Sends an authenticated request with an optional JSON body.
pub(crate) async fn send(
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

/// The domain services the tests arrange state through, on the app's database.
#[derive(Clone)]
pub(crate) struct Services {
    pub(crate) release_notes: keel_release_notes::ReleaseNotes,
    pub(crate) identity: keel_identity::Identity,
    pub(crate) activity: keel_activity::Activity,
    pub(crate) projects: keel_projects::Projects,
    /// The job store (the outbox, and the queues in the database or Redis).
    pub(crate) jobs: keel_infrastructure::jobs::JobStore,
}

impl Services {
    /// The running api's own services: what they change, its caches know at once.
    fn of(state: &keel_kernel::AppState) -> Self {
        Self {
            release_notes: state.get().expect("release notes"),
            identity: state.get().expect("identity"),
            activity: state.get().expect("activity"),
            projects: state.get().expect("projects"),
            jobs: state.get().expect("the job store"),
        }
    }
}

/// A free loopback port (bound, then released for a server the test starts).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Waits (up to 30 s) until a server the test started listens on `port`.
pub(crate) fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}
