//! `/api/v1/api-keys`: the caller's own API keys (`api_keys:manage`).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{ApiKey, Identity, NewApiKeyRequest};
use keel_kernel::ApiKeyId;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// Registers the API-key routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api-keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/api-keys/{id}").route(web::delete().to(delete)));
}

#[derive(Debug, Serialize)]
struct ApiKeyView {
    id: ApiKeyId,
    name: String,
    prefix: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes.iter().map(ToString::to_string).collect(),
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            created_at: key.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
struct CreatedView {
    #[serde(flatten)]
    key: ApiKeyView,
    /// Shown once: Keel stores only a digest.
    key_value: String,
}

/// Body of `POST /api-keys`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

async fn create(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let created = identity
        .for_caller(&caller)
        .create_api_key(NewApiKeyRequest {
            name: body.name,
            scopes: body.scopes,
            expires_at: body.expires_at,
        })
        .await?;
    let location = format!("{API_PREFIX}/api-keys/{}", created.key.id);
    let mut view = serde_json::to_value(CreatedView {
        key: ApiKeyView::from(created.key),
        key_value: created.plaintext,
    })
    .map_err(|e| ApiError::Domain(keel_kernel::DomainError::internal(e)))?;
    // The contract names the one-time secret `key`.
    if let Some(object) = view.as_object_mut()
        && let Some(value) = object.remove("key_value")
    {
        object.insert("key".to_owned(), value);
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

async fn list(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let keys = identity.for_caller(&caller).list_api_keys().await?;
    let items: Vec<ApiKeyView> = keys.into_iter().map(ApiKeyView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<ApiKeyId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).delete_api_key(id).await?;
    Ok(HttpResponse::NoContent().finish())
}
