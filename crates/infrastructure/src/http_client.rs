//! Outbound HTTP on reqwest behind the kernel's `HttpClient` port: a connection pool per host,
//! connect, attempt and total time limits, retries with exponential backoff and jitter for
//! requests that are safe to repeat, a circuit breaker per host (failsafe), the W3C
//! `traceparent` of the current span, and metrics per host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use keel_config::HttpClientSettings;
use keel_kernel::http::{HttpClient, OutboundError, OutboundRequest, OutboundResponse};
use moka::sync::Cache as MokaCache;

/// Most hosts whose circuits are remembered (least recently called ones are forgotten, closed).
const MAX_HOSTS: u64 = 1024;

type Breaker = StateMachine<ConsecutiveFailures<Constant>, BreakerMetrics>;

/// Publishes a host's circuit state as `http_client_circuit_state{host}`: 0 closed, 1 half
/// open (one probe let through; its failure reopens it), 2 open (calls refused); and tells
/// the client when the circuit is half open.
#[derive(Debug, Clone)]
struct BreakerMetrics {
    host: String,
    half_open: Arc<AtomicBool>,
}

impl BreakerMetrics {
    fn set(&self, state: f64) {
        metrics::gauge!("http_client_circuit_state", "host" => self.host.clone()).set(state);
    }
}

impl failsafe::Instrument for BreakerMetrics {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        tracing::warn!(host = %self.host, "outbound circuit opened: calls to this host are refused for a while");
        self.half_open.store(false, Ordering::SeqCst);
        self.set(2.0);
    }

    fn on_half_open(&self) {
        tracing::info!(host = %self.host, "outbound circuit half open: probing the host");
        self.half_open.store(true, Ordering::SeqCst);
        self.set(1.0);
    }

    fn on_closed(&self) {
        self.half_open.store(false, Ordering::SeqCst);
        self.set(0.0);
    }
}

/// A host's circuit: failsafe's state machine, plus the one-probe rule it lacks (half open, it
/// lets every call through; a host just back up would get all the waiting traffic at once).
#[derive(Clone)]
struct Circuit {
    breaker: Breaker,
    half_open: Arc<AtomicBool>,
    probing: Arc<AtomicBool>,
}

/// The probe's slot, given back when the probe ends however it ends (cancelled included).
struct Probe(Arc<AtomicBool>);

impl Probe {
    fn take(slot: &Arc<AtomicBool>) -> Option<Self> {
        slot.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Self(slot.clone()))
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The HTTP client every feature shares (one per process: circuits are per host, not per
/// worker).
#[derive(Clone)]
pub struct ReqwestHttpClient {
    client: reqwest::Client,
    settings: HttpClientSettings,
    breakers: MokaCache<String, Circuit>,
}

impl std::fmt::Debug for ReqwestHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestHttpClient")
            .field("hosts", &self.breakers.entry_count())
            .finish_non_exhaustive()
    }
}

/// One attempt's result, as the retry loop sees it.
enum Attempt {
    /// An answer that ends the call (any status the loop does not retry).
    Done(OutboundResponse),
    /// An answer worth another attempt (429, 502, 503, 504), with its `Retry-After`.
    Retry(OutboundResponse, Option<Duration>),
    /// No answer.
    Failed(OutboundError),
}

impl ReqwestHttpClient {
    /// A client configured by `[http_client]`.
    pub fn new(settings: &HttpClientSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(settings.user_agent.clone())
            // An answer's redirect is the caller's to follow: following it blindly could
            // carry the request (and its headers) to a host nobody chose.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            settings: settings.clone(),
            breakers: MokaCache::builder().max_capacity(MAX_HOSTS).build(),
        })
    }

    fn circuit(&self, host: &str) -> Circuit {
        self.breakers.get_with_by_ref(host, || {
            let half_open = Arc::new(AtomicBool::new(false));
            let breaker = failsafe::Config::new()
                .failure_policy(failsafe::failure_policy::consecutive_failures(
                    self.settings.circuit_failures,
                    failsafe::backoff::constant(self.settings.circuit_open_for),
                ))
                .instrument(BreakerMetrics {
                    host: host.to_owned(),
                    half_open: half_open.clone(),
                })
                .build();
            Circuit {
                breaker,
                half_open,
                probing: Arc::new(AtomicBool::new(false)),
            }
        })
    }

    async fn attempt(
        &self,
        request: &OutboundRequest,
        url: &reqwest::Url,
        host: &str,
        traceparent: Option<&str>,
    ) -> Attempt {
        let method = match reqwest::Method::from_bytes(request.method.as_str().as_bytes()) {
            Ok(method) => method,
            Err(error) => return Attempt::Failed(OutboundError::Invalid(error.to_string())),
        };
        let mut builder = self
            .client
            .request(method, url.clone())
            .timeout(request.timeout.unwrap_or(self.settings.request_timeout));
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        if let Some(traceparent) = traceparent {
            builder = builder.header("traceparent", traceparent);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Failed(transport_error(host, &error)),
        };
        let status = response.status().as_u16();
        let limit = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Attempt::Failed(OutboundError::TooLarge {
                host: host.to_owned(),
                limit,
            });
        }
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        // Read in chunks so a lying or missing Content-Length cannot exceed the limit.
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > limit {
                        return Attempt::Failed(OutboundError::TooLarge {
                            host: host.to_owned(),
                            limit,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => return Attempt::Failed(transport_error(host, &error)),
            }
        }
        let answer = OutboundResponse {
            host: host.to_owned(),
            status,
            headers,
            body,
        };
        match status {
            429 | 502 | 503 | 504 => {
                let retry_after = answer
                    .header("retry-after")
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Attempt::Retry(answer, retry_after)
            }
            _ => Attempt::Done(answer),
        }
    }

    async fn send_with_retries(
        &self,
        request: &OutboundRequest,
        url: &reqwest::Url,
        host: &str,
    ) -> Result<OutboundResponse, OutboundError> {
        let circuit = self.circuit(host);
        let breaker = &circuit.breaker;
        let traceparent = keel_telemetry::traces::current_traceparent();
        let retries = if request.is_retryable() {
            usize::try_from(self.settings.retries).unwrap_or(0)
        } else {
            0
        };
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(self.settings.retry_min_delay)
            .with_max_delay(self.settings.retry_max_delay)
            .with_max_times(retries)
            .with_jitter()
            .build();
        let method = request.method.as_str();
        loop {
            // Half open, one call probes the host; the others are refused as while open.
            let permitted = breaker.is_call_permitted();
            let probe = if permitted && circuit.half_open.load(Ordering::SeqCst) {
                Probe::take(&circuit.probing).map(Some)
            } else {
                permitted.then_some(None)
            };
            let Some(_probe) = probe else {
                count(host, method, "circuit_open");
                return Err(OutboundError::CircuitOpen {
                    host: host.to_owned(),
                });
            };
            let started = Instant::now();
            let attempt = self
                .attempt(request, url, host, traceparent.as_deref())
                .await;
            metrics::histogram!("http_client_request_duration_seconds", "host" => host.to_owned())
                .record(started.elapsed().as_secs_f64());
            let (last, retry_after) = match attempt {
                Attempt::Done(response) => {
                    // The host answered: a 4xx is the caller's problem, not the host's health.
                    if response.status >= 500 {
                        breaker.on_error();
                    } else {
                        breaker.on_success();
                    }
                    count(host, method, status_class(response.status));
                    return Ok(response);
                }
                Attempt::Retry(response, retry_after) => {
                    if response.status == 429 {
                        breaker.on_success();
                    } else {
                        breaker.on_error();
                    }
                    count(host, method, status_class(response.status));
                    (Ok(response), retry_after)
                }
                Attempt::Failed(error) => {
                    if !matches!(
                        error,
                        OutboundError::Invalid(_) | OutboundError::TooLarge { .. }
                    ) {
                        breaker.on_error();
                    }
                    count(host, method, error_outcome(&error));
                    if matches!(
                        error,
                        OutboundError::Invalid(_) | OutboundError::TooLarge { .. }
                    ) {
                        return Err(error);
                    }
                    (Err(error), None)
                }
            };
            let Some(backoff) = delays.next() else {
                return last;
            };
            let pause = retry_after
                .map_or(backoff, |asked| asked.max(backoff))
                .min(self.settings.retry_max_delay);
            metrics::counter!("http_client_retries_total", "host" => host.to_owned()).increment(1);
            tracing::info!(
                host,
                method,
                pause_ms = pause.as_millis() as u64,
                "retrying an outbound request"
            );
            tokio::time::sleep(pause).await;
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

fn error_outcome(error: &OutboundError) -> &'static str {
    match error {
        OutboundError::Timeout { .. } => "timeout",
        OutboundError::Unavailable { .. } => "connect_error",
        OutboundError::CircuitOpen { .. } => "circuit_open",
        OutboundError::TooLarge { .. } => "too_large",
        OutboundError::Invalid(_) => "invalid",
    }
}

fn count(host: &str, method: &'static str, outcome: &'static str) {
    metrics::counter!(
        "http_client_requests_total",
        "host" => host.to_owned(),
        "method" => method,
        "outcome" => outcome
    )
    .increment(1);
}

fn transport_error(host: &str, error: &reqwest::Error) -> OutboundError {
    if error.is_builder() {
        // A header or body the request could not be built with: the caller's bug.
        return OutboundError::Invalid(error.to_string());
    }
    if error.is_timeout() {
        return OutboundError::Timeout {
            host: host.to_owned(),
        };
    }
    // The chain says more than the outermost message ("error sending request").
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    OutboundError::Unavailable {
        host: host.to_owned(),
        reason,
    }
}

#[async_trait]
impl HttpClient for ReqwestHttpClient {
    async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|error| OutboundError::Invalid(format!("`{}`: {error}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OutboundError::Invalid(format!(
                "`{}`: only http and https URLs",
                request.url
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => {
                return Err(OutboundError::Invalid(format!(
                    "`{}`: no host",
                    request.url
                )));
            }
        };
        let total = self.settings.total_timeout;
        match tokio::time::timeout(total, self.send_with_retries(&request, &url, &host)).await {
            Ok(result) => result,
            Err(_) => {
                count(&host, request.method.as_str(), "timeout");
                Err(OutboundError::Timeout { host })
            }
        }
    }
}
