//! Who may see and manage jobs: a job's owner reads it; `jobs:read` reads every job;
//! `jobs:manage` retries, deletes and probes.

use keel_kernel::{Permission, PermissionDef};

/// Read every job, not only one's own.
pub const JOBS_READ: Permission = Permission::from_static("jobs:read");
/// Retry and delete jobs.
pub const JOBS_MANAGE: Permission = Permission::from_static("jobs:manage");

/// The jobs permissions, for the RBAC catalogue.
pub static PERMISSIONS: &[PermissionDef] = &[
    PermissionDef::new(JOBS_READ, "List and read every background job"),
    PermissionDef::new(JOBS_MANAGE, "Retry and delete background jobs"),
];
