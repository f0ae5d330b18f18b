//! Identity's permissions, default grants and list allow-list.

use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::{Permission, PermissionDef};

use crate::model::UserStatus;

/// List and read any account.
pub const USERS_READ: Permission = Permission::from_static("users:read");
/// Change, suspend, delete and restore accounts; grant and revoke roles.
pub const USERS_WRITE: Permission = Permission::from_static("users:write");
/// List roles and the permission catalogue.
pub const ROLES_READ: Permission = Permission::from_static("roles:read");
/// Create roles and change their permissions.
pub const ROLES_WRITE: Permission = Permission::from_static("roles:write");
/// Create, list and delete one's own API keys.
pub const API_KEYS_MANAGE: Permission = Permission::from_static("api_keys:manage");

/// Every permission this domain defines.
pub const PERMISSIONS: &[PermissionDef] = &[
    PermissionDef::new(USERS_READ, "List and read any account"),
    PermissionDef::new(
        USERS_WRITE,
        "Change, suspend, delete and restore accounts; grant and revoke roles",
    ),
    PermissionDef::new(ROLES_READ, "List roles and the permission catalogue"),
    PermissionDef::new(ROLES_WRITE, "Create roles and change their permissions"),
    PermissionDef::new(
        API_KEYS_MANAGE,
        "Create, list and delete one's own API keys",
    )
    .for_members(),
];

/// Sorting and filtering allowed on the administrators' user list.
pub const USER_LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("email", FieldKind::Text)
            .sortable()
            .filterable(),
        FieldSpec::new("status", FieldKind::Enum(UserStatus::NAMES)).filterable(),
        FieldSpec::new("deleted_at", FieldKind::Timestamp)
            .sortable()
            .filterable()
            .nullable(),
    ],
    default_sort: "-created_at",
    searchable: true,
};

#[cfg(test)]
mod tests {
    use keel_kernel::ListQuery;

    use super::*;

    #[test]
    fn definitions_are_well_formed_and_the_spec_consistent() {
        for def in PERMISSIONS {
            assert!(Permission::parse(def.permission.as_str()).is_ok());
        }
        assert_eq!(
            ListQuery::parse(&USER_LIST_SPEC, [("sort", USER_LIST_SPEC.default_sort)]).unwrap(),
            ListQuery::first_page(&USER_LIST_SPEC)
        );
    }
}
