//! Mail: the `mail.send` job every feature enqueues, delivered once per dedupe key.

use std::sync::Arc;

use keel_config::Settings;
use keel_infrastructure::mail::MailDeliveries;
use keel_kernel::mail::{Delivery, Mailer, SendEmail, deliver_once};
use keel_kernel::{AppState, MissingService};

use crate::queue::Handlers;
use crate::schedules::Schedule;

/// Registers `mail.send` on the state's `Arc<dyn Mailer>` and [`MailDeliveries`].
pub fn register(handlers: Handlers, state: &AppState) -> Result<Handlers, MissingService> {
    let mailer = state.get::<Arc<dyn Mailer>>()?;
    let deliveries = state.get::<MailDeliveries>()?;
    Ok(handlers.register(move |job: SendEmail, context| {
        let mailer = Arc::clone(&mailer);
        let deliveries = deliveries.clone();
        async move {
            let key = job.dedupe_key.clone();
            if deliver_once(mailer.as_ref(), &deliveries, job, context.id).await?
                == Delivery::AlreadySent
            {
                tracing::info!(dedupe_key = %key, "mail already sent; skipping");
            }
            Ok(())
        }
    }))
}

/// Mail has no schedule.
pub fn schedules(_settings: &Settings) -> Vec<Schedule> {
    Vec::new()
}
