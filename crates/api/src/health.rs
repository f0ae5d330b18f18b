//! Liveness, readiness and the detailed health report, plus the Prometheus scrape endpoint.
//! The api serves the probes on its public port and everything on its operations listener
//! (`ops.port`); the worker serves everything on `worker.port`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use keel_kernel::health::HealthCheck;
use keel_telemetry::MetricsHandle;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Problem;

/// The readiness checks of one process, run concurrently, each with a deadline.
#[derive(Debug, Clone)]
pub struct HealthRegistry {
    checks: Vec<Arc<dyn HealthCheck>>,
    /// Names of checks whose failure is reported but does not make the process unready: the
    /// process serves without them (Redis: limits fail open, sessions fall back to the
    /// database), and taking every replica out of the load balancer at once would turn a
    /// degraded service into a dead one.
    degraded_only: Vec<&'static str>,
    timeout: Duration,
    started: Instant,
    /// Set on SIGTERM: readiness answers 503 while requests are still served, so load
    /// balancers stop routing here before the listener closes.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckReport {
    /// The check's name, e.g. `database`.
    pub name: &'static str,
    /// `ok` or `fail`.
    pub status: &'static str,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed, in general terms (details are logged, not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `false` when the process keeps serving (degraded) while this check fails.
    pub required: bool,
}

impl HealthRegistry {
    /// A registry with no checks yet; each check fails after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Vec::new(),
            degraded_only: Vec::new(),
            timeout,
            started: Instant::now(),
            draining: Arc::default(),
        }
    }

    /// Turns readiness to 503 for good (shutdown has begun); liveness stays 200.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs every check and publishes `health_check_up{check}` (1 passing, 0 failing), so
    /// dashboards and alerts see dependencies even when no probe is polling.
    pub async fn sample(&self) {
        for report in self.run().await {
            metrics::gauge!(keel_telemetry::names::HEALTH_CHECK_UP, "check" => report.name)
                .set(if report.error.is_none() { 1.0 } else { 0.0 });
        }
    }

    /// Adds a check.
    #[must_use]
    pub fn with(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Adds a check the process can do without: reported (in `/health/ready`'s `checks`,
    /// `/health` and `health_check_up`) but never the reason readiness fails.
    #[must_use]
    pub fn with_optional(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.degraded_only.push(check.name());
        self.checks.push(check);
        self
    }

    /// Runs every check concurrently.
    pub async fn run(&self) -> Vec<CheckReport> {
        join_all(self.checks.iter().map(|check| self.run_one(check.as_ref()))).await
    }

    async fn run_one(&self, check: &dyn HealthCheck) -> CheckReport {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, check.check()).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(cause)) => {
                tracing::warn!(check = check.name(), error = %cause, "health check failed");
                Some("unreachable".to_owned())
            }
            Err(_) => {
                tracing::warn!(check = check.name(), timeout = ?self.timeout, "health check timed out");
                Some(format!("timed out after {:?}", self.timeout))
            }
        };
        CheckReport {
            name: check.name(),
            status: if error.is_none() { "ok" } else { "fail" },
            latency_ms: (latency_ms * 1000.0).round() / 1000.0,
            error,
            required: !self.degraded_only.contains(&check.name()),
        }
    }
}

/// Registers `/health/live` and `/health/ready`: what the public port keeps for probes.
pub fn configure_probes(cfg: &mut web::ServiceConfig) {
    // `web::resource` (not `cfg.route`) so other methods get 405 rather than 404.
    cfg.service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)));
}

/// Registers the probes plus `/health` (versions, latencies) and `/metrics`: the operations
/// listener's routes, which tell an attacker more than a probe needs to.
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_probes(cfg);
    cfg.service(web::resource("/health").route(web::get().to(report)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// Body of the health endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`, or `fail` in the full report.
    status: &'static str,
    /// The application version (full report only).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    /// Seconds since the process started (full report only).
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_seconds: Option<u64>,
    /// One entry per dependency check (not on liveness).
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Vec<CheckReport>>,
}

/// The process is running; restart it if this fails.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    operation_id = "health_live",
    responses((status = 200, description = "Alive.", body = HealthStatus))
)]
async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(HealthStatus {
            status: "ok",
            version: None,
            uptime_seconds: None,
            checks: None,
        })
}

/// Every dependency answers: send traffic. 503 problem naming the failed checks otherwise.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    operation_id = "health_ready",
    responses(
        (status = 200, description = "Ready.", body = HealthStatus),
    )
)]
async fn ready(registry: web::Data<HealthRegistry>) -> HttpResponse {
    if registry.is_draining() {
        let mut response = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "not ready: shutting down; requests in flight are still served",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    let reports = registry.run().await;
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.required)
        .filter_map(|r| r.error.as_ref().map(|e| format!("{} ({e})", r.name)))
        .collect();
    if failed.is_empty() {
        return HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .json(HealthStatus {
                status: "ok",
                version: None,
                uptime_seconds: None,
                checks: Some(reports),
            });
    }
    let mut response = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {}", failed.join(", ")),
    )
    .with_extension("checks", serde_json::to_value(&reports).unwrap_or_default())
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Every check with its latency, the version and the uptime. Always 200: it is a report;
/// `/health/ready` is the signal. Operations listener only, so not in the public document.
async fn report(registry: web::Data<HealthRegistry>) -> HttpResponse {
    let reports = registry.run().await;
    let healthy = reports.iter().all(|r| r.error.is_none());
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .json(HealthStatus {
            status: if healthy { "ok" } else { "fail" },
            version: Some(env!("CARGO_PKG_VERSION")),
            uptime_seconds: Some(registry.started.elapsed().as_secs()),
            checks: Some(reports),
        })
}

/// Prometheus text exposition. Operations listener only, so not in the public document.
async fn metrics(handle: web::Data<MetricsHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(handle.render())
}

/// The OpenAPI document of the probes the public port serves.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(live, ready))]
pub struct HealthDoc;
