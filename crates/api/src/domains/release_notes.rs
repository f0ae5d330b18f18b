//! `/api/v1/release-notes`: the public "What's New" feed and its writer endpoints.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_kernel::{DomainError, UserId};
use keel_releases::{
    ChangeType, LIST_SPEC, NewReleaseNote, ReleaseError, ReleaseNote, ReleaseNoteId,
    ReleaseNotePatch, ReleaseNotes, ReleaseStatus,
};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
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

/// A release note as the API shows it.
#[derive(Debug, Serialize)]
pub struct ReleaseNoteView {
    id: ReleaseNoteId,
    version: String,
    title: String,
    body: String,
    change_type: ChangeType,
    status: ReleaseStatus,
    published_at: Option<DateTime<Utc>>,
    created_by: Option<UserId>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

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
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateReleaseNote {
    version: String,
    title: String,
    #[serde(default)]
    body: String,
    change_type: ChangeType,
}

/// Body of `PATCH /release-notes/{id}`; absent fields stay as they are.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateReleaseNote {
    version: Option<String>,
    title: Option<String>,
    body: Option<String>,
    change_type: Option<ChangeType>,
    /// `true` publishes, `false` returns to draft.
    published: Option<bool>,
}

async fn list(
    Caller(caller): Caller,
    params: ListParams,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = service.for_caller(&caller).list(query).await?;
    Ok(HttpResponse::Ok().json(page.map(ReleaseNoteView::from)))
}

async fn latest(
    Caller(caller): Caller,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let note = service.for_caller(&caller).latest().await?;
    Ok(HttpResponse::Ok().json(ReleaseNoteView::from(note)))
}

async fn get(
    Caller(caller): Caller,
    IdPath(id): IdPath<ReleaseNoteId>,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    let note = service.for_caller(&caller).get(id).await?;
    Ok(HttpResponse::Ok().json(ReleaseNoteView::from(note)))
}

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

async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<ReleaseNoteId>,
    service: web::Data<ReleaseNotes>,
) -> Result<HttpResponse, ApiError> {
    service.for_caller(&caller).delete(id).await?;
    Ok(HttpResponse::NoContent().finish())
}
