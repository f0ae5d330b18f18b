//! Roles, permissions, and granting a role to a user.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_identity::{Identity, Role, RoleId};
use keel_kernel::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::UserView;
use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson, path_param};

/// A role.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Role, example = json!({
    "id": "0193a6cf-0000-7000-8000-00000000000b",
    "name": "editor",
    "description": "Writes release notes",
    "is_system": false,
    "permissions": ["release_notes:write"],
    "created_at": "2026-11-20T09:30:00Z"
}))]
struct RoleView {
    /// Role id.
    #[schema(value_type = Uuid)]
    id: RoleId,
    /// Unique name.
    name: String,
    /// What it is for.
    description: String,
    /// `admin` and `member`: kept in sync by Keel, not editable.
    is_system: bool,
    /// Granted permissions.
    permissions: Vec<String>,
    /// Creation time.
    created_at: DateTime<Utc>,
}

/// Every role.
#[derive(Debug, Serialize, ToSchema)]
struct RoleList {
    /// The roles.
    items: Vec<RoleView>,
}

/// A permission and what it allows.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Permission)]
struct PermissionView {
    /// `resource:action`.
    name: String,
    /// What it allows.
    description: String,
}

/// The permission catalogue.
#[derive(Debug, Serialize, ToSchema)]
struct PermissionList {
    /// Every permission.
    items: Vec<PermissionView>,
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
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateRole, example = json!({"name": "editor", "description": "Writes release notes", "permissions": ["release_notes:write"]}))]
struct CreateBody {
    /// Unique name: lower-case letters, digits, `_` and `-`.
    #[validate(length(max = crate::limits::ROLE_NAME))]
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_-]+$")]
    name: String,
    /// What it is for.
    #[serde(default)]
    #[validate(length(max = crate::limits::ROLE_DESCRIPTION))]
    #[schema(max_length = 500)]
    description: Option<String>,
    /// Catalogued permissions to grant (each at most 129 characters).
    #[serde(default)]
    #[validate(
        length(max = crate::limits::PERMISSION_LIST),
        custom(function = "crate::limits::permission_names")
    )]
    #[schema(max_items = 100)]
    permissions: Vec<String>,
}

/// Body of `PUT /roles/{id}/permissions`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RolePermissions)]
struct PermissionsBody {
    /// The complete new set (each at most 129 characters).
    #[validate(
        length(max = crate::limits::PERMISSION_LIST),
        custom(function = "crate::limits::permission_names")
    )]
    #[schema(max_items = 100)]
    permissions: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/roles",
    tag = "rbac",
    operation_id = "list_roles",
    summary = "List roles with their permissions",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Every role.", body = RoleList),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn list(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let roles = identity.for_caller(&caller).list_roles().await?;
    Ok(HttpResponse::Ok().json(RoleList {
        items: roles.into_iter().map(RoleView::from).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/roles",
    tag = "rbac",
    operation_id = "create_role",
    summary = "Create a role",
    request_body = CreateBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created.", body = RoleView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
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

#[utoipa::path(
    put,
    path = "/api/v1/roles/{id}/permissions",
    tag = "rbac",
    operation_id = "set_role_permissions",
    summary = "Replace a role's permissions",
    request_body = PermissionsBody,
    params(("id" = Uuid, Path, description = "Role id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 409, response = crate::openapi::Conflict),
        (status = 200, description = "The role.", body = RoleView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/permissions",
    tag = "rbac",
    operation_id = "list_permissions",
    summary = "List every permission Keel defines",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The catalogue.", body = PermissionList),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn permissions(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let permissions = identity.for_caller(&caller).list_permissions().await?;
    Ok(HttpResponse::Ok().json(PermissionList {
        items: permissions
            .into_iter()
            .map(|p| PermissionView {
                name: p.name.to_string(),
                description: p.description,
            })
            .collect(),
    }))
}

/// Body of `POST /users/{id}/roles`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RoleGrant)]
struct GrantBody {
    /// The role to grant.
    #[schema(value_type = Uuid)]
    role_id: RoleId,
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/roles",
    tag = "users",
    operation_id = "grant_role",
    summary = "Grant a role",
    request_body = GrantBody,
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The account with its roles.", body = UserView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn grant_role(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<GrantBody>,
) -> Result<HttpResponse, ApiError> {
    let updated = identity
        .for_caller(&caller)
        .grant_role(id, body.role_id)
        .await?;
    Ok(HttpResponse::Ok().json(UserView::new(updated.user, Some(updated.roles))))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}/roles/{role_id}",
    tag = "users",
    operation_id = "revoke_role",
    summary = "Revoke a role",
    params(("id" = Uuid, Path, description = "User id"), ("role_id" = Uuid, Path, description = "Role id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 409, response = crate::openapi::Conflict),
        (status = 204, description = "Revoked."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn revoke_role(
    req: HttpRequest,
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let role: RoleId = path_param(&req, "role_id")?;
    identity.for_caller(&caller).revoke_role(id, role).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the role, permission and grant routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/roles")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/roles/{id}/permissions").route(web::put().to(set_permissions)))
    .service(web::resource("/permissions").route(web::get().to(permissions)))
    .service(web::resource("/users/{id}/roles").route(web::post().to(grant_role)))
    .service(web::resource("/users/{id}/roles/{role_id}").route(web::delete().to(revoke_role)));
}

/// The OpenAPI document of the role routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list, create, set_permissions, permissions, grant_role, revoke_role))]
pub(super) struct RolesDoc;
