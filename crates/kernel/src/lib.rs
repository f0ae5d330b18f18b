//! Keel's kernel: the framework-free vocabulary every domain crate speaks.
//!
//! Nothing here knows about HTTP, SQL or an async runtime. The dependency rule (checked by the
//! `architecture` test in `tests/`) keeps it that way: adapters depend on the kernel, never the
//! reverse.

pub mod activity;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod crud;
pub mod error;
pub mod health;
pub mod http;
pub mod id;
pub mod idempotency;
pub mod jobs;
pub mod mail;
pub mod query;
pub mod realtime;
pub mod repo;
pub mod state;
pub mod storage;
pub mod throttle;
pub mod validation;

pub use activity::{ActivityLog, NewActivity};
pub use auth::{Actor, Caller, Origin, Permission, PermissionDef, PermissionSet, Scope};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DomainError, FieldError};
pub use id::{ApiKeyId, SessionId, UserId};
pub use jobs::{Job, JobFailure, JobId, JobQueue, NewJob, Queue, RetryPolicy};
pub use query::{ListQuery, ListSpec, Page};
pub use repo::{RepoError, Transaction, UnitOfWork};
pub use state::{AppState, AppStateBuilder, MissingService};

/// Re-exports used by `define_id!` so domain crates need no direct serde/uuid import for it.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use uuid;
}
