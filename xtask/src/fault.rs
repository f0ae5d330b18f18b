//! `cargo xtask fault <scenario>`: Keel under a failure, on a private PostgreSQL (and Redis)
//! that the run starts on loopback and may stop, kill or overload without touching anything
//! else on the machine. Each scenario is bounded in time, prints what it checked, and fails
//! when a promise is broken.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use xshell::{Shell, cmd};

use crate::load::{Answer, Client, Load, Role, Tally};
use crate::process::{free_port, target_dir};

pub(crate) const ADMIN_EMAIL: &str = "fault-admin@example.com";
pub(crate) const PASSWORD: &str = "fault-plum-orbit-kettle-7";
/// `server.request_timeout` during the runs: short, so "no hang past it" is quick to prove.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retry waits out the claim a killed process left on its key (the lease: 30 s
/// plus the request timeout).
const LEASE_WAIT: Duration = Duration::from_secs(60);
/// What a client waits for an answer: the request timeout plus room for the answer itself.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A scenario of `cargo xtask fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// PostgreSQL stopped under mixed load, then started again.
    Postgres,
    /// Redis stopped under load with `redis.url` set.
    Redis,
    /// `kill -9` of the api under write load, then a restart.
    KillApi,
    /// `kill -9` of the worker while 1,000 jobs run.
    KillWorker,
    /// SIGTERM under load with readiness drain.
    Sigterm,
    /// 1,024 connections against the api.
    Overload,
    /// Every scenario, in this order.
    All,
}

/// One scenario's outcome, as a row of docs/reliability.md.
struct Report {
    scenario: &'static str,
    load: String,
    checked: Vec<String>,
}

/// Runs `scenario`; `short` is the CI form (shorter outage, fewer jobs).
pub(crate) fn fault(sh: &Shell, scenario: Scenario, short: bool) -> anyhow::Result<()> {
    build(sh, false)?;
    let scenarios: &[Scenario] = if scenario == Scenario::All {
        &[
            Scenario::Postgres,
            Scenario::Redis,
            Scenario::KillApi,
            Scenario::KillWorker,
            Scenario::Sigterm,
            Scenario::Overload,
        ]
    } else {
        std::slice::from_ref(&scenario)
    };
    let mut reports = Vec::new();
    for scenario in scenarios {
        let started = Instant::now();
        eprintln!("\n--> fault {scenario:?}");
        let report = match scenario {
            Scenario::Postgres => postgres_outage(short),
            Scenario::Redis => redis_outage(short),
            Scenario::KillApi => kill_api(short),
            Scenario::KillWorker => kill_worker(short),
            Scenario::Sigterm => sigterm(short),
            Scenario::Overload => overload(short),
            Scenario::All => unreachable!("expanded above"),
        }
        .with_context(|| format!("fault {scenario:?}"))?;
        eprintln!(
            "<-- fault {scenario:?}: passed in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        reports.push(report);
    }
    println!("\n| scenario | load | checked | result |");
    println!("|---|---|---|---|");
    for report in reports {
        println!(
            "| {} | {} | {} | passed |",
            report.scenario,
            report.load,
            report.checked.join("; ")
        );
    }
    Ok(())
}

/// The run's directory (logs, the private cluster), removed at the end unless `KEEL_FAULT_KEEP`.
pub(crate) struct RunDir(pub(crate) PathBuf);

impl RunDir {
    pub(crate) fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("keel-fault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // KEEL_FAULT_KEEP=1 keeps the logs of every run (api.log, worker-*.log, pgdata/).
        if std::env::var_os("KEEL_FAULT_KEEP").is_some() {
            eprintln!("fault: kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL cluster of the run's own, on a free loopback port.
pub(crate) struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    pub(crate) fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data)?;
        // The server refuses to run as root; the cluster then belongs to the postgres user.
        let as_postgres = is_root();
        if as_postgres {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()?;
        }
        let cluster = Self {
            bin,
            data,
            port: free_port()?,
            as_postgres,
        };
        let data = cluster.data.display().to_string();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        cluster.up()?;
        Ok(cluster)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        ensure!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn up(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} -c max_connections=200",
            self.port
        );
        let log = format!("{data}/server.log");
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        )
    }

    fn down(&self) -> anyhow::Result<()> {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
    }

    /// One value from `sql`, through psql.
    fn query(&self, sql: &str) -> anyhow::Result<String> {
        let output = Command::new("psql")
            .args(["-qtAX", &self.url(), "-c", sql])
            .output()
            .context("running psql")?;
        ensure!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory holding `initdb` and `pg_ctl` (Debian keeps them off the PATH).
fn postgres_bin() -> anyhow::Result<PathBuf> {
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .context("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
}

/// A Redis server of the run's own.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            child: None,
        };
        redis.up()?;
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            ensure!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .context("redis-server is not running")?
            .id();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()?;
        ensure!(status.success(), "kill -{name} redis-server failed");
        Ok(())
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}

/// The profile the binaries are taken from (`debug` unless a run chose `release`).
static PROFILE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

fn binary_path(name: &str) -> PathBuf {
    target_dir()
        .join(PROFILE.get().copied().unwrap_or("debug"))
        .join(name)
}

/// Builds the api and the worker in `profile` and runs them from there.
pub(crate) fn build(sh: &Shell, release: bool) -> anyhow::Result<()> {
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    cmd!(
        sh,
        "cargo build --locked --quiet {profile...} --bin api --bin worker"
    )
    .run()?;
    let _ = PROFILE.set(if release { "release" } else { "debug" });
    Ok(())
}

/// A Keel binary (api or worker) of the run, logging to a file in the run directory.
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl Proc {
    pub(crate) fn spawn(
        binary: &str,
        dir: &Path,
        log: &str,
        vars: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))?;
        let child = Command::new(binary_path(binary))
            .current_dir(dir)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("APP__TELEMETRY__LOG_FORMAT", "json")
            .env("APP__TELEMETRY__LOG_LEVEL", "warn,keel_worker::queue=info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        Ok(Self { child })
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{name} failed");
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The api's configuration for a run: the defaults below, then `extra` (which wins).
pub(crate) fn api_vars(
    port: u16,
    database: &str,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let defaults = [
        ("APP__SERVER__PORT", port.to_string()),
        ("APP__OPS__PORT", "0".to_owned()),
        ("DATABASE_URL", database.to_owned()),
        ("APP__BOOTSTRAP__ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("APP__BOOTSTRAP__ADMIN_PASSWORD", PASSWORD.to_owned()),
        // One address sends everything: a per-IP limit would only measure itself.
        ("APP__RATE_LIMIT__ENABLED", "false".to_owned()),
        (
            "APP__SERVER__REQUEST_TIMEOUT",
            format!("{}s", REQUEST_TIMEOUT.as_secs()),
        ),
        ("APP__HEALTH__CHECK_TIMEOUT", "1s".to_owned()),
        ("APP__DATABASE__CONNECT_TIMEOUT", "2s".to_owned()),
        ("APP__DATABASE__ACQUIRE_TIMEOUT", "2s".to_owned()),
    ];
    let mut vars: Vec<(String, String)> = defaults
        .into_iter()
        .filter(|(key, _)| !extra.iter().any(|(k, _)| k == key))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    vars
}

/// Waits until `GET /health/ready` answers 200.
pub(crate) fn wait_ready(client: &Client, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if client.get("/health/ready").status == 200 {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < within,
            "the api was not ready within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Readiness sampled every 50 ms on a thread: the instants it changed, with the status.
struct ReadinessWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, u16)>>,
}

impl ReadinessWatch {
    fn start(client: &Client, on_unready: Option<std::sync::Arc<crate::load::Shared>>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = client.clone();
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut changes: Vec<(Instant, u16)> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let status = client.get("/health/ready").status;
                if changes.last().is_none_or(|(_, last)| *last != status) {
                    changes.push((Instant::now(), status));
                }
                if status != 200
                    && let Some(shared) = &on_unready
                {
                    // A client that watches readiness stops sending as soon as it turns.
                    shared.paused.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            changes
        });
        Self { stop, handle }
    }

    fn finish(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

/// Signs in as the bootstrap administrator.
pub(crate) fn admin(base: &str) -> anyhow::Result<Client> {
    let client = Client::new(base, CLIENT_TIMEOUT);
    let token = client.sign_in(ADMIN_EMAIL, PASSWORD)?;
    Ok(client.with_token(&token))
}

/// What every scenario starts from: its directory, a private PostgreSQL, the api on it (with
/// `extra` configuration), an anonymous client and the administrator's. Dropped in field
/// order: the api first, then the cluster, then the directory.
struct Stage {
    api: Proc,
    vars: Vec<(String, String)>,
    pg: Postgres,
    dir: RunDir,
    anonymous: Client,
    client: Client,
}

impl Stage {
    fn start(name: &str, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = RunDir::new(name)?;
        let pg = Postgres::start(&dir.0)?;
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let vars = api_vars(port, &pg.url(), extra);
        let api = Proc::spawn("api", &dir.0, "api.log", &vars)?;
        let anonymous = Client::new(&base, CLIENT_TIMEOUT);
        wait_ready(&anonymous, Duration::from_secs(60))?;
        let client = admin(&base)?;
        Ok(Self {
            api,
            vars,
            pg,
            dir,
            anonymous,
            client,
        })
    }

    /// Starts the api again (after a kill); how long until it was ready.
    fn restart_api(&mut self) -> anyhow::Result<Duration> {
        self.api = Proc::spawn("api", &self.dir.0, "api.log", &self.vars)?;
        wait_ready(&self.anonymous, Duration::from_secs(30))
    }
}

/// Projects by name, with whether each has its `project.created` activity entry.
fn stored_projects(pg: &Postgres) -> anyhow::Result<BTreeMap<String, (u64, bool)>> {
    let rows = pg.query(
        "SELECT p.name || '|' || count(*) OVER (PARTITION BY p.name) || '|' || \
         (EXISTS (SELECT 1 FROM activity a WHERE a.action = 'project.created' \
           AND a.resource_id = p.id::text))::text FROM projects p",
    )?;
    let mut found = BTreeMap::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.rsplitn(3, '|');
        let (Some(activity), Some(count), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("unexpected row {line}");
        };
        found.insert(name.to_owned(), (count.parse()?, activity == "true"));
    }
    Ok(found)
}

/// Every acknowledged project is stored once, with its activity entry.
fn check_acknowledged(pg: &Postgres, acks: &[crate::load::Ack]) -> anyhow::Result<usize> {
    let stored = stored_projects(pg)?;
    let mut checked = 0;
    for ack in acks {
        for name in &ack.names {
            match stored.get(name) {
                None => bail!("acknowledged project {name} is missing"),
                Some((count, _)) if *count != 1 => bail!("project {name} is stored {count} times"),
                Some((_, false)) => bail!("project {name} has no activity entry"),
                Some(_) => checked += 1,
            }
        }
    }
    Ok(checked)
}

pub(crate) fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

fn ensure_only(tally: &Tally, allowed: &[u16], what: &str) -> anyhow::Result<()> {
    let unexpected: Vec<String> = tally
        .by_status
        .iter()
        .filter(|(status, _)| !allowed.contains(status) && !(200..300).contains(*status))
        .map(|(status, count)| format!("{status}×{count}"))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "{what}: unexpected answers {} (all: {}; transport errors: {:?})",
        unexpected.join(", "),
        tally.statuses(),
        tally.errors
    );
    Ok(())
}

fn postgres_outage(short: bool) -> anyhow::Result<Report> {
    let outage = Duration::from_secs(if short { 5 } else { 10 });
    let stage = Stage::start("postgres", &[])?;
    let (pg, anonymous, client) = (&stage.pg, &stage.anonymous, &stage.client);
    let roles = [
        Role::Writer,
        Role::Writer,
        Role::Writer,
        Role::BulkWriter,
        Role::Reader,
        Role::Reader,
        Role::PointReader,
        Role::PointReader,
    ];
    let load = Load::start(client, &roles, None);
    let watch = ReadinessWatch::start(anonymous, None);
    std::thread::sleep(Duration::from_secs(3));
    let before = load.shared.tally();
    // Instants taken before each transition: readiness may change before pg_ctl returns.
    let stopped = Instant::now();
    pg.down()?;
    std::thread::sleep(outage);
    let during = load.shared.tally();
    // Recovery counts from the start of PostgreSQL's own start-up (conservative).
    let restarted = Instant::now();
    pg.up()?;
    // Recovered: a write through the api succeeds again.
    let recovered = loop {
        let answer = client.post(
            "/api/v1/projects",
            &json!({ "name": format!("probe-{}", restarted.elapsed().as_millis()) }),
            None,
        );
        if answer.ok() {
            break restarted.elapsed();
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(30),
            "no write succeeded within 30 s of PostgreSQL's return: {} {}",
            answer.status,
            answer.body
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    let shared = load.stop();
    let readiness = watch.finish();
    let tally = shared.tally();
    ensure_only(&tally, &[503], "under a database outage")?;
    ensure!(
        tally.not_problem == 0 && tally.unavailable_without_retry_after == 0,
        "every refusal must be a problem document with Retry-After ({} were not problems, {} 503s had no Retry-After)",
        tally.not_problem,
        tally.unavailable_without_retry_after
    );
    ensure!(
        tally.max_latency() <= REQUEST_TIMEOUT + Duration::from_secs(1),
        "a request took {} (request_timeout {REQUEST_TIMEOUT:?})",
        ms(tally.max_latency())
    );
    let unready = readiness
        .iter()
        .find(|(at, status)| *at >= stopped && *status == 503)
        .map(|(at, _)| at.duration_since(stopped))
        .context("/health/ready never turned 503 while PostgreSQL was down")?;
    let ready_again = readiness
        .iter()
        .find(|(at, status)| *at >= restarted && *status == 200)
        .map(|(at, _)| at.duration_since(restarted))
        .context("/health/ready did not turn 200 after PostgreSQL returned")?;
    ensure!(
        recovered <= Duration::from_secs(5) && ready_again <= Duration::from_secs(5),
        "recovery took {} (writes) / {} (readiness); the promise is 5 s",
        ms(recovered),
        ms(ready_again)
    );
    let refused_during = during.count(|s| s == 503) - before.count(|s| s == 503);
    ensure!(
        refused_during > 0,
        "no request was refused during the outage: the load did not reach the database"
    );
    let acks = shared.acks();
    let checked = check_acknowledged(pg, &acks)?;
    Ok(Report {
        scenario: "PostgreSQL stopped under load",
        load: format!(
            "8 clients (3 writers, 1 bulk writer, 4 readers), {}-s outage; {} requests",
            outage.as_secs(),
            tally.total()
        ),
        checked: vec![
            format!("answers: {}", tally.statuses()),
            format!(
                "every refusal a 503 problem with Retry-After; slowest answer {} (timeout {} s)",
                ms(tally.max_latency()),
                REQUEST_TIMEOUT.as_secs()
            ),
            format!("readiness 503 after {}", ms(unready)),
            format!(
                "writes again {} and ready {} after PostgreSQL's return, no restart",
                ms(recovered),
                ms(ready_again)
            ),
            format!(
                "all {checked} acknowledged projects stored once, each with its activity entry"
            ),
        ],
    })
}

fn redis_outage(short: bool) -> anyhow::Result<Report> {
    let outage = Duration::from_secs(if short { 5 } else { 10 });
    let mut redis = Redis::start()?;
    let ops_port = free_port()?;
    let stage = Stage::start(
        "redis",
        &[
            ("APP__REDIS__URL", redis.url()),
            // Limits on: they are what falls back.
            ("APP__RATE_LIMIT__ENABLED", "true".to_owned()),
            (
                "APP__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE",
                "100000".to_owned(),
            ),
            ("APP__OPS__PORT", ops_port.to_string()),
        ],
    )?;
    let (pg, anonymous, client) = (&stage.pg, &stage.anonymous, &stage.client);
    let roles = [
        Role::Writer,
        Role::Writer,
        Role::Reader,
        Role::Reader,
        Role::PointReader,
    ];
    let load = Load::start(client, &roles, None);
    let watch = ReadinessWatch::start(anonymous, None);
    std::thread::sleep(Duration::from_secs(2));
    let ops = Client::new(&format!("http://127.0.0.1:{ops_port}"), CLIENT_TIMEOUT);
    let redis_check = |ops: &Client| {
        ops.get("/health")
            .json()
            .pointer("/checks")
            .and_then(Value::as_array)
            .and_then(|checks| {
                checks
                    .iter()
                    .find(|c| c["name"] == "redis")
                    .and_then(|c| c["status"].as_str().map(str::to_owned))
            })
            .unwrap_or_default()
    };
    // Sign-ins go through the rate limiter and the password backoff, both on Redis.
    let sign_in_for = |tally: &mut Tally, period: Duration| {
        let started = Instant::now();
        while started.elapsed() < period {
            let answer = anonymous.post(
                "/api/v1/auth/login",
                &json!({ "email": ADMIN_EMAIL, "password": PASSWORD }),
                None,
            );
            tally.add(&answer);
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let wait_for_redis = |ops: &Client| -> anyhow::Result<Duration> {
        let returned = Instant::now();
        // Back in use: the health report's redis check passes again, without a restart.
        while redis_check(ops) != "ok" {
            ensure!(
                returned.elapsed() < Duration::from_secs(10),
                "the api did not reconnect to Redis within 10 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(returned.elapsed())
    };
    let mut sign_ins = Tally::default();
    // First Redis stops answering (SIGSTOP: connections stay open, nothing comes back), the
    // hard case for a client; then it is killed (connections refused).
    let mut phases = Vec::new();
    for phase in ["unresponsive (SIGSTOP)", "killed"] {
        let before = load.shared.tally();
        if phase == "killed" {
            redis.down();
        } else {
            redis.signal("STOP")?;
        }
        sign_in_for(&mut sign_ins, outage);
        let seen = redis_check(&ops);
        ensure!(
            seen == "fail",
            "the health report shows redis as `{seen}` while it is {phase}"
        );
        let during = load.shared.tally();
        if phase == "killed" {
            redis.up()?;
        } else {
            redis.signal("CONT")?;
        }
        let reconnected = wait_for_redis(&ops)?;
        let window = &during.latencies[before.latencies.len()..];
        let slowest = window.iter().copied().max().unwrap_or_default();
        phases.push(format!(
            "{phase}: slowest answer {}, reconnected {} after its return",
            ms(slowest),
            ms(reconnected)
        ));
    }
    let after = anonymous.post(
        "/api/v1/auth/login",
        &json!({ "email": ADMIN_EMAIL, "password": PASSWORD }),
        None,
    );
    let shared = load.stop();
    let readiness = watch.finish();
    let tally = shared.tally();
    ensure_only(&tally, &[], "with Redis down")?;
    ensure_only(&sign_ins, &[], "signing in with Redis down")?;
    // One Redis timeout (500 ms) at most, then a pause: never the request timeout.
    let slowest = tally.max_latency().max(sign_ins.max_latency());
    ensure!(
        slowest <= Duration::from_millis(1500),
        "a request waited {} on a Redis that was away",
        ms(slowest)
    );
    ensure!(after.ok(), "sign-in after Redis returned: {}", after.status);
    ensure!(
        readiness.iter().all(|(_, status)| *status == 200),
        "readiness left 200 with only Redis down: {:?}",
        readiness.iter().map(|(_, s)| s).collect::<Vec<_>>()
    );
    let checked = check_acknowledged(pg, &shared.acks())?;
    Ok(Report {
        scenario: "Redis stopped under load (redis.url set)",
        load: format!(
            "5 clients (2 writers, 3 readers) + a sign-in every 250 ms; Redis unresponsive for {0} s, then killed for {0} s; {1} requests",
            outage.as_secs(),
            tally.total() + sign_ins.total()
        ),
        checked: vec![
            format!(
                "answers: {}, p99 {}; sign-ins during the outage: {}, slowest {}",
                tally.statuses(),
                ms(tally.quantile(0.99)),
                sign_ins.statuses(),
                ms(sign_ins.max_latency())
            ),
            "limits and backoff fail open, the session cache falls back to the database (docs/security.md)".to_owned(),
            "readiness stayed 200 (Redis is not required; the health report showed it failing)"
                .to_owned(),
            phases.join("; "),
            format!("all {checked} acknowledged projects stored once"),
        ],
    })
}

fn kill_api(short: bool) -> anyhow::Result<Report> {
    let kills = if short { 1 } else { 3 };
    let mut stage = Stage::start("kill-api", &[])?;
    let client = stage.client.clone();
    let mut all_sent = Vec::new();
    let mut all_acks = Vec::new();
    let mut restarts = Vec::new();
    let mut total = Tally::default();
    for _ in 0..kills {
        let roles = [
            Role::Writer,
            Role::Writer,
            Role::Writer,
            Role::Writer,
            Role::BulkWriter,
            Role::BulkWriter,
        ];
        let load = Load::start(&client, &roles, None);
        std::thread::sleep(Duration::from_millis(2500));
        stage.api.kill9();
        let shared = load.stop();
        restarts.push(stage.restart_api()?);
        total.merge(&shared.tally());
        all_sent.extend(shared.sent());
        all_acks.extend(shared.acks());
    }
    // Nothing half-done: every stored project has its activity entry, and every bulk request
    // stored all of its items or none, acknowledged or not.
    let stored = stored_projects(&stage.pg)?;
    for (name, (count, activity)) in &stored {
        ensure!(*count == 1, "project {name} stored {count} times");
        ensure!(
            *activity,
            "project {name} has no activity entry: a partial use case"
        );
    }
    let mut partial_bulks = 0;
    let mut unacknowledged_stored = 0;
    let acknowledged: BTreeSet<&String> = all_acks.iter().flat_map(|a| &a.names).collect();
    for sent in &all_sent {
        let present = sent
            .names
            .iter()
            .filter(|n| stored.contains_key(*n))
            .count();
        if present != 0 && present != sent.names.len() {
            partial_bulks += 1;
        }
        if present > 0 && !sent.names.iter().any(|n| acknowledged.contains(n)) {
            unacknowledged_stored += 1;
        }
    }
    ensure!(
        partial_bulks == 0,
        "{partial_bulks} bulk writes are partly stored"
    );
    let checked = check_acknowledged(&stage.pg, &all_acks)?;
    // A client retries every unanswered write with its Idempotency-Key: no duplicates.
    let mut retried = 0;
    let mut held = 0;
    let mut answers_lost = 0;
    for sent in all_sent
        .iter()
        .filter(|s| !s.names.iter().any(|n| acknowledged.contains(n)))
    {
        let retry = || {
            if sent.names.len() == 1 {
                client.post(
                    "/api/v1/projects",
                    &json!({ "name": sent.names[0] }),
                    Some(&sent.names[0]),
                )
            } else {
                let items: Vec<Value> = sent.names.iter().map(|n| json!({ "name": n })).collect();
                let key = sent.names[0].rsplit_once('-').map_or("", |(k, _)| k);
                client.post(
                    "/api/v1/projects/bulk",
                    &json!({ "items": items }),
                    Some(key),
                )
            }
        };
        // A key the killed process had claimed answers 409 until its lease ends (the write
        // may have committed); the client waits it out, as Retry-After tells it to.
        let started = Instant::now();
        let lost = |a: &Answer| a.json()["code"] == "idempotency.answer_lost";
        let mut answer = retry();
        while answer.status == 409 && !lost(&answer) && started.elapsed() < LEASE_WAIT {
            std::thread::sleep(Duration::from_secs(1));
            answer = retry();
        }
        let answer = Answer {
            latency: started.elapsed(),
            ..answer
        };
        if lost(&answer) {
            // Committed before the kill, answer gone with the process: not run again.
            answers_lost += 1;
            retried += 1;
            continue;
        }
        ensure!(
            answer.ok(),
            "retrying {:?} answered {} {}",
            sent.names,
            answer.status,
            answer.body
        );
        retried += 1;
        if answer.latency > Duration::from_secs(1) {
            held += 1;
        }
    }
    let after_retries = stored_projects(&stage.pg)?;
    for sent in &all_sent {
        for name in &sent.names {
            match after_retries.get(name) {
                Some((1, true)) => {}
                other => bail!("after retries, project {name} is {other:?}"),
            }
        }
    }
    let slowest_restart = restarts.iter().max().copied().unwrap_or_default();
    Ok(Report {
        scenario: "`kill -9` of the api under write load",
        load: format!(
            "6 writers (4 single, 2 bulk of 5) on PostgreSQL, killed {kills} times; {} requests",
            total.total()
        ),
        checked: vec![
            format!("answers before each kill: {}", total.statuses()),
            format!("all {checked} acknowledged projects stored once with their activity entry"),
            format!(
                "no partial use case: {} projects, each with its activity entry; no bulk partly stored; {unacknowledged_stored} unanswered writes had committed whole",
                stored.len()
            ),
            format!(
                "{retried} unanswered writes retried with their Idempotency-Key ({held} waited out the claim of the killed process, {answers_lost} told `idempotency.answer_lost`): none duplicated"
            ),
            format!("ready again within {} of each restart", ms(slowest_restart)),
        ],
    })
}

fn kill_worker(short: bool) -> anyhow::Result<Report> {
    let jobs: usize = if short { 300 } else { 1000 };
    let stage = Stage::start("kill-worker", &[])?;
    let (pg, dir, client) = (&stage.pg, &stage.dir, &stage.client);
    let mut ids = BTreeSet::new();
    for _ in 0..jobs {
        let answer = client.post(
            "/api/v1/admin/jobs/probe",
            &json!({ "sleep_ms": 30, "queue": "default", "max_attempts": 3 }),
            None,
        );
        ensure!(
            answer.status == 202,
            "enqueue: {} {}",
            answer.status,
            answer.body
        );
        let id = answer
            .json()
            .pointer("/id")
            .and_then(Value::as_str)
            .context("no job id")?
            .to_owned();
        ids.insert(id);
    }
    let worker_vars: Vec<(String, String)> = [
        ("DATABASE_URL", pg.url()),
        ("APP__WORKER__PORT", "0".to_owned()),
        // A dead worker's jobs go back to the queue after 2 missed 1-s heartbeats.
        ("APP__JOBS__HEARTBEAT_INTERVAL", "1s".to_owned()),
        ("APP__JOBS__MISSED_HEARTBEATS", "2".to_owned()),
        ("APP__JOBS__POLL_INTERVAL", "50ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut worker = Proc::spawn("worker", &dir.0, "worker-1.log", &worker_vars)?;
    let started = Instant::now();
    let total_succeeded = |client: &Client| -> u64 {
        client
            .get("/api/v1/admin/jobs?state=succeeded&kind=jobs.probe&limit=1")
            .json()
            .pointer("/total")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    while total_succeeded(client) < (jobs / 3) as u64 {
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the worker did not start on the queue"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let at_kill = total_succeeded(client);
    worker.kill9();
    let _worker = Proc::spawn("worker", &dir.0, "worker-2.log", &worker_vars)?;
    let deadline = Instant::now() + Duration::from_secs(if short { 120 } else { 300 });
    while total_succeeded(client) < jobs as u64 {
        ensure!(
            Instant::now() < deadline,
            "only {} of {jobs} jobs succeeded after the kill",
            total_succeeded(client)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let dead = client
        .get("/api/v1/admin/jobs?state=dead&limit=1")
        .json()
        .pointer("/total")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    ensure!(dead == 0, "{dead} jobs are dead");
    // Executions, from both workers' logs: each job ran to success at least once.
    let mut runs: BTreeMap<String, u32> = BTreeMap::new();
    for log in ["worker-1.log", "worker-2.log"] {
        let text = std::fs::read_to_string(dir.0.join(log)).unwrap_or_default();
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if value["message"] != "job succeeded" {
                continue;
            }
            if let Some(id) = value.pointer("/span/job_id").and_then(Value::as_str) {
                *runs.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    let missing = ids.iter().filter(|id| !runs.contains_key(*id)).count();
    ensure!(missing == 0, "{missing} jobs never logged a success");
    let repeated = runs.values().filter(|n| **n > 1).count();
    Ok(Report {
        scenario: "`kill -9` of the worker while jobs run",
        load: format!(
            "{jobs} probe jobs (30 ms each, concurrency 4) on PostgreSQL; worker killed after {at_kill} succeeded"
        ),
        checked: vec![
            format!(
                "all {jobs} succeeded exactly once as jobs (none dead, none lost) in {:.1} s",
                elapsed.as_secs_f64()
            ),
            format!(
                "{repeated} jobs ran twice: those in flight at the kill (at-least-once execution; their effects must be idempotent)"
            ),
        ],
    })
}

fn sigterm(short: bool) -> anyhow::Result<Report> {
    let _ = short;
    let mut stage = Stage::start("sigterm", &[("APP__SERVER__DRAIN_DELAY", "2s".to_owned())])?;
    let (anonymous, client) = (stage.anonymous.clone(), stage.client.clone());
    let roles = [
        Role::Writer,
        Role::Writer,
        Role::Reader,
        Role::Reader,
        Role::PointReader,
        Role::PointReader,
    ];
    let load = Load::start(&client, &roles, None);
    let watch = ReadinessWatch::start(&anonymous, Some(std::sync::Arc::clone(&load.shared)));
    std::thread::sleep(Duration::from_secs(3));
    let sent_before = load.shared.requests.load(Ordering::SeqCst);
    // Taken before the signal: readiness may turn before `kill` returns.
    let signalled = Instant::now();
    stage.api.signal("TERM")?;
    let exit = loop {
        if let Some(status) = stage.api.child.try_wait()? {
            break status;
        }
        ensure!(
            signalled.elapsed() < Duration::from_secs(40),
            "the api did not exit within 40 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exited = signalled.elapsed();
    let shared = load.stop();
    let readiness = watch.finish();
    let tally = shared.tally();
    ensure!(exit.success(), "the api exited with {exit}");
    let failed = tally.count(|s| !(200..300).contains(&s));
    ensure!(
        failed == 0,
        "{failed} requests failed at a client that stops on readiness 503: {} ({:?})",
        tally.statuses(),
        tally.errors
    );
    let unready = readiness
        .iter()
        .find(|(at, status)| *at >= signalled && *status != 200)
        .map(|(at, _)| at.duration_since(signalled))
        .context("readiness never left 200 after SIGTERM")?;
    let checked = check_acknowledged(&stage.pg, &shared.acks())?;
    Ok(Report {
        scenario: "SIGTERM under load, readiness drain 2 s",
        load: format!(
            "6 clients (2 writers, 4 readers) that stop sending when /health/ready is not 200; {} requests ({} before the signal)",
            tally.total(),
            sent_before
        ),
        checked: vec![
            format!("zero failed requests ({})", tally.statuses()),
            format!(
                "readiness 503 {} after the signal; exit 0 after {}",
                ms(unready),
                ms(exited)
            ),
            format!("all {checked} acknowledged projects stored"),
        ],
    })
}

fn overload(short: bool) -> anyhow::Result<Report> {
    let burst = Duration::from_secs(if short { 6 } else { 15 });
    let connections = 1024;
    let stage = Stage::start("overload", &[])?;
    let client = &stage.client;
    let roles: Vec<Role> = (0..connections)
        .map(|i| {
            if i % 8 == 0 {
                Role::Reader
            } else {
                Role::PointReader
            }
        })
        .collect();
    let load = Load::start(client, &roles, None);
    std::thread::sleep(burst);
    let shared = load.stop();
    let tally = shared.tally();
    ensure_only(&tally, &[503], "under overload")?;
    ensure!(
        tally.unavailable_without_retry_after == 0,
        "{} 503 answers had no Retry-After",
        tally.unavailable_without_retry_after
    );
    ensure!(
        tally.max_latency() <= REQUEST_TIMEOUT + Duration::from_secs(2),
        "a request waited {} (request_timeout {} s): the api stalled",
        ms(tally.max_latency()),
        REQUEST_TIMEOUT.as_secs()
    );
    // After the burst: normal service within seconds.
    let after = Instant::now();
    let mut quiet = Tally::default();
    loop {
        let answer = client.get("/api/v1/auth/me");
        if answer.ok() && answer.latency < Duration::from_millis(200) {
            quiet.add(&answer);
            if quiet.total() >= 20 {
                break;
            }
        } else {
            quiet = Tally::default();
        }
        ensure!(
            after.elapsed() < Duration::from_secs(10),
            "the api did not serve normally within 10 s of the burst"
        );
    }
    let recovered = after.elapsed();
    Ok(Report {
        scenario: "Overload: 1,024 connections on 2 cores",
        load: format!(
            "{connections} clients, one connection each, for {} s; {} requests",
            burst.as_secs(),
            tally.total()
        ),
        checked: vec![
            format!("answers: {}", tally.statuses()),
            format!(
                "p50 {}, p99 {}, slowest {} (timeout {} s): queued within the timeout or shed with 503 + Retry-After",
                ms(tally.quantile(0.5)),
                ms(tally.quantile(0.99)),
                ms(tally.max_latency()),
                REQUEST_TIMEOUT.as_secs()
            ),
            format!(
                "20 consecutive reads under 200 ms within {} of the burst",
                ms(recovered)
            ),
        ],
    })
}
