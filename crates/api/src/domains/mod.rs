//! One module per domain, each exposing `configure` to register its routes under `/api/v1`.

pub mod activity;
pub mod api_keys;
pub mod auth;
pub mod jobs;
pub mod projects;
// keel:new-domain:modules

pub mod rbac;
pub mod release_notes;
pub mod users;

use actix_web::web;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;

use crate::openapi::add_list_parameters;

/// Registers every domain's routes (called inside the `/api/v1` scope).
pub fn configure(cfg: &mut web::ServiceConfig) {
    auth::configure(cfg);
    users::configure(cfg);
    rbac::configure(cfg);
    api_keys::configure(cfg);
    activity::configure(cfg);
    jobs::configure(cfg);
    release_notes::configure(cfg);
    projects::configure(cfg);
    // keel:new-domain:configure
}

/// Adds every domain's operations and schemas to `document`.
pub fn merge_openapi(document: &mut OpenApi) {
    document.merge(auth::AuthDoc::openapi());
    document.merge(api_keys::ApiKeysDoc::openapi());
    document.merge(users::UsersDoc::openapi());
    document.merge(rbac::RbacDoc::openapi());
    document.merge(activity::ActivityDoc::openapi());
    document.merge(jobs::JobsDoc::openapi());
    document.merge(release_notes::ReleaseNotesDoc::openapi());
    document.merge(projects::openapi());
    // keel:new-domain:openapi
    add_list_parameters(document, "/users", &keel_identity::USER_LIST_SPEC);
    add_list_parameters(document, "/activity", &keel_activity::LIST_SPEC);
    add_list_parameters(document, "/release-notes", &keel_releases::LIST_SPEC);
    crate::openapi::add_idempotency(document);
}
