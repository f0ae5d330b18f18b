//! The example inbound handler: an identity provider's `user.*` events keep the linked
//! accounts in step (`webhooks.inbound.<source>.sync_users`).

use async_trait::async_trait;
use keel_identity::service::{ExternalUserChange, SyncOutcome};
use keel_identity::{Identity, IdentityError};
use keel_kernel::DomainError;
use keel_kernel::jobs::JobFailure;
use keel_webhooks::{Handled, InboundHandler, InboundWebhook};

/// Applies `user.created`, `user.updated` and `user.deleted` from one provider.
#[derive(Debug, Clone)]
pub struct SyncUsers {
    /// The identity service.
    pub identity: Identity,
}

/// Whether another attempt could succeed: a refused change (a taken address, a malformed
/// user, the last administrator) never will; an outage or a lost race may.
fn failure(error: IdentityError) -> JobFailure {
    let error = DomainError::from(error);
    match error {
        DomainError::Unavailable(_) | DomainError::Internal(_) | DomainError::Upstream { .. } => {
            JobFailure::transient(error)
        }
        DomainError::Validation(ref fields) => JobFailure::permanent(format!(
            "{error}: {}",
            fields
                .iter()
                .map(|f| format!("{} {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        )),
        other => JobFailure::permanent(other),
    }
}

#[async_trait]
impl InboundHandler for SyncUsers {
    fn name(&self) -> &'static str {
        "identity.sync_users"
    }

    async fn handle(&self, webhook: &InboundWebhook) -> Result<Handled, JobFailure> {
        let Some(change) = ExternalUserChange::from_event(&webhook.event_type, &webhook.data)
            .map_err(JobFailure::permanent)?
        else {
            return Ok(Handled::Ignored(format!(
                "`{}` is not a user event",
                webhook.event_type
            )));
        };
        let outcome = self
            .identity
            .for_system()
            .sync_external_user(&webhook.source, change, webhook.occurred_at)
            .await
            .map_err(failure)?;
        Ok(match outcome {
            SyncOutcome::Created(user) => Handled::Applied(format!("account {user} created")),
            SyncOutcome::Updated(user) => Handled::Applied(format!("account {user} updated")),
            SyncOutcome::Deleted(Some(user)) => Handled::Applied(format!("account {user} deleted")),
            SyncOutcome::Deleted(None) => {
                Handled::Applied("deleted before any account existed".to_owned())
            }
            SyncOutcome::Stale => Handled::Ignored("older than the last event applied".to_owned()),
        })
    }
}
