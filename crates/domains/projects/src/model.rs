// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! The project entity and the rules on its fields; rules on transitions are in `rules.rs`.

use std::str::FromStr;

use keel_kernel::Permission;
use keel_kernel::crud::{CrudActions, Meta, Resource, ScopeRule};
use keel_kernel::query::{ListSpec, Value};
use keel_kernel::validation::FieldErrors;
use serde::{Deserialize, Serialize};

use crate::{policy, rules};

keel_kernel::define_id!(
    /// Identifies a project.
    ProjectId
);

/// Longest name, in characters.
pub const NAME_MAX_CHARS: usize = 200;

/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;

/// `planned`, `active`, `completed` or `archived` (read-only until changed back).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    /// `planned` (the default).
    #[default]
    Planned,
    /// `active`.
    Active,
    /// `completed`.
    Completed,
    /// `archived`.
    Archived,
}

impl ProjectStatus {
    /// The wire and storage names.
    pub const NAMES: &'static [&'static str] = &["planned", "active", "completed", "archived"];
    /// Every value, in declaration order.
    pub const ALL: &'static [Self] =
        &[Self::Planned, Self::Active, Self::Completed, Self::Archived];

    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Archived => "archived",
        }
    }
}

impl FromStr for ProjectStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "planned" => Ok(Self::Planned),
            "active" => Ok(Self::Active),
            "completed" => Ok(Self::Completed),
            "archived" => Ok(Self::Archived),
            other => Err(format!("unknown project status `{other}`")),
        }
    }
}

/// A project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Identity.
    pub id: ProjectId,
    /// 1 to 200 characters.
    pub name: String,
    /// Up to 10 000 characters.
    pub description: Option<String>,
    /// `planned`, `active`, `completed` or `archived` (read-only until changed back).
    pub status: ProjectStatus,
    /// Owner, version, timestamps, soft deletion.
    pub meta: Meta,
}

/// Input of a new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// 1 to 200 characters (trimmed).
    pub name: String,
    /// Up to 10 000 characters.
    pub description: Option<String>,
    /// Defaults to `planned`.
    pub status: Option<ProjectStatus>,
}

/// A partial change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectPatch {
    /// 1 to 200 characters.
    pub name: Option<String>,
    /// Up to 10 000 characters, or `null` to clear.
    pub description: Option<Option<String>>,
    /// The new status.
    pub status: Option<ProjectStatus>,
}

impl Resource for Project {
    type Id = ProjectId;
    type New = NewProject;
    type Patch = ProjectPatch;

    const KIND: &'static str = "project";
    const ACCESS: Permission = policy::WRITE;
    const SEE_ALL: Permission = policy::MANAGE_ALL;
    const LIST: ListSpec = policy::LIST_SPEC;
    const ACTIONS: CrudActions = CrudActions {
        created: "project.created",
        updated: "project.updated",
        deleted: "project.deleted",
        restored: "project.restored",
    };
    const SCOPE: ScopeRule = rules::SCOPE;

    fn id(&self) -> ProjectId {
        self.id
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }

    fn build(id: ProjectId, input: NewProject, meta: Meta) -> Result<Self, FieldErrors> {
        rules::check_new(&input)?;
        let mut errors = FieldErrors::new();
        let name = errors.line("name", &input.name, NAME_MAX_CHARS);
        let description = errors.optional_text(
            "description",
            input.description.as_deref(),
            DESCRIPTION_MAX_CHARS,
        );
        let status = input.status.unwrap_or_default();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            id,
            name,
            description,
            status,
            meta,
        })
    }

    fn apply(&mut self, patch: &ProjectPatch) -> Result<Vec<&'static str>, FieldErrors> {
        rules::check_patch(self, patch)?;
        let mut errors = FieldErrors::new();
        let mut changed = Vec::new();
        if let Some(value) = &patch.name {
            let value = errors.line("name", value, NAME_MAX_CHARS);
            if value != self.name {
                self.name = value;
                changed.push("name");
            }
        }
        if let Some(value) = &patch.description {
            let value =
                errors.optional_text("description", value.as_deref(), DESCRIPTION_MAX_CHARS);
            if value != self.description {
                self.description = value;
                changed.push("description");
            }
        }
        if let Some(value) = &patch.status {
            let value = *value;
            if value != self.status {
                self.status = value;
                changed.push("status");
            }
        }
        if errors.is_empty() {
            Ok(changed)
        } else {
            Err(errors)
        }
    }

    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "name" => Some(Value::Text(self.name.clone())),
            "status" => Some(Value::Text(self.status.as_str().to_owned())),
            "owner_id" => Some(Value::Uuid(self.meta.owner.as_uuid())),
            "created_at" => Some(Value::Timestamp(self.meta.created_at)),
            "updated_at" => Some(Value::Timestamp(self.meta.updated_at)),
            _ => None,
        }
    }
}
