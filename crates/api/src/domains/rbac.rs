//! `/api/v1/roles` and `/api/v1/permissions` (`roles:read`, `roles:write`).

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{Identity, Role, RoleId};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// Registers the RBAC routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/roles")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/roles/{id}/permissions").route(web::put().to(set_permissions)))
    .service(web::resource("/permissions").route(web::get().to(permissions)));
}

#[derive(Debug, Serialize)]
struct RoleView {
    id: RoleId,
    name: String,
    description: String,
    is_system: bool,
    permissions: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<Role> for RoleView {
    fn from(role: Role) -> Self {
        Self {
            id: role.id,
            name: role.name,
            description: role.description,
            is_system: role.is_system,
            permissions: role.permissions.iter().map(ToString::to_string).collect(),
            created_at: role.created_at,
        }
    }
}

/// Body of `POST /roles`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

/// Body of `PUT /roles/{id}/permissions`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct PermissionsBody {
    permissions: Vec<String>,
}

async fn list(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let roles = identity.for_caller(&caller).list_roles().await?;
    let items: Vec<RoleView> = roles.into_iter().map(RoleView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn create(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let role = identity
        .for_caller(&caller)
        .create_role(&body.name, body.description, &body.permissions)
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("{API_PREFIX}/roles/{}", role.id)))
        .json(RoleView::from(role)))
}

async fn set_permissions(
    Caller(caller): Caller,
    IdPath(id): IdPath<RoleId>,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<PermissionsBody>,
) -> Result<HttpResponse, ApiError> {
    let role = identity
        .for_caller(&caller)
        .set_role_permissions(id, &body.permissions)
        .await?;
    Ok(HttpResponse::Ok().json(RoleView::from(role)))
}

async fn permissions(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let items = identity.for_caller(&caller).list_permissions().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}
