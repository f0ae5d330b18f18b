//! The HTTP servers: the api itself, and the small operations server (`/health/*`,
//! `/metrics`) the api and the worker each run on their own port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{Compress, Condition, DefaultHeaders, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use keel_config::{Environment, Settings};
use keel_identity::security::PublicKeys;
use keel_kernel::AppState;
use keel_kernel::idempotency::IdempotencyStore;
use keel_kernel::throttle::{Counters, Quota};
use keel_telemetry::MetricsHandle;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{BodyLimit, TrustedProxies};
use crate::health::{self, HealthRegistry};
use crate::middleware::{RequestTimeout, cors, observe, security_headers};
use crate::ratelimit::AuthRateLimit;
use crate::state::AppData;

/// The public keys that verify access tokens (EdDSA and RS256 only).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    operation_id = "jwks",
    responses(
        (status = 200, description = "A JSON Web Key Set.", body = Object),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn jwks(document: web::Data<PublicKeys>) -> Result<HttpResponse, ApiError> {
    match &document.0 {
        Some(keys) => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
            .json(keys)),
        None => Err(ApiError::Domain(keel_kernel::DomainError::NotFound {
            resource: "JSON Web Key Set (access tokens use HS256)",
        })),
    }
}

/// The OpenAPI document, rendered once at startup.
#[derive(Debug, Clone)]
struct OpenApiJson(web::Bytes);

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object))
)]
async fn openapi_json(document: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(document.0.clone())
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// Swagger UI loads its own scripts, styles, inline styles and data-URI images, and fetches
/// the document: nothing from another host.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
base-uri 'none'; form-action 'none'";

/// `/openapi.json` and the interactive docs at `/docs/` (Swagger UI, embedded in the binary).
fn configure_docs(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)))
        .service(web::resource("/docs").route(web::get().to(docs_redirect)))
        .service(
            web::scope("/docs")
                .wrap(
                    DefaultHeaders::new()
                        .add((header::CONTENT_SECURITY_POLICY, DOCS_CSP))
                        .add((header::CACHE_CONTROL, "public, max-age=3600")),
                )
                .service(
                    SwaggerUi::new("/{_:.*}")
                        .config(SwaggerConfig::new(["/openapi.json"]).try_it_out_enabled(true)),
                ),
        );
}

/// The OpenAPI document of the routes this module serves itself.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(jwks, openapi_json))]
pub struct ServerDoc;

/// How many HTTP workers the api runs: `server.workers`, else one per CPU.
pub fn worker_count(server: &keel_config::ServerSettings) -> usize {
    server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
}

async fn route_not_found() -> Result<web::Json<()>, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// Builds one HTTP worker's own application state. The server calls it once on each worker
/// thread, on that worker's runtime, so what the state opens there (its database pool) is
/// driven by that thread.
pub type WorkerState =
    Arc<dyn Fn() -> Result<AppState, keel_kernel::error::BoxError> + Send + Sync>;

/// What a worker's handlers take from its state.
#[derive(Clone)]
struct WorkerData {
    features: Vec<AppData>,
    idempotency: web::Data<crate::idempotency::Idempotency>,
}

impl WorkerData {
    fn of(state: &AppState) -> Result<Self, keel_kernel::MissingService> {
        Ok(Self {
            features: crate::feature_data(state)?,
            idempotency: web::Data::new(crate::idempotency::Idempotency(
                state.get::<Arc<dyn IdempotencyStore>>()?,
            )),
        })
    }

    /// `per_worker`'s state for this worker, or the shared one when there is none or it fails.
    fn for_this_worker(shared: &Self, per_worker: Option<&WorkerState>) -> Self {
        let Some(build) = per_worker else {
            return shared.clone();
        };
        match build().and_then(|state| Self::of(&state).map_err(Into::into)) {
            Ok(data) => data,
            Err(error) => {
                // Startup built the same state once, so this is a resource failure; the
                // worker still serves, on the shared pool.
                tracing::error!(%error, "an HTTP worker could not build its own state; it uses the shared one");
                shared.clone()
            }
        }
    }
}

/// Builds the API server on `listener`. It does not handle signals: the caller stops it
/// gracefully (stop accepting, drain in-flight requests up to `server.shutdown_timeout`).
///
/// Every worker uses `state`, or with `per_worker` a state of its own built on its thread.
pub fn api_server(
    listener: TcpListener,
    settings: &Settings,
    state: &AppState,
    per_worker: Option<WorkerState>,
    health: HealthRegistry,
    metrics: MetricsHandle,
) -> std::io::Result<Server> {
    let server = settings.server.clone();
    let production = settings.environment == Environment::Production;
    let missing = |error: keel_kernel::MissingService| std::io::Error::other(error.to_string());
    // Every feature's services, taken from the state once: a missing one stops startup here.
    let shared = WorkerData::of(state).map_err(missing)?;
    let auth_rate_limit = web::Data::new(AuthRateLimit {
        counters: state.get::<Arc<dyn Counters>>().map_err(missing)?,
        quota: Quota::per_minute(settings.rate_limit.auth_per_ip_per_minute),
        enabled: settings.rate_limit.enabled,
    });
    let cookie_sessions = web::Data::new(crate::identity::cookies::CookieSessions::new(settings));
    let webhook_secrets = web::Data::new(crate::webhooks::InboundSecrets::new(settings));
    let realtime_limits = web::Data::new(crate::realtime::RealtimeLimits::new(settings));
    let jwks_document = web::Data::new(state.get::<PublicKeys>().map_err(missing)?);
    let openapi_document = web::Data::new(OpenApiJson(web::Bytes::from(
        crate::openapi::document_json(),
    )));
    let trusted_proxies = TrustedProxies::new(&server.trusted_proxies);
    let docs_enabled = settings.docs.enabled;
    let health = web::Data::new(health);
    let metrics = web::Data::new(metrics);
    let cors_settings = server.cors.clone();
    let cors_enabled = !cors_settings.allowed_origins.is_empty();
    let body_limit = server.body_limit;
    let request_timeout = server.request_timeout;

    Ok(HttpServer::new(move || {
        let WorkerData {
            features,
            idempotency,
        } = WorkerData::for_this_worker(&shared, per_worker.as_ref());
        App::new()
            .configure(|cfg| features.iter().for_each(|data| data.register(cfg)))
            .app_data(auth_rate_limit.clone())
            .app_data(cookie_sessions.clone())
            .app_data(webhook_secrets.clone())
            .app_data(realtime_limits.clone())
            .app_data(idempotency)
            .app_data(jwks_document.clone())
            .app_data(openapi_document.clone())
            .app_data(trusted_proxies.clone())
            .app_data(health.clone())
            .app_data(metrics.clone())
            .app_data(BodyLimit(body_limit))
            .app_data(web::PayloadConfig::new(body_limit))
            .app_data(RequestTimeout(request_timeout))
            .wrap(Condition::new(cors_enabled, cors(&cors_settings)))
            .wrap(from_fn(observe))
            .wrap(security_headers(production))
            .wrap(Compress::default())
            // `/health` and `/metrics` live on the operations listener (`ops_server`).
            .configure(health::configure_probes)
            .service(web::resource("/.well-known/jwks.json").route(web::get().to(jwks)))
            .configure(|cfg| {
                // Unregistered, they fall through to the default service: a 404 problem.
                if docs_enabled {
                    configure_docs(cfg);
                }
            })
            .service(
                web::scope(API_PREFIX)
                    .wrap(from_fn(crate::idempotency::idempotent))
                    .configure(crate::configure),
            )
            .default_service(web::to(route_not_found))
    })
    .listen(listener)?
    .workers(worker_count(&server))
    .shutdown_timeout(server.shutdown_timeout.as_secs())
    .keep_alive(server.keep_alive)
    .client_request_timeout(server.client_request_timeout)
    .disable_signals()
    .run())
}

/// Builds an operations server (`/health/*`, `/metrics`) on `listener`: the api's on
/// `ops.port`, the worker's on `worker.port`. Like [`api_server`], the caller stops it.
pub fn ops_server(
    listener: TcpListener,
    shutdown_timeout: Duration,
    health: HealthRegistry,
    metrics: MetricsHandle,
) -> std::io::Result<Server> {
    let health = web::Data::new(health);
    let metrics = web::Data::new(metrics);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(health.clone())
            .app_data(metrics.clone())
            .app_data(RequestTimeout(Duration::from_secs(10)))
            .wrap(from_fn(observe))
            .wrap(security_headers(false))
            .configure(health::configure)
            .default_service(web::to(route_not_found))
    })
    .listen(listener)?
    .workers(1)
    .shutdown_timeout(shutdown_timeout.as_secs())
    .disable_signals()
    .run())
}
