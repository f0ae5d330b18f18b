//! Middleware: the request observer (request id, timeout, panic guard, error normalisation,
//! access log, metrics), security headers and CORS.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::FutureExt;
use keel_config::CorsSettings;
use keel_telemetry::names::{
    HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_IN_FLIGHT, HTTP_REQUESTS_TOTAL,
};
use keel_telemetry::traces;
use tracing::Instrument;

use crate::context::{self, RequestContext, RequestId};
use crate::error::{ApiError, PROBLEM_JSON, status_problem};

/// The request and response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Route label for requests no route matched (keeps metric cardinality bounded).
const UNMATCHED_ROUTE: &str = "unmatched";

/// `server.request_timeout`, registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeout(pub Duration);

/// Wraps every request: assigns the request id, runs the handler under a deadline and a panic
/// guard, turns any non-problem error body into a problem document, and records the access
/// log line and the HTTP metrics with the route template (never the raw path).
///
/// It must never hold a clone of the `HttpRequest` while the inner service runs: actix
/// mutates the request during routing through `Rc::get_mut`, which a second reference breaks.
/// Responses for panics and timeouts are therefore rendered here and returned as errors that
/// carry their finished response.
pub async fn observe<B>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let started = Instant::now();
    let request_id = RequestId::from_header(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    req.extensions_mut().insert(request_id.clone());
    let timeout = req
        .app_data::<RequestTimeout>()
        .map_or(Duration::from_secs(30), |t| t.0);
    let method = metric_method(req.method());
    // Resolved from the app's resource map before routing, so it is known even when the
    // handler panics or times out.
    let route = req.match_pattern();
    let client_ip = crate::extract::client_ip(req.request());
    let name = format!("{method} {}", route.as_deref().unwrap_or(UNMATCHED_ROUTE));
    // Fields filled in later: ids once the span has its trace context, who is calling once
    // authentication has run (the `Caller` extractor records them). Probes and scrapes get a
    // DEBUG span: they are logged at DEBUG and never exported as traces.
    macro_rules! request_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                otel.name = %name,
                otel.kind = "server",
                request_id = %request_id,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                method = %req.method(),
                path = %req.path(),
                client_ip = client_ip.map(tracing::field::display),
                user_id = tracing::field::Empty,
                credential = tracing::field::Empty,
            )
        };
    }
    let span = if route.as_deref().is_some_and(is_probe) {
        request_span!(tracing::Level::DEBUG)
    } else {
        request_span!(tracing::Level::INFO)
    };
    // W3C trace context in, from callers inside the network or behind a trusted proxy: their
    // trace continues here (the propagator ignores malformed headers).
    if crate::extract::trace_context_trusted(req.request()) {
        traces::continue_trace(
            &span,
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
            req.headers()
                .get("tracestate")
                .and_then(|v| v.to_str().ok()),
        );
    }
    if let Some((trace_id, span_id)) = traces::ids(&span) {
        span.record("trace_id", trace_id.as_str());
        span.record("span_id", span_id.as_str());
    }
    // Decremented on drop: a request actix abandons (client gone, forced stop) still leaves.
    let _in_flight = InFlight::enter();
    let context = RequestContext {
        request_id: request_id.clone(),
        path: req.path().to_owned(),
    };
    let unmatched = route.is_none();

    let outcome = context::scope(
        context,
        async move {
            let outcome = AssertUnwindSafe(tokio::time::timeout(timeout, next.call(req)))
                .catch_unwind()
                .await;
            match outcome {
                Ok(Ok(Ok(response))) => {
                    let (request, response) = response.map_into_boxed_body().into_parts();
                    Ok(ServiceResponse::new(
                        request,
                        normalize(response, unmatched),
                    ))
                }
                Ok(Ok(Err(error))) => Err(normalize(error.error_response(), unmatched)),
                Ok(Err(_elapsed)) => {
                    tracing::warn!(?timeout, "request timed out");
                    Err(ApiError::Timeout.error_response())
                }
                Err(panic) => {
                    tracing::error!(panic = %panic_message(panic.as_ref()), "handler panicked");
                    Err(ApiError::Panic.error_response())
                }
            }
        }
        .instrument(span.clone()),
    )
    .await;

    let request_id_value = HeaderValue::from_str(request_id.as_str()).ok();
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(response) => response.status(),
    };
    let route = route.unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let latency = started.elapsed();
    metrics::counter!(
        HTTP_REQUESTS_TOTAL,
        "method" => method,
        "route" => route.clone(),
        "status" => status.as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        "method" => method,
        "route" => route.clone(),
    )
    .record(latency.as_secs_f64());
    {
        let _entered = span.enter();
        let latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), %route, latency_ms, "request finished");
        } else if is_probe(&route) && status.is_success() {
            // Orchestrators poll these every few seconds; successful polls are not news.
            tracing::debug!(status = status.as_u16(), %route, latency_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), %route, latency_ms, "request finished");
        }
    }

    match outcome {
        Ok(mut response) => {
            if let Some(value) = request_id_value {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
            }
            Ok(response)
        }
        Err(mut response) => {
            let headers = response.headers_mut();
            if let Some(value) = request_id_value {
                headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
            }
            for (name, value) in SECURITY_HEADERS {
                headers.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            // The dispatcher renders this error as exactly the response prepared above.
            Err(InternalError::from_response("request failed", response).into())
        }
    }
}

/// One request in `http_requests_in_flight`, for as long as the value lives.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> Self {
        let gauge = metrics::gauge!(HTTP_REQUESTS_IN_FLIGHT);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Replaces a framework error body (plain text, empty) with a problem document.
fn normalize(response: HttpResponse, unmatched: bool) -> HttpResponse {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let mut replacement = if unmatched && status == StatusCode::NOT_FOUND {
        ApiError::RouteNotFound.error_response()
    } else {
        status_problem(status).into_response()
    };
    // `Allow` (405) tells the caller what would have worked.
    if let Some(allow) = response.headers().get(header::ALLOW) {
        replacement
            .headers_mut()
            .insert(header::ALLOW, allow.clone());
    }
    replacement
}

fn is_problem(response: &HttpResponse) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

/// Health and metrics scrapes.
fn is_probe(route: &str) -> bool {
    route.starts_with("/health") || route == "/metrics"
}

/// Standard methods keep their name; anything else is `OTHER` (bounded label values).
fn metric_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// Headers that harden every response (JSON is never rendered, framed or cached).
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// [`SECURITY_HEADERS`] as middleware; a handler can still set its own value.
pub fn security_headers(strict_transport_security: bool) -> DefaultHeaders {
    let headers = SECURITY_HEADERS
        .iter()
        .fold(DefaultHeaders::new(), |headers, header| {
            headers.add(*header)
        });
    if strict_transport_security {
        headers.add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
    } else {
        headers
    }
}

/// CORS from `server.cors`; only installed when at least one origin is configured.
pub fn cors(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static(crate::idempotency::IDEMPOTENCY_KEY),
            HeaderName::from_static(crate::identity::cookies::CSRF_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID_HEADER),
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
            HeaderName::from_static(crate::idempotency::REPLAYED),
        ])
        .max_age(usize::try_from(settings.max_age.as_secs()).ok());
    if settings.allowed_origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
        if !settings.allow_credentials {
            cors = cors.send_wildcard();
        }
    } else {
        for origin in &settings.allowed_origins {
            cors = cors.allowed_origin(origin);
        }
    }
    if settings.allow_credentials {
        cors = cors.supports_credentials();
    }
    cors
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use actix_web::middleware::from_fn;
    use actix_web::{App, test, web};
    use async_trait::async_trait;
    use keel_kernel::error::BoxError;
    use keel_kernel::health::HealthCheck;

    use super::*;
    use crate::health::{self, HealthRegistry};

    async fn problem_of(error: actix_web::Error) -> (StatusCode, HeaderValue, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let request_id = response.headers().get(REQUEST_ID_HEADER).unwrap().clone();
        let body = actix_web::body::to_bytes(response.into_body())
            .await
            .unwrap();
        (status, request_id, serde_json::from_slice(&body).unwrap())
    }

    #[actix_web::test]
    async fn a_panicking_handler_gets_a_500_problem_with_its_request_id_and_no_internals() {
        let app = test::init_service(App::new().wrap(from_fn(observe)).route(
            "/boom",
            web::get().to(|| async {
                if true {
                    panic!("secret database password in a panic message");
                }
                "unreachable"
            }),
        ))
        .await;
        let request = test::TestRequest::get()
            .uri("/boom")
            .insert_header((REQUEST_ID_HEADER, "req-panic-1"))
            .to_request();
        let error = test::try_call_service(&app, request).await.unwrap_err();
        let (status, request_id, body) = problem_of(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(request_id, "req-panic-1");
        assert_eq!(body["request_id"], "req-panic-1");
        assert_eq!(body["code"], "internal_error");
        assert_eq!(body["instance"], "/boom");
        assert!(!body.to_string().contains("secret"), "{body}");

        // The worker survives: the next request is served.
        let again = test::TestRequest::get().uri("/boom").to_request();
        assert!(test::try_call_service(&app, again).await.is_err());
    }

    #[actix_web::test]
    async fn a_handler_past_the_deadline_gets_a_503_problem() {
        let app = test::init_service(
            App::new()
                .app_data(RequestTimeout(Duration::from_millis(50)))
                .wrap(from_fn(observe))
                .route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "too late"
                    }),
                ),
        )
        .await;
        let request = test::TestRequest::get().uri("/slow").to_request();
        let error = test::try_call_service(&app, request).await.unwrap_err();
        let (status, _, body) = problem_of(error).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "request_timeout");
    }

    #[derive(Debug)]
    struct Failing;

    #[async_trait]
    impl HealthCheck for Failing {
        fn name(&self) -> &'static str {
            "cache"
        }
        async fn check(&self) -> Result<(), BoxError> {
            Err("connection refused to 10.0.0.7:6379".into())
        }
    }

    #[derive(Debug)]
    struct Hanging;

    #[async_trait]
    impl HealthCheck for Hanging {
        fn name(&self) -> &'static str {
            "queue"
        }
        async fn check(&self) -> Result<(), BoxError> {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    }

    #[actix_web::test]
    async fn an_optional_dependency_down_degrades_but_keeps_readiness_and_draining_ends_it() {
        let registry =
            HealthRegistry::new(Duration::from_millis(50)).with_optional(Arc::new(Failing));
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(registry.clone()))
                .app_data(web::Data::new(keel_telemetry::install_metrics().unwrap()))
                .wrap(from_fn(observe))
                .configure(health::configure),
        )
        .await;
        let ready = |app| async move {
            test::call_service(
                app,
                test::TestRequest::get().uri("/health/ready").to_request(),
            )
            .await
        };
        let response = ready(&app).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["checks"][0]["status"], "fail");
        assert_eq!(body["checks"][0]["required"], false);
        // SIGTERM: readiness is 503 for good, liveness stays.
        registry.start_draining();
        let response = ready(&app).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let live = test::call_service(
            &app,
            test::TestRequest::get().uri("/health/live").to_request(),
        )
        .await;
        assert_eq!(live.status(), StatusCode::OK);
    }

    #[actix_web::test]
    async fn readiness_is_a_503_problem_naming_each_failed_check() {
        let registry = HealthRegistry::new(Duration::from_millis(50))
            .with(Arc::new(Failing))
            .with(Arc::new(Hanging));
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(registry))
                .app_data(web::Data::new(keel_telemetry::install_metrics().unwrap()))
                .wrap(from_fn(observe))
                .configure(health::configure),
        )
        .await;
        let response = test::call_service(
            &app,
            test::TestRequest::get().uri("/health/ready").to_request(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["code"], "not_ready");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("cache (unreachable)"), "{detail}");
        assert!(detail.contains("queue (timed out"), "{detail}");
        assert!(
            !body.to_string().contains("10.0.0.7"),
            "causes are logged, not shown"
        );

        let report: serde_json::Value = test::call_and_read_body_json(
            &app,
            test::TestRequest::get().uri("/health").to_request(),
        )
        .await;
        assert_eq!(report["status"], "fail");
        let live = test::call_service(
            &app,
            test::TestRequest::get().uri("/health/live").to_request(),
        )
        .await;
        assert_eq!(live.status(), StatusCode::OK);
    }
}
