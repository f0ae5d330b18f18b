// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! `/api/v1/projects`: projects on the generic CRUD endpoints; custom routes are in
//! `custom.rs`.

pub mod custom;

use actix_web::web;
use chrono::{DateTime, Utc};
use keel_kernel::{AppState, MissingService};
use keel_projects::model::{NewProject, Project, ProjectPatch, ProjectStatus};
use keel_projects::service::Projects;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use uuid::Uuid;

use crate::crud::{self, CrudApi};
use crate::extract::double_option;
use crate::openapi::string_enum;
use crate::state::AppData;

/// The HTTP face of projects.
#[derive(Debug)]
pub struct ProjectsApi;

impl CrudApi for ProjectsApi {
    type Resource = Project;
    type View = ProjectView;
    type Create = CreateProject;
    type Update = UpdateProject;

    const PATH: &'static str = "/projects";
    const TAG: &'static str = "projects";
}

/// The services the handlers take from the application state.
pub fn data(state: &AppState) -> Result<Vec<AppData>, MissingService> {
    let mut data = vec![AppData::of::<Projects>(state)?];
    data.extend(custom::data(state)?);
    Ok(data)
}

/// Registers the routes: the custom ones first (a fixed path such as `/projects/summary` must
/// come before `/projects/{id}`), then the generic CRUD.
pub fn configure(cfg: &mut web::ServiceConfig) {
    custom::configure(cfg);
    crud::configure::<ProjectsApi>(cfg);
}

/// The OpenAPI document of the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = crud::openapi::<ProjectsApi>();
    document.merge(custom::openapi());
    document
}

fn status_schema() -> Schema {
    string_enum(ProjectStatus::NAMES)
}

/// A project as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Project, example = json!({
    "id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e1f",
    "name": "Website relaunch",
    "description": "New design and content for the public site.",
    "status": "active",
    "owner_id": "0193a6d0-0000-7000-8000-000000000001",
    "version": 3,
    "created_by": "0193a6d0-0000-7000-8000-000000000001",
    "updated_by": "0193a6d0-0000-7000-8000-000000000001",
    "created_at": "2026-11-20T09:30:00Z",
    "updated_at": "2026-11-22T16:05:00Z"
}))]
pub struct ProjectView {
    /// Identity.
    pub id: Uuid,
    /// 1 to 200 characters.
    pub name: String,
    /// Up to 10 000 characters.
    pub description: Option<String>,
    /// `planned`, `active`, `completed` or `archived` (read-only until changed back).
    #[schema(schema_with = status_schema)]
    pub status: ProjectStatus,
    /// The owner.
    pub owner_id: Uuid,
    /// Incremented by every change; the `ETag` is `"v<version>"`.
    pub version: i64,
    /// Who created it.
    pub created_by: Option<Uuid>,
    /// Who changed it last.
    pub updated_by: Option<Uuid>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectView {
    fn from(project: Project) -> Self {
        Self {
            id: project.id.as_uuid(),
            name: project.name,
            description: project.description,
            status: project.status,
            owner_id: project.meta.owner.as_uuid(),
            version: project.meta.version,
            created_by: project.meta.created_by.map(|id| id.as_uuid()),
            updated_by: project.meta.updated_by.map(|id| id.as_uuid()),
            created_at: project.meta.created_at,
            updated_at: project.meta.updated_at,
        }
    }
}

/// Body of `POST /projects` (and each item of `POST /projects/bulk`). The owner is always the
/// caller: `owner_id` and other unknown fields are rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Website relaunch", "description": "New design and content.", "status": "planned"}))]
pub struct CreateProject {
    /// 1 to 200 characters (trimmed).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Up to 10 000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Defaults to `planned`.
    #[serde(default)]
    #[schema(schema_with = status_schema)]
    pub status: Option<ProjectStatus>,
}

impl From<CreateProject> for NewProject {
    fn from(body: CreateProject) -> Self {
        Self {
            name: body.name,
            description: body.description,
            status: body.status,
        }
    }
}

/// Body of `PATCH /projects/{id}`: absent fields stay as they are; `"description": null`
/// clears the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "active"}))]
pub struct UpdateProject {
    /// 1 to 200 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Up to 10 000 characters, or `null` to clear.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    /// The new status.
    #[serde(default)]
    #[schema(schema_with = status_schema)]
    pub status: Option<ProjectStatus>,
}

impl From<UpdateProject> for ProjectPatch {
    fn from(body: UpdateProject) -> Self {
        Self {
            name: body.name,
            description: body.description,
            status: body.status,
        }
    }
}
