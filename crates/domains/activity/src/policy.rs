//! Who reads which entries: everyone their own (what they did and what concerns them),
//! `activity:read` everything; and how the list may be sorted and filtered.

use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::{Permission, PermissionDef, UserId};

/// See every entry, not only one's own.
pub const READ_ALL: Permission = Permission::from_static("activity:read");

/// Every permission this domain defines.
pub const PERMISSIONS: &[PermissionDef] = &[PermissionDef::new(
    READ_ALL,
    "Read every activity entry, not only one's own",
)];

/// Which entries a query may return; built here from the caller, never by adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityScope(pub(crate) Option<UserId>);

impl ActivityScope {
    /// `None` for every entry; `Some(user)` for entries the user did or that concern them.
    pub fn own_user(&self) -> Option<UserId> {
        self.0
    }
}

/// Sorting and filtering allowed on the activity list.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("action", FieldKind::Text).filterable(),
        FieldSpec::new("resource_type", FieldKind::Text).filterable(),
        FieldSpec::new("resource_id", FieldKind::Text)
            .filterable()
            .nullable(),
        FieldSpec::new("actor_user_id", FieldKind::Uuid)
            .filterable()
            .nullable(),
        FieldSpec::new("subject_user_id", FieldKind::Uuid)
            .filterable()
            .nullable(),
        FieldSpec::new("request_id", FieldKind::Text)
            .filterable()
            .nullable(),
    ],
    default_sort: "-created_at",
    searchable: false,
};
