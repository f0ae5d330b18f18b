//! The project entity and the rules on its fields.

use std::str::FromStr;

use keel_kernel::Permission;
use keel_kernel::crud::{CrudActions, Meta, Resource};
use keel_kernel::query::ListSpec;
use keel_kernel::validation::FieldErrors;
use serde::{Deserialize, Serialize};

use crate::policy;

keel_kernel::define_id!(
    /// Identifies a project.
    ProjectId
);

/// Longest name, in characters.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;

/// Where a project stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectStatus {
    /// Not started.
    #[default]
    Planned,
    /// Under way.
    Active,
    /// Done.
    Completed,
    /// Put away: read-only until un-archived.
    Archived,
}

impl ProjectStatus {
    /// The wire and storage names.
    pub const NAMES: &'static [&'static str] = &["planned", "active", "completed", "archived"];
    /// Every status, in lifecycle order.
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
    /// Optional, up to 10 000 characters.
    pub description: Option<String>,
    /// Where it stands.
    pub status: ProjectStatus,
    /// Owner, version, timestamps, soft deletion.
    pub meta: Meta,
}

/// Input of a new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Initial status (`planned` when absent).
    pub status: Option<ProjectStatus>,
}

/// A partial change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectPatch {
    /// New name.
    pub name: Option<String>,
    /// New description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// New status.
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
        let mut errors = FieldErrors::new();
        let name = errors.line("name", &input.name, NAME_MAX_CHARS);
        let description = errors.optional_text(
            "description",
            input.description.as_deref(),
            DESCRIPTION_MAX_CHARS,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            id,
            name,
            description,
            status: input.status.unwrap_or_default(),
            meta,
        })
    }

    fn apply(&mut self, patch: &ProjectPatch) -> Result<Vec<&'static str>, FieldErrors> {
        let mut errors = FieldErrors::new();
        // The business rule: an archived project only accepts being un-archived.
        let unarchiving = patch.status.is_some_and(|s| s != ProjectStatus::Archived);
        if self.status == ProjectStatus::Archived && !unarchiving {
            errors.add(
                "status",
                "archived",
                "the project is archived: set another status before changing it",
            );
            return Err(errors);
        }
        let mut changed = Vec::new();
        if let Some(raw) = &patch.name {
            let name = errors.line("name", raw, NAME_MAX_CHARS);
            if name != self.name {
                self.name = name;
                changed.push("name");
            }
        }
        if let Some(raw) = &patch.description {
            let description =
                errors.optional_text("description", raw.as_deref(), DESCRIPTION_MAX_CHARS);
            if description != self.description {
                self.description = description;
                changed.push("description");
            }
        }
        if let Some(status) = patch.status
            && status != self.status
        {
            self.status = status;
            changed.push("status");
        }
        if errors.is_empty() {
            Ok(changed)
        } else {
            Err(errors)
        }
    }
}
