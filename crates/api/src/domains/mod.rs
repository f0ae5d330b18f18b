//! One module per domain, each exposing `configure` to register its routes under `/api/v1`.

pub mod release_notes;

use actix_web::web;

/// Registers every domain's routes (called inside the `/api/v1` scope).
pub fn configure(cfg: &mut web::ServiceConfig) {
    release_notes::configure(cfg);
}
