//! Accounts: registration, `/auth/me`, password change and reset, email verification, and the
//! `/users` administration.

use actix_web::{HttpResponse, web};
use keel_identity::{Identity, Me, Registration, USER_LIST_SPEC, UserPatch, UserStatus};
use keel_kernel::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::Schema;
use validator::Validate;

use super::{UserView, *};
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ListParams, ValidatedJson, double_option};
use crate::openapi::string_enum;

/// The caller's account with its effective permissions.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Me)]
struct MeView {
    #[serde(flatten)]
    user: UserView,
    /// Every permission the caller holds, e.g. `projects:write`.
    permissions: Vec<String>,
}

impl From<Me> for MeView {
    fn from(me: Me) -> Self {
        Self {
            user: UserView::new(me.user, Some(me.roles)),
            permissions: me.permissions.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Body of `POST /auth/register`. Anything else (`roles`, `status`, …) is refused.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Registration, example = json!({"email": "ada@example.com", "password": "plum-orbit-kettle-7", "full_name": "Ada Lovelace"}))]
struct RegisterBody {
    /// Unique, case-insensitively.
    #[validate(length(max = crate::limits::EMAIL))]
    #[schema(max_length = 254, format = Email)]
    email: String,
    /// 12 to 128 characters by default (`auth.password_min_length`, `password_max_length`);
    /// common passwords are refused.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    password: String,
    /// Display name.
    #[serde(default)]
    #[validate(length(max = crate::limits::FULL_NAME))]
    #[schema(max_length = 200)]
    full_name: Option<String>,
}

/// Body of `PATCH /auth/me`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProfileChange, example = json!({"full_name": "Ada King"}))]
struct UpdateMeBody {
    /// New display name, or `null` to clear it.
    #[serde(default, deserialize_with = "double_option")]
    #[validate(length(max = crate::limits::FULL_NAME))]
    #[schema(value_type = Option<String>, max_length = 200)]
    full_name: Option<Option<String>>,
}

/// Body of `POST /auth/password/change`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordChange)]
struct ChangePasswordBody {
    /// The password in use.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(max_length = 1024)]
    current_password: String,
    /// The new one (same policy as sign-up).
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// Body of `POST /auth/password/forgot`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordForgot)]
struct ForgotBody {
    /// The account's address.
    #[validate(length(max = crate::limits::EMAIL))]
    #[schema(max_length = 254, format = Email)]
    email: String,
}

/// Body of `POST /auth/password/reset`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordReset)]
struct ResetBody {
    /// The `token` of the mailed link.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    token: String,
    /// The new password (same policy as sign-up).
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(min_length = 12, max_length = 1024)]
    new_password: String,
}

/// Body of `POST /auth/verify-email/confirm`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmailConfirmation)]
struct TokenBody {
    /// The `token` of the mailed link.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    token: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    operation_id = "register",
    summary = "Create an account",
    request_body = RegisterBody,
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created; sign in next.", body = UserView),
        (status = 409, response = crate::openapi::Conflict),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn register(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let user = counted(
        "register",
        identity
            .for_caller(&caller)
            .register(Registration {
                email: body.email,
                password: body.password,
                full_name: body.full_name,
            })
            .await,
    )?;
    Ok(HttpResponse::Created().json(UserView::new(user, None)))
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "get_me",
    summary = "The caller's account, roles and effective permissions",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The account.", body = MeView),
    )
)]
async fn me(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let me = identity.for_caller(&caller).me().await?;
    Ok(HttpResponse::Ok().json(MeView::from(me)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/auth/me",
    tag = "auth",
    operation_id = "update_me",
    summary = "Change the caller's profile",
    request_body = UpdateMeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = MeView),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn update_me(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<UpdateMeBody>,
) -> Result<HttpResponse, ApiError> {
    let service = identity.for_caller(&caller);
    let me = match body.full_name {
        Some(full_name) => service.update_me(full_name).await?,
        None => service.me().await?,
    };
    Ok(HttpResponse::Ok().json(MeView::from(me)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/change",
    tag = "auth",
    operation_id = "change_password",
    summary = "Change the password; every other session is revoked",
    request_body = ChangePasswordBody,
    security(("bearer" = [])),
    responses(
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 204, description = "Changed."),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn change_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ChangePasswordBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_change",
        identity
            .for_caller(&caller)
            .change_password(&body.current_password, &body.new_password)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/forgot",
    tag = "auth",
    operation_id = "forgot_password",
    summary = "Mail a single-use reset link (always 202: no account discovery)",
    request_body = ForgotBody,
    // Anonymous callers are welcome; a credential, when sent, must be valid.
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Accepted.", body = Accepted),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn forgot_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ForgotBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_forgot",
        identity
            .for_caller(&caller)
            .forgot_password(&body.email)
            .await,
    )?;
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "accepted",
        detail: Some("if an account uses this address, a reset link is on its way"),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset",
    tag = "auth",
    operation_id = "reset_password",
    summary = "Set a new password with a reset token; every session is revoked",
    request_body = ResetBody,
    responses(
        (status = 204, description = "Reset."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn reset_password(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<ResetBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "password_reset",
        identity
            .for_caller(&caller)
            .reset_password(&body.token, &body.new_password)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email/request",
    tag = "auth",
    operation_id = "request_email_verification",
    summary = "Mail an email-verification link",
    security(("bearer" = [])),
    responses(
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 202, description = "Accepted.", body = Accepted),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn request_verification(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity
        .for_caller(&caller)
        .request_email_verification()
        .await?;
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "accepted",
        detail: None,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/verify-email/confirm",
    tag = "auth",
    operation_id = "confirm_email",
    summary = "Confirm an email address with its token",
    request_body = TokenBody,
    responses(
        (status = 204, description = "Verified."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn confirm_email(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "email_verify",
        identity
            .for_caller(&caller)
            .confirm_email(&body.token)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
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

/// Registers the account routes. Registration and recovery endpoints are rate limited per IP.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(limited("/auth/register", web::post().to(register)))
        .service(limited(
            "/auth/password/forgot",
            web::post().to(forgot_password),
        ))
        .service(limited(
            "/auth/password/reset",
            web::post().to(reset_password),
        ))
        .service(limited(
            "/auth/verify-email/confirm",
            web::post().to(confirm_email),
        ))
        .service(
            web::resource("/auth/me")
                .route(web::get().to(me))
                .route(web::patch().to(update_me)),
        )
        .service(limited(
            "/auth/password/change",
            web::post().to(change_password),
        ))
        .service(
            web::resource("/auth/verify-email/request").route(web::post().to(request_verification)),
        )
        .service(web::resource("/users").route(web::get().to(list)))
        .service(
            web::resource("/users/{id}")
                .route(web::get().to(get))
                .route(web::patch().to(update))
                .route(web::delete().to(delete)),
        )
        .service(web::resource("/users/{id}/restore").route(web::post().to(restore)));
}

/// The OpenAPI document of the account routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(
    register,
    me,
    update_me,
    change_password,
    forgot_password,
    reset_password,
    request_verification,
    confirm_email,
    list,
    get,
    update,
    delete,
    restore
))]
pub(super) struct AccountsDoc;
