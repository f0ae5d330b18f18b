//! Outbound webhooks: endpoints and deliveries in the database, signing secrets derived under
//! the peppers, and the sender that refuses private targets whatever DNS says.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use keel_kernel::{RepoError, Transaction, UserId};
use keel_webhooks::outbound::{
    Delivery, DeliveryAttempt, DeliveryId, DeliveryRepository, DeliveryState, Endpoint, EndpointId,
    EndpointRepository, EventId, OutboundEvent, OutboundRequest, SendOutcome, SigningKeys,
    WebhookSender, is_public,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

/// The sea-orm entities of outbound webhooks.
pub mod entities {
    /// `webhook_endpoints`.
    pub mod endpoints {
        use sea_orm::entity::prelude::*;

        /// One endpoint.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "webhook_endpoints")]
        pub struct Model {
            /// Primary key.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Target.
            pub url: String,
            /// Followed event types, as a JSON array.
            #[sea_orm(column_type = "Text")]
            pub events: String,
            /// What it is for.
            pub description: Option<String>,
            /// The pepper of its secret.
            pub pepper_id: String,
            /// The seed of its secret.
            pub seed: String,
            /// Creator.
            pub created_by: Option<Uuid>,
            /// Creation time.
            pub created_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `webhook_deliveries`.
    pub mod deliveries {
        use sea_orm::entity::prelude::*;

        /// One delivery.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "webhook_deliveries")]
        pub struct Model {
            /// Primary key.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Its endpoint.
            pub endpoint_id: Uuid,
            /// The event (unique per endpoint).
            pub event_id: Uuid,
            /// The event type.
            pub event_type: String,
            /// When the event happened.
            pub occurred_at: DateTimeUtc,
            /// The event's data, as JSON.
            #[sea_orm(column_type = "Text")]
            pub data: String,
            /// `pending`, `succeeded`, `failed` or `cancelled`.
            pub state: String,
            /// Creation time.
            pub created_at: DateTimeUtc,
            /// Last change.
            pub updated_at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// `webhook_delivery_attempts`.
    pub mod attempts {
        use sea_orm::entity::prelude::*;

        /// One attempt.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "webhook_delivery_attempts")]
        pub struct Model {
            /// Primary key.
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: Uuid,
            /// Its delivery.
            pub delivery_id: Uuid,
            /// 1-based.
            pub attempt: i32,
            /// The answer's status.
            pub status: Option<i32>,
            /// Why it failed.
            #[sea_orm(column_type = "Text", nullable)]
            pub error: Option<String>,
            /// How long it took.
            pub latency_ms: i64,
            /// When.
            pub at: DateTimeUtc,
        }

        /// No relations declared.
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entities::{attempts, deliveries, endpoints};

fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored {what} is invalid: {detail}").into())
}

fn endpoint_from(model: endpoints::Model) -> Result<Endpoint, RepoError> {
    Ok(Endpoint {
        id: EndpointId::from_uuid(model.id),
        url: model.url,
        events: serde_json::from_str(&model.events).map_err(|e| corrupt("endpoint events", e))?,
        description: model.description,
        pepper_id: model.pepper_id,
        seed: model.seed,
        created_by: model.created_by.map(UserId::from_uuid),
        created_at: model.created_at,
    })
}

/// Endpoints and deliveries on a sea-orm pool.
#[derive(Debug, Clone)]
pub struct SeaOutbound {
    db: DatabaseConnection,
}

impl SeaOutbound {
    /// The store on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn attempts_of(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<BTreeMap<uuid::Uuid, Vec<DeliveryAttempt>>, RepoError> {
        let mut by_delivery: BTreeMap<uuid::Uuid, Vec<DeliveryAttempt>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(by_delivery);
        }
        let rows = attempts::Entity::find()
            .filter(attempts::Column::DeliveryId.is_in(ids.iter().copied()))
            .order_by_asc(attempts::Column::Attempt)
            .all(&self.db)
            .await
            .map_err(repo_err)?;
        for row in rows {
            by_delivery
                .entry(row.delivery_id)
                .or_default()
                .push(DeliveryAttempt {
                    attempt: u32::try_from(row.attempt).unwrap_or(0),
                    status: row.status.and_then(|s| u16::try_from(s).ok()),
                    error: row.error,
                    latency_ms: u64::try_from(row.latency_ms).unwrap_or(0),
                    at: row.at,
                });
        }
        Ok(by_delivery)
    }

    fn delivery_from(
        model: deliveries::Model,
        attempts: Vec<DeliveryAttempt>,
    ) -> Result<Delivery, RepoError> {
        Ok(Delivery {
            id: DeliveryId::from_uuid(model.id),
            endpoint_id: EndpointId::from_uuid(model.endpoint_id),
            event: OutboundEvent {
                id: EventId::from_uuid(model.event_id),
                event_type: model.event_type,
                occurred_at: model.occurred_at,
                data: serde_json::from_str(&model.data).map_err(|e| corrupt("delivery data", e))?,
            },
            state: DeliveryState::parse(&model.state)
                .ok_or_else(|| corrupt("delivery state", &model.state))?,
            attempts,
            created_at: model.created_at,
            updated_at: model.updated_at,
        })
    }
}

/// The readable rows: one that does not read (hand-edited) is logged and skipped, since
/// every write consults this list and must not fail for it.
fn readable(rows: Vec<endpoints::Model>) -> Vec<Endpoint> {
    rows.into_iter()
        .filter_map(|row| {
            let id = row.id;
            endpoint_from(row)
                .inspect_err(
                    |error| tracing::error!(endpoint = %id, %error, "webhook endpoint skipped"),
                )
                .ok()
        })
        .collect()
}

#[async_trait]
impl EndpointRepository for SeaOutbound {
    async fn list(&self) -> Result<Vec<Endpoint>, RepoError> {
        Ok(readable(
            endpoints::Entity::find()
                .order_by_asc(endpoints::Column::CreatedAt)
                .all(&self.db)
                .await
                .map_err(repo_err)?,
        ))
    }

    async fn list_in(&self, tx: &mut dyn Transaction) -> Result<Vec<Endpoint>, RepoError> {
        Ok(readable(
            endpoints::Entity::find()
                .all(sea_txn(tx)?)
                .await
                .map_err(repo_err)?,
        ))
    }

    async fn find(&self, id: EndpointId) -> Result<Option<Endpoint>, RepoError> {
        endpoints::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(repo_err)?
            .map(endpoint_from)
            .transpose()
    }

    async fn insert(&self, tx: &mut dyn Transaction, endpoint: &Endpoint) -> Result<(), RepoError> {
        let model = endpoints::Model {
            id: endpoint.id.as_uuid(),
            url: endpoint.url.clone(),
            events: serde_json::to_string(&endpoint.events)
                .map_err(|e| RepoError::Other(e.into()))?,
            description: endpoint.description.clone(),
            pepper_id: endpoint.pepper_id.clone(),
            seed: endpoint.seed.clone(),
            created_by: endpoint.created_by.map(|id| id.as_uuid()),
            created_at: endpoint.created_at,
        };
        endpoints::Entity::insert(model.into_active_model())
            .exec_without_returning(sea_txn(tx)?)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn delete(&self, tx: &mut dyn Transaction, id: EndpointId) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        // Children first: SQLite enforces the cascade only with foreign keys switched on.
        let doomed = deliveries::Entity::find()
            .select_only()
            .column(deliveries::Column::Id)
            .filter(deliveries::Column::EndpointId.eq(id.as_uuid()))
            .into_tuple::<uuid::Uuid>()
            .all(txn)
            .await
            .map_err(repo_err)?;
        for chunk in doomed.chunks(500) {
            attempts::Entity::delete_many()
                .filter(attempts::Column::DeliveryId.is_in(chunk.iter().copied()))
                .exec(txn)
                .await
                .map_err(repo_err)?;
        }
        deliveries::Entity::delete_many()
            .filter(deliveries::Column::EndpointId.eq(id.as_uuid()))
            .exec(txn)
            .await
            .map_err(repo_err)?;
        Ok(endpoints::Entity::delete_by_id(id.as_uuid())
            .exec(txn)
            .await
            .map_err(repo_err)?
            .rows_affected
            > 0)
    }
}

#[async_trait]
impl DeliveryRepository for SeaOutbound {
    async fn insert(
        &self,
        tx: &mut dyn Transaction,
        delivery: &Delivery,
    ) -> Result<bool, RepoError> {
        let model = deliveries::Model {
            id: delivery.id.as_uuid(),
            endpoint_id: delivery.endpoint_id.as_uuid(),
            event_id: delivery.event.id.as_uuid(),
            event_type: delivery.event.event_type.clone(),
            occurred_at: delivery.event.occurred_at,
            data: delivery.event.data.to_string(),
            state: delivery.state.as_str().to_owned(),
            created_at: delivery.created_at,
            updated_at: delivery.updated_at,
        };
        let inserted = deliveries::Entity::insert(model.into_active_model())
            .on_conflict_do_nothing_on([
                deliveries::Column::EndpointId,
                deliveries::Column::EventId,
            ])
            .exec_without_returning(sea_txn(tx)?)
            .await
            .map_err(repo_err)?;
        Ok(matches!(inserted, sea_orm::TryInsertResult::Inserted(1)))
    }

    async fn find(&self, id: DeliveryId) -> Result<Option<Delivery>, RepoError> {
        let Some(model) = deliveries::Entity::find_by_id(id.as_uuid())
            .one(&self.db)
            .await
            .map_err(repo_err)?
        else {
            return Ok(None);
        };
        let mut attempts = self.attempts_of(&[model.id]).await?;
        let mine = attempts.remove(&model.id).unwrap_or_default();
        Self::delivery_from(model, mine).map(Some)
    }

    async fn list_for(&self, endpoint: EndpointId, limit: u64) -> Result<Vec<Delivery>, RepoError> {
        let rows = deliveries::Entity::find()
            .filter(deliveries::Column::EndpointId.eq(endpoint.as_uuid()))
            .order_by_desc(deliveries::Column::CreatedAt)
            .order_by_desc(deliveries::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(repo_err)?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let mut attempts = self.attempts_of(&ids).await?;
        rows.into_iter()
            .map(|row| {
                let mine = attempts.remove(&row.id).unwrap_or_default();
                Self::delivery_from(row, mine)
            })
            .collect()
    }

    async fn record_attempt(
        &self,
        id: DeliveryId,
        attempt: &DeliveryAttempt,
        state: DeliveryState,
    ) -> Result<(), RepoError> {
        let row = attempts::Model {
            id: uuid::Uuid::now_v7(),
            delivery_id: id.as_uuid(),
            attempt: i32::try_from(attempt.attempt).unwrap_or(i32::MAX),
            status: attempt.status.map(i32::from),
            error: attempt
                .error
                .as_deref()
                .map(|e| e.chars().take(1000).collect()),
            latency_ms: i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX),
            at: attempt.at,
        };
        let db = &self.db;
        attempts::Entity::insert(row.into_active_model())
            .exec_without_returning(db)
            .await
            .map_err(repo_err)?;
        deliveries::Entity::update_many()
            .col_expr(deliveries::Column::State, Expr::value(state.as_str()))
            .col_expr(deliveries::Column::UpdatedAt, Expr::value(attempt.at))
            .filter(deliveries::Column::Id.eq(id.as_uuid()))
            .exec(db)
            .await
            .map_err(repo_err)?;
        Ok(())
    }

    async fn reopen(
        &self,
        tx: &mut dyn Transaction,
        id: DeliveryId,
        at: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let pending = DeliveryState::Pending.as_str();
        Ok(deliveries::Entity::update_many()
            .col_expr(deliveries::Column::State, Expr::value(pending))
            .col_expr(deliveries::Column::UpdatedAt, Expr::value(at))
            .filter(deliveries::Column::Id.eq(id.as_uuid()))
            .filter(deliveries::Column::State.ne(pending))
            .exec(sea_txn(tx)?)
            .await
            .map_err(repo_err)?
            .rows_affected
            == 1)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Endpoint secrets derived under `auth.peppers`: HMAC-SHA256(pepper, purpose ‖ seed). A copy
/// of the database alone signs nothing.
pub struct PepperKeys {
    active: String,
    peppers: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for PepperKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PepperKeys")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl PepperKeys {
    /// The keys of the configured peppers.
    pub fn new(auth: &keel_config::AuthSettings) -> Self {
        Self {
            active: auth.active_pepper.clone(),
            peppers: auth
                .peppers
                .iter()
                .map(|(id, pepper)| (id.clone(), pepper.expose_secret().as_bytes().to_vec()))
                .collect(),
        }
    }
}

impl SigningKeys for PepperKeys {
    fn new_seed(&self) -> (String, String) {
        let mut seed = [0u8; 32];
        // The seed only needs to be unique and unguessable; the OS source failing is fatal
        // elsewhere long before this, and a uuid v4 still gives 122 random bits.
        if getrandom::fill(&mut seed).is_err() {
            seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        (
            self.active.clone(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
        )
    }

    fn secret(&self, pepper_id: &str, seed: &str) -> Option<String> {
        let pepper = self.peppers.get(pepper_id)?;
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(pepper).ok()?;
        mac.update(b"keel.webhooks.endpoint.v1:");
        mac.update(seed.as_bytes());
        let key = mac.finalize().into_bytes();
        Some(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }
}

/// Resolves like the system, then keeps only public addresses: the connection can only go to
/// an address this check saw, so a name that re-resolves to a private one later (DNS
/// rebinding) is refused at every attempt.
#[derive(Debug, Clone)]
struct PublicOnly;

/// Marks the error a refused target produced, so the sender can tell it from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RefusedTarget(String);

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(RefusedTarget(format!(
                    "`{host}` resolves to no public address ({})",
                    all.iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL's host is an address literal deliveries may not reach (the resolver never
/// sees those).
fn private_literal(url: &reqwest::Url) -> Option<String> {
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then(|| format!("{ip} is not a public address"))
}

/// Sends signed deliveries with reqwest: at most 5 redirects, each checked like the first
/// target; a connection only to addresses [`PublicOnly`] let through (unless private
/// targets are allowed). Only the status of an answer counts; its body is never read.
#[derive(Debug, Clone)]
pub struct ReqwestSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl ReqwestSender {
    /// A sender; `timeout` bounds each attempt.
    pub fn new(
        allow_private: bool,
        timeout: Duration,
        user_agent: &str,
    ) -> Result<Self, reqwest::Error> {
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error(RefusedTarget("more than 5 redirects".to_owned()))
            } else if !allow_private && let Some(why) = private_literal(attempt.url()) {
                attempt.error(RefusedTarget(format!("redirected to {why}")))
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            // A proxy would resolve the target itself, past the address checks below.
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .user_agent(user_agent)
            .redirect(redirects)
            .pool_idle_timeout(Duration::from_secs(30));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            allow_private,
        })
    }
}

/// Whether `error` (or what caused it) is a refused target.
fn refusal(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<RefusedTarget>() {
            return Some(refused.0.clone());
        }
        source = current.source();
    }
    None
}

#[async_trait]
impl WebhookSender for ReqwestSender {
    async fn send(&self, request: OutboundRequest<'_>) -> (SendOutcome, Duration) {
        let started = Instant::now();
        let url = match reqwest::Url::parse(request.url) {
            Ok(url) => url,
            Err(e) => {
                return (
                    SendOutcome::Refused(format!("not a URL: {e}")),
                    started.elapsed(),
                );
            }
        };
        if !self.allow_private
            && let Some(why) = private_literal(&url)
        {
            return (SendOutcome::Refused(why), started.elapsed());
        }
        let signature = match standardwebhooks::Webhook::new(request.secret).and_then(|key| {
            key.sign(
                request.webhook_id,
                request.timestamp.timestamp(),
                request.body,
            )
        }) {
            Ok(signature) => signature,
            Err(e) => {
                return (
                    SendOutcome::Refused(format!("cannot sign: {e}")),
                    started.elapsed(),
                );
            }
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", request.webhook_id)
            .header(
                "webhook-timestamp",
                request.timestamp.timestamp().to_string(),
            )
            .header("webhook-signature", signature)
            .body(request.body.to_vec())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => SendOutcome::Answered(response.status().as_u16()),
            Err(error) => match refusal(&error) {
                Some(why) => SendOutcome::Refused(why),
                None if error.is_timeout() => SendOutcome::Failed("timed out".to_owned()),
                None => SendOutcome::Failed(without_url(&error)),
            },
        };
        (outcome, started.elapsed())
    }
}

/// The error without the URL (which may carry a token in its query).
fn without_url(error: &reqwest::Error) -> String {
    let text = crate::error::with_causes(error.to_string(), error);
    match error.url() {
        Some(url) => text.replace(url.as_str(), "<endpoint>"),
        None => text,
    }
}
