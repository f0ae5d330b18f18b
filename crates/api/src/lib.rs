//! Keel's HTTP adapter (actix-web): routes, extractors, middleware, and the one place where
//! errors become HTTP responses ([`error::ApiError`]).
//!
//! No business rule lives here. A handler extracts and checks input, calls a domain service
//! for the caller, and turns the result into JSON.

pub mod context;
pub mod crud;

pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod middleware;
pub mod openapi;

pub mod ratelimit;
pub mod server;
pub mod state;

pub use error::ApiError;
pub use health::HealthRegistry;
pub use server::{api_server, ops_server};

/// Prefix of every versioned API route.
pub const API_PREFIX: &str = "/api/v1";

/// Declares every feature's HTTP module once. A feature module exposes `data(&AppState)` (the
/// services its handlers take), `configure(&mut ServiceConfig)` (its routes) and
/// `openapi() -> OpenApi` (its operations); the functions below call them all.
macro_rules! features {
    ($($feature:ident),* $(,)?) => {
        $(pub mod $feature;)*

        /// Every feature's services from the state, to register as app data.
        pub fn feature_data(
            state: &keel_kernel::AppState,
        ) -> Result<Vec<state::AppData>, keel_kernel::MissingService> {
            let mut data = Vec::new();
            $(data.extend($feature::data(state)?);)*
            Ok(data)
        }

        /// Registers every feature's routes (called inside the `/api/v1` scope).
        pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
            $($feature::configure(cfg);)*
        }

        /// Every feature's OpenAPI operations and schemas.
        pub fn feature_documents() -> Vec<utoipa::openapi::OpenApi> {
            vec![$($feature::openapi()),*]
        }
    };
}

features! {
    identity,
    activity,
    jobs,
    release_notes,
    projects,
    files,
    webhooks,
    realtime,
    // keel:new-domain:features
}
