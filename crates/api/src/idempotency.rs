//! `Idempotency-Key` on POSTs that create or start something (Stripe's semantics): a client
//! that retries after a lost response, a timeout or a killed server gets the first answer
//! again, marked `Idempotent-Replayed: true`, instead of a second project, job or grant.
//!
//! Per credential (a user's sessions, or one API key) and key, for 24 hours: the same method, path and body replay the stored 2xx answer; another request under a
//! used key is 422; a repeat while the first is still running is 409. Only successful answers
//! are kept: after a 4xx or 5xx the key is free again, so a corrected retry runs. Sign-in and
//! API-key creation are left out: their answers are credentials, which are never stored.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpResponse, web};
use futures_util::StreamExt as _;
use keel_kernel::idempotency::{
    Claim, IdempotencyStore, LEASE, MAX_KEY_LEN, MAX_STORED_BODY, StoredResponse, valid_key,
};
use keel_kernel::{Actor, DomainError, RepoError, Transaction, UnitOfWork};
use sha2::{Digest, Sha256};

use crate::API_PREFIX;
use crate::error::ApiError;
use crate::extract::{BodyLimit, Caller};
use crate::middleware::RequestTimeout;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Response headers worth replaying with a stored body.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

tokio::task_local! {
    /// The claim of the request being handled on this task, if it carries a key.
    static ACTIVE_CLAIM: ActiveClaim;
}

/// The claim a running request holds.
#[derive(Debug, Clone)]
struct ActiveClaim {
    store: Arc<dyn IdempotencyStore>,
    scope: String,
    key: String,
    token: String,
}

/// A unit of work that, inside a request holding an idempotency claim, marks the claim as
/// committed in every transaction it commits, just before the commit: the mark commits exactly
/// when the effect does, and the claim's row is locked only for that moment. Outside such a
/// request it is the unit of work it wraps.
///
/// The rule this relies on: a use case's effects are written through a transaction of the unit
/// of work, begun on the request's own task (not in a spawned task).
#[derive(Debug)]
pub struct MarkingUnitOfWork(pub Arc<dyn UnitOfWork>);

#[async_trait::async_trait]
impl UnitOfWork for MarkingUnitOfWork {
    async fn begin(&self) -> Result<Box<dyn Transaction>, RepoError> {
        let inner = self.0.begin().await?;
        Ok(match ACTIVE_CLAIM.try_with(Clone::clone) {
            Ok(claim) => Box::new(MarkingTransaction { inner, claim }),
            Err(_) => inner,
        })
    }
}

/// A transaction that marks its request's claim when it commits.
struct MarkingTransaction {
    inner: Box<dyn Transaction>,
    claim: ActiveClaim,
}

impl std::fmt::Debug for MarkingTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkingTransaction")
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Transaction for MarkingTransaction {
    async fn commit(mut self: Box<Self>) -> Result<(), RepoError> {
        let claim = &self.claim;
        // Fails (and so rolls the effect back) when the claim is no longer this request's.
        claim
            .store
            .mark_committed(self.inner.as_mut(), &claim.scope, &claim.key, &claim.token)
            .await?;
        self.inner.commit().await
    }

    // Repositories look through to the storage's own transaction.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self.inner.as_any_mut()
    }
}

/// Where keys are kept, registered as app data.
#[derive(Debug, Clone)]
pub struct Idempotency(pub Arc<dyn IdempotencyStore>);

/// Whether a route's answers may be stored and replayed: not sign-in and recovery, not API-key
/// creation (their answers are credentials, never stored). Decided on the route template the
/// router matched, so an encoded path cannot sneak past.
pub fn replayable(route: &str) -> bool {
    // Uploads stream to storage: holding a whole file in memory to fingerprint it would undo
    // that, so they are never replayed.
    !["/auth/", "/api-keys"]
        .iter()
        .any(|prefix| route.starts_with(&format!("{API_PREFIX}{prefix}")))
        && !route.ends_with("/attachments")
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

/// Reads the raw request body (still encoded, as the client sent it) up to `limit` bytes.
async fn raw_body(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|_| ApiError::BadRequest("the request body could not be read".to_owned()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The middleware: wraps the `/api/v1` scope.
pub async fn idempotent<B>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let pass = |req, next: Next<B>| async move {
        Ok::<_, actix_web::Error>(next.call(req).await?.map_into_boxed_body())
    };
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return pass(req, next).await;
    };
    let store = req.app_data::<web::Data<Idempotency>>().cloned();
    let route = req.match_pattern();
    let (Some(store), Some(route)) = (store, route) else {
        return pass(req, next).await;
    };
    if req.method() != Method::POST || !replayable(&route) {
        return pass(req, next).await;
    }
    let key = raw
        .to_str()
        .ok()
        .filter(|key| valid_key(key))
        .ok_or_else(invalid_key)?
        .to_owned();

    // Keys belong to the credential that asks: a user's session, or one of their API keys
    // (whose narrower scopes must not replay what a session did). Anonymous requests are
    // never replayed: every route that creates something needs a caller, and clients behind
    // one address must not share keys. The caller is kept for the handler.
    let caller = Caller::from_request(req.request(), &mut Payload::None).await?;
    let scope = match &caller.0.actor {
        Actor::ApiKey { id, .. } => format!("api_key:{id}"),
        Actor::User { id, .. } | Actor::Federated { id, .. } => format!("user:{id}"),
        _ => {
            req.extensions_mut().insert(caller);
            return pass(req, next).await;
        }
    };
    req.extensions_mut().insert(caller);
    let limit = req.app_data::<BodyLimit>().map_or(256 * 1024, |l| l.0);
    let body = raw_body(&mut req, limit).await?;
    req.set_payload(Payload::from(body.clone()));
    // The concrete path, not the template: restoring project A and project B are two requests.
    let print = fingerprint(req.method(), req.path(), &body);
    // Longer than any request may run, so a slow original is never taken over while alive.
    let lease = LEASE
        + req
            .app_data::<RequestTimeout>()
            .map_or(Duration::from_secs(30), |t| t.0);

    let claim = store
        .0
        .claim(&scope, &key, &print, chrono::Utc::now(), lease)
        .await
        .map_err(|e| ApiError::Domain(e.into()))?;
    let token = match claim {
        Claim::Mismatch => {
            return Err(ApiError::Domain(DomainError::invalid(
                "Idempotency-Key",
                "key_reused",
                "was already used for a different request; use a new key for a new request",
            ))
            .into());
        }
        Claim::InProgress => {
            return Err(ApiError::Domain(DomainError::Conflict {
                code: "idempotency.in_progress",
                message: "a request with this Idempotency-Key is still running; retry shortly"
                    .to_owned(),
                field: None,
            })
            .into());
        }
        Claim::AnswerLost => {
            return Err(ApiError::Domain(DomainError::Conflict {
                code: "idempotency.answer_lost",
                message: "the first request with this Idempotency-Key took effect, but its answer was lost when the server stopped; it will not run again: read the result instead (e.g. list the resource)"
                    .to_owned(),
                field: None,
            })
            .into());
        }
        Claim::Completed(stored) => return Ok(req.into_response(replay(stored))),
        Claim::Started(token) => token,
    };
    // A request cut off by the timeout or a dropped connection keeps its claim until the
    // lease ends: it may have committed, and a retry meanwhile gets 409, not a duplicate.
    // Every transaction the request commits marks the claim as committed within itself
    // ([`MarkingUnitOfWork`]), so a crash after the commit never lets a retry run it again.
    let claim = ActiveClaim {
        store: Arc::clone(&store.0),
        scope: scope.clone(),
        key: key.clone(),
        token: token.clone(),
    };
    let response = ACTIVE_CLAIM.scope(claim, next.call(req)).await?;
    if !response.status().is_success() {
        // Refused or failed: a retry may run again, unless something committed meanwhile (the
        // store keeps a claim marked `committed`).
        let _ = store.0.release(&scope, &key, &token).await;
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
    let small = matches!(body.size(), BodySize::Sized(n) if usize::try_from(n).is_ok_and(|n| n <= MAX_STORED_BODY));
    if !small {
        // Too large (or streamed) to keep: served as is; the claim stays until the lease ends.
        tracing::warn!(
            "an idempotent answer is too large to store; retries get 409 until the lease ends"
        );
        return Ok(ServiceResponse::new(
            request,
            head.set_body(body).map_into_boxed_body(),
        ));
    }
    let bytes = actix_web::body::to_bytes(body).await.map_err(|_| {
        ApiError::Domain(DomainError::internal(
            "reading the answer to store it failed",
        ))
    })?;
    let stored = StoredResponse {
        status: status.as_u16(),
        headers,
        body: bytes.to_vec(),
    };
    if let Err(error) = store.0.complete(&scope, &key, &token, &stored).await {
        // The effect happened: keep the claim (retries get 409 until the lease ends) rather
        // than free it for a duplicate.
        tracing::warn!(%error, "storing an idempotent answer failed");
    }
    Ok(ServiceResponse::new(
        request,
        head.set_body(BoxBody::new(bytes)),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use keel_kernel::idempotency::{Claim, StoredResponse};
    use keel_kernel::repo::InMemoryUnitOfWork;

    use super::*;

    /// Records which claims were marked.
    #[derive(Debug, Default)]
    struct Marks(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl IdempotencyStore for Marks {
        async fn claim(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: chrono::DateTime<chrono::Utc>,
            _: Duration,
        ) -> Result<Claim, RepoError> {
            Ok(Claim::InProgress)
        }
        async fn complete(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &StoredResponse,
        ) -> Result<(), RepoError> {
            Ok(())
        }
        async fn mark_committed(
            &self,
            _: &mut dyn Transaction,
            scope: &str,
            key: &str,
            token: &str,
        ) -> Result<(), RepoError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{scope}/{key}/{token}"));
            Ok(())
        }
        async fn release(&self, _: &str, _: &str, _: &str) -> Result<(), RepoError> {
            Ok(())
        }
        async fn purge(&self, _: chrono::DateTime<chrono::Utc>) -> Result<u64, RepoError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn committed_transactions_of_a_request_with_a_key_mark_its_claim_and_no_others_do() {
        let marks = Arc::new(Marks::default());
        let unit_of_work = MarkingUnitOfWork(Arc::new(InMemoryUnitOfWork));
        unit_of_work.begin().await.unwrap().commit().await.unwrap();
        assert!(marks.0.lock().unwrap().is_empty());
        let claim = ActiveClaim {
            store: marks.clone(),
            scope: "user:a".into(),
            key: "k".into(),
            token: "t1".into(),
        };
        ACTIVE_CLAIM
            .scope(claim, async {
                let mut first = unit_of_work.begin().await.unwrap();
                // Repositories still reach the storage's own transaction.
                assert!(
                    first
                        .as_any_mut()
                        .downcast_mut::<keel_kernel::repo::InMemoryTransaction>()
                        .is_some()
                );
                // Nothing is marked before the commit, nor by a rolled-back transaction.
                assert!(marks.0.lock().unwrap().is_empty());
                drop(unit_of_work.begin().await.unwrap());
                first.commit().await.unwrap();
                unit_of_work.begin().await.unwrap().commit().await.unwrap();
            })
            .await;
        unit_of_work.begin().await.unwrap().commit().await.unwrap();
        assert_eq!(*marks.0.lock().unwrap(), ["user:a/k/t1", "user:a/k/t1"]);
    }

    #[test]
    fn credentials_are_never_stored_and_fingerprints_tell_requests_apart() {
        assert!(!replayable("/api/v1/auth/login"));
        assert!(!replayable("/api/v1/api-keys"));
        assert!(replayable("/api/v1/projects"));
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
