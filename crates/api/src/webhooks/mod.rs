//! `/api/v1/webhooks`: signed deliveries from other services (`inbound`), and endpoints
//! subscribed to Keel's events (`outbound`).

pub mod inbound;
pub mod outbound;

use actix_web::web;

pub use inbound::InboundSecrets;

/// Registers the webhook routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    outbound::configure(cfg);
    inbound::configure(cfg);
}

/// The OpenAPI document of the webhook routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = <inbound::InboundDoc as utoipa::OpenApi>::openapi();
    document.merge(<outbound::OutboundDoc as utoipa::OpenApi>::openapi());
    document
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![
        crate::state::AppData::of::<keel_webhooks::Webhooks>(state)?,
        crate::state::AppData::of::<keel_webhooks::OutboundWebhooks>(state)?,
    ])
}
