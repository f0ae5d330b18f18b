//! `GET /files/{key}`: serves the download links the local object store signs (S3's links go
//! to S3). The signature is the credential: no token is needed, any change to the link or
//! its expiry makes it 404, and the file is sent as a download with the name and type the
//! link was signed for.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::TryStreamExt as _;
use keel_kernel::storage::{ObjectStorage, StorageError, content_disposition};
use keel_kernel::{AppState, DomainError, MissingService};

use crate::error::ApiError;
use crate::state::AppData;

/// The object store, from the application state.
pub fn data(state: &AppState) -> Result<Vec<AppData>, MissingService> {
    Ok(vec![AppData::of::<Arc<dyn ObjectStorage>>(state)?])
}

/// The download route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/files/{key:.+}").route(web::get().to(download)));
}

/// The OpenAPI document of the route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <FilesDoc as utoipa::OpenApi>::openapi()
}

#[utoipa::path(
    get,
    path = "/api/v1/files/{key}",
    tag = "files",
    operation_id = "download_file",
    summary = "Download a file through a signed link (as handed out in `download_url`)",
    params(
        ("key" = String, Path, description = "The object's key"),
        ("expires" = u64, Query, description = "Unix time the link stops working"),
        ("name" = String, Query, description = "The name to save it as"),
        ("type" = String, Query, description = "Its media type"),
        ("signature" = String, Query, description = "The link's signature"),
    ),
    security(()),
    responses(
        (status = 200, description = "The file, as a download, with the type and name the link was signed for."),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
async fn download(
    req: HttpRequest,
    storage: web::Data<Arc<dyn ObjectStorage>>,
) -> Result<HttpResponse, ApiError> {
    let key = req.match_info().get("key").unwrap_or_default();
    let opened = storage
        .open_link(key, req.query_string())
        .await
        .map_err(|error| match error {
            // Forged, altered, expired or gone: one answer for all.
            StorageError::NotFound(_) | StorageError::InvalidKey(_) => {
                ApiError::from(DomainError::NotFound { resource: "file" })
            }
            other => ApiError::from(DomainError::from(other)),
        })?;
    let content_type = header::HeaderValue::from_str(&opened.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    let disposition = header::HeaderValue::from_str(&content_disposition(&opened.filename))
        .unwrap_or(header::HeaderValue::from_static("attachment"));
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header(("x-content-type-options", "nosniff"))
        // Served from the API's origin: the file must never run as a page of it.
        .insert_header(("content-security-policy", "default-src 'none'; sandbox"))
        .no_chunking(opened.size)
        .streaming(
            opened
                .stream
                .map_err(|error| std::io::Error::other(error.to_string())),
        ))
}

#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(download))]
struct FilesDoc;
