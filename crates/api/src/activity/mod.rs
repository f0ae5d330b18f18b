//! `/api/v1/activity`: the activity log (everyone sees their own; `activity:read` sees all).
//! Without `activity:read`, entries someone else did to the caller come without the actor's
//! id, API key, IP and user agent (the domain's rule).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_activity::{Activity, ActivityEntry, LIST_SPEC};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, ListParams};

/// Registers the activity route (read-only: the log has no update or delete).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/activity").route(web::get().to(list)));
}

/// One recorded event.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ActivityEntry, example = json!({
    "id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e20",
    "action": "project.updated",
    "actor_type": "user",
    "actor_user_id": "0193a6d0-0000-7000-8000-000000000001",
    "actor_api_key_id": null,
    "subject_user_id": "0193a6d0-0000-7000-8000-000000000001",
    "resource_type": "project",
    "resource_id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e1f",
    "changes": {"fields": ["status"]},
    "ip": "203.0.113.7",
    "user_agent": "curl/8.5.0",
    "request_id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e21",
    "created_at": "2026-11-22T16:05:00Z"
}))]
pub struct ActivityView {
    /// Entry id.
    id: Uuid,
    /// What happened, e.g. `auth.login`, `user.suspended`, `project.created`.
    action: String,
    /// `user`, `api_key`, `system` or `anonymous`.
    actor_type: String,
    /// The acting user (the key's owner for API keys); `null` when someone else acted on the
    /// caller's account and the caller lacks `activity:read`.
    actor_user_id: Option<Uuid>,
    /// The API key used, if any; hidden like `actor_user_id`.
    actor_api_key_id: Option<Uuid>,
    /// The user the entry concerns.
    subject_user_id: Option<Uuid>,
    /// The kind of resource.
    resource_type: String,
    /// The resource's id.
    resource_id: Option<String>,
    /// Summary of what changed (never secrets).
    changes: serde_json::Value,
    /// Client address; hidden like `actor_user_id`.
    ip: Option<String>,
    /// Client user agent; hidden like `actor_user_id`.
    user_agent: Option<String>,
    /// Request id, to find the request's log lines.
    request_id: Option<String>,
    /// When.
    created_at: DateTime<Utc>,
}

impl From<ActivityEntry> for ActivityView {
    fn from(entry: ActivityEntry) -> Self {
        Self {
            id: entry.id.as_uuid(),
            action: entry.action,
            actor_type: entry.actor_type,
            actor_user_id: entry.actor_user_id.map(|id| id.as_uuid()),
            actor_api_key_id: entry.actor_api_key_id.map(|id| id.as_uuid()),
            subject_user_id: entry.subject_user_id.map(|id| id.as_uuid()),
            resource_type: entry.resource_type,
            resource_id: entry.resource_id,
            changes: entry.changes,
            ip: entry.ip,
            user_agent: entry.user_agent,
            request_id: entry.request_id,
            created_at: entry.created_at,
        }
    }
}

crate::page_of!(
    /// One page of activity entries.
    ActivityPage,
    ActivityView
);

#[utoipa::path(
    get,
    path = "/api/v1/activity",
    tag = "activity",
    operation_id = "list_activity",
    summary = "List activity entries: one's own, or all with `activity:read`",
    description = "Without `activity:read`: the entries the caller did or that concern them; those someone else did come without `actor_user_id`, `actor_api_key_id`, `ip` and `user_agent`, and `actor_user_id` filters may name only the caller.",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page.", body = ActivityPage),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn list(
    Caller(caller): Caller,
    params: ListParams,
    activity: web::Data<Activity>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = activity.for_caller(&caller).list(query).await?;
    Ok(HttpResponse::Ok().json(page.map(ActivityView::from)))
}

/// The OpenAPI document of the activity route.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list))]
pub struct ActivityDoc;

/// The feature's operations, with the list parameters of `/activity`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = <ActivityDoc as utoipa::OpenApi>::openapi();
    crate::openapi::add_list_parameters(&mut document, "/activity", &keel_activity::LIST_SPEC);
    document
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<keel_activity::Activity>(
        state,
    )?])
}
