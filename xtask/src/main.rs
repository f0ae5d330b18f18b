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
    let child = Command::new(binary)
        .current_dir(dir)
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
