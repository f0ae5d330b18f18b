//! `/api/v1/webhooks`: signed deliveries from other services (`inbound`).

pub mod inbound;

use actix_web::web;

pub use inbound::InboundSecrets;

/// Registers the webhook routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    inbound::configure(cfg);
}

/// The OpenAPI document of the webhook routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <inbound::InboundDoc as utoipa::OpenApi>::openapi()
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<keel_webhooks::Webhooks>(
        state,
    )?])
}
