//! Projects' custom routes, written by hand (regenerating never overwrites this file):
//! `GET /projects/summary`, registered before the generic `/projects/{id}`, and the
//! attachments (`attachments.rs`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use keel_kernel::{AppState, MissingService};
use keel_projects::ProjectReports;
use serde::Serialize;
use utoipa::OpenApi as _;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppData;

pub mod attachments;

/// The project reports and attachments, from the application state.
pub(super) fn data(state: &AppState) -> Result<Vec<AppData>, MissingService> {
    Ok(vec![
        AppData::of::<ProjectReports>(state)?,
        AppData::of::<keel_projects::attachments::Attachments>(state)?,
    ])
}

/// `GET /projects/summary` and the attachment routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/projects/summary").route(web::get().to(summary)));
    attachments::configure(cfg);
}

/// The OpenAPI document of the summary and the attachments.
pub(super) fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = SummaryDoc::openapi();
    document.merge(attachments::openapi());
    document
}

/// Live projects the caller can see, per status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"total": 3, "by_status": {"planned": 0, "active": 2, "completed": 0, "archived": 1}}))]
pub struct ProjectSummary {
    /// All of them.
    pub total: u64,
    /// Count per status (every status present).
    pub by_status: BTreeMap<String, u64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/projects/summary",
    tag = "projects",
    operation_id = "project_summary",
    summary = "Count the caller's projects by status (everyone's with `projects:manage_all`)",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The counts.", body = ProjectSummary),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn summary(
    Caller(caller): Caller,
    reports: web::Data<ProjectReports>,
) -> Result<HttpResponse, ApiError> {
    let summary = reports.for_caller(&caller).status_summary().await?;
    Ok(HttpResponse::Ok().json(ProjectSummary {
        total: summary.total,
        by_status: summary
            .by_status
            .into_iter()
            .map(|(status, count)| (status.as_str().to_owned(), count))
            .collect(),
    }))
}

#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(summary))]
struct SummaryDoc;
