//! Failures of job use cases.
//!
//! Every way a job use case fails is one all domains share (not found, not allowed, invalid
//! input, a conflict with the job's state, storage), so the error is the kernel's.

/// What a job use case can fail with.
pub type JobsError = keel_kernel::DomainError;
