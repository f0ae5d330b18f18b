// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! Who may do what with projects, and how lists of them may be sorted and filtered.
//! Which rows a caller reaches (the scope) is declared in `rules.rs`.

use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::{Permission, PermissionDef};

use crate::model::ProjectStatus;

/// Create projects and read, change and delete one's own.
pub const WRITE: Permission = Permission::from_static("projects:write");
/// The same on everyone's projects.
pub const MANAGE_ALL: Permission = Permission::from_static("projects:manage_all");

/// Every permission this domain defines; members may work with their own projects.
pub const PERMISSIONS: &[PermissionDef] = &[
    PermissionDef::new(WRITE, "Create projects; read, change and delete one's own").for_members(),
    PermissionDef::new(MANAGE_ALL, "Read, change and delete everyone's projects"),
];

/// Sorting and filtering allowed on project lists.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("name", FieldKind::Text)
            .sortable()
            .filterable(),
        FieldSpec::new("status", FieldKind::Enum(ProjectStatus::NAMES)).filterable(),
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("updated_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
        FieldSpec::new("owner_id", FieldKind::Uuid).filterable(),
    ],
    default_sort: "-created_at",
    searchable: true,
};
