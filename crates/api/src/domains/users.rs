//! `/api/v1/users`: account administration (`users:read`, `users:write`).

use actix_web::{HttpRequest, HttpResponse, web};
use keel_identity::{Identity, RoleId, USER_LIST_SPEC, UserPatch, UserStatus};
use keel_kernel::UserId;
use serde::Deserialize;
use validator::Validate;

use super::auth::UserView;
use crate::error::ApiError;
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

/// Body of `PATCH /users/{id}`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "double_option")]
    full_name: Option<Option<String>>,
    status: Option<UserStatus>,
}

/// Body of `POST /users/{id}/roles`.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    role_id: RoleId,
}

async fn list(
    Caller(caller): Caller,
    params: ListParams,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let query = params.parse(&USER_LIST_SPEC)?;
    let page = identity.for_caller(&caller).list_users(query).await?;
    Ok(HttpResponse::Ok().json(page.map(|user| UserView::new(user, None))))
}

async fn get(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let found = identity.for_caller(&caller).get_user(id).await?;
    Ok(HttpResponse::Ok().json(UserView::new(found.user, Some(found.roles))))
}

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

async fn delete(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).delete_user(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn restore(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let restored = identity.for_caller(&caller).restore_user(id).await?;
    Ok(HttpResponse::Ok().json(UserView::new(restored.user, Some(restored.roles))))
}

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
