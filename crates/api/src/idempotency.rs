//! `Idempotency-Key` on POSTs that create or start something (Stripe's semantics): a client
//! that retries after a lost response, a timeout or a killed server gets the first answer
//! again, marked `Idempotent-Replayed: true`, instead of a second project, job or grant.
//!
//! Per caller (the authenticated user, or the client address when anonymous) and key, for 24
//! hours: the same method, path and body replay the stored 2xx answer; another request under a
//! used key is 422; a repeat while the first is still running is 409. Only successful answers
//! are kept: after a 4xx or 5xx the key is free again, so a corrected retry runs. Sign-in and
//! API-key creation are left out: their answers are credentials, which are never stored.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpResponse, web};
use keel_kernel::DomainError;
use keel_kernel::idempotency::{
    Claim, IdempotencyStore, MAX_KEY_LEN, MAX_STORED_BODY, StoredResponse, valid_key,
};
use sha2::{Digest, Sha256};

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::Caller;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Response headers worth replaying with a stored body.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// Where keys are kept, registered as app data.
#[derive(Debug, Clone)]
pub struct Idempotency(pub Arc<dyn IdempotencyStore>);

/// Paths whose answers carry credentials (tokens, a new API key's secret): never stored.
fn excluded(path: &str) -> bool {
    ["/auth/", "/api-keys"]
        .iter()
        .any(|prefix| path.starts_with(&format!("{API_PREFIX}{prefix}")))
}

fn invalid_key() -> ApiError {
    ApiError::invalid(
        "Idempotency-Key",
        "invalid_key",
        format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters, e.g. a UUID"),
    )
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn replay(stored: StoredResponse) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(stored.status)
        .unwrap_or(actix_web::http::StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.insert_header((name, value));
        }
    }
    response.insert_header((HeaderName::from_static(REPLAYED), "true"));
    response.body(stored.body)
}

/// The middleware: wraps the `/api/v1` scope.
pub async fn idempotent<B>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let store = req.app_data::<web::Data<Idempotency>>().cloned();
    let (Some(store), true) = (store, req.method() == Method::POST && !excluded(req.path())) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|key| valid_key(key))
        .ok_or_else(invalid_key)?
        .to_owned();

    // Keys belong to who asks: the same key from two users is two keys. The authenticated
    // caller is kept for the handler, which then does not authenticate again.
    let caller = Caller::from_request(req.request(), &mut Payload::None).await?;
    let scope = match caller.0.actor.user_id() {
        Some(user) => format!("user:{user}"),
        None => format!(
            "ip:{}",
            crate::ratelimit::client_bucket(crate::extract::client_ip(req.request()))
        ),
    };
    req.extensions_mut().insert(caller);
    let body = req.extract::<web::Bytes>().await?;
    req.set_payload(Payload::from(body.clone()));
    let print = fingerprint(req.method(), req.path(), &body);

    let now = chrono::Utc::now();
    let claim = store
        .0
        .claim(&scope, &key, &print, now)
        .await
        .map_err(|e| ApiError::Domain(e.into()))?;
    match claim {
        Claim::Mismatch => Err(ApiError::Domain(DomainError::invalid(
            "Idempotency-Key",
            "key_reused",
            "was already used for a different request; use a new key for a new request",
        ))
        .into()),
        Claim::InProgress => Err(ApiError::Domain(DomainError::Conflict {
            code: "idempotency.in_progress",
            message: "a request with this Idempotency-Key is still running; retry shortly"
                .to_owned(),
            field: None,
        })
        .into()),
        Claim::Completed(stored) => Ok(req.into_response(replay(stored))),
        Claim::Started => {
            let response = match next.call(req).await {
                Ok(response) => response,
                Err(error) => {
                    let _ = store.0.release(&scope, &key).await;
                    return Err(error);
                }
            };
            if !response.status().is_success() {
                let _ = store.0.release(&scope, &key).await;
                return Ok(response.map_into_boxed_body());
            }
            let (request, response) = response.into_parts();
            let status = response.status();
            let headers: Vec<(String, String)> = KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = response.headers().get(name)?.to_str().ok()?;
                    Some((name.as_str().to_owned(), value.to_owned()))
                })
                .collect();
            let (head, body) = response.into_parts();
            let bytes = match actix_web::body::to_bytes_limited(body, MAX_STORED_BODY).await {
                Ok(Ok(bytes)) => bytes,
                _ => {
                    // Too large to keep (or unreadable): the answer is gone for a replay, so
                    // the key is freed rather than pointing at nothing.
                    let _ = store.0.release(&scope, &key).await;
                    return Ok(ServiceResponse::new(
                        request,
                        head.set_body(BoxBody::new(web::Bytes::new())),
                    ));
                }
            };
            let stored = StoredResponse {
                status: status.as_u16(),
                headers,
                body: bytes.to_vec(),
            };
            if let Err(error) = store.0.complete(&scope, &key, &stored).await {
                tracing::warn!(%error, "storing an idempotent answer failed; its key is released");
                let _ = store.0.release(&scope, &key).await;
            }
            Ok(ServiceResponse::new(
                request,
                head.set_body(BoxBody::new(bytes)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_stored_and_fingerprints_tell_requests_apart() {
        assert!(excluded("/api/v1/auth/login"));
        assert!(excluded("/api/v1/api-keys"));
        assert!(!excluded("/api/v1/projects"));
        let a = fingerprint(&Method::POST, "/api/v1/projects", b"{\"name\":\"A\"}");
        assert_eq!(a.len(), 64);
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/api/v1/projects", b"{\"name\":\"B\"}")
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/api/v1/projects/bulk", b"{\"name\":\"A\"}")
        );
    }
}
