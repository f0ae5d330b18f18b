//! Identity's jobs: the mails with a link (verification, reset) and the purge of expired
//! sessions and tokens.

use std::sync::Arc;

use keel_config::Settings;
use keel_identity::Identity;
use keel_identity::jobs::{PurgeExpiredCredentials, SendTokenMail};
use keel_infrastructure::mail::MailDeliveries;
use keel_kernel::jobs::{JobFailure, NewJob};
use keel_kernel::mail::{Delivery, Mailer, deliver_once};
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers identity's job handlers.
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let identity = state.get::<Identity>()?;
    let mailer = state.get::<Arc<dyn Mailer>>()?;
    let deliveries = state.get::<MailDeliveries>()?;
    let purge_identity = identity.clone();
    Ok(handlers
        .register(move |job: SendTokenMail, context| {
            let identity = identity.clone();
            let mailer = Arc::clone(&mailer);
            let deliveries = deliveries.clone();
            async move {
                // A link that can no longer be derived (its pepper was removed) never will be.
                let mail = identity
                    .compose_token_mail(&job)
                    .map_err(JobFailure::permanent)?;
                let key = mail.dedupe_key.clone();
                if deliver_once(mailer.as_ref(), &deliveries, mail, context.id).await?
                    == Delivery::AlreadySent
                {
                    tracing::info!(dedupe_key = %key, "mail already sent; skipping");
                }
                Ok(())
            }
        })
        .register(move |job: PurgeExpiredCredentials, _context| {
            let identity = purge_identity.clone();
            async move {
                let (sessions, tokens) = identity
                    .for_system()
                    .purge_expired_credentials(job.ended_before)
                    .await
                    .map_err(JobFailure::transient)?;
                tracing::info!(sessions, tokens, "expired credentials purged");
                Ok(())
            }
        }))
}

/// Identity's schedules (overridable by `jobs.schedules.<name>`).
pub fn schedules(_settings: &Settings) -> Vec<Schedule> {
    vec![Schedule {
        name: "purge_expired_credentials",
        cron: "0 */15 * * * *".to_owned(),
        // A day of grace: a session that just ended still explains recent activity.
        make: Arc::new(|tick| {
            NewJob::of(&PurgeExpiredCredentials {
                ended_before: tick - chrono::Duration::days(1),
            })
            .map_err(|e| e.to_string())
        }),
    }]
}
