//! `/api/v1/webhooks/endpoints` and `/api/v1/webhooks/deliveries`: endpoints subscribed to
//! Keel's events, their deliveries, and redelivery (`webhooks:manage`).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_webhooks::OutboundWebhooks;
use keel_webhooks::outbound::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryState, Endpoint, EndpointId, NewEndpoint,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// Body of `POST /webhooks/endpoints`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/keel", "events": ["project.created", "project.updated"], "description": "CRM sync"}))]
pub struct CreateEndpoint {
    /// An `http` or `https` URL on a public address (unless
    /// `webhooks.outbound.allow_private_targets`).
    #[validate(length(max = 2048))]
    #[schema(max_length = 2048)]
    url: String,
    /// Event types to follow: activity actions such as `project.created`, or `*` for all.
    #[validate(length(min = 1, max = 50))]
    #[schema(min_items = 1, max_items = 50)]
    events: Vec<String>,
    /// What it is for.
    #[serde(default)]
    #[validate(length(max = 500))]
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// An endpoint as the API shows it (never its secret, except once at creation).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEndpoint)]
pub struct EndpointView {
    /// Its id.
    #[schema(value_type = Uuid)]
    id: EndpointId,
    /// Where deliveries go.
    url: String,
    /// The event types it follows.
    events: Vec<String>,
    /// What it is for.
    description: Option<String>,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// The `whsec_…` secret that signs its deliveries: in the creation answer only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl EndpointView {
    fn of(endpoint: Endpoint, secret: Option<String>) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            events: endpoint.events,
            description: endpoint.description,
            created_at: endpoint.created_at,
            secret,
        }
    }
}

/// Every endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookEndpointList)]
pub struct EndpointList {
    /// Oldest first.
    items: Vec<EndpointView>,
}

/// One attempt at a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDeliveryAttempt)]
pub struct AttemptView {
    /// 1-based, across redeliveries.
    attempt: u32,
    /// The endpoint's status code, when it answered.
    status: Option<u16>,
    /// Why it failed.
    error: Option<String>,
    /// How long it took.
    latency_ms: u64,
    /// When.
    at: DateTime<Utc>,
}

impl From<DeliveryAttempt> for AttemptView {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            attempt: a.attempt,
            status: a.status,
            error: a.error,
            latency_ms: a.latency_ms,
            at: a.at,
        }
    }
}

/// A delivery: one event to one endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    /// Its id.
    #[schema(value_type = Uuid)]
    id: DeliveryId,
    /// The `webhook-id` it is sent with (the same on every attempt).
    webhook_id: String,
    /// The endpoint.
    #[schema(value_type = Uuid)]
    endpoint_id: EndpointId,
    /// The event type.
    event_type: String,
    /// `pending`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String, pattern = "^(pending|succeeded|failed|cancelled)$")]
    state: DeliveryState,
    /// Every attempt, oldest first.
    attempts: Vec<AttemptView>,
    /// When the event happened.
    occurred_at: DateTime<Utc>,
    /// When it was created.
    created_at: DateTime<Utc>,
    /// When it last changed.
    updated_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            webhook_id: d.webhook_id(),
            id: d.id,
            endpoint_id: d.endpoint_id,
            event_type: d.event.event_type,
            state: d.state,
            attempts: d.attempts.into_iter().map(AttemptView::from).collect(),
            occurred_at: d.event.occurred_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// An endpoint's newest deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookDeliveryList)]
pub struct DeliveryList {
    /// Newest first, at most 100.
    items: Vec<DeliveryView>,
}

/// Subscribe an endpoint to events
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    description = "Each event the endpoint follows is delivered as a Standard Webhooks request signed with the `secret` in this answer (shown once). Events are activity actions: `project.created`, `user.registered`, … or `*`.",
    request_body = CreateEndpoint,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Subscribed; `secret` is shown this once.", body = EndpointView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn create(
    Caller(caller): Caller,
    service: web::Data<OutboundWebhooks>,
    ValidatedJson(body): ValidatedJson<CreateEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let created = service
        .create_endpoint(
            &caller,
            NewEndpoint {
                url: body.url,
                events: body.events,
                description: body.description,
            },
        )
        .await?;
    let id = created.endpoint.id;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("{API_PREFIX}/webhooks/endpoints/{id}/deliveries"),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(EndpointView::of(created.endpoint, Some(created.secret))))
}

/// List subscribed endpoints
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every endpoint, oldest first.", body = EndpointList),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn list(
    Caller(caller): Caller,
    service: web::Data<OutboundWebhooks>,
) -> Result<HttpResponse, ApiError> {
    let items = service
        .list_endpoints(&caller)
        .await?
        .into_iter()
        .map(|e| EndpointView::of(e, None))
        .collect();
    Ok(HttpResponse::Ok().json(EndpointList { items }))
}

/// Unsubscribe an endpoint
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    description = "Its deliveries go with it; a delivery already running finishes, later attempts are cancelled.",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<EndpointId>,
    service: web::Data<OutboundWebhooks>,
) -> Result<HttpResponse, ApiError> {
    service.delete_endpoint(&caller, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// An endpoint's deliveries and their attempts
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/endpoints/{id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The newest 100, newest first, each with every attempt (status, latency, error).", body = DeliveryList),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn deliveries(
    Caller(caller): Caller,
    IdPath(id): IdPath<EndpointId>,
    service: web::Data<OutboundWebhooks>,
) -> Result<HttpResponse, ApiError> {
    let items = service
        .deliveries(&caller, id)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryList { items }))
}

/// Send a delivery again
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/deliveries/{id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver_webhook",
    description = "A finished delivery (failed, or succeeded but lost by the receiver) gets a fresh set of attempts, with the same `webhook-id`.",
    params(("id" = Uuid, Path, description = "Delivery id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued.", body = DeliveryView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn redeliver(
    Caller(caller): Caller,
    IdPath(id): IdPath<DeliveryId>,
    service: web::Data<OutboundWebhooks>,
) -> Result<HttpResponse, ApiError> {
    let delivery = service.redeliver(&caller, id).await?;
    Ok(HttpResponse::Accepted().json(DeliveryView::from(delivery)))
}

/// Registers the routes (before the receiver's `/webhooks/{source}`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks/endpoints")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/webhooks/endpoints/{id}").route(web::delete().to(delete)))
    .service(web::resource("/webhooks/endpoints/{id}/deliveries").route(web::get().to(deliveries)))
    .service(web::resource("/webhooks/deliveries/{id}/redeliver").route(web::post().to(redeliver)));
}

/// The outbound routes' OpenAPI operations.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(create, list, delete, deliveries, redeliver))]
pub struct OutboundDoc;
