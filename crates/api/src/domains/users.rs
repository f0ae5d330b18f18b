//! `/api/v1/users`: account administration (`users:read`, `users:write`).

use actix_web::{HttpRequest, HttpResponse, web};
use keel_identity::{Identity, RoleId, USER_LIST_SPEC, UserPatch, UserStatus};
use keel_kernel::UserId;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;

use validator::Validate;

use super::auth::UserView;
use crate::error::ApiError;
use crate::openapi::string_enum;

use crate::extract::{Caller, IdPath, ListParams, ValidatedJson, double_option, path_param};

/// Registers the `/users` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/users").route(web::get().to(list)))
        .service(
            web::resource("/users/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/users/{id}/restore").route(web::post().to(restore)))
        .service(web::resource("/users/{id}/roles").route(web::post().to(grant_role)))
        .service(web::resource("/users/{id}/roles/{role_id}").route(web::delete().to(revoke_role)));
}

crate::page_of!(
    /// One page of accounts.
    UserPage,
    UserView
);

fn status_schema() -> Schema {
    string_enum(UserStatus::NAMES)
}

/// Body of `PATCH /users/{id}`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserChange, example = json!({"status": "suspended"}))]
struct PatchBody {
    /// New display name, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[validate(length(max = crate::limits::FULL_NAME))]
    #[schema(value_type = Option<String>, max_length = 200)]
    full_name: Option<Option<String>>,
    /// New status; `suspended` and `deactivated` end every session at once.
    #[schema(schema_with = status_schema)]
    status: Option<UserStatus>,
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
    get,
    path = "/api/v1/users",
    tag = "users",
    operation_id = "list_users",
    summary = "List accounts (administrators)",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "One page.", body = UserPage),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn list(
    Caller(caller): Caller,
    params: ListParams,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&USER_LIST_SPEC)?;
    let page = identity.for_caller(&caller).list_users(query).await?;
    Ok(HttpResponse::Ok().json(page.map(|user| UserView::new(user, None))))
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "get_user",
    summary = "Read an account with its roles",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The account.", body = UserView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn get(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let found = identity.for_caller(&caller).get_user(id).await?;
    Ok(HttpResponse::Ok().json(UserView::new(found.user, Some(found.roles))))
}

#[utoipa::path(
    patch,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "update_user",
    summary = "Change an account's profile or status",
    request_body = PatchBody,
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 409, response = crate::openapi::Conflict),
        (status = 200, description = "The account.", body = UserView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn update(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<PatchBody>,
) -> Result<HttpResponse, ApiError> {
    let updated = identity
        .for_caller(&caller)
        .update_user(
            id,
            UserPatch {
                full_name: body.full_name,
                status: body.status,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserView::new(updated.user, Some(updated.roles))))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    summary = "Delete an account (restorable); its sessions end",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 409, response = crate::openapi::Conflict),
        (status = 204, description = "Deleted."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).delete_user(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/users/{id}/restore",
    tag = "users",
    operation_id = "restore_user",
    summary = "Restore a deleted account",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The account.", body = UserView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn restore(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let restored = identity.for_caller(&caller).restore_user(id).await?;
    Ok(HttpResponse::Ok().json(UserView::new(restored.user, Some(restored.roles))))
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

/// The OpenAPI document of the `/users` routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(list, get, update, delete, restore, grant_role, revoke_role))]
pub struct UsersDoc;
