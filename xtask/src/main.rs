//! Keel's developer tasks: `cargo xtask <task>` (alias in `.cargo/config.toml`).
// A task runner reports to its user on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use xshell::{Shell, cmd};

/// The PostgreSQL server CI and `--postgres` use unless `TEST_DATABASE_URL` says otherwise.
const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Keel's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Everything CI checks (what `.ci/run` runs): fmt, clippy, tests on SQLite, then on
    /// PostgreSQL.
    Ci {
        /// Skip the PostgreSQL pass (for machines without PostgreSQL).
        #[arg(long)]
        sqlite_only: bool,
    },
    /// Run the test suite (the README's `cargo test --workspace`).
    Test {
        /// Run against PostgreSQL (`TEST_DATABASE_URL`, default the local server).
        #[arg(long)]
        postgres: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Clippy on every target, warnings denied.
    Lint,
    /// Format the code (or check it with `--check`).
    Fmt {
        /// Only check.
        #[arg(long)]
        check: bool,
    },
    /// Database tasks, through the `api` binary's `migrate` command.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Run a binary from the workspace.
    Run {
        /// `api` or `worker`.
        #[arg(default_value = "api")]
        binary: String,
        /// Arguments for the binary.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Measurements recorded in docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        what: BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Apply pending migrations.
    Migrate,
    /// Revert the latest migrations.
    Rollback {
        /// How many.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Show which migrations are applied.
    Status,
    /// Drop everything and migrate from scratch (local and test only).
    Reset,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Time to ready and idle memory of the release `api` binary on SQLite.
    Startup {
        /// How many starts to measure.
        #[arg(long, default_value_t = 10)]
        runs: u32,
    },
    /// Login throughput, and an authenticated read's latency with and without a login flood
    /// (needs `wrk` and `curl`).
    Auth {
        /// Run on a fresh PostgreSQL database on the local server instead of SQLite.
        #[arg(long)]
        postgres: bool,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 15)]
        seconds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    match cli.task {
        Task::Ci { sqlite_only } => ci(&sh, sqlite_only),
        Task::Test { postgres, args } => test(&sh, postgres, &args),
        Task::Lint => lint(&sh),
        Task::Fmt { check } => fmt(&sh, check),
        Task::Db { action } => db(&sh, &action),
        Task::Run { binary, args } => {
            ensure!(
                matches!(binary.as_str(), "api" | "worker"),
                "unknown binary `{binary}`; use api or worker"
            );
            cmd!(sh, "cargo run --bin {binary} -- {args...}").run()?;
            Ok(())
        }
        Task::Bench {
            what: BenchTarget::Startup { runs },
        } => bench_startup(&sh, runs),
        Task::Bench {
            what: BenchTarget::Auth { postgres, seconds },
        } => bench_auth(&sh, postgres, seconds),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs `f`, printing how long it took.
fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("\n==> {name}");
    let started = Instant::now();
    let result = f();
    eprintln!(
        "<== {name}: {} in {:.1}s",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    result
}

fn ci(sh: &Shell, sqlite_only: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    step("cargo fmt --check", || fmt(sh, true))?;
    step("cargo clippy", || lint(sh))?;
    step("tests on SQLite", || test(sh, false, &[]))?;
    if sqlite_only {
        eprintln!("\n(PostgreSQL pass skipped: --sqlite-only)");
    } else {
        step("tests on PostgreSQL", || test(sh, true, &[]))?;
    }
    eprintln!("\nci passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn test(sh: &Shell, postgres: bool, args: &[String]) -> anyhow::Result<()> {
    if postgres {
        let url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned());
        ensure_reachable(&url)?;
        let _env = sh.push_env("TEST_DATABASE_URL", &url);
        cmd!(sh, "cargo test --workspace --locked {args...}").run()?;
    } else {
        // The SQLite pass must not inherit a PostgreSQL URL from the caller's shell.
        let _env = sh.push_env("TEST_DATABASE_URL", "");
        cmd!(sh, "cargo test --workspace --locked {args...}").run()?;
    }
    Ok(())
}

/// Fails early, with a hint, when the PostgreSQL server in `url` does not accept connections.
fn ensure_reachable(url: &str) -> anyhow::Result<()> {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .unwrap_or("127.0.0.1:5432");
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    let address = address.replace("localhost", "127.0.0.1");
    let socket: SocketAddr = address
        .parse()
        .with_context(|| format!("cannot read a host:port from TEST_DATABASE_URL ({address})"))?;
    if TcpStream::connect_timeout(&socket, Duration::from_secs(3)).is_err() {
        bail!(
            "PostgreSQL does not answer at {address}. Start it (Debian: `pg_ctlcluster $(ls /etc/postgresql) main start`), set TEST_DATABASE_URL, or pass --sqlite-only"
        );
    }
    Ok(())
}

fn lint(sh: &Shell) -> anyhow::Result<()> {
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --locked -- -D warnings"
    )
    .run()?;
    Ok(())
}

fn fmt(sh: &Shell, check: bool) -> anyhow::Result<()> {
    if check {
        cmd!(sh, "cargo fmt --all -- --check").run()?;
    } else {
        cmd!(sh, "cargo fmt --all").run()?;
    }
    Ok(())
}

fn db(sh: &Shell, action: &DbAction) -> anyhow::Result<()> {
    let args: Vec<String> = match action {
        DbAction::Migrate => vec!["up".into()],
        DbAction::Rollback { steps } => vec!["down".into(), "--steps".into(), steps.to_string()],
        DbAction::Status => vec!["status".into()],
        DbAction::Reset => vec!["fresh".into()],
    };
    cmd!(sh, "cargo run --quiet --bin api -- migrate {args...}").run()?;
    Ok(())
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_startup(sh: &Shell, runs: u32) -> anyhow::Result<()> {
    cmd!(sh, "cargo build --release --locked --bin api").run()?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| workspace_root().join("target"), PathBuf::from);
    let binary = target_dir.join("release/api");
    let port = 18_080;
    let mut ready_ms = Vec::new();
    let mut rss_kib = Vec::new();
    for run in 0..runs {
        let dir = sh.create_temp_dir()?;
        // The first start creates and migrates the database; later ones reuse it, as a
        // restart would.
        let reuse = run > 0;
        let data_dir = dir.path().to_path_buf();
        if reuse {
            let warm = start_api(&binary, &data_dir, port)?;
            wait_ready(port, Duration::from_secs(30))?;
            drop(warm);
        }
        let started = Instant::now();
        let api = start_api(&binary, &data_dir, port)?;
        wait_ready(port, Duration::from_secs(30))?;
        ready_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_secs(1));
        rss_kib.push(rss_of(api.0.id())?);
    }
    ready_ms.sort_by(f64::total_cmp);
    rss_kib.sort_unstable();
    let median = |v: &[f64]| v[v.len() / 2];
    println!("| metric | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "| time to ready (ms) | {:.1} | {:.1} | {:.1} |",
        median(&ready_ms),
        ready_ms[0],
        ready_ms[ready_ms.len() - 1]
    );
    println!(
        "| idle RSS (MiB) | {:.1} | {:.1} | {:.1} |",
        rss_kib[rss_kib.len() / 2] as f64 / 1024.0,
        rss_kib[0] as f64 / 1024.0,
        rss_kib[rss_kib.len() - 1] as f64 / 1024.0
    );
    Ok(())
}

fn start_api(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Running> {
    start_api_with(binary, dir, port, &[])
}

fn start_api_with(
    binary: &Path,
    dir: &Path,
    port: u16,
    vars: &[(&str, &str)],
) -> anyhow::Result<Running> {
    let child = Command::new(binary)
        .current_dir(dir)
        .envs(vars.iter().copied())
        .env("APP__SERVER__PORT", port.to_string())
        .env("APP__TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Running(child))
}

/// Polls `/health/ready` with a raw HTTP/1.1 request (no client dependency in xtask).
fn wait_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let request =
                "GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("the api was not ready within {timeout:?}")
}

fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// What `wrk --latency` reports.
#[derive(Debug, Clone, Copy, Default)]
struct WrkResult {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn wrk_millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(output: &str) -> WrkResult {
    let mut result = WrkResult::default();
    for line in output.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(v)) => result.p50_ms = wrk_millis(v).unwrap_or_default(),
            (Some("99%"), Some(v)) => result.p99_ms = wrk_millis(v).unwrap_or_default(),
            (Some("Requests/sec:"), Some(v)) => {
                result.requests_per_second = v.parse().unwrap_or_default();
            }
            (Some("Non-2xx"), _) => {
                result.non_2xx = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    result
}

fn wrk(args: &[String]) -> anyhow::Result<WrkResult> {
    let output = Command::new("wrk")
        .args(args)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(parse_wrk(&String::from_utf8_lossy(&output.stdout)))
}

fn curl_json(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("curl")
        .arg("-sS")
        .args(args)
        .output()
        .context("running curl")?;
    anyhow::ensure!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

const LOGIN_SCRIPT: &str = r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"plum-orbit-kettle-7"}'
"#;

fn bench_auth(sh: &Shell, postgres: bool, seconds: u32) -> anyhow::Result<()> {
    cmd!(sh, "cargo build --release --locked --bin api").run()?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| workspace_root().join("target"), PathBuf::from);
    let binary = target_dir.join("release/api");
    let dir = sh.create_temp_dir()?;
    let database = if postgres {
        let name = format!("keel_bench_{}", std::process::id());
        let create = format!("CREATE DATABASE \"{name}\"");
        cmd!(
            sh,
            "psql -q postgres://postgres@127.0.0.1:5432/postgres -c {create}"
        )
        .run()?;
        (
            format!("postgres://postgres@127.0.0.1:5432/{name}"),
            Some(name),
        )
    } else {
        (
            format!("sqlite://{}/keel.db?mode=rwc", dir.path().display()),
            None,
        )
    };
    let port = 18_081;
    let base = format!("http://127.0.0.1:{port}");
    let result = (|| -> anyhow::Result<()> {
        let _api = start_api_with(
            &binary,
            dir.path(),
            port,
            &[
                ("DATABASE_URL", database.0.as_str()),
                // One client IP sends everything: the per-IP limit would measure itself.
                ("APP__RATE_LIMIT__ENABLED", "false"),
            ],
        )?;
        wait_ready(port, Duration::from_secs(60))?;
        curl_json(&[
            "-XPOST",
            &format!("{base}/api/v1/auth/register"),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"email":"bench@example.com","password":"plum-orbit-kettle-7"}"#,
        ])?;
        let tokens = curl_json(&[
            "-XPOST",
            &format!("{base}/api/v1/auth/login"),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"email":"bench@example.com","password":"plum-orbit-kettle-7"}"#,
        ])?;
        let token = tokens
            .split("\"access_token\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("no access token in the login answer")?
            .to_owned();
        let script = dir.path().join("login.lua");
        std::fs::write(&script, LOGIN_SCRIPT)?;
        let duration = format!("{seconds}s");
        let read_args = |d: &str| -> Vec<String> {
            [
                "-t2",
                "-c64",
                "-d",
                d,
                "--latency",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("{base}/api/v1/auth/me"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };
        let login_args = |d: &str| -> Vec<String> {
            [
                "-t1",
                "-c16",
                "-d",
                d,
                "--latency",
                "-s",
                &script.display().to_string(),
                &format!("{base}/api/v1/auth/login"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };

        let read_alone = wrk(&read_args(&duration))?;
        let login = wrk(&login_args(&duration))?;
        let flood = {
            let args = login_args(&format!("{}s", seconds + 4));
            std::thread::spawn(move || wrk(&args))
        };
        std::thread::sleep(Duration::from_secs(2));
        let read_flooded = wrk(&read_args(&duration))?;
        let flood = flood
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;

        println!("| measurement | req/s | p50 (ms) | p99 (ms) | non-2xx |");
        println!("|---|---|---|---|---|");
        for (name, r) in [
            ("GET /auth/me alone (64 conn.)", read_alone),
            ("POST /auth/login alone (16 conn.)", login),
            ("GET /auth/me during a login flood", read_flooded),
            ("POST /auth/login (the flood)", flood),
        ] {
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} | {} |",
                r.requests_per_second, r.p50_ms, r.p99_ms, r.non_2xx
            );
        }
        Ok(())
    })();
    if let Some(name) = database.1 {
        let drop = format!("DROP DATABASE \"{name}\" WITH (FORCE)");
        cmd!(
            sh,
            "psql -q postgres://postgres@127.0.0.1:5432/postgres -c {drop}"
        )
        .run()?;
    }
    result
}
