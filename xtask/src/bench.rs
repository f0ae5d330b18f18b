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

pub(crate) fn bench_auth(sh: &Shell, postgres: bool, seconds: u32) -> anyhow::Result<()> {
    cmd!(sh, "cargo build --release --locked --bin api").run()?;
    let binary = target_dir().join("release/api");
    let dir = sh.create_temp_dir()?;
    let database = if postgres {
        let (url, name) = create_database(sh, "keel_bench")?;
        (url, Some(name))
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
        drop_database(sh, &name)?;
    }
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

fn wrk_get(seconds: u32, url: &str, token: Option<&str>) -> anyhow::Result<WrkResult> {
    let mut args: Vec<String> = ["-t2", "-c64", "-d"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(format!("{seconds}s"));
    args.push("--latency".to_owned());
    if let Some(token) = token {
        args.push("-H".to_owned());
        args.push(format!("Authorization: Bearer {token}"));
    }
    args.push(url.to_owned());
    wrk(&args)
}

/// Authenticated project reads on PostgreSQL, next to a minimal actix + sqlx server reading
/// the same table, in one run.
pub(crate) fn bench_crud(sh: &Shell, seconds: u32) -> anyhow::Result<()> {
    // One command, so both binaries share one feature resolution (and one dependency build).
    cmd!(
        sh,
        "cargo build --release --locked --workspace --bin api --bin keel-bench-baseline"
    )
    .run()?;
    let release = target_dir().join("release");
    let dir = sh.create_temp_dir()?;
    let (url, name) = create_database(sh, "keel_bench_crud")?;
    let result = (|| -> anyhow::Result<()> {
        let port = crate::process::free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let api = start_api_with(
            &release.join("api"),
            dir.path(),
            port,
            &[
                ("DATABASE_URL", url.as_str()),
                ("APP__RATE_LIMIT__ENABLED", "false"),
            ],
        )?;
        wait_ready(port, Duration::from_secs(60))?;
        let credentials = r#"{"email":"bench@example.com","password":"plum-orbit-kettle-7"}"#;
        let json = ["-H", "content-type: application/json"];
        curl_json(
            &[
                &["-XPOST", &format!("{base}/api/v1/auth/register")][..],
                &json,
                &["-d", credentials],
            ]
            .concat(),
        )?;
        let tokens = curl_json(
            &[
                &["-XPOST", &format!("{base}/api/v1/auth/login")][..],
                &json,
                &["-d", credentials],
            ]
            .concat(),
        )?;
        let token = json_string(&tokens, "/access_token")?;
        let auth = format!("Authorization: Bearer {token}");
        let items: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"name":"Project {i:03}","description":"A project for the read benchmark","status":"active"}}"#))
            .collect();
        let bulk = format!(r#"{{"items":[{}]}}"#, items.join(","));
        let mut last = String::new();
        for _ in 0..2 {
            last = curl_json(
                &[
                    &[
                        "-XPOST",
                        &format!("{base}/api/v1/projects/bulk"),
                        "-H",
                        &auth,
                    ][..],
                    &json,
                    &["-d", &bulk],
                ]
                .concat(),
            )?;
        }
        let id = json_string(&last, "/items/0/id")?;

        let keel_one = wrk_get(
            seconds,
            &format!("{base}/api/v1/projects/{id}"),
            Some(&token),
        )?;
        let keel_list = wrk_get(
            seconds,
            &format!("{base}/api/v1/projects?limit=20"),
            Some(&token),
        )?;
        drop(api);

        let baseline_port = crate::process::free_port()?;
        let _baseline = crate::process::Running(
            Command::new(release.join("keel-bench-baseline"))
                .env("DATABASE_URL", &url)
                .env("PORT", baseline_port.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("starting the baseline server")?,
        );
        let baseline = format!("http://127.0.0.1:{baseline_port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", baseline_port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the baseline server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let base_one = wrk_get(seconds, &format!("{baseline}/projects/{id}"), None)?;
        let base_list = wrk_get(seconds, &format!("{baseline}/projects?limit=20"), None)?;

        println!(
            "| read (64 connections, {seconds} s) | server | req/s | p50 (ms) | p99 (ms) | non-2xx |"
        );
        println!("|---|---|---|---|---|---|");
        for (read, server, r) in [
            ("`GET /projects/{id}`", "Keel", keel_one),
            ("`GET /projects/{id}`", "actix + sqlx", base_one),
            ("`GET /projects?limit=20`", "Keel", keel_list),
            ("`GET /projects?limit=20`", "actix + sqlx", base_list),
        ] {
            println!(
                "| {read} | {server} | {:.0} | {:.2} | {:.2} | {} |",
                r.requests_per_second, r.p50_ms, r.p99_ms, r.non_2xx
            );
        }
        println!(
            "\nKeel / baseline throughput: single row {:.2}, list {:.2}",
            keel_one.requests_per_second / base_one.requests_per_second,
            keel_list.requests_per_second / base_list.requests_per_second
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
pub(crate) fn bench_jobs(sh: &Shell, postgres: bool, jobs: u32) -> anyhow::Result<()> {
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

        // Drain: enqueue with no worker, then time one worker emptying the queue.
        let mut rows = Vec::new();
        for (label, concurrency) in [("default concurrency (4)", "4"), ("concurrency 32", "32")] {
            for _ in 0..jobs {
                enqueue_probe(&base, &token)?;
            }
            let already = job_total(&base, &token, "state=succeeded")?;
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
            while job_total(&base, &token, "state=succeeded")? < already + u64::from(jobs) {
                anyhow::ensure!(Instant::now() < deadline, "the queue did not drain");
                std::thread::sleep(Duration::from_millis(20));
            }
            let elapsed = started.elapsed().as_secs_f64();
            let _ = worker.0.kill();
            let _ = worker.0.wait();
            rows.push((label, f64::from(jobs) / elapsed, elapsed));
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
        println!("| {backend} | jobs/s | seconds for {jobs} |");
        println!("|---|---|---|");
        for (label, rate, elapsed) in rows {
            println!("| drain, {label} | {rate:.0} | {elapsed:.1} |");
        }
        println!();
        println!(
            "enqueue→done latency over {} of {samples} no-op jobs ({backend}, poll 200 ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
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
