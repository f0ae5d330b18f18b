//! Keel's HTTP adapter (actix-web): routes, extractors, middleware, and the one place where
//! errors become HTTP responses ([`error::ApiError`]).
//!
//! No business rule lives here. A handler extracts and checks input, calls a domain service
//! for the caller, and turns the result into JSON.

pub mod context;
pub mod crud;

pub mod domains;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod limits;
pub mod middleware;
pub mod openapi;

pub mod ratelimit;
pub mod server;

pub use error::ApiError;
pub use health::HealthRegistry;
pub use server::{ApiServices, api_server, ops_server};

/// Prefix of every versioned API route.
pub const API_PREFIX: &str = "/api/v1";
