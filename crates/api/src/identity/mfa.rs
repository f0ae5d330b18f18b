//! `/auth/mfa/…`: a TOTP authenticator as the second sign-in factor, with recovery codes;
//! `DELETE /users/{id}/mfa`, an administrator's reset.

use actix_web::{HttpResponse, web};
use keel_identity::{Identity, SecondFactor};
use keel_kernel::UserId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use super::*;
use crate::error::ApiError;
use crate::extract::{Caller, IdPath, ValidatedJson};

/// Longest code accepted (a recovery code with separators fits well within).
const CODE_MAX: u64 = 64;

/// A started enrolment: the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TotpEnrolment, example = json!({
    "secret": "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI",
    "otpauth_uri": "otpauth://totp/keel:ada%40example.com?secret=MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI&issuer=keel"
}))]
struct EnrolmentView {
    /// The shared secret, base32, for typing into an authenticator app.
    secret: String,
    /// The same as an `otpauth://` URI, for a QR code.
    otpauth_uri: String,
}

/// A code from the authenticator.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TotpCode, example = json!({"code": "492039"}))]
struct CodeBody {
    /// Six digits.
    #[validate(length(max = CODE_MAX))]
    #[schema(max_length = 64)]
    code: String,
}

/// Recovery codes, shown this once: each works once, in place of a code.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RecoveryCodes, example = json!({
    "recovery_codes": ["k3j9x-2mq7p", "a8d2f-0zl4e"]
}))]
struct RecoveryCodesView {
    /// Ten codes; store them somewhere safe.
    recovery_codes: Vec<String>,
}

/// The current password, proved again.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PasswordConfirmation, example = json!({"password": "plum-orbit-kettle-7"}))]
struct PasswordBody {
    /// The account's current password.
    #[validate(length(max = crate::limits::PASSWORD))]
    #[schema(max_length = 1024)]
    password: String,
}

/// The second sign-in step: the challenge and one of a code or a recovery code.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MfaVerification, example = json!({
    "challenge": "Yx2l0Jg8n4Kq3pZ7s1vB6wE9rT5uI0oP2aS4dF6gH8j",
    "code": "492039"
}))]
struct VerifyBody {
    /// From the `auth.mfa_required` answer of `POST /auth/login`.
    #[validate(length(max = crate::limits::TOKEN))]
    #[schema(max_length = 512)]
    challenge: String,
    /// A code from the authenticator.
    #[validate(length(max = CODE_MAX))]
    #[schema(max_length = 64)]
    code: Option<String>,
    /// Or one of the recovery codes (single use).
    #[validate(length(max = CODE_MAX))]
    #[schema(max_length = 64)]
    recovery_code: Option<String>,
    /// Browser apps, when `auth.cookie_sessions` is on: the refresh token goes in an
    /// `HttpOnly` cookie instead of the body.
    #[serde(default)]
    cookie: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/totp",
    tag = "auth",
    operation_id = "enrol_totp",
    summary = "Start enrolling an authenticator app (needs a recent sign-in)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The secret, shown once; confirm it with a first code.", body = EnrolmentView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn enrol(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let enrolment = identity.for_caller(&caller).enrol_totp().await?;
    Ok(HttpResponse::Ok().json(EnrolmentView {
        secret: enrolment.secret,
        otpauth_uri: enrolment.otpauth_uri,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/totp/confirm",
    tag = "auth",
    operation_id = "confirm_totp",
    summary = "Turn the enrolled authenticator on with a first code; returns recovery codes",
    request_body = CodeBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "On; the recovery codes are shown once.", body = RecoveryCodesView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn confirm(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let codes = counted(
        "mfa_enable",
        identity.for_caller(&caller).confirm_totp(&body.code).await,
    )?;
    Ok(HttpResponse::Ok().json(RecoveryCodesView {
        recovery_codes: codes,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/auth/mfa/totp",
    tag = "auth",
    operation_id = "disable_totp",
    summary = "Turn the second factor off (needs the current password)",
    request_body = PasswordBody,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Off; sign-in needs the password alone."),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 409, response = crate::openapi::Conflict),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn disable(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    ValidatedJson(body): ValidatedJson<PasswordBody>,
) -> Result<HttpResponse, ApiError> {
    counted(
        "mfa_disable",
        identity
            .for_caller(&caller)
            .disable_totp(&body.password)
            .await,
    )?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/recovery-codes",
    tag = "auth",
    operation_id = "regenerate_recovery_codes",
    summary = "Replace the recovery codes (needs a recent sign-in)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "New codes, shown once; the old ones stop working.", body = RecoveryCodesView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn recovery_codes(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    let codes = identity
        .for_caller(&caller)
        .regenerate_recovery_codes()
        .await?;
    Ok(HttpResponse::Ok().json(RecoveryCodesView {
        recovery_codes: codes,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/mfa/verify",
    tag = "auth",
    operation_id = "verify_mfa",
    summary = "Second sign-in step: the challenge and a code (or a recovery code)",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "Signed in.", body = super::sessions::TokensView),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 422, response = crate::openapi::ValidationFailed),
        (status = 429, response = crate::openapi::TooManyRequests),
    )
)]
async fn verify(
    Caller(caller): Caller,
    identity: web::Data<Identity>,
    cookies: web::Data<super::cookies::CookieSessions>,
    ValidatedJson(body): ValidatedJson<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    if body.cookie {
        cookies.require("cookie")?;
    }
    let answer = match (body.code, body.recovery_code) {
        (Some(code), None) => SecondFactor::Code(code),
        (None, Some(code)) => SecondFactor::RecoveryCode(code),
        _ => {
            return Err(ApiError::Domain(keel_kernel::DomainError::invalid(
                "code",
                "one_of",
                "send exactly one of `code` and `recovery_code`",
            )));
        }
    };
    let tokens = counted(
        "mfa_verify",
        identity
            .for_caller(&caller)
            .verify_mfa(&body.challenge, answer)
            .await,
    )?;
    Ok(super::sessions::signed_in(&cookies, body.cookie, tokens))
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{id}/mfa",
    tag = "users",
    operation_id = "reset_user_mfa",
    summary = "Reset an account's second factor (it signs in with its password alone)",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Reset."),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
async fn reset(
    Caller(caller): Caller,
    IdPath(id): IdPath<UserId>,
    identity: web::Data<Identity>,
) -> Result<HttpResponse, ApiError> {
    identity.for_caller(&caller).reset_mfa(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the MFA routes; the unauthenticated step is rate limited per IP.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/auth/mfa/totp")
            .route(web::post().to(enrol))
            .route(web::delete().to(disable)),
    )
    .service(web::resource("/auth/mfa/totp/confirm").route(web::post().to(confirm)))
    .service(web::resource("/auth/mfa/recovery-codes").route(web::post().to(recovery_codes)))
    .service(limited("/auth/mfa/verify", web::post().to(verify)))
    .service(web::resource("/users/{id}/mfa").route(web::delete().to(reset)));
}

/// The OpenAPI document of the MFA routes.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(enrol, confirm, disable, recovery_codes, verify, reset))]
pub(super) struct MfaDoc;
