//! Failures of activity use cases.
//!
//! Reading and purging the log fail only in ways every domain shares (not signed in, not
//! allowed, an invalid filter, storage), so the error is the kernel's.

/// What an activity use case can fail with.
pub type ActivityError = keel_kernel::DomainError;
