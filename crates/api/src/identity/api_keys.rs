//! API keys of the caller.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{ApiKey, Identity, NewApiKeyRequest};
use keel_kernel::ApiKeyId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ApiKey)]
struct ApiKeyView {
    /// Key id.
    #[schema(value_type = Uuid)]
    id: ApiKeyId,
    /// The owner's label.
    name: String,
    /// The public part of the key (`keel_<prefix>_…`), to recognise it.
    prefix: String,
    /// Permissions it is limited to; the owner's permissions when empty.
    scopes: Vec<String>,
    /// When it stops working.
    expires_at: Option<DateTime<Utc>>,
    /// Last authenticated request.
    last_used_at: Option<DateTime<Utc>>,
    /// Creation time.
    created_at: DateTime<Utc>,
}

/// The caller's API keys.
#[derive(Debug, Serialize, ToSchema)]
struct ApiKeyList {
    /// Every key, newest first.
    items: Vec<ApiKeyView>,
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

/// A new API key with its secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CreatedApiKey)]
struct CreatedView {
    #[serde(flatten)]
    details: ApiKeyView,
    /// `keel_<prefix>_<secret>`, for the `X-API-Key` header. Shown once: Keel stores only a
    /// keyed digest.
    key: String,
}

/// Body of `POST /api-keys`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateApiKey, example = json!({"name": "CI deploys", "scopes": ["projects:write"], "expires_at": "2027-06-30T00:00:00Z"}))]
struct CreateBody {
    /// A label for the owner.
    #[validate(length(max = crate::limits::API_KEY_NAME))]
    #[schema(max_length = 100)]
    name: String,
    /// Permissions to narrow the key to (each must be held by the owner; at most 129
    /// characters).
    #[serde(default)]
    #[validate(
        length(max = crate::limits::PERMISSION_LIST),
        custom(function = "crate::limits::permission_names")
    )]
    #[schema(max_items = 100)]
    scopes: Option<Vec<String>>,
    /// When it stops working: at most `auth.api_key_max_ttl` (365 days) ahead;
    /// `auth.api_key_default_ttl` (90 days) from now when absent.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/api/v1/api-keys",
    tag = "api-keys",
    operation_id = "create_api_key",
    summary = "Create an API key (the secret is shown once)",
    description = "Needs a signed-in session (not an API key: 403 `auth.session_required`) whose sign-in or password change is within `auth.reauthentication_window` (else 401 `auth.reauthentication_required`). Every key expires.",
    request_body = CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `key` is the only copy of the secret.", body = CreatedView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
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
    let view = CreatedView {
        details: ApiKeyView::from(created.key),
        key: created.plaintext,
    };
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

#[utoipa::path(
    get,
    path = "/api/v1/api-keys",
    tag = "api-keys",
    operation_id = "list_api_keys",
    summary = "List the caller's API keys",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The keys (never their secrets).", body = ApiKeyList),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn list(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let keys = identity.for_caller(&caller).list_api_keys().await?;
    Ok(HttpResponse::Ok().json(ApiKeyList {
        items: keys.into_iter().map(ApiKeyView::from).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/api-keys/{id}",
    tag = "api-keys",
    operation_id = "delete_api_key",
    summary = "Revoke one of the caller's API keys",
    params(("id" = Uuid, Path, description = "API key id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Revoked."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<ApiKeyId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).delete_api_key(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the API-key routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api-keys")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/api-keys/{id}").route(web::delete().to(delete)));
}

/// The OpenAPI document of the `/api-keys` routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(create, list, delete))]
pub(super) struct ApiKeysDoc;
