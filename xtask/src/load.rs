//! A small HTTP load generator for the fault and soak runs: blocking clients on threads, every
//! answer tallied (status, latency, whether an error was a problem document with `Retry-After`),
//! every acknowledged write remembered so the run can look for it afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// One answer, or its absence (`status` 0: no connection, a reset, or the client's timeout).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// HTTP status; 0 when no answer arrived.
    pub(crate) status: u16,
    /// Time from sending to the whole answer.
    pub(crate) latency: Duration,
    /// The body, as text.
    pub(crate) body: String,
    /// Whether `Retry-After` was present.
    pub(crate) retry_after: bool,
    /// Whether the content type was `application/problem+json`.
    pub(crate) problem: bool,
    /// The transport error, when there was no answer.
    pub(crate) error: Option<String>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// Whether the status is 2xx.
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client for one api base URL, optionally with a bearer token.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client whose every request gives up after `timeout`.
    pub(crate) fn new(base: &str, timeout: Duration) -> Self {
        Self {
            agent: agent(timeout),
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            timeout,
        }
    }

    /// The same client with a connection pool of its own (one load thread, one connection).
    pub(crate) fn fresh(&self) -> Self {
        Self {
            agent: agent(self.timeout),
            ..self.clone()
        }
    }

    /// The same client, sending `token` as a bearer token.
    pub(crate) fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// `GET path`.
    pub(crate) fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, None)
    }

    /// `POST path` with a JSON body and, optionally, an `Idempotency-Key`.
    pub(crate) fn post(&self, path: &str, body: &Value, key: Option<&str>) -> Answer {
        self.send("POST", path, Some(body), key)
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>, key: Option<&str>) -> Answer {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json, application/problem+json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        let outcome = request
            .body(payload)
            .map_err(|e| e.to_string())
            .and_then(|request| self.agent.run(request).map_err(|e| e.to_string()));
        match outcome {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let problem = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/problem+json"));
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(16 * 1024 * 1024)
                    .read_to_string()
                    .unwrap_or_default();
                Answer {
                    status,
                    latency: started.elapsed(),
                    body,
                    retry_after,
                    problem,
                    error: None,
                }
            }
            Err(error) => Answer {
                status: 0,
                latency: started.elapsed(),
                body: String::new(),
                retry_after: false,
                problem: false,
                error: Some(error),
            },
        }
    }

    /// Signs in; the access token.
    pub(crate) fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let credentials = json!({ "email": email, "password": password });
        let answer = self.post("/api/v1/auth/login", &credentials, None);
        if answer.status != 200 {
            bail!(
                "signing in as {email} answered {} {}",
                answer.status,
                answer.body
            );
        }
        answer
            .json()
            .pointer("/access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("no access_token in the sign-in answer")
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections_per_host(4)
        .build()
        .into()
}

/// Every answer of a run, by status, with latencies.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Answers per status (0 = none).
    pub(crate) by_status: BTreeMap<u16, u64>,
    /// Latencies of every answer, in order of arrival.
    pub(crate) latencies: Vec<Duration>,
    /// Error answers (4xx/5xx) that were not problem documents.
    pub(crate) not_problem: u64,
    /// 503 answers without `Retry-After`.
    pub(crate) unavailable_without_retry_after: u64,
    /// A few transport errors, for the report.
    pub(crate) errors: Vec<String>,
}

impl Tally {
    /// Counts one answer.
    pub(crate) fn add(&mut self, answer: &Answer) {
        *self.by_status.entry(answer.status).or_default() += 1;
        self.latencies.push(answer.latency);
        if answer.status >= 400 && !answer.problem {
            self.not_problem += 1;
        }
        if answer.status == 503 && !answer.retry_after {
            self.unavailable_without_retry_after += 1;
        }
        if let Some(error) = &answer.error
            && self.errors.len() < 5
        {
            self.errors.push(error.clone());
        }
    }

    /// Adds another tally to this one.
    pub(crate) fn merge(&mut self, other: &Self) {
        for (status, count) in &other.by_status {
            *self.by_status.entry(*status).or_default() += count;
        }
        self.latencies.extend_from_slice(&other.latencies);
        self.not_problem += other.not_problem;
        self.unavailable_without_retry_after += other.unavailable_without_retry_after;
        for error in &other.errors {
            if self.errors.len() < 5 {
                self.errors.push(error.clone());
            }
        }
    }

    /// All answers.
    pub(crate) fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Answers whose status satisfies `pick`.
    pub(crate) fn count(&self, pick: impl Fn(u16) -> bool) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| pick(**status))
            .map(|(_, count)| count)
            .sum()
    }

    /// The slowest answer.
    pub(crate) fn max_latency(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }

    /// `200×812, 503×40` style summary.
    pub(crate) fn statuses(&self) -> String {
        self.by_status
            .iter()
            .map(|(status, count)| {
                if *status == 0 {
                    format!("no answer×{count}")
                } else {
                    format!("{status}×{count}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A write the api acknowledged with 2xx: the project names it created.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    /// The names of the projects the write created (one, or a bulk's items).
    pub(crate) names: Vec<String>,
}

/// What the load threads share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Set to stop every thread after its current request.
    pub(crate) stop: AtomicBool,
    /// Set while clients must hold off (they stop sending, as a client watching readiness).
    pub(crate) paused: AtomicBool,
    /// Every answer.
    pub(crate) tally: Mutex<Tally>,
    /// Every acknowledged write.
    pub(crate) acks: Mutex<Vec<Ack>>,
    /// Every write sent, acknowledged or not (for the partial-write checks).
    pub(crate) sent: Mutex<Vec<Ack>>,
    /// Requests sent.
    pub(crate) requests: AtomicU64,
    /// Unique to this load (process and generation): every name and key it writes carries it,
    /// so two loads of one run never share an `Idempotency-Key`.
    pub(crate) run_id: String,
    /// Who [`Role::Mixed`] signs in as.
    pub(crate) credentials: Mutex<Option<(String, String)>>,
}

impl Shared {
    /// A snapshot of the tally.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A snapshot of the acknowledged writes.
    pub(crate) fn acks(&self) -> Vec<Ack> {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A snapshot of every write sent.
    pub(crate) fn sent(&self) -> Vec<Ack> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, answer: &Answer) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(answer);
    }
}

/// What a load thread does in a loop.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Creates a project (with an `Idempotency-Key`), then reads it back.
    Writer,
    /// Creates five projects in one bulk request (all or nothing).
    BulkWriter,
    /// Lists projects and reads its own account.
    Reader,
    /// Reads one project by id, as fast as it can.
    PointReader,
    /// The soak's mix: mostly reads, a write in five, a sign-in in twenty, a job in fifty.
    Mixed,
}

/// Loads started so far (names must be unique across them: the runs count names).
static SEEDS: AtomicU64 = AtomicU64::new(0);

/// Threads sending requests until [`Shared::stop`].
pub(crate) struct Load {
    /// Their shared state.
    pub(crate) shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `roles.len()` threads, each with its own client (and connection).
    pub(crate) fn start(client: &Client, roles: &[Role], pace: Option<Duration>) -> Self {
        Self::start_with(client, roles, pace, Shared::default())
    }

    /// [`Load::start`] with prepared shared state (e.g. the credentials of sign-ins).
    pub(crate) fn start_with(
        client: &Client,
        roles: &[Role],
        pace: Option<Duration>,
        shared: Shared,
    ) -> Self {
        let mut shared = shared;
        shared.run_id = format!(
            "{}.{}",
            std::process::id(),
            SEEDS.fetch_add(1, Ordering::SeqCst)
        );
        let shared = Arc::new(shared);
        // A project for the point readers, created before the clock starts.
        let seed_id = client
            .post(
                "/api/v1/projects",
                &json!({ "name": format!("seed-{}", shared.run_id) }),
                None,
            )
            .json()
            .pointer("/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default();
        let handles = roles
            .iter()
            .enumerate()
            .map(|(index, role)| {
                let client = client.fresh();
                let shared = Arc::clone(&shared);
                let role = *role;
                let seed_id = seed_id.clone();
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || run(client, &shared, role, index, &seed_id, pace))
            })
            .collect::<Result<Vec<_>, _>>();
        let handles = match handles {
            Ok(handles) => handles,
            Err(error) => {
                // Fewer clients than asked would make every figure of the run a lie.
                shared.stop.store(true, Ordering::SeqCst);
                panic!("starting {} load threads failed: {error}", roles.len());
            }
        };
        Self { shared, handles }
    }

    /// Stops the threads and waits for them.
    pub(crate) fn stop(self) -> Arc<Shared> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            let _ = handle.join();
        }
        self.shared
    }
}

/// Remembers a write (sent or acknowledged).
fn note(list: &Mutex<Vec<Ack>>, names: Vec<String>) {
    list.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Ack { names });
}

fn run(
    mut client: Client,
    shared: &Shared,
    role: Role,
    index: usize,
    seed_id: &str,
    pace: Option<Duration>,
) {
    let run_id = &shared.run_id;
    let mut n = 0_u64;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let started = Instant::now();
        n += 1;
        match role {
            Role::Writer => {
                let name = format!("w{run_id}-{index}-{n}");
                note(&shared.sent, vec![name.clone()]);
                let answer = client.post("/api/v1/projects", &json!({ "name": name }), Some(&name));
                shared.record(&answer);
                if answer.ok() {
                    note(&shared.acks, vec![name]);
                    if let Some(id) = answer.json().pointer("/id").and_then(Value::as_str) {
                        shared.record(&client.get(&format!("/api/v1/projects/{id}")));
                    }
                }
            }
            Role::BulkWriter => {
                let names: Vec<String> = (0..5)
                    .map(|item| format!("b{run_id}-{index}-{n}-{item}"))
                    .collect();
                note(&shared.sent, names.clone());
                let items: Vec<Value> = names.iter().map(|name| json!({ "name": name })).collect();
                let key = format!("b{run_id}-{index}-{n}");
                let answer = client.post(
                    "/api/v1/projects/bulk",
                    &json!({ "items": items }),
                    Some(&key),
                );
                shared.record(&answer);
                if answer.ok() {
                    note(&shared.acks, names);
                }
            }
            Role::Reader => {
                let path = if n.is_multiple_of(2) {
                    "/api/v1/projects?limit=20"
                } else {
                    "/api/v1/auth/me"
                };
                shared.record(&client.get(path));
            }
            Role::PointReader => {
                shared.record(&client.get(&format!("/api/v1/projects/{seed_id}")));
            }
            Role::Mixed => mixed(&mut client, shared, index, n, seed_id),
        }
        if let Some(pace) = pace
            && let Some(rest) = pace.checked_sub(started.elapsed())
        {
            std::thread::sleep(rest);
        }
    }
}

fn mixed(client: &mut Client, shared: &Shared, index: usize, n: u64, seed_id: &str) {
    let run_id = &shared.run_id;
    // Sign-ins are spread over the threads: the same account signing in from one address
    // many times at the same instant is refused by design (the password backoff counts
    // attempts before hashing them).
    if (n + index as u64).is_multiple_of(20) {
        let credentials = shared
            .credentials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((email, password)) = credentials {
            let body = json!({ "email": email, "password": password });
            let answer = client.post("/api/v1/auth/login", &body, None);
            shared.record(&answer);
            // Carry on with the fresh token: a run longer than a token's life stays signed in.
            if let Some(token) = answer
                .json()
                .pointer("/access_token")
                .and_then(Value::as_str)
            {
                client.token = Some(token.to_owned());
            }
            return;
        }
    }
    if n % 50 == 1 {
        let body = json!({ "sleep_ms": 5, "queue": "default" });
        shared.record(&client.post("/api/v1/admin/jobs/probe", &body, None));
        return;
    }
    match n % 5 {
        0 => {
            let name = format!("s{run_id}-{index}-{n}");
            let answer = client.post("/api/v1/projects", &json!({ "name": name }), Some(&name));
            shared.record(&answer);
        }
        1 => shared.record(&client.get("/api/v1/projects?limit=20")),
        2 => shared.record(&client.get("/api/v1/auth/me")),
        _ => shared.record(&client.get(&format!("/api/v1/projects/{seed_id}"))),
    }
}
