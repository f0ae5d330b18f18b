//! Who may see and manage jobs: a job's owner reads it; `jobs:read` reads every job;
//! `jobs:manage` retries, deletes and probes.

use keel_kernel::jobs::Queue;
use keel_kernel::query::{FieldKind, FieldSpec, ListSpec, Value};
use keel_kernel::{Permission, PermissionDef};

use crate::model::{JobRecord, JobState};

/// Read every job, not only one's own.
pub const JOBS_READ: Permission = Permission::from_static("jobs:read");
/// Retry and delete jobs.
pub const JOBS_MANAGE: Permission = Permission::from_static("jobs:manage");

/// The jobs permissions, for the RBAC catalogue.
pub static PERMISSIONS: &[PermissionDef] = &[
    PermissionDef::new(JOBS_READ, "List and read every background job"),
    PermissionDef::new(JOBS_MANAGE, "Retry and delete background jobs"),
];

/// Sorting and filtering allowed on job lists: newest first by default; `created_at` follows
/// the job id (a UUIDv7), so cursors page in enqueue order.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("state", FieldKind::Enum(JobState::NAMES)).filterable(),
        FieldSpec::new("queue", FieldKind::Enum(Queue::NAMES)).filterable(),
        FieldSpec::new("kind", FieldKind::Text).filterable(),
        FieldSpec::new("created_at", FieldKind::Timestamp).sortable(),
    ],
    default_sort: "-created_at",
    searchable: false,
};

/// The sort-key values of a cursor continuing after `job`: its creation time, then its id (the
/// implicit last key). Adapters encode them with `Cursor::encode`.
pub fn cursor_values(job: &JobRecord) -> [Value; 2] {
    [
        Value::Timestamp(job.created_at),
        Value::Uuid(job.id.as_uuid()),
    ]
}
