//! The activity log: every auth event and every change, append-only. Entries are written by
//! each domain through `keel_kernel::ActivityLog` in the transaction of the change they
//! describe; this crate reads them back, scoped to the caller. Nobody updates or deletes an
//! entry: only Keel itself purges entries older than the retention (`activity.retention`).
//!
//! Layout shared by every domain crate: `model`, `policy`, `repository`, `service`, `error`,
//! `testing`.

pub mod error;
pub mod jobs;
pub mod model;
pub mod policy;
pub mod repository;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::ActivityError;
pub use model::{ActivityEntry, ActivityId};
pub use policy::{ActivityScope, LIST_SPEC, PERMISSIONS, READ_ALL};
pub use repository::ActivityRepository;
pub use service::{Activity, ActivityService, PURGE_BATCH, PURGE_MAX_BATCHES};
