//! `POST /api/v1/webhooks/{source}`: a Standard Webhooks receiver. The signature (any of the
//! source's secrets) and the 5-minute timestamp tolerance are checked here, on the raw body,
//! before anything is parsed; the domain stores the receipt and the job in one transaction.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_config::Settings;
use keel_kernel::DomainError;
use keel_webhooks::{InboundWebhook, Receipt, Webhooks};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use standardwebhooks::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook, WebhookError,
};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::origin;

/// How far `webhook-timestamp` may be from now, either way (the Standard Webhooks tolerance).
const TOLERANCE_SECS: u64 = 5 * 60;

/// `webhooks_received_total{source,outcome}`: every delivery, by what became of it.
pub const WEBHOOKS_RECEIVED_TOTAL: &str = "webhooks_received_total";

/// The configured sources and their signing keys (`webhooks.inbound.<source>.secrets`).
pub struct InboundSecrets {
    keys: BTreeMap<String, Vec<Webhook>>,
}

impl std::fmt::Debug for InboundSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSecrets")
            .field("sources", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl InboundSecrets {
    /// The keys of every configured source (configuration validation already refused
    /// secrets that do not decode).
    pub fn new(settings: &Settings) -> Self {
        let keys = settings
            .webhooks
            .inbound
            .iter()
            .map(|(source, inbound)| {
                let keys = inbound
                    .secrets
                    .iter()
                    .filter_map(|s| keel_config::webhook_secret_bytes(s.expose_secret()))
                    .filter_map(|key| Webhook::from_bytes(key).ok())
                    .collect();
                (source.clone(), keys)
            })
            .collect();
        Self { keys }
    }

    /// Checks the delivery against every secret of `source`: the first that verifies wins.
    fn verify(&self, source: &str, body: &[u8], headers: &http::HeaderMap) -> Result<(), Refusal> {
        let keys = self.keys.get(source).ok_or(Refusal::UnknownSource)?;
        // Every header present before any is judged: a missing one is named, whatever else.
        for (name, short) in [
            (HEADER_WEBHOOK_ID, "id"),
            (HEADER_WEBHOOK_TIMESTAMP, "timestamp"),
            (HEADER_WEBHOOK_SIGNATURE, "signature"),
        ] {
            if headers.get(name).is_none() {
                return Err(Refusal::BadHeader(short));
            }
        }
        // The timestamp first, by Keel: an extreme value must not reach arithmetic elsewhere.
        let signed_at = headers
            .get(HEADER_WEBHOOK_TIMESTAMP)
            .ok_or(Refusal::BadHeader("timestamp"))?
            .to_str()
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or(Refusal::BadHeader("timestamp"))?;
        if Utc::now().timestamp().abs_diff(signed_at) > TOLERANCE_SECS {
            return Err(Refusal::OutOfTolerance);
        }
        let mut last = Refusal::BadSignature;
        for key in keys {
            match key.verify(body, headers) {
                Ok(()) => return Ok(()),
                Err(WebhookError::InvalidSignature) => last = Refusal::BadSignature,
                Err(other) => return Err(Refusal::from(other)),
            }
        }
        Err(last)
    }
}

/// Why a delivery was refused before its payload was read.
#[derive(Debug)]
enum Refusal {
    UnknownSource,
    BadSignature,
    OutOfTolerance,
    BadHeader(&'static str),
    NotText,
}

impl From<WebhookError> for Refusal {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError => {
                Self::OutOfTolerance
            }
            WebhookError::MissingHeader(name) | WebhookError::InvalidHeader(name) => {
                Self::BadHeader(name)
            }
            WebhookError::InvalidTimestamp => Self::BadHeader("timestamp"),
            WebhookError::InvalidPayload => Self::NotText,
            WebhookError::InvalidSignature | WebhookError::InvalidSecret(_) => Self::BadSignature,
        }
    }
}

impl Refusal {
    fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::BadSignature => "bad_signature",
            Self::OutOfTolerance => "out_of_tolerance",
            Self::BadHeader(_) | Self::NotText => "malformed",
        }
    }

    fn into_error(self) -> ApiError {
        ApiError::Domain(match self {
            Self::UnknownSource => DomainError::NotFound {
                resource: "webhook source",
            },
            Self::BadSignature => DomainError::InvalidCredentials {
                code: "webhook.signature_invalid",
                message: "no configured secret of this source signed this delivery",
            },
            Self::OutOfTolerance => DomainError::InvalidCredentials {
                code: "webhook.timestamp_out_of_tolerance",
                message: "webhook-timestamp is more than 5 minutes away from now; a late delivery must be re-signed",
            },
            Self::BadHeader(name) => DomainError::invalid(
                format!("webhook-{name}"),
                "format",
                format!("the webhook-{name} header is missing or malformed"),
            ),
            Self::NotText => {
                DomainError::invalid("body", "format", "the signed body must be UTF-8 JSON")
            }
        })
    }
}

/// The payload every Standard Webhooks sender uses.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = InboundWebhookPayload, example = json!({
    "type": "user.created",
    "timestamp": "2026-12-02T09:30:00Z",
    "data": { "id": "usr_123", "email": "ada@example.com", "name": "Ada", "email_verified": true }
}))]
struct Payload {
    /// The event type, such as `user.created`.
    #[serde(rename = "type")]
    event_type: String,
    /// When the event happened (RFC 3339); the signed `webhook-timestamp` when absent.
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    /// The event's data.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// What became of a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebhookReceipt)]
struct ReceiptBody {
    /// `accepted` (the first time: it will be processed) or `duplicate` (seen before: not
    /// processed again).
    status: &'static str,
}

/// The three Standard Webhooks headers, as the verifier reads them.
fn signed_headers(req: &HttpRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in [
        HEADER_WEBHOOK_ID,
        HEADER_WEBHOOK_TIMESTAMP,
        HEADER_WEBHOOK_SIGNATURE,
    ] {
        if let Some(value) = req.headers().get(name)
            && let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes())
        {
            headers.insert(name, value);
        }
    }
    headers
}

fn count(source: &str, outcome: &'static str, known: bool) {
    // Only configured names become labels: an attacker choosing paths cannot grow the series.
    let source = if known {
        source.to_owned()
    } else {
        "unknown".to_owned()
    };
    metrics::counter!(WEBHOOKS_RECEIVED_TOTAL, "source" => source, "outcome" => outcome)
        .increment(1);
}

/// Receive a signed webhook
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{source}",
    tag = "webhooks",
    operation_id = "receive_webhook",
    description = "A Standard Webhooks receiver for a source configured in `webhooks.inbound.<source>`. The body is checked against the `webhook-signature` header with each of the source's secrets, and `webhook-timestamp` must be within 5 minutes of now. A delivery is processed once per `webhook-id`: the first answers 202, every repeat 200 with `duplicate`. Processing happens in a job (`webhooks.process_inbound`).",
    params(
        ("source" = String, Path, description = "The configured source name"),
        ("webhook-id" = String, Header, description = "The sender's message id (the same for every retry)"),
        ("webhook-timestamp" = i64, Header, description = "Unix seconds when it was signed"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64 HMAC-SHA256>` signatures"),
    ),
    request_body(content = Payload, content_type = "application/json"),
    security(()),
    responses(
        (status = 200, description = "Seen before: acknowledged, not processed again.", body = ReceiptBody),
        (status = 202, description = "Accepted: a job will process it.", body = ReceiptBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, description = "The signature matches no secret of the source (`webhook.signature_invalid`), or the timestamp is more than 5 minutes off (`webhook.timestamp_out_of_tolerance`).", body = crate::openapi::ProblemDoc, content_type = "application/problem+json"),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
async fn receive(
    req: HttpRequest,
    source: web::Path<String>,
    body: web::Bytes,
    secrets: web::Data<InboundSecrets>,
    webhooks: web::Data<Webhooks>,
) -> Result<HttpResponse, ApiError> {
    let source = source.into_inner();
    let headers = signed_headers(&req);
    if let Err(refusal) = secrets.verify(&source, &body, &headers) {
        let known = !matches!(refusal, Refusal::UnknownSource);
        count(&source, refusal.outcome(), known);
        if !matches!(refusal, Refusal::UnknownSource | Refusal::BadHeader(_)) {
            tracing::warn!(%source, outcome = refusal.outcome(), "webhook refused");
        }
        return Err(refusal.into_error());
    }
    // Signed, so the sender is who it claims: from here a bad payload is its bug, named.
    let payload: Payload = serde_json::from_slice(&body).map_err(|e| {
        count(&source, "malformed", true);
        ApiError::Domain(DomainError::invalid(
            "body",
            "format",
            format!("must be a JSON object with `type` and `data`: {e}"),
        ))
    })?;
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signed_at = header(HEADER_WEBHOOK_TIMESTAMP)
        .parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(Utc::now);
    let webhook = InboundWebhook {
        source: source.clone(),
        webhook_id: header(HEADER_WEBHOOK_ID).to_owned(),
        event_type: payload.event_type,
        // The sender's own time orders events. A retry is signed anew, so the signed time
        // says nothing of when the event happened; only a time ahead of it is capped (a
        // far-future value would make every later event look stale).
        occurred_at: payload.timestamp.map_or(signed_at, |at| {
            at.min(signed_at + chrono::Duration::seconds(300))
        }),
        data: payload.data,
    };
    let receipt = webhooks
        .receive(webhook, &origin(&req))
        .await
        .inspect_err(|_| {
            count(&source, "rejected", true);
        })?;
    Ok(match receipt {
        Receipt::Accepted { job } => {
            count(&source, "accepted", true);
            tracing::info!(%source, %job, "webhook accepted");
            HttpResponse::Accepted().json(ReceiptBody { status: "accepted" })
        }
        Receipt::Duplicate => {
            count(&source, "duplicate", true);
            HttpResponse::Ok().json(ReceiptBody {
                status: "duplicate",
            })
        }
    })
}

/// Registers the receiver.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/{source}").route(web::post().to(receive)));
}

/// The receiver's OpenAPI operations.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(receive), components(schemas(Payload, ReceiptBody)))]
pub struct InboundDoc;
