//! `/projects/{id}/attachments`: files on projects, written by hand. Uploads stream: the
//! multipart body is read chunk by chunk into the object store, checked on the way (size,
//! type from the bytes, checksum), so a file is never whole in memory.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt as _};
use keel_kernel::DomainError;
use keel_projects::ProjectId;
use keel_projects::attachments::{Attachment, AttachmentId, Attachments, LIST_SPEC, Linked};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ListParams, path_param};

/// What a multipart form adds around the file: its boundaries and part headers. A declared
/// length beyond the limit plus this is refused before a byte is read.
const FORM_OVERHEAD: u64 = 16 * 1024;
/// Most form fields besides `file`, and most bytes each: anything else in the form is read
/// and dropped, within these bounds.
const MAX_OTHER_FIELDS: usize = 8;
const MAX_OTHER_FIELD_BYTES: usize = 1024;
/// Most bytes read from the client that have not (yet) been handed out as file content:
/// boundaries, part headers, other fields, and what the parser holds while it looks for the
/// next boundary. A body of endless headers, or no boundary at all, stops here (400) instead
/// of being buffered.
const MAX_FRAMING_BYTES: u64 = 512 * 1024;

/// What [`Metered`] refused.
const WITHIN_LIMITS: u8 = 0;
const TOO_LARGE: u8 = 1;
const FRAMING_TOO_LARGE: u8 = 2;

/// The upload's byte counts, shared by the metered body and the handler.
#[derive(Debug)]
struct Meter {
    /// File content handed to storage so far.
    file_bytes: AtomicU64,
    /// Why the body was cut off, if it was.
    tripped: AtomicU8,
    /// Most bytes the whole body may have.
    max_total: u64,
}

/// The request body, counted as it is read: actix-multipart buffers while it searches for
/// boundaries and header ends, so the limits must hold below it, not only on the file part.
struct Metered<S> {
    inner: S,
    read: u64,
    meter: Arc<Meter>,
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                this.read = this.read.saturating_add(bytes.len() as u64);
                let framing = this
                    .read
                    .saturating_sub(this.meter.file_bytes.load(Ordering::Relaxed));
                let verdict = if this.read > this.meter.max_total {
                    TOO_LARGE
                } else if framing > MAX_FRAMING_BYTES {
                    FRAMING_TOO_LARGE
                } else {
                    WITHIN_LIMITS
                };
                if verdict == WITHIN_LIMITS {
                    return Poll::Ready(Some(Ok(bytes)));
                }
                this.meter.tripped.store(verdict, Ordering::Relaxed);
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
            other => other,
        }
    }
}

/// The routes (registered before the generic `/projects/{id}`).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/projects/{id}/attachments")
            .route(web::post().to(upload))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/projects/{id}/attachments/{attachment_id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    );
}

/// An attachment as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e20",
    "project_id": "0193a6d2-5c1e-7b3a-9f10-2a4b6c8d0e1f",
    "filename": "floor-plan.pdf",
    "content_type": "application/pdf",
    "size_bytes": 482133,
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "created_by": "0193a6d0-0000-7000-8000-000000000001",
    "created_at": "2026-12-01T09:30:00Z"
}))]
pub struct AttachmentView {
    /// Identity.
    pub id: Uuid,
    /// The project it belongs to.
    pub project_id: Uuid,
    /// The name it was uploaded with (cleaned: no path, no control characters).
    pub filename: String,
    /// The media type, judged from the content.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// Who uploaded it.
    pub created_by: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<Attachment> for AttachmentView {
    fn from(a: Attachment) -> Self {
        Self {
            id: a.id.as_uuid(),
            project_id: a.project_id.as_uuid(),
            filename: a.filename,
            content_type: a.content_type,
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            created_by: a.created_by.map(|u| u.as_uuid()),
            created_at: a.created_at,
        }
    }
}

/// One attachment with a link that downloads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedAttachmentView {
    /// The attachment.
    #[serde(flatten)]
    pub attachment: AttachmentView,
    /// Downloads the file without credentials until it expires (`storage.link_ttl`): presigned
    /// by the S3-compatible store, or signed by Keel for local files.
    pub download_url: String,
}

impl From<Linked> for LinkedAttachmentView {
    fn from(linked: Linked) -> Self {
        Self {
            attachment: linked.attachment.into(),
            download_url: linked.download_url,
        }
    }
}

crate::page_of!(
    /// One page of attachments.
    AttachmentPage,
    AttachmentView
);

/// The upload form: one part named `file`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file. Its type is judged from its content: PNG, JPEG, GIF, WebP, PDF or plain text.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

fn attachment_id(req: &HttpRequest) -> Result<AttachmentId, ApiError> {
    path_param(req, "attachment_id")
}

fn multipart_error(error: &actix_multipart::MultipartError) -> ApiError {
    ApiError::BadRequest(format!("the multipart body is malformed: {error}"))
}

#[utoipa::path(
    post,
    path = "/api/v1/projects/{id}/attachments",
    tag = "projects",
    operation_id = "upload_project_attachment",
    summary = "Attach a file to a project (multipart/form-data, one part named `file`)",
    params(("id" = Uuid, Path, description = "Project id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Stored.", body = AttachmentView,
            headers(("Location" = String, description = "The attachment's URL"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, description = "Larger than `storage.max_attachment_bytes`; refused before the body is read when `Content-Length` says so.", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not a multipart form, or a file whose content is not an accepted type (whatever its name says).", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn upload(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(project): IdPath<ProjectId>,
    payload: web::Payload,
    service: web::Data<Attachments>,
) -> Result<HttpResponse, ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_form {
        return Err(DomainError::UnsupportedMediaType {
            allowed: &["multipart/form-data"],
        }
        .into());
    }
    let rules = service.rules();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > rules.max_bytes.saturating_add(FORM_OVERHEAD)) {
        return Err(rules.too_large().into());
    }
    let attachments = service.for_caller(&caller);
    // The caller's access is checked before any of the body is read.
    let mut pending = attachments.begin_upload(project).await?;
    let meter = Arc::new(Meter {
        file_bytes: AtomicU64::new(0),
        tripped: AtomicU8::new(WITHIN_LIMITS),
        max_total: rules.max_bytes.saturating_add(MAX_FRAMING_BYTES),
    });
    let metered = Metered {
        inner: payload,
        read: 0,
        meter: meter.clone(),
    };
    let mut form = actix_multipart::Multipart::new(req.headers(), metered);
    // A multipart error caused by the meter says which limit it hit.
    let form_error = |error: &actix_multipart::MultipartError| -> ApiError {
        match meter.tripped.load(Ordering::Relaxed) {
            TOO_LARGE => rules.too_large().into(),
            FRAMING_TOO_LARGE => ApiError::BadRequest(
                "the multipart body has too much besides the file (headers, fields, or no boundary)"
                    .to_owned(),
            ),
            _ => multipart_error(error),
        }
    };
    let mut filename: Option<String> = None;
    let mut others = 0;
    let outcome: Result<(), ApiError> = async {
        while let Some(field) = form.next().await {
            let mut field = field.map_err(|e| form_error(&e))?;
            if field.name() != Some("file") {
                others += 1;
                if others > MAX_OTHER_FIELDS {
                    return Err(ApiError::invalid(
                        "file",
                        "too_many_fields",
                        "send only the `file` part",
                    ));
                }
                let mut read = 0;
                while let Some(chunk) = field.next().await {
                    read += chunk.map_err(|e| form_error(&e))?.len();
                    if read > MAX_OTHER_FIELD_BYTES {
                        return Err(ApiError::invalid(
                            "file",
                            "unexpected_field",
                            "send only the `file` part",
                        ));
                    }
                }
                continue;
            }
            if filename.is_some() {
                return Err(ApiError::invalid(
                    "file",
                    "one_file",
                    "send one file per request",
                ));
            }
            filename = Some(
                field
                    .content_disposition()
                    .and_then(|cd| cd.get_filename())
                    .unwrap_or("file")
                    .to_owned(),
            );
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| form_error(&e))?;
                meter
                    .file_bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                pending.incoming.push(&chunk).await?;
            }
        }
        Ok(())
    }
    .await;
    let filename = match (outcome, filename) {
        (Ok(()), Some(filename)) => filename,
        (Ok(()), None) => {
            pending.incoming.abort().await;
            return Err(ApiError::invalid(
                "file",
                "required",
                "the form has no part named `file`",
            ));
        }
        (Err(error), _) => {
            pending.incoming.abort().await;
            return Err(error);
        }
    };
    let stored = attachments.finish_upload(pending, &filename).await?;
    tracing::info!(
        project = %project,
        attachment = %stored.id,
        content_type = %stored.content_type,
        size_bytes = stored.size_bytes,
        "attachment stored"
    );
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!(
                "{}/projects/{project}/attachments/{}",
                crate::API_PREFIX,
                stored.id
            ),
        ))
        .json(AttachmentView::from(stored)))
}

#[utoipa::path(
    get,
    path = "/api/v1/projects/{id}/attachments",
    tag = "projects",
    operation_id = "list_project_attachments",
    summary = "List a project's attachments",
    params(("id" = Uuid, Path, description = "Project id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page.", body = AttachmentPage),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn list(
    Caller(caller): Caller,
    IdPath(project): IdPath<ProjectId>,
    params: ListParams,
    service: web::Data<Attachments>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&LIST_SPEC)?;
    let page = service.for_caller(&caller).list(project, query).await?;
    Ok(HttpResponse::Ok().json(page.map(AttachmentView::from)))
}

#[utoipa::path(
    get,
    path = "/api/v1/projects/{id}/attachments/{attachment_id}",
    tag = "projects",
    operation_id = "get_project_attachment",
    summary = "An attachment with a short-lived download link",
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("attachment_id" = Uuid, Path, description = "Attachment id"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The attachment.", body = LinkedAttachmentView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn get(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(project): IdPath<ProjectId>,
    service: web::Data<Attachments>,
) -> Result<HttpResponse, ApiError> {
    let id = attachment_id(&req)?;
    let linked = service.for_caller(&caller).get(project, id).await?;
    Ok(HttpResponse::Ok()
        // The link is a credential for a while: no cache keeps it.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(LinkedAttachmentView::from(linked)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/projects/{id}/attachments/{attachment_id}",
    tag = "projects",
    operation_id = "delete_project_attachment",
    summary = "Delete an attachment",
    params(
        ("id" = Uuid, Path, description = "Project id"),
        ("attachment_id" = Uuid, Path, description = "Attachment id"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn delete(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(project): IdPath<ProjectId>,
    service: web::Data<Attachments>,
) -> Result<HttpResponse, ApiError> {
    let id = attachment_id(&req)?;
    service.for_caller(&caller).delete(project, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The OpenAPI document of the attachment routes, with the list parameters.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = <AttachmentsDoc as utoipa::OpenApi>::openapi();
    crate::openapi::add_list_parameters(&mut document, "/projects/{id}/attachments", &LIST_SPEC);
    document
}

#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(upload, list, get, delete))]
struct AttachmentsDoc;
