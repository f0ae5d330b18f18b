//! `/api/v1/jobs/{id}` (the job's owner) and `/api/v1/admin/jobs` (operators): background job
//! state, retries of dead jobs, deletion, and a diagnostic probe.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_jobs::{JobRecord, Jobs, LIST_SPEC, Probe, ProbeRequest};
use keel_kernel::jobs::{JobId, Queue};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ListParams, ValidatedJson};

/// Registers the job routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/jobs/{id}").route(web::get().to(get)))
        .service(web::resource("/admin/jobs").route(web::get().to(list)))
        .service(web::resource("/admin/jobs/probe").route(web::post().to(probe)))
        .service(web::resource("/admin/jobs/{id}").route(web::delete().to(delete)))
        .service(web::resource("/admin/jobs/{id}/retry").route(web::post().to(retry)));
}

/// A background job.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job, example = json!({
    "id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e20",
    "kind": "mail.send",
    "queue": "high",
    "state": "succeeded",
    "attempts": 1,
    "max_attempts": 8,
    "last_error": null,
    "owner_id": "0193a6d0-0000-7000-8000-000000000001",
    "request_id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e21",
    "created_at": "2026-11-22T16:05:00Z",
    "run_at": "2026-11-22T16:05:00Z",
    "finished_at": "2026-11-22T16:05:01Z"
}))]
pub struct JobView {
    /// Job id.
    id: Uuid,
    /// What it does, e.g. `mail.send`.
    kind: String,
    /// `high`, `default` or `low`.
    queue: String,
    /// `enqueued`, `pending`, `running`, `retrying`, `succeeded` or `dead`.
    state: String,
    /// Attempts made.
    attempts: u32,
    /// Attempts allowed.
    max_attempts: u32,
    /// The last failed attempt's error.
    last_error: Option<String>,
    /// The user who caused it.
    owner_id: Option<Uuid>,
    /// The request that enqueued it.
    request_id: Option<String>,
    /// When it was enqueued.
    created_at: DateTime<Utc>,
    /// When it runs (next).
    run_at: Option<DateTime<Utc>>,
    /// When it finished.
    finished_at: Option<DateTime<Utc>>,
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        Self {
            id: job.id.as_uuid(),
            kind: job.kind,
            queue: job.queue.as_str().to_owned(),
            state: job.state.as_str().to_owned(),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            owner_id: job.owner.map(|o| o.as_uuid()),
            request_id: job.request_id,
            created_at: job.created_at,
            run_at: job.run_at,
            finished_at: job.finished_at,
        }
    }
}

crate::page_of!(
    /// One page of jobs.
    JobPage,
    JobView
);

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "get_job",
    summary = "Read a job one caused (or any, with `jobs:read`)",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 403, response = crate::openapi::Forbidden),
        (status = 200, description = "The job.", body = JobView),
    )
)]
async fn get(
    Caller(caller): Caller,
    IdPath(id): IdPath<JobId>,
    jobs: web::Data<Jobs>,
) -> Result<HttpResponse, ApiError> {
    let job = jobs.for_caller(&caller).get(id).await?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    summary = "List jobs, newest first by default (needs `jobs:read`)",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page.", body = JobPage),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn list(
    Caller(caller): Caller,
    params: ListParams,
    jobs: web::Data<Jobs>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = jobs.for_caller(&caller).list(query).await?;
    Ok(HttpResponse::Ok().json(page.map(JobView::from)))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/retry",
    tag = "jobs",
    operation_id = "retry_job",
    summary = "Put a dead job back in its queue with fresh attempts (needs `jobs:manage`)",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The job, pending again.", body = JobView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn retry(
    Caller(caller): Caller,
    IdPath(id): IdPath<JobId>,
    jobs: web::Data<Jobs>,
) -> Result<HttpResponse, ApiError> {
    let job = jobs.for_caller(&caller).retry(id).await?;
    Ok(HttpResponse::Ok().json(JobView::from(job)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/jobs/{id}",
    tag = "jobs",
    operation_id = "delete_job",
    summary = "Delete a finished job (needs `jobs:manage`)",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<JobId>,
    jobs: web::Data<Jobs>,
) -> Result<HttpResponse, ApiError> {
    jobs.for_caller(&caller).delete(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Body of `POST /admin/jobs/probe`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProbeRequest, example = json!({"fail_attempts": 2, "max_attempts": 3}))]
struct ProbeBody {
    /// Attempts that fail before one succeeds (0 to 20).
    #[serde(default)]
    #[schema(maximum = 20)]
    fail_attempts: u32,
    /// Fail permanently instead (the job goes dead at once).
    #[serde(default)]
    permanent: bool,
    /// Milliseconds each attempt works (at most 60000).
    #[serde(default)]
    #[schema(maximum = 60000)]
    sleep_ms: u64,
    /// Attempts allowed (1 to 20, default 3).
    #[serde(default = "default_attempts")]
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: u32,
    /// `high`, `default` (the default) or `low`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(high|default|low)$")]
    queue: Option<Queue>,
}

fn default_attempts() -> u32 {
    3
}

/// The enqueued job's id.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EnqueuedJob)]
struct EnqueuedView {
    /// Job id (read it at `GET /api/v1/jobs/{id}`).
    id: Uuid,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/probe",
    tag = "jobs",
    operation_id = "enqueue_probe_job",
    summary = "Enqueue a diagnostic job that can fail on purpose (needs `jobs:manage`)",
    request_body = ProbeBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Enqueued; a worker will run it.", body = EnqueuedView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn probe(
    Caller(caller): Caller,
    jobs: web::Data<Jobs>,
    ValidatedJson(body): ValidatedJson<ProbeBody>,
) -> Result<HttpResponse, ApiError> {
    let probe = Probe {
        fail_attempts: body.fail_attempts,
        permanent: body.permanent,
        sleep_ms: body.sleep_ms,
    };
    let id = jobs
        .for_caller(&caller)
        .probe(&ProbeRequest {
            probe,
            queue: body.queue.unwrap_or_default(),
            max_attempts: body.max_attempts,
        })
        .await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("{}/jobs/{id}", crate::API_PREFIX)))
        .json(EnqueuedView { id: id.as_uuid() }))
}

/// The OpenAPI document of the job routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(get, list, retry, delete, probe))]
pub struct JobsDoc;

/// The feature's operations, with the list parameters of `/admin/jobs`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = <JobsDoc as utoipa::OpenApi>::openapi();
    crate::openapi::add_list_parameters(&mut document, "/admin/jobs", &LIST_SPEC);
    document
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<keel_jobs::Jobs>(state)?])
}
