//! `cargo xtask bench …`: the measurements recorded in docs/benchmarks.md.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use xshell::{Shell, cmd};

use crate::process::{start_api, start_api_with, target_dir, wait_ready};

pub(crate) fn bench_startup(sh: &Shell, runs: u32) -> anyhow::Result<()> {
    cmd!(sh, "cargo build --release --locked --bin api").run()?;
    let binary = target_dir().join("release/api");
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

/// Resident memory of a process, in KiB.
pub(crate) fn rss_of(pid: u32) -> anyhow::Result<u64> {
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
    requests: u64,
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
            (Some(count), Some("requests")) => {
                result.requests = count.parse().unwrap_or_default();
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

/// CPU time (user + system, all threads) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which may hold spaces: state is field 3, utime 14.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or_default()
}

/// CPU time of every process named `postgres` (the server and its backends), in clock ticks.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(cpu_ticks)
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One load run against a server: what wrk saw, and what it cost the server and PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    wrk: WrkResult,
    /// Highest resident memory of the server during the run, in MiB.
    rss_mib: f64,
    /// Server CPU per request, in microseconds.
    server_cpu_us: f64,
    /// PostgreSQL CPU per request, in microseconds.
    postgres_cpu_us: f64,
}

/// Runs wrk with `args` (after a 2-second warm-up whose figures are discarded) while sampling
/// the server's memory and CPU and PostgreSQL's CPU.
fn measure(server: u32, args: &[String], warm_up: &[String]) -> anyhow::Result<Measured> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !warm_up.is_empty() {
        wrk(warm_up)?;
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let peak = std::sync::Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = rss_of(server) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (server_before, postgres_before) = (cpu_ticks(server), postgres_ticks());
    let result = wrk(args);
    let (server_after, postgres_after) = (cpu_ticks(server), postgres_ticks());
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let result = result?;
    let per_request =
        |ticks: u64| ticks as f64 / ticks_per_second() * 1e6 / (result.requests.max(1) as f64);
    Ok(Measured {
        wrk: result,
        rss_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        server_cpu_us: per_request(server_after.saturating_sub(server_before)),
        postgres_cpu_us: per_request(postgres_after.saturating_sub(postgres_before)),
    })
}

/// wrk arguments for a GET at `connections` connections for `seconds`.
fn get_args(seconds: u32, connections: u32, url: &str, token: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "-t2".to_owned(),
        format!("-c{connections}"),
        "-d".to_owned(),
        format!("{seconds}s"),
        "--latency".to_owned(),
    ];
    if let Some(token) = token {
        args.push("-H".to_owned());
        args.push(format!("Authorization: Bearer {token}"));
    }
    args.push(url.to_owned());
    args
}

/// Measures a GET at 64 connections, after a 2-second warm-up.
fn measure_get(
    server: u32,
    seconds: u32,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<Measured> {
    measure(
        server,
        &get_args(seconds, 64, url, token),
        &get_args(2, 64, url, token),
    )
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

const CREDENTIALS: &str = r#"{"email":"bench@example.com","password":"plum-orbit-kettle-7"}"#;

/// Accounts the sign-in flood rotates through. One account signed in from one address by 16
/// connections at once would be 16 concurrent password attempts on it, which the per-account
/// backoff rightly slows down; a login form sees one attempt per person at a time.
const LOGIN_ACCOUNTS: u32 = 16;

/// A wrk script posting sign-ins for `bench-0@…` to `bench-{LOGIN_ACCOUNTS - 1}@…` in turn.
fn login_script() -> String {
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{{"email":"bench-' .. (n % {LOGIN_ACCOUNTS}) .. '@example.com","password":"plum-orbit-kettle-7"}}'
  return wrk.format(nil, nil, nil, body)
end
"#
    )
}

/// Registers the accounts [`login_script`] signs in with.
fn register_login_accounts(base: &str) -> anyhow::Result<()> {
    for i in 0..LOGIN_ACCOUNTS {
        curl_json(&[
            "-XPOST",
            &format!("{base}/api/v1/auth/register"),
            "-H",
            "content-type: application/json",
            "-d",
            &format!(r#"{{"email":"bench-{i}@example.com","password":"plum-orbit-kettle-7"}}"#),
        ])?;
    }
    Ok(())
}

/// The release binaries a comparison runs, built by one cargo command so both share one
/// feature resolution (and one dependency build).
fn build_release(sh: &Shell) -> anyhow::Result<std::path::PathBuf> {
    cmd!(
        sh,
        "cargo build --release --locked --workspace --bin api --bin keel-bench-baseline"
    )
    .run()?;
    Ok(target_dir().join("release"))
}

/// The `api` binary a comparison runs: `KEEL_BENCH_API` when set (another build of Keel, to
/// measure a before and an after in one sitting), else the release build.
fn keel_binary(release: &std::path::Path) -> std::path::PathBuf {
    std::env::var_os("KEEL_BENCH_API").map_or_else(|| release.join("api"), std::path::PathBuf::from)
}

/// Keel on a database, with its per-IP limit off (one client address sends everything).
fn start_keel(
    release: &std::path::Path,
    dir: &std::path::Path,
    url: &str,
) -> anyhow::Result<(crate::process::Running, String)> {
    let port = crate::process::free_port()?;
    let api = start_api_with(
        &keel_binary(release),
        dir,
        port,
        &[
            ("DATABASE_URL", url),
            ("APP__RATE_LIMIT__ENABLED", "false"),
            // As deployed: an access log line per request (JSON, to /dev/null here), metrics.
            ("APP__TELEMETRY__LOG_LEVEL", "info"),
        ],
    )?;
    wait_ready(port, Duration::from_secs(60))?;
    Ok((api, format!("http://127.0.0.1:{port}")))
}

/// The bare actix + sqlx server (`xtask/baseline`) on `url`, pools `per-worker` or `shared`.
fn start_baseline(
    release: &std::path::Path,
    url: &str,
    pool: &str,
) -> anyhow::Result<(crate::process::Running, String)> {
    let port = crate::process::free_port()?;
    let baseline = crate::process::Running(
        Command::new(release.join("keel-bench-baseline"))
            .env("DATABASE_URL", url)
            .env("PORT", port.to_string())
            .env("POOL", pool)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting the baseline server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the baseline server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((baseline, format!("http://127.0.0.1:{port}")))
}

/// Registers the bench account and signs in; returns an access token.
fn sign_up(base: &str) -> anyhow::Result<String> {
    let json = ["-H", "content-type: application/json"];
    curl_json(
        &[
            &["-XPOST", &format!("{base}/api/v1/auth/register")][..],
            &json,
            &["-d", CREDENTIALS],
        ]
        .concat(),
    )?;
    let tokens = curl_json(
        &[
            &["-XPOST", &format!("{base}/api/v1/auth/login")][..],
            &json,
            &["-d", CREDENTIALS],
        ]
        .concat(),
    )?;
    json_string(&tokens, "/access_token")
}

/// Creates `count` projects (in bulks of 100) as the token's owner; returns the first one's id.
fn create_projects(base: &str, token: &str, count: u32) -> anyhow::Result<String> {
    let auth = format!("Authorization: Bearer {token}");
    let mut first = None;
    for bulk in 0..count.div_ceil(100) {
        let items: Vec<String> = (0..100.min(count - bulk * 100))
            .map(|i| format!(r#"{{"name":"Project {bulk}-{i:03}","description":"A project for the read benchmark","status":"active"}}"#))
            .collect();
        let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
        let answer = curl_json(&[
            "-XPOST",
            &format!("{base}/api/v1/projects/bulk"),
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "-d",
            &body,
        ])?;
        if first.is_none() {
            first = Some(json_string(&answer, "/items/0/id")?);
        }
    }
    first.context("no project was created")
}

/// Prints a comparison table: each Keel row with its ratio to the bare row named beside it.
fn print_comparison(seconds: u32, rows: &[(&str, &str, Measured, Option<Measured>)]) {
    println!(
        "| read (64 connections, {seconds} s) | server | req/s | p50 (ms) | p99 (ms) | peak RSS (MiB) | server CPU / req (µs) | PostgreSQL CPU / req (µs) | non-2xx | throughput / bare |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (read, server, m, bare) in rows {
        let ratio = bare.map_or_else(String::new, |b| {
            format!(
                "**{:.2}**",
                m.wrk.requests_per_second / b.wrk.requests_per_second
            )
        });
        println!(
            "| {read} | {server} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {} | {ratio} |",
            m.wrk.requests_per_second,
            m.wrk.p50_ms,
            m.wrk.p99_ms,
            m.rss_mib,
            m.server_cpu_us,
            m.postgres_cpu_us,
            m.wrk.non_2xx,
        );
    }
}

/// Sign-ins and `GET /auth/me` on PostgreSQL, next to the bare server's primary-key read and
/// argon2id's own rate on this machine, in one run.
pub(crate) fn bench_auth(sh: &Shell, seconds: u32, round_count: u32) -> anyhow::Result<()> {
    let release = build_release(sh)?;
    let dir = sh.create_temp_dir()?;
    let (url, name) = create_database(sh, "keel_bench_auth")?;
    let result = (|| -> anyhow::Result<()> {
        let (api, base) = start_keel(&release, dir.path(), &url)?;
        let idle_rss = rss_of(api.0.id())? as f64 / 1024.0;
        let token = sign_up(&base)?;
        let id = create_projects(&base, &token, 1)?;
        let script = dir.path().join("login.lua");
        std::fs::write(&script, login_script())?;
        register_login_accounts(&base)?;
        let login_args = |d: u32| -> Vec<String> {
            [
                "-t1",
                "-c16",
                "-d",
                &format!("{d}s"),
                "--latency",
                "-s",
                &script.display().to_string(),
                &format!("{base}/api/v1/auth/login"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };
        let pid = api.0.id();
        let me_url = format!("{base}/api/v1/auth/me");
        let (bare, bare_base) = start_baseline(&release, &url, "per-worker")?;
        let bare_pid = bare.0.id();
        let bare_url = format!("{bare_base}/projects/{id}");
        let measured = rounds(
            round_count,
            &[
                &|| measure_get(pid, seconds, &me_url, Some(&token)),
                &|| measure_get(bare_pid, seconds, &bare_url, None),
            ],
        )?;
        let (me, bare_read) = (median(&measured[0]), median(&measured[1]));
        drop(bare);
        // No warm-up: sign-ins a client abandons still finish their hash, and the measured run
        // would start behind them (and be told "busy" by the hashing queue).
        let login = measure(pid, &login_args(seconds), &[])?;
        let flood = {
            let args = login_args(seconds + 4);
            std::thread::spawn(move || wrk(&args))
        };
        std::thread::sleep(Duration::from_secs(2));
        let me_flooded = wrk(&get_args(seconds, 64, &me_url, Some(&token)))?;
        let flood = flood
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??;
        drop(api);

        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        // Keel's defaults (auth.argon2_memory_kib, argon2_iterations, argon2_parallelism).
        let bound = Command::new(release.join("keel-bench-baseline"))
            .args(["hash", &threads.to_string(), "10", "19456", "2", "1"])
            .output()
            .context("measuring argon2id")?;
        let bound: f64 = String::from_utf8_lossy(&bound.stdout)
            .trim()
            .parse()
            .context("the hash rate")?;

        print_comparison(
            seconds,
            &[
                ("`GET /auth/me` (bearer)", "Keel", me, Some(bare_read)),
                (
                    "`GET /projects/{id}` (primary key)",
                    "actix + sqlx, pool per worker",
                    bare_read,
                    None,
                ),
            ],
        );
        println!();
        println!(
            "medians of {} interleaved rounds; Keel / bare per round: {}",
            round_count.max(1),
            ratios(&measured[0], &measured[1])
        );
        println!("Keel idle RSS at start: {idle_rss:.1} MiB");
        println!();
        println!("| sign-ins | req/s | p50 (ms) | p99 (ms) | non-2xx |");
        println!("|---|---:|---:|---:|---:|");
        for (label, r) in [
            ("`POST /auth/login` alone (16 connections)", login.wrk),
            ("`POST /auth/login` during reads (the flood)", flood),
            (
                "`GET /auth/me` during the flood (64 connections)",
                me_flooded,
            ),
        ] {
            println!(
                "| {label} | {:.0} | {:.2} | {:.2} | {} |",
                r.requests_per_second, r.p50_ms, r.p99_ms, r.non_2xx
            );
        }
        println!(
            "CPU per sign-in: api {:.1} ms, PostgreSQL {:.1} ms",
            login.server_cpu_us / 1000.0,
            login.postgres_cpu_us / 1000.0
        );
        println!();
        println!(
            "argon2id (19 MiB, 2 iterations) on {threads} threads, nothing else running: {bound:.1} hashes/s; sign-ins: {:.1}/s = **{:.2}** of that bound",
            login.wrk.requests_per_second,
            login.wrk.requests_per_second / bound
        );
        Ok(())
    })();
    drop_database(sh, &name)?;
    result
}

/// A fresh PostgreSQL database on the local server, dropped by [`drop_database`].
fn create_database(sh: &Shell, prefix: &str) -> anyhow::Result<(String, String)> {
    let name = format!("{prefix}_{}", std::process::id());
    let create = format!("CREATE DATABASE \"{name}\"");
    cmd!(
        sh,
        "psql -q postgres://postgres@127.0.0.1:5432/postgres -c {create}"
    )
    .run()?;
    Ok((format!("postgres://postgres@127.0.0.1:5432/{name}"), name))
}

fn drop_database(sh: &Shell, name: &str) -> anyhow::Result<()> {
    let drop = format!("DROP DATABASE \"{name}\" WITH (FORCE)");
    cmd!(
        sh,
        "psql -q postgres://postgres@127.0.0.1:5432/postgres -c {drop}"
    )
    .run()?;
    Ok(())
}

/// The value of `"key":"…"` in a JSON text (xtask has no HTTP client; curl answers text).
fn json_string(text: &str, key: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(text).context("a JSON answer")?;
    value
        .pointer(key)
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {key} in {text}"))
}

/// The median of several rounds of one measurement (by throughput), with every round's
/// throughput for the record.
fn median(rounds: &[Measured]) -> Measured {
    let mut sorted = rounds.to_vec();
    sorted.sort_by(|a, b| {
        a.wrk
            .requests_per_second
            .total_cmp(&b.wrk.requests_per_second)
    });
    sorted[sorted.len() / 2]
}

/// Runs each measurement once per round, interleaved (every server is up throughout; an idle
/// one costs nothing), so that a slow minute of this shared machine hits both sides alike.
fn rounds(
    count: u32,
    measurements: &[&dyn Fn() -> anyhow::Result<Measured>],
) -> anyhow::Result<Vec<Vec<Measured>>> {
    let mut results = vec![Vec::new(); measurements.len()];
    for _ in 0..count.max(1) {
        for (i, measure) in measurements.iter().enumerate() {
            results[i].push(measure()?);
        }
    }
    Ok(results)
}

/// Each round's throughput ratio `a / b`, for the record.
fn ratios(a: &[Measured], b: &[Measured]) -> String {
    a.iter()
        .zip(b)
        .map(|(a, b)| {
            format!(
                "{:.2}",
                a.wrk.requests_per_second / b.wrk.requests_per_second
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Authenticated project reads on PostgreSQL, next to the bare actix + sqlx server reading the
/// same table (a pool per worker, and for reference one shared pool), in one run.
pub(crate) fn bench_crud(sh: &Shell, seconds: u32, round_count: u32) -> anyhow::Result<()> {
    let release = build_release(sh)?;
    let dir = sh.create_temp_dir()?;
    let (url, name) = create_database(sh, "keel_bench_crud")?;
    let result = (|| -> anyhow::Result<()> {
        let (api, base) = start_keel(&release, dir.path(), &url)?;
        let idle_rss = rss_of(api.0.id())? as f64 / 1024.0;
        let token = sign_up(&base)?;
        let id = create_projects(&base, &token, 200)?;
        let (bare, bare_base) = start_baseline(&release, &url, "per-worker")?;
        let bare_idle_rss = rss_of(bare.0.id())? as f64 / 1024.0;
        let (shared, shared_base) = start_baseline(&release, &url, "shared")?;
        let (keel_pid, bare_pid, shared_pid) = (api.0.id(), bare.0.id(), shared.0.id());
        let keel_one_url = format!("{base}/api/v1/projects/{id}");
        let keel_list_url = format!("{base}/api/v1/projects?limit=20");
        let bare_one_url = format!("{bare_base}/projects/{id}");
        let bare_list_url = format!("{bare_base}/projects?limit=20");
        let shared_one_url = format!("{shared_base}/projects/{id}");
        let measured = rounds(
            round_count,
            &[
                &|| measure_get(keel_pid, seconds, &keel_one_url, Some(&token)),
                &|| measure_get(bare_pid, seconds, &bare_one_url, None),
                &|| measure_get(shared_pid, seconds, &shared_one_url, None),
                &|| measure_get(keel_pid, seconds, &keel_list_url, Some(&token)),
                &|| measure_get(bare_pid, seconds, &bare_list_url, None),
            ],
        )?;
        let [keel_one, bare_one, shared_one, keel_list, bare_list] =
            [0, 1, 2, 3, 4].map(|i| median(&measured[i]));
        print_comparison(
            seconds,
            &[
                (
                    "`GET /projects/{id}`",
                    "Keel (bearer)",
                    keel_one,
                    Some(bare_one),
                ),
                (
                    "`GET /projects/{id}`",
                    "actix + sqlx, pool per worker",
                    bare_one,
                    None,
                ),
                (
                    "`GET /projects/{id}`",
                    "actix + sqlx, one shared pool",
                    shared_one,
                    None,
                ),
                (
                    "`GET /projects?limit=20`",
                    "Keel (bearer)",
                    keel_list,
                    Some(bare_list),
                ),
                (
                    "`GET /projects?limit=20`",
                    "actix + sqlx, pool per worker",
                    bare_list,
                    None,
                ),
            ],
        );
        println!();
        println!(
            "medians of {} interleaved rounds; Keel / bare per round: single row {}; list {}",
            round_count.max(1),
            ratios(&measured[0], &measured[1]),
            ratios(&measured[3], &measured[4]),
        );
        let peak = |runs: &[Measured]| runs.iter().map(|m| m.rss_mib).fold(0.0, f64::max);
        let keel_peak = peak(&measured[0]).max(peak(&measured[3]));
        let bare_peak = peak(&measured[1]).max(peak(&measured[4]));
        println!(
            "idle RSS at start: Keel {idle_rss:.1} MiB, actix + sqlx {bare_idle_rss:.1} MiB; peak RSS under load: Keel {keel_peak:.1} MiB = {:.1} × the bare server's {bare_peak:.1} MiB",
            keel_peak / bare_peak,
        );
        Ok(())
    })();
    drop_database(sh, &name)?;
    result
}

/// Sends `POST /admin/jobs/probe` (a no-op job) and returns the new job's id.
fn enqueue_probe(base: &str, token: &str) -> anyhow::Result<String> {
    let answer = curl_json(&[
        "-XPOST",
        &format!("{base}/api/v1/admin/jobs/probe"),
        "-H",
        &format!("authorization: Bearer {token}"),
        "-H",
        "content-type: application/json",
        "-d",
        "{}",
    ])?;
    json_string(&answer, "/id")
}

/// `total` of `GET /admin/jobs?<query>`.
fn job_total(base: &str, token: &str, query: &str) -> anyhow::Result<u64> {
    let answer = curl_json(&[
        &format!("{base}/api/v1/admin/jobs?{query}&limit=1"),
        "-H",
        &format!("authorization: Bearer {token}"),
    ])?;
    let value: serde_json::Value = serde_json::from_str(&answer)?;
    value["total"]
        .as_u64()
        .with_context(|| format!("no total in {answer}"))
}

/// The millisecond timestamp inside a UUIDv7 (a job id): when the job was enqueued.
fn uuid_v7_millis(id: &str) -> Option<i64> {
    let hex: String = id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    i64::from_str_radix(&hex, 16).ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Jobs drained per second (no-op jobs enqueued while no worker runs, then one worker started)
/// and enqueue→start latency of jobs sent one at a time to a running worker.
pub(crate) fn bench_jobs(sh: &Shell, postgres: bool, enqueue_seconds: u32) -> anyhow::Result<()> {
    cmd!(sh, "cargo build --release --locked --bin api --bin worker").run()?;
    let api_binary = target_dir().join("release/api");
    let worker_binary = target_dir().join("release/worker");
    let dir = sh.create_temp_dir()?;
    let database = if postgres {
        let (url, name) = create_database(sh, "keel_bench_jobs")?;
        (url, Some(name))
    } else {
        (
            format!("sqlite://{}/keel.db?mode=rwc", dir.path().display()),
            None,
        )
    };
    let port = 18_082;
    let base = format!("http://127.0.0.1:{port}");
    let result = (|| -> anyhow::Result<()> {
        let vars = [
            ("DATABASE_URL", database.0.as_str()),
            ("APP__RATE_LIMIT__ENABLED", "false"),
        ];
        let _api = start_api_with(&api_binary, dir.path(), port, &vars)?;
        wait_ready(port, Duration::from_secs(60))?;
        let mut create = Command::new(&api_binary)
            .current_dir(dir.path())
            .envs(vars)
            .env("APP__TELEMETRY__LOG_LEVEL", "warn")
            .args([
                "create-admin",
                "--email",
                "bench@example.com",
                "--password-stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        {
            use std::io::Write as _;
            let mut stdin = create.stdin.take().context("stdin")?;
            stdin.write_all(b"plum-orbit-kettle-7\n")?;
        }
        anyhow::ensure!(create.wait()?.success(), "create-admin failed");
        let tokens = curl_json(&[
            "-XPOST",
            &format!("{base}/api/v1/auth/login"),
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"email":"bench@example.com","password":"plum-orbit-kettle-7"}"#,
        ])?;
        let token = json_string(&tokens, "/access_token")?;

        // Drain: enqueue for a few seconds with no worker running (wrk posting probes at 16
        // connections), then time one worker emptying the queue.
        let script = dir.path().join("probe.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\nwrk.body = \"{{}}\"\n"
            ),
        )?;
        let mut rows = Vec::new();
        for (label, concurrency) in [("default concurrency (4)", "4"), ("concurrency 32", "32")] {
            let already = job_total(&base, &token, "state=succeeded")?;
            let enqueued = wrk(&[
                "-t1".to_owned(),
                "-c16".to_owned(),
                "-d".to_owned(),
                format!("{enqueue_seconds}s"),
                "-s".to_owned(),
                script.display().to_string(),
                format!("{base}/api/v1/admin/jobs/probe"),
            ])?;
            anyhow::ensure!(enqueued.non_2xx == 0, "some probes were refused");
            let jobs = enqueued.requests;
            let log = std::fs::File::create(dir.path().join("worker-drain.log"))?;
            let started = Instant::now();
            let mut worker = crate::process::Running(
                Command::new(&worker_binary)
                    .current_dir(dir.path())
                    .envs(vars)
                    .env("APP__WORKER__PORT", "0")
                    .env("APP__TELEMETRY__LOG_LEVEL", "warn")
                    .env("APP__JOBS__QUEUES__DEFAULT__CONCURRENCY", concurrency)
                    .stdout(log)
                    .stderr(std::process::Stdio::null())
                    .spawn()?,
            );
            let deadline = Instant::now() + Duration::from_secs(600);
            while job_total(&base, &token, "state=succeeded")? < already + jobs {
                anyhow::ensure!(Instant::now() < deadline, "the queue did not drain");
                std::thread::sleep(Duration::from_millis(20));
            }
            let elapsed = started.elapsed().as_secs_f64();
            let _ = worker.0.kill();
            let _ = worker.0.wait();
            // On PostgreSQL, the steady rate from the queue's own clock: first claim to last
            // acknowledgement of this batch (process start and the outbox relay left out).
            let steady = if postgres {
                let sql = format!(
                    "SELECT EXTRACT(EPOCH FROM max(done_at) - min(lock_at)) FROM (SELECT lock_at, done_at FROM apalis.jobs WHERE status = 'Done' ORDER BY done_at DESC LIMIT {jobs}) AS batch"
                );
                let url = &database.0;
                let seconds = cmd!(sh, "psql -qtA {url} -c {sql}").read()?;
                seconds
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .map(|s| jobs as f64 / s.max(1e-3))
            } else {
                None
            };
            rows.push((label, jobs, jobs as f64 / elapsed, elapsed, steady));
        }

        // Latency: one job at a time (every 50 ms) to a running worker, read back from its log.
        let log_path = dir.path().join("worker-latency.log");
        let log = std::fs::File::create(&log_path)?;
        let mut worker = crate::process::Running(
            Command::new(&worker_binary)
                .current_dir(dir.path())
                .envs(vars)
                .env("APP__WORKER__PORT", "0")
                .env("APP__TELEMETRY__LOG_FORMAT", "json")
                .env("APP__TELEMETRY__LOG_LEVEL", "warn,keel_worker::queue=info")
                .stdout(log)
                .stderr(std::process::Stdio::null())
                .spawn()?,
        );
        std::thread::sleep(Duration::from_secs(1));
        let samples = 200;
        let mut ids = Vec::new();
        for _ in 0..samples {
            ids.push(enqueue_probe(&base, &token)?);
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(2));
        let _ = worker.0.kill();
        let _ = worker.0.wait();
        let mut latencies = Vec::new();
        for line in std::fs::read_to_string(&log_path)?.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if value["message"] != "job succeeded" {
                continue;
            }
            let (Some(id), Some(at)) = (
                value.pointer("/span/job_id").and_then(|v| v.as_str()),
                value["timestamp"].as_str(),
            ) else {
                continue;
            };
            if !ids.iter().any(|i| i == id) {
                continue;
            }
            let finished = chrono::DateTime::parse_from_rfc3339(at)?.timestamp_micros() as f64;
            let enqueued = uuid_v7_millis(id).context("a UUIDv7 job id")? as f64 * 1000.0;
            latencies.push((finished - enqueued) / 1000.0);
        }
        latencies.sort_by(f64::total_cmp);
        let backend = if postgres { "PostgreSQL" } else { "SQLite" };
        println!(
            "| {backend}, drain | jobs | from worker spawn: jobs/s (seconds) | steady, first claim to last ack: jobs/s |"
        );
        println!("|---|---:|---:|---:|");
        for (label, jobs, rate, elapsed, steady) in rows {
            let steady = steady.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.0}"));
            println!("| {label} | {jobs} | {rate:.0} ({elapsed:.1}) | {steady} |");
        }
        println!();
        println!(
            "enqueue→done latency over {} of {samples} no-op jobs ({backend}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or(f64::NAN),
        );
        Ok(())
    })();
    if let Some(name) = database.1 {
        drop_database(sh, &name)?;
    }
    result
}
