//! Logs, traces and metrics for the Keel binaries.
//!
//! Logs are `tracing` events: JSON lines in production (one object per line, the request id,
//! trace id and span id of the current request on every line), pretty output on a developer's
//! terminal. Traces follow W3C trace context and go to an OpenTelemetry collector when one is
//! configured ([`traces`]). Metrics go to a process-wide Prometheus recorder whose text
//! rendering `/metrics` serves.

mod fields;
mod json;
pub mod traces;

use std::io::IsTerminal;
use std::sync::OnceLock;

use keel_config::{Environment, LogFormat, Settings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics_exporter_prometheus::PrometheusHandle as MetricsHandle;
pub use traces::TraceGuard;

/// Which build is running: set once by the binaries (whose crate records the commit) before
/// telemetry starts; `unknown` in tests and tools that never set it.
static BUILD: OnceLock<(&'static str, &'static str)> = OnceLock::new();

/// Records the version and commit of the running binary, for `build_info` and the trace
/// resource. Later calls are ignored.
pub fn set_build_info(version: &'static str, git_sha: &'static str) {
    let _ = BUILD.set((version, git_sha));
}

/// The version and commit set by [`set_build_info`].
pub fn build_info() -> (&'static str, &'static str) {
    BUILD
        .get()
        .copied()
        .unwrap_or((env!("CARGO_PKG_VERSION"), "unknown"))
}

/// Metric names from the public contract (`../shared/contract.md`); dashboards depend on them.
pub mod names {
    /// Counter of finished HTTP requests, labelled `method`, `route` (template), `status`.
    pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
    /// Histogram of HTTP request latency in seconds, labelled `method`, `route`.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
    /// Gauge of database pool connections, labelled `state` (`idle`, `in_use`, `max`).
    pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
    /// Counter of authentication events, labelled `event` (`login`, `register`, `refresh`,
    /// `logout`, `password_change`, `password_forgot`, `password_reset`, `email_verify`) and
    /// `outcome` (`success`, `failure`, `rate_limited`, `error`).
    pub const AUTH_EVENTS_TOTAL: &str = "auth_events_total";
    /// Counter of finished job attempts, labelled `queue`, `job` (kind) and `outcome`
    /// (`succeeded`, `failed` = will be retried, `dead`).
    pub const JOBS_TOTAL: &str = "jobs_total";
    /// Histogram of job attempt durations in seconds, labelled `queue`, `job`.
    pub const JOB_DURATION_SECONDS: &str = "job_duration_seconds";
    /// Gauge of jobs waiting to run (pending, retrying, or committed but not yet queued),
    /// labelled `queue`.
    pub const JOBS_QUEUED: &str = "jobs_queued";
    /// Gauge of the age in seconds of the oldest job waiting to run, labelled `queue`.
    pub const JOBS_OLDEST_AGE_SECONDS: &str = "jobs_oldest_age_seconds";
    /// Gauge of requests being served right now.
    pub const HTTP_REQUESTS_IN_FLIGHT: &str = "http_requests_in_flight";
    /// Gauge, always 1, labelled `version` and `git_sha`.
    pub const BUILD_INFO: &str = "build_info";
    /// Gauge per readiness check (`check`): 1 passing, 0 failing; sampled every 15 s.
    pub const HEALTH_CHECK_UP: &str = "health_check_up";
    /// Counter of password hashes refused because every slot and the waiting line were taken.
    pub const PASSWORD_HASHING_REJECTED_TOTAL: &str = "password_hashing_rejected_total";
}

/// Latency buckets (seconds) from 1 ms to 10 s: fine where an API spends its time.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `telemetry.log_level` is not valid EnvFilter syntax.
    #[error("telemetry.log_level: `{value}` is not a valid filter: {reason}")]
    InvalidLogLevel {
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The Prometheus recorder could not be built.
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    /// The OTLP exporter could not be built (`telemetry.otlp.*`, `OTEL_*`).
    #[error("telemetry.otlp: cannot set up trace export: {0}")]
    Traces(String),
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Servers: standard output, as container platforms expect.
    Stdout,
    /// Command-line tools: standard error, so their output on stdout stays clean.
    Stderr,
}

/// Installs the global `tracing` subscriber without span export (tools, tests). Calling it
/// again keeps the first one.
pub fn init_logging(settings: &Settings, target: LogTarget) -> Result<(), TelemetryError> {
    init(settings, target, "cli", false).map(drop)
}

/// Installs the global `tracing` subscriber: logs, W3C trace context, and, when `export` is
/// set and a collector is configured, span export for service `<app.name>-<process>`. Keep the
/// returned guard until exit: dropping it flushes the last spans. Calling it again (tests)
/// keeps the first subscriber.
pub fn init(
    settings: &Settings,
    target: LogTarget,
    process: &str,
    export: bool,
) -> Result<TraceGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.telemetry.log_level).map_err(|e| {
        TelemetryError::InvalidLogLevel {
            value: settings.telemetry.log_level.clone(),
            reason: e.to_string(),
        }
    })?;
    let is_terminal = match target {
        LogTarget::Stdout => std::io::stdout().is_terminal(),
        LogTarget::Stderr => std::io::stderr().is_terminal(),
    };
    let writer = match target {
        LogTarget::Stdout => BoxMakeWriter::new(std::io::stdout),
        LogTarget::Stderr => BoxMakeWriter::new(std::io::stderr),
    };
    let pretty = match settings.telemetry.log_format {
        LogFormat::Pretty => true,
        LogFormat::Json => false,
        LogFormat::Auto => settings.environment == Environment::Local && is_terminal,
    };
    // The log level filters log lines only: spans (ids on log lines, traceparents for jobs,
    // export) are kept at INFO whatever the log level, minus the exporter's own machinery.
    let span_filter = || {
        EnvFilter::new(
            "info,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off,reqwest=off,hyper=off,hyper_util=off,h2=off",
        )
    };
    let registry = tracing_subscriber::registry();
    let (guard, result) = if pretty {
        let subscriber = registry.with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(is_terminal)
                .with_filter(filter),
        );
        let (guard, spans) = traces::init(settings, process, export)?;
        (
            guard,
            subscriber.with(spans.with_filter(span_filter())).try_init(),
        )
    } else {
        let subscriber = registry.with(
            // One JSON object per line with the event's fields flattened, the current span
            // and every enclosing span (a mail inside a job inside a trace): each line keeps
            // its job id, request id and trace id.
            tracing_subscriber::fmt::layer()
                .fmt_fields(fields::AppendingJsonFields::default())
                .event_format(json::JsonLines)
                .with_writer(writer)
                .with_filter(filter),
        );
        let (guard, spans) = traces::init(settings, process, export)?;
        (
            guard,
            subscriber.with(spans.with_filter(span_filter())).try_init(),
        )
    };
    // Already initialised (several apps in one test process): the first subscriber stays.
    drop(result);
    Ok(guard)
}

/// Installs the process-wide Prometheus recorder once and returns a handle to it.
///
/// Every app in the process (tests start many) shares the recorder; the handle renders the
/// text exposition format for `/metrics`. Call [`PrometheusHandle::run_upkeep`] periodically.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::HTTP_REQUEST_DURATION_SECONDS.to_owned()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_duration_seconds".to_owned()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| e.to_string())?;
            describe_metrics();
            let (version, git_sha) = build_info();
            metrics::gauge!(names::BUILD_INFO, "version" => version, "git_sha" => git_sha).set(1.0);
            Ok(handle)
        })
        .clone()
        .map_err(TelemetryError::Metrics)
}

fn describe_metrics() {
    metrics::describe_counter!(
        names::HTTP_REQUESTS_TOTAL,
        "HTTP requests finished, by method, route template and status"
    );
    metrics::describe_histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency, by method and route template"
    );
    metrics::describe_counter!(
        names::AUTH_EVENTS_TOTAL,
        "Authentication events, by event and outcome"
    );
    metrics::describe_counter!(
        names::JOBS_TOTAL,
        "Job attempts finished, by queue, job kind and outcome (succeeded, failed, dead)"
    );
    metrics::describe_histogram!(
        names::JOB_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Job attempt duration, by queue and job kind"
    );
    metrics::describe_gauge!(names::JOBS_QUEUED, "Jobs waiting to run, by queue");
    metrics::describe_gauge!(
        names::DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use, max)"
    );
    metrics::describe_gauge!(
        names::JOBS_OLDEST_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest job waiting to run, by queue"
    );
    metrics::describe_gauge!(
        names::HTTP_REQUESTS_IN_FLIGHT,
        "HTTP requests being served right now"
    );
    metrics::describe_gauge!(
        names::BUILD_INFO,
        "Always 1; the labels say which version and commit is running"
    );
    metrics::describe_gauge!(
        names::HEALTH_CHECK_UP,
        "Readiness checks by name: 1 passing, 0 failing (sampled every 15 s)"
    );
    metrics::describe_counter!(
        names::PASSWORD_HASHING_REJECTED_TOTAL,
        "Password hashes refused at once because every slot and the waiting line were taken"
    );
}

/// Process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, `process_threads`):
/// call [`ProcessMetrics::sample`] periodically.
#[derive(Debug, Default)]
pub struct ProcessMetrics(metrics_process::Collector);

impl ProcessMetrics {
    /// A collector; describes its metrics once.
    pub fn new() -> Self {
        let collector = metrics_process::Collector::default();
        collector.describe();
        Self(collector)
    }

    /// Reads the process's counters and updates the gauges.
    pub fn sample(&self) {
        self.0.collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_is_shared_and_renders_contract_names() {
        let first = install_metrics().unwrap();
        let second = install_metrics().unwrap();
        metrics::counter!(names::HTTP_REQUESTS_TOTAL, "method" => "GET", "route" => "/x", "status" => "200")
            .increment(1);
        metrics::histogram!(names::HTTP_REQUEST_DURATION_SECONDS, "method" => "GET", "route" => "/x")
            .record(0.003);
        let text = second.render();
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/x",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"http_request_duration_seconds_bucket{method="GET",route="/x",le="0.005"} 1"#
            ),
            "{text}"
        );
        assert_eq!(first.render().len(), text.len());
    }

    #[test]
    fn a_bad_filter_names_the_key() {
        let mut settings =
            Settings::load_from(&keel_config::Sources::from_vars::<&str, &str>([])).unwrap();
        settings.telemetry.log_level = "keel=[".to_owned();
        let err = init_logging(&settings, LogTarget::Stderr).unwrap_err();
        assert!(err.to_string().starts_with("telemetry.log_level"), "{err}");
    }
}
