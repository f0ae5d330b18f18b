//! Keel's developer tasks: `cargo xtask <task>` (alias in `.cargo/config.toml`).
// A task runner reports to its user on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use xshell::{Shell, cmd};

mod bench;
mod contract;
mod docs;
mod fault;
mod fuzz;
mod hooks;
mod load;

mod new_domain;
mod process;
mod soak;

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
    /// PostgreSQL, the job suite on Redis, and the checks after them.
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
    /// Write docs/openapi.json from the code (or, with `--check`, fail when it is stale).
    Openapi {
        /// Only check.
        #[arg(long)]
        check: bool,
    },
    /// Check in headless Chromium that /docs renders with no request to another host.
    DocsCheck,
    /// Generate an owner-scoped resource like `projects`: `cargo xtask new-domain widgets
    /// name:string quantity:i32 note:text? status:enum(draft,live)` (types: string, text, bool,
    /// i32, i64, f64, decimal, uuid, date, datetime, json, enum(…); `?` = optional). With
    /// `--regenerate`, rewrites an existing domain's generated files from its `domain.toml`.
    NewDomain {
        /// Plural snake_case name: crate, table, route and permission prefix.
        name: String,
        /// `field:type` or `field:type?`, in order.
        #[arg(required_unless_present = "regenerate")]
        fields: Vec<String>,
        /// Rewrite the generated files of the existing domain `name` from its spec.
        #[arg(long, conflicts_with_all = ["fields", "singular"])]
        regenerate: bool,
        /// With `--regenerate`: change nothing, fail if a generated file differs from its spec.
        #[arg(long, requires = "regenerate")]
        check: bool,
        /// The singular, when `name` minus its plural ending is wrong (e.g. `--singular person`).
        #[arg(long)]
        singular: Option<String>,
        /// Skip building and regenerating docs/openapi.json.
        #[arg(long)]
        no_build: bool,
    },
    /// Generate a throwaway domain in a temporary copy of the repository and run the whole
    /// suite there (part of `ci`).
    NewDomainCheck,
    /// Install the git hooks in xtask/hooks/ (pre-commit: fmt and clippy; commit-msg:
    /// Conventional Commits) into the repository's hooks directory.
    Hooks {
        /// Replace a different hook of the same name that is already installed.
        #[arg(long)]
        force: bool,
    },
    /// Contract fuzzing: schemathesis drives the api from its `/openapi.json` as a member and
    /// as an administrator (needs schemathesis: `pip install -r .ci/contract-requirements.txt`).
    Contract {
        /// Generated cases per operation and phase.
        #[arg(long, default_value_t = 40)]
        max_examples: u32,
        /// Seed, so a failure can be replayed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A failure under load, on a private PostgreSQL (and Redis) on loopback:
    /// `cargo xtask fault postgres|redis|kill-api|kill-worker|sigterm|overload|all`.
    Fault {
        /// Which failure.
        #[arg(value_enum)]
        scenario: fault::Scenario,
        /// The CI form: shorter outages and fewer jobs.
        #[arg(long)]
        short: bool,
    },
    /// Mixed load at a fraction of measured capacity for N minutes, sampled every 10 s into
    /// target/soak/soak.csv and soak.png.
    Soak {
        /// How long.
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        /// Fraction of the measured capacity to send.
        #[arg(long, default_value_t = 0.5)]
        fraction: f64,
        /// Use debug binaries instead of release ones.
        #[arg(long)]
        debug: bool,
    },
    /// Coverage-guided fuzzing of the parsers (nightly + cargo-fuzz), or with `--replay` the
    /// committed corpus through the same targets.
    Fuzz {
        /// A target (list_query, cursor, config, credentials, if_match); all when absent.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
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
    /// `GET /auth/me` next to the bare server's primary-key read, sign-in throughput next to
    /// argon2id's own rate, and reads during a sign-in flood, on PostgreSQL (needs `wrk`,
    /// `curl`, `psql` and the local PostgreSQL).
    Auth {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Interleaved rounds of the read comparison (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Jobs drained per second and enqueue→done latency, on SQLite or PostgreSQL (needs curl).
    Jobs {
        /// Run on a fresh PostgreSQL database on the local server instead of SQLite.
        #[arg(long)]
        postgres: bool,
        /// Seconds of enqueueing (as fast as the api takes them) before each drain.
        #[arg(long, default_value_t = 5)]
        enqueue_seconds: u32,
    },
    /// Authenticated project reads on PostgreSQL next to a minimal actix + sqlx server
    /// (needs `wrk`, `curl`, `psql` and the local PostgreSQL).
    Crud {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Interleaved rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    let here = std::env::current_dir().context("reading the current directory")?;
    let Some(root) = find_workspace(&here) else {
        bail!(
            "{} is not inside Keel's workspace (no Cargo.toml with [workspace] and an xtask/ directory above it); run `cargo xtask` from the repository",
            here.display()
        );
    };
    let _ = ROOT.set(root);
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
        Task::Openapi { check } => docs::openapi(&sh, &workspace_root(), check),
        Task::DocsCheck => docs::docs_check(&sh),
        Task::NewDomain {
            name,
            fields,
            singular,
            no_build,
            regenerate,
            check,
        } => {
            if check {
                let stale = new_domain::stale_files(&workspace_root(), &name)?;
                anyhow::ensure!(
                    stale.is_empty(),
                    "generated files differ from crates/domains/{name}/domain.toml: {stale:?}; run `cargo xtask new-domain --regenerate {name}`"
                );
                return Ok(());
            }
            if regenerate {
                return new_domain::regenerate(&workspace_root(), &name);
            }
            let spec = new_domain::Spec::parse(&name, singular.as_deref(), &fields)?;
            new_domain::run(&sh, &workspace_root(), &spec, !no_build)
        }
        Task::NewDomainCheck => new_domain::check::check(&sh, &workspace_root()),
        Task::Hooks { force } => hooks::run(&sh, &workspace_root(), force),
        Task::Contract { max_examples, seed } => contract::contract(&sh, max_examples, seed),
        Task::Fault { scenario, short } => fault::fault(&sh, scenario, short),
        Task::Soak {
            minutes,
            fraction,
            debug,
        } => soak::soak(&sh, minutes, fraction, debug),
        Task::Fuzz { target, seconds } => fuzz::fuzz(&sh, target.as_deref(), seconds),
        Task::Bench {
            what: BenchTarget::Startup { runs },
        } => bench::bench_startup(&sh, runs),
        Task::Bench {
            what: BenchTarget::Auth { seconds, rounds },
        } => bench::bench_auth(&sh, seconds, rounds),
        Task::Bench {
            what: BenchTarget::Crud { seconds, rounds },
        } => bench::bench_crud(&sh, seconds, rounds),
        Task::Bench {
            what:
                BenchTarget::Jobs {
                    postgres,
                    enqueue_seconds,
                },
        } => bench::bench_jobs(&sh, postgres, enqueue_seconds),
    }
}

/// The workspace found by `main` from the current directory.
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The checkout the tasks act on: found at run time from the current directory, as cargo
/// finds a workspace, never compiled in: with a target directory shared between checkouts
/// (a global `CARGO_TARGET_DIR`, CI's cache), one `xtask` binary serves them all.
pub(crate) fn workspace_root() -> PathBuf {
    ROOT.get()
        .cloned()
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|dir| find_workspace(&dir))
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The nearest directory, from `start` upwards, whose `Cargo.toml` declares `[workspace]` and
/// which holds `xtask/`.
fn find_workspace(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            dir.join("xtask").is_dir()
                && std::fs::read_to_string(dir.join("Cargo.toml"))
                    .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
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
    step("cargo xtask fmt --check", || fmt(sh, true))?;
    step("cargo clippy", || lint(sh))?;
    step("tests on SQLite", || test(sh, false, &[]))?;
    if sqlite_only {
        eprintln!("\n(PostgreSQL pass skipped: --sqlite-only)");
    } else {
        step("tests on PostgreSQL", || test(sh, true, &[]))?;
    }
    step("the job suite with its queues in Redis", || {
        jobs_on_redis(sh, sqlite_only)
    })?;
    step("docs render offline (headless Chromium)", || {
        docs::docs_check(sh)
    })?;
    step("contract fuzzing (schemathesis, member and admin)", || {
        contract::contract(sh, 40, 1)
    })?;
    if sqlite_only {
        eprintln!("\n(fault runs skipped: --sqlite-only; they start a private PostgreSQL)");
    } else {
        step(
            "fault runs, short form (private PostgreSQL and Redis)",
            || fault::fault(sh, fault::Scenario::All, true),
        )?;
    }
    if fuzz::available() {
        step(
            "parser fuzzing, short run (corpus replayed by the tests)",
            || fuzz::fuzz(sh, None, 15),
        )?;
    } else {
        eprintln!(
            "\n(short fuzz run skipped: no nightly toolchain or cargo-fuzz; the tests replayed fuzz/corpus)"
        );
    }
    step("a generated domain passes the suite", || {
        new_domain::check::check(sh, &workspace_root())
    })?;
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

/// The job suite (`e2e` tests `jobs::`) again with `jobs.backend = "redis"`, the outbox on
/// SQLite and then on PostgreSQL. Needs `TEST_REDIS_URL` (default the local server).
fn jobs_on_redis(sh: &Shell, sqlite_only: bool) -> anyhow::Result<()> {
    let redis = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let _redis = sh.push_env("TEST_REDIS_URL", &redis);
    let _backend = sh.push_env("TEST_JOBS_BACKEND", "redis");
    // `--workspace` like the suites before it: the same feature set, so nothing is rebuilt.
    let suite = || cmd!(sh, "cargo test --workspace --locked --test e2e jobs::").run();
    {
        let _sqlite = sh.push_env("TEST_DATABASE_URL", "");
        suite()?;
    }
    if !sqlite_only {
        let url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TEST_DATABASE_URL.to_owned());
        let _postgres = sh.push_env("TEST_DATABASE_URL", &url);
        suite()?;
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

/// `cargo fmt`, then rustfmt on every tracked Rust file: rustfmt does not follow modules
/// declared inside a macro call, and each layer declares its feature modules in a `features!`
/// list ([ADR 0010](docs/adr/0010-feature-lists-and-one-application-state.md)).
fn fmt(sh: &Shell, check: bool) -> anyhow::Result<()> {
    if check {
        cmd!(sh, "cargo fmt --all -- --check").run()?;
    } else {
        cmd!(sh, "cargo fmt --all").run()?;
    }
    let listing = cmd!(
        sh,
        "git ls-files -z --cached --others --exclude-standard -- *.rs"
    )
    .quiet()
    .read()?;
    let files: Vec<&str> = listing
        .split('\0')
        .filter(|f| !f.is_empty() && !f.starts_with("fuzz/") && std::path::Path::new(f).is_file())
        .collect();
    let check_flag: &[&str] = if check { &["--check"] } else { &[] };
    // In batches: a command line has a limit.
    for batch in files.chunks(200) {
        cmd!(sh, "rustfmt --edition 2024 {check_flag...} {batch...}")
            .quiet()
            .run()
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}\nformatting differs; run `cargo xtask fmt` and stage the result"
                )
            })?;
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

#[cfg(test)]
mod workspace_tests {
    use super::*;

    #[test]
    fn the_workspace_is_found_from_any_directory_inside_it_at_run_time() {
        let base = std::env::temp_dir().join(format!("keel-xtask-root-{}", std::process::id()));
        let (first, second) = (base.join("first"), base.join("second"));
        for copy in [&first, &second] {
            std::fs::create_dir_all(copy.join("xtask/src")).unwrap();
            std::fs::create_dir_all(copy.join("crates/api/src")).unwrap();
            std::fs::write(copy.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
            std::fs::write(copy.join("crates/api/Cargo.toml"), "[package]\n").unwrap();
        }
        assert_eq!(
            find_workspace(&first.join("crates/api/src")),
            Some(first.clone())
        );
        assert_eq!(find_workspace(&second), Some(second.clone()));
        assert_eq!(find_workspace(&base), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
