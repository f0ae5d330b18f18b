//! Who may do what with release notes, and which ones each caller sees.

use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::{Actor, Permission, PermissionDef};

use crate::model::{ChangeType, ReleaseStatus};

/// Create, edit, publish and delete release notes, and see drafts.
pub const WRITE: Permission = Permission::from_static("release_notes:write");

/// Every permission this domain defines (seeded into the catalogue by the identity domain).
pub const PERMISSIONS: &[PermissionDef] = &[PermissionDef::new(
    WRITE,
    "Create, edit, publish and delete release notes; see drafts",
)];

/// Which release notes a query may return. Only this crate can build one (from an actor), so a
/// repository can never be asked for an unscoped read by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visibility {
    drafts_visible: bool,
}

impl Visibility {
    /// Writers see drafts; everyone else, signed in or not, sees published notes only.
    pub(crate) fn for_actor(actor: &Actor) -> Self {
        Self {
            drafts_visible: actor.can(&WRITE),
        }
    }

    /// Whether the query must be restricted to published notes.
    pub fn published_only(&self) -> bool {
        !self.drafts_visible
    }

    /// Test support: the visibility of an anonymous caller.
    #[cfg(any(test, feature = "testing"))]
    pub fn public() -> Self {
        Self {
            drafts_visible: false,
        }
    }
}

/// Sorting and filtering allowed on release-note lists.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("published_at", FieldKind::Timestamp)
            .sortable()
            .filterable()
            .nullable(),
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("title", FieldKind::Text).sortable(),
        FieldSpec::new("version", FieldKind::Text).filterable(),
        FieldSpec::new("change_type", FieldKind::Enum(ChangeType::NAMES)).filterable(),
        FieldSpec::new("status", FieldKind::Enum(ReleaseStatus::NAMES)).filterable(),
    ],
    default_sort: "-published_at",
    searchable: true,
};

#[cfg(test)]
mod tests {
    use super::*;
    use keel_kernel::{SessionId, UserId};

    #[test]
    fn permission_constants_are_well_formed() {
        for def in PERMISSIONS {
            assert!(Permission::parse(def.permission.as_str()).is_ok());
        }
    }

    #[test]
    fn the_list_spec_is_consistent() {
        use keel_kernel::ListQuery;
        let query = ListQuery::parse(&LIST_SPEC, [("sort", LIST_SPEC.default_sort)]).unwrap();
        assert_eq!(query, ListQuery::first_page(&LIST_SPEC));
        assert_eq!(query.sort.len(), 2, "default sort plus the id tie-breaker");
    }

    #[test]
    fn only_writers_see_drafts() {
        assert!(Visibility::for_actor(&Actor::Anonymous).published_only());
        let reader = Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: Default::default(),
        };
        assert!(Visibility::for_actor(&reader).published_only());
        let writer = Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: [WRITE].into_iter().collect(),
        };
        assert!(!Visibility::for_actor(&writer).published_only());
        assert!(!Visibility::for_actor(&Actor::System).published_only());
    }
}
