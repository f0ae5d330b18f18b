//! One module per domain, each exposing `configure` to register its routes under `/api/v1`.

pub mod activity;
pub mod api_keys;
pub mod auth;
pub mod projects;

pub mod rbac;
pub mod release_notes;
pub mod users;

use actix_web::web;

/// Registers every domain's routes (called inside the `/api/v1` scope).
pub fn configure(cfg: &mut web::ServiceConfig) {
    auth::configure(cfg);
    users::configure(cfg);
    rbac::configure(cfg);
    api_keys::configure(cfg);
    activity::configure(cfg);
    release_notes::configure(cfg);
    projects::configure(cfg);
    // keel:new-domain:configure
}
