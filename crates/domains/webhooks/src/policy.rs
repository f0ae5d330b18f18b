//! Who may manage outbound webhooks.

use keel_kernel::{Permission, PermissionDef};

/// Subscribe, list and delete endpoints; read and redeliver their deliveries.
pub const MANAGE: Permission = Permission::from_static("webhooks:manage");

/// Every permission this domain defines (administrators only: an endpoint receives events
/// about everyone).
pub const PERMISSIONS: &[PermissionDef] = &[PermissionDef::new(
    MANAGE,
    "Subscribe endpoints to events, read and redeliver their deliveries",
)];
