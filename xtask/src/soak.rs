//! `cargo xtask soak --minutes N`: a fixed fraction of the measured capacity of mixed reads,
//! writes, sign-ins and jobs for N minutes, sampling the api every 10 s (RSS, open files, pool
//! use, p99, non-2xx answers) into a CSV and a plot, and failing on any non-2xx answer or on growth that does not
//! settle after warm-up.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::ensure;
use xshell::Shell;

use crate::fault::{
    ADMIN_EMAIL, PASSWORD, Postgres, Proc, RunDir, admin, api_vars, build, ms, wait_ready,
};
use crate::load::{Client, Load, Role, Shared, Tally};
use crate::process::free_port;

/// Load threads; each holds one connection.
const THREADS: usize = 8;
/// Seconds between samples.
const SAMPLE: Duration = Duration::from_secs(10);
/// Samples before this are warm-up: caches fill, pools grow, allocators settle.
const WARM_UP: Duration = Duration::from_secs(120);

/// One 10-second sample.
struct Sample {
    at_s: u64,
    rss_mib: f64,
    worker_rss_mib: f64,
    fds: usize,
    pool_in_use: f64,
    pool_open: f64,
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

pub(crate) fn soak(sh: &Shell, minutes: u32, fraction: f64, debug: bool) -> anyhow::Result<()> {
    ensure!(
        (0.05..=1.0).contains(&fraction),
        "--fraction must be between 0.05 and 1"
    );
    build(sh, !debug)?;
    let dir = RunDir::new("soak")?;
    let pg = Postgres::start(&dir.0)?;
    let port = free_port()?;
    let ops_port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let api = Proc::spawn(
        "api",
        &dir.0,
        "api.log",
        &api_vars(port, &pg.url(), &[("APP__OPS__PORT", ops_port.to_string())]),
    )?;
    let anonymous = Client::new(&base, Duration::from_secs(10));
    wait_ready(&anonymous, Duration::from_secs(60))?;
    let worker_vars: Vec<(String, String)> = vec![
        ("DATABASE_URL".to_owned(), pg.url()),
        ("APP__WORKER__PORT".to_owned(), "0".to_owned()),
    ];
    let worker = Proc::spawn("worker", &dir.0, "worker.log", &worker_vars)?;
    let client = admin(&base)?;
    let ops = Client::new(
        &format!("http://127.0.0.1:{ops_port}"),
        Duration::from_secs(5),
    );
    let shared = || {
        let shared = Shared::default();
        *shared
            .credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((ADMIN_EMAIL.to_owned(), PASSWORD.to_owned()));
        shared
    };

    // Capacity: the same mix, unpaced, for 15 s.
    let probe = Load::start_with(&client, &[Role::Mixed; THREADS], None, shared());
    std::thread::sleep(Duration::from_secs(15));
    let capacity = probe.stop().tally();
    #[allow(clippy::cast_precision_loss)]
    let capacity_rps = capacity.total() as f64 / 15.0;
    let target_rps = capacity_rps * fraction;
    #[allow(clippy::cast_precision_loss)]
    let pace = Duration::from_secs_f64(THREADS as f64 / target_rps);
    eprintln!(
        "soak: capacity {capacity_rps:.0} req/s ({}); running {minutes} min at {target_rps:.0} req/s",
        capacity.statuses()
    );

    let load = Load::start_with(&client, &[Role::Mixed; THREADS], Some(pace), shared());
    let started = Instant::now();
    let end = started + Duration::from_secs(u64::from(minutes) * 60);
    let mut samples = Vec::new();
    let mut previous = Tally::default();
    let mut previous_at = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(SAMPLE.min(end.saturating_duration_since(Instant::now())));
        let tally = load.shared.tally();
        let now = Instant::now();
        let window = &tally.latencies[previous.latencies.len()..];
        let mut window_sorted = window.to_vec();
        window_sorted.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let p99 = window_sorted
            .get(((window_sorted.len().saturating_sub(1)) as f64 * 0.99).round() as usize)
            .copied()
            .unwrap_or_default();
        // Every answer of the mix is a 2xx when all is well: count anything else.
        let errors = tally.count(|s| !(200..300).contains(&s))
            - previous.count(|s| !(200..300).contains(&s));
        let metrics = ops.get("/metrics").body;
        #[allow(clippy::cast_precision_loss)]
        let sample = Sample {
            at_s: started.elapsed().as_secs(),
            rss_mib: rss_mib(api.child.id())?,
            worker_rss_mib: rss_mib(worker.child.id()).unwrap_or(0.0),
            fds: open_fds(api.child.id())?,
            pool_in_use: gauge(&metrics, "db_pool_connections{state=\"in_use\"}"),
            pool_open: gauge(&metrics, "db_pool_connections{state=\"in_use\"}")
                + gauge(&metrics, "db_pool_connections{state=\"idle\"}"),
            rps: window.len() as f64 / now.duration_since(previous_at).as_secs_f64(),
            p99_ms: p99.as_secs_f64() * 1000.0,
            errors,
        };
        eprintln!(
            "soak: {:>4} s  rss {:.1} MiB  worker {:.1} MiB  fds {}  pool {}/{}  {:.0} req/s  p99 {:.1} ms  errors {}",
            sample.at_s,
            sample.rss_mib,
            sample.worker_rss_mib,
            sample.fds,
            sample.pool_in_use,
            sample.pool_open,
            sample.rps,
            sample.p99_ms,
            sample.errors
        );
        samples.push(sample);
        previous = tally;
        previous_at = now;
    }
    let shared = load.stop();
    let tally = shared.tally();
    let requests = shared.requests.load(Ordering::SeqCst);
    drop(worker);
    drop(api);

    let out = crate::workspace_root().join("target/soak");
    std::fs::create_dir_all(&out)?;
    let csv = out.join("soak.csv");
    let mut text = String::from(
        "seconds,rss_mib,worker_rss_mib,open_fds,pool_in_use,pool_open,requests_per_s,p99_ms,errors\n",
    );
    for s in &samples {
        writeln!(
            text,
            "{},{:.2},{:.2},{},{},{},{:.1},{:.2},{}",
            s.at_s,
            s.rss_mib,
            s.worker_rss_mib,
            s.fds,
            s.pool_in_use,
            s.pool_open,
            s.rps,
            s.p99_ms,
            s.errors
        )?;
    }
    std::fs::write(&csv, text)?;
    let png = out.join("soak.png");
    plot(&csv, &png);

    // Verdict: after warm-up, RSS and fds flat, p99 without drift, no non-2xx answer.
    let settled: Vec<&Sample> = samples
        .iter()
        .filter(|s| Duration::from_secs(s.at_s) >= WARM_UP)
        .collect();
    let errors = tally.count(|s| !(200..300).contains(&s));
    println!(
        "\nsoak: {requests} requests in {minutes} min, answers {}",
        tally.statuses()
    );
    println!("soak: CSV {}, plot {}", csv.display(), png.display());
    if settled.len() >= 4 {
        let third = settled.len() / 3;
        let (first, last) = (&settled[..third], &settled[settled.len() - third..]);
        let mean = |v: &[&Sample], f: fn(&Sample) -> f64| {
            #[allow(clippy::cast_precision_loss)]
            let n = v.len() as f64;
            v.iter().map(|s| f(s)).sum::<f64>() / n
        };
        let rss = (mean(first, |s| s.rss_mib), mean(last, |s| s.rss_mib));
        #[allow(clippy::cast_precision_loss)]
        let fds = (mean(first, |s| s.fds as f64), mean(last, |s| s.fds as f64));
        let p99 = (mean(first, |s| s.p99_ms), mean(last, |s| s.p99_ms));
        println!(
            "soak: after warm-up, first third → last third: RSS {:.1} → {:.1} MiB, fds {:.0} → {:.0}, p99 {:.1} → {:.1} ms",
            rss.0, rss.1, fds.0, fds.1, p99.0, p99.1
        );
        ensure!(
            errors == 0,
            "{errors} answers were not 2xx: {}",
            tally.statuses()
        );
        ensure!(
            rss.1 <= rss.0 * 1.10 + 2.0,
            "RSS grew after warm-up: {:.1} → {:.1} MiB",
            rss.0,
            rss.1
        );
        ensure!(
            fds.1 <= fds.0 + 4.0,
            "open files grew after warm-up: {:.0} → {:.0}",
            fds.0,
            fds.1
        );
        ensure!(
            p99.1 <= p99.0 * 1.5 + 5.0,
            "p99 drifted: {:.1} → {:.1} ms",
            p99.0,
            p99.1
        );
    } else {
        ensure!(
            errors == 0,
            "{errors} answers were not 2xx: {}",
            tally.statuses()
        );
        println!(
            "soak: shorter than warm-up plus four samples: only the error check applies (p99 overall {})",
            ms(tally.quantile(0.99))
        );
    }
    Ok(())
}

fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    #[allow(clippy::cast_precision_loss)]
    Ok(crate::bench::rss_of(pid)? as f64 / 1024.0)
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn gauge(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Draws the CSV with matplotlib (`pip install matplotlib`); without it only the CSV remains.
fn plot(csv: &std::path::Path, png: &std::path::Path) {
    let script: PathBuf = crate::workspace_root().join("xtask/soak/plot.py");
    match Command::new("python3")
        .arg(script)
        .arg(csv)
        .arg(png)
        .status()
    {
        Ok(status) if status.success() => {}
        _ => eprintln!("soak: no plot (python3 -m pip install matplotlib), CSV only"),
    }
}
