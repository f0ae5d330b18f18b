//! Webhook receipts in `webhook_receipts`, and the routes of inbound deliveries.

pub mod outbound;
mod publish;
mod sync_users;

pub use outbound::{PepperKeys, ReqwestSender, SeaOutbound};
pub use publish::{PublishingActivity, Subscriptions};
pub use sync_users::SyncUsers;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{RepoError, Transaction};
use keel_webhooks::{InboundRoutes, ReceiptRecord, WebhookReceiptRepository, Webhooks};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, TryInsertResult,
};

use crate::error::repo_err;
use crate::unit_of_work::sea_txn;

/// The sea-orm entity for `webhook_receipts`.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One row of `webhook_receipts`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_receipts")]
    pub struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The configured source.
        pub source: String,
        /// The sender's message id; unique per source.
        pub webhook_id: String,
        /// The event type.
        pub event_type: String,
        /// The job that processes it.
        pub job_id: Uuid,
        /// When it was received.
        pub received_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity, Model};

/// [`WebhookReceiptRepository`] on a sea-orm pool.
#[derive(Debug, Clone)]
pub struct SeaWebhookReceipts {
    db: DatabaseConnection,
}

#[async_trait]
impl WebhookReceiptRepository for SeaWebhookReceipts {
    async fn record(
        &self,
        tx: &mut dyn Transaction,
        receipt: &ReceiptRecord,
    ) -> Result<bool, RepoError> {
        let txn = sea_txn(tx)?;
        let row = Model {
            id: uuid::Uuid::now_v7(),
            source: receipt.source.clone(),
            webhook_id: receipt.webhook_id.clone(),
            event_type: receipt.event_type.clone(),
            job_id: receipt.job_id.as_uuid(),
            received_at: receipt.received_at,
        };
        // The insert is the check: on PostgreSQL a concurrent insert of the same pair waits
        // for the other transaction and then inserts nothing.
        let inserted = Entity::insert(row.into_active_model())
            .on_conflict_do_nothing_on([Column::Source, Column::WebhookId])
            .exec_without_returning(txn)
            .await
            .map_err(repo_err)?;
        Ok(matches!(inserted, TryInsertResult::Inserted(1)))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError> {
        Ok(Entity::delete_many()
            .filter(Column::ReceivedAt.lt(before))
            .exec(&self.db)
            .await
            .map_err(repo_err)?
            .rows_affected)
    }
}

/// Registers the webhooks service and the routes of inbound deliveries (after identity, whose
/// service the user sync uses).
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    let mut routes = InboundRoutes::new();
    for (source, inbound) in &adapters.settings.webhooks.inbound {
        if inbound.sync_users {
            let identity = state.get::<keel_identity::Identity>()?;
            routes = routes.route(source, std::sync::Arc::new(SyncUsers { identity }));
        }
    }
    state.insert(routes);
    let outbound_settings = &adapters.settings.webhooks.outbound;
    let store = std::sync::Arc::new(SeaOutbound::new(adapters.db.clone()));
    let retry = keel_kernel::jobs::RetryPolicy {
        max_attempts: outbound_settings.max_attempts,
        backoff: outbound_settings.backoff,
        max_backoff: outbound_settings.max_backoff,
        timeout: outbound_settings.timeout + std::time::Duration::from_secs(5),
    };
    let sender = ReqwestSender::new(
        outbound_settings.allow_private_targets,
        outbound_settings.timeout,
        &format!("{}-webhooks", adapters.settings.app.name),
    )?;
    state
        .permissions(keel_webhooks::PERMISSIONS)
        .insert(keel_webhooks::OutboundWebhooks::new(
            keel_webhooks::outbound::OutboundPorts {
                endpoints: store.clone(),
                deliveries: store,
                keys: std::sync::Arc::new(PepperKeys::new(&adapters.settings.auth)),
                sender: std::sync::Arc::new(sender),
                unit_of_work: adapters.unit_of_work.clone(),
                jobs: adapters.jobs.clone(),
                activity: adapters.activity_log(),
                clock: adapters.clock.clone(),
            },
            keel_webhooks::outbound::OutboundSettings {
                allow_private_targets: outbound_settings.allow_private_targets,
                retry,
            },
        ));
    state.insert(Webhooks::new(
        std::sync::Arc::new(SeaWebhookReceipts {
            db: adapters.db.clone(),
        }),
        adapters.unit_of_work.clone(),
        adapters.jobs.clone(),
        adapters.clock.clone(),
    ));
    Ok(())
}
