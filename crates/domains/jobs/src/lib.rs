//! Background jobs as their owners and operators see them: where each job is, what happened to
//! it, retrying dead ones, deleting finished ones, and a probe that checks the pipeline end to
//! end. Enqueueing stays in the kernel (`keel_kernel::jobs`), since every domain enqueues.
//!
//! Layout shared by every domain crate: `model`, `policy`, `repository`, `service`, `error`,
//! `testing`.

pub mod error;
pub mod model;
pub mod policy;
pub mod repository;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::JobsError;
pub use model::{JobRecord, JobState, Probe, PurgeFinishedJobs};
pub use policy::{JOBS_MANAGE, JOBS_READ, LIST_SPEC, PERMISSIONS};
pub use repository::JobRepository;
pub use service::{Jobs, JobsService, MAX_OFFSET, ProbeRequest};
