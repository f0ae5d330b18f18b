//! `/api/v1/release-notes`: the public "What's New" feed and its writer endpoints.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_kernel::{DomainError, UserId};
use keel_release_notes::{
    ChangeType, LIST_SPEC, NewReleaseNote, ReleaseError, ReleaseNote, ReleaseNoteId,
    ReleaseNotePatch, ReleaseNotes, ReleaseStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;

use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::openapi::string_enum;

use crate::extract::{Caller, IdPath, ListParams, ValidatedJson};

impl From<ReleaseError> for ApiError {
    fn from(error: ReleaseError) -> Self {
        Self::Domain(DomainError::from(error))
    }
}

/// Registers the release-note routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/release-notes")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    // Before `{id}`, which would otherwise capture "latest".
    .service(web::resource("/release-notes/latest").route(web::get().to(latest)))
    .service(
        web::resource("/release-notes/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

fn change_type_schema() -> Schema {
    string_enum(ChangeType::NAMES)
}

fn status_schema() -> Schema {
    string_enum(ReleaseStatus::NAMES)
}

/// A release note as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReleaseNote, example = json!({
    "id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e30",
    "version": "1.4.0",
    "title": "Projects",
    "body": "You can now **group work into projects**.",
    "change_type": "feature",
    "status": "published",
    "published_at": "2026-11-22T10:00:00Z",
    "created_by": "0193a6d0-0000-7000-8000-000000000001",
    "created_at": "2026-11-21T17:00:00Z",
    "updated_at": "2026-11-22T10:00:00Z"
}))]
pub struct ReleaseNoteView {
    /// Identity.
    #[schema(value_type = Uuid)]
    id: ReleaseNoteId,
    /// Semantic version, unique.
    version: String,
    /// Headline.
    title: String,
    /// Markdown.
    body: String,
    /// Kind of change.
    #[schema(schema_with = change_type_schema)]
    change_type: ChangeType,
    /// `draft` or `published`.
    #[schema(schema_with = status_schema)]
    status: ReleaseStatus,
    /// Publication time.
    published_at: Option<DateTime<Utc>>,
    /// Author.
    #[schema(value_type = Option<Uuid>)]
    created_by: Option<UserId>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
}

crate::page_of!(
    /// One page of release notes.
    ReleaseNotePage,
    ReleaseNoteView
);

impl From<ReleaseNote> for ReleaseNoteView {
    fn from(note: ReleaseNote) -> Self {
        Self {
            id: note.id,
            version: note.version.to_string(),
            title: note.title,
            body: note.body,
            change_type: note.change_type,
            status: note.status,
            published_at: note.published_at,
            created_by: note.created_by,
            created_at: note.created_at,
            updated_at: note.updated_at,
        }
    }
}

/// Body of `POST /release-notes`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": "1.4.0", "title": "Projects", "body": "You can now **group work into projects**.", "change_type": "feature"}))]
pub struct CreateReleaseNote {
    /// Semantic version (a leading `v` is dropped), unique.
    #[validate(length(max = crate::limits::RELEASE_VERSION))]
    #[schema(
        max_length = 64,
        pattern = r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
    )]
    version: String,
    /// 1 to 200 characters.
    #[validate(length(max = crate::limits::RELEASE_TITLE))]
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    title: String,
    /// Markdown, up to 100 000 characters.
    #[serde(default)]
    #[validate(length(max = crate::limits::RELEASE_BODY))]
    #[schema(max_length = 100000)]
    body: String,
    /// Kind of change.
    #[schema(schema_with = change_type_schema)]
    change_type: ChangeType,
}

/// Body of `PATCH /release-notes/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"published": true}))]
pub struct UpdateReleaseNote {
    /// New version.
    #[validate(length(max = crate::limits::RELEASE_VERSION))]
    #[schema(max_length = 64)]
    version: Option<String>,
    /// New title.
    #[validate(length(max = crate::limits::RELEASE_TITLE))]
    #[schema(max_length = 200)]
    title: Option<String>,
    /// New body.
    #[validate(length(max = crate::limits::RELEASE_BODY))]
    #[schema(max_length = 100000)]
    body: Option<String>,
    /// New kind of change.
    #[schema(schema_with = change_type_schema)]
    change_type: Option<ChangeType>,
    /// `true` publishes, `false` returns to draft.
    published: Option<bool>,
}

#[utoipa::path(
    get,
    path = "/api/v1/release-notes",
    tag = "release-notes",
    operation_id = "list_release_notes",
    summary = "List release notes (published ones for everyone; drafts too with `release_notes:write`)",
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page.", body = ReleaseNotePage),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn list(
    Caller(caller): Caller,
    params: ListParams,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = service.for_caller(&caller).list(query).await?;
    Ok(HttpResponse::Ok().json(page.map(ReleaseNoteView::from)))
}

#[utoipa::path(
    get,
    path = "/api/v1/release-notes/latest",
    tag = "release-notes",
    operation_id = "latest_release_note",
    summary = "The newest published release note",
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The note.", body = ReleaseNoteView),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn latest(
    Caller(caller): Caller,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let note = service.for_caller(&caller).latest().await?;
    Ok(HttpResponse::Ok().json(ReleaseNoteView::from(note)))
}

#[utoipa::path(
    get,
    path = "/api/v1/release-notes/{id}",
    tag = "release-notes",
    operation_id = "get_release_note",
    summary = "Read a release note",
    params(("id" = Uuid, Path, description = "Release note id")),
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The note.", body = ReleaseNoteView),
    )
)]
async fn get(
    Caller(caller): Caller,
    IdPath(id): IdPath<ReleaseNoteId>,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let note = service.for_caller(&caller).get(id).await?;
    Ok(HttpResponse::Ok().json(ReleaseNoteView::from(note)))
}

#[utoipa::path(
    post,
    path = "/api/v1/release-notes",
    tag = "release-notes",
    operation_id = "create_release_note",
    summary = "Create a draft release note",
    request_body = CreateReleaseNote,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created.", body = ReleaseNoteView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn create(
    Caller(caller): Caller,
    service: web::Data<ReleaseNotes>,
    ValidatedJson(body): ValidatedJson<CreateReleaseNote>,
) -> Result<HttpResponse, ApiError> {
    let note = service
        .for_caller(&caller)
        .create(NewReleaseNote {
            version: body.version,
            title: body.title,
            body: body.body,
            change_type: body.change_type,
        })
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("{API_PREFIX}/release-notes/{}", note.id),
        ))
        .json(ReleaseNoteView::from(note)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/release-notes/{id}",
    tag = "release-notes",
    operation_id = "update_release_note",
    summary = "Change, publish (`published: true`) or unpublish a release note",
    request_body = UpdateReleaseNote,
    params(("id" = Uuid, Path, description = "Release note id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The note.", body = ReleaseNoteView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn update(
    Caller(caller): Caller,
    IdPath(id): IdPath<ReleaseNoteId>,
    service: web::Data<ReleaseNotes>,
    ValidatedJson(body): ValidatedJson<UpdateReleaseNote>,
) -> Result<HttpResponse, ApiError> {
    let note = service
        .for_caller(&caller)
        .update(
            id,
            ReleaseNotePatch {
                version: body.version,
                title: body.title,
                body: body.body,
                change_type: body.change_type,
                published: body.published,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(ReleaseNoteView::from(note)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/release-notes/{id}",
    tag = "release-notes",
    operation_id = "delete_release_note",
    summary = "Delete a release note",
    params(("id" = Uuid, Path, description = "Release note id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<ReleaseNoteId>,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    service.for_caller(&caller).delete(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The OpenAPI document of the release-note routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list, latest, get, create, update, delete))]
pub struct ReleaseNotesDoc;

/// The feature's operations, with the list parameters of `/release-notes`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = <ReleaseNotesDoc as utoipa::OpenApi>::openapi();
    crate::openapi::add_list_parameters(
        &mut document,
        "/release-notes",
        &keel_release_notes::LIST_SPEC,
    );
    document
}

/// The services this feature's handlers take from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<
        keel_release_notes::ReleaseNotes,
    >(state)?])
}
