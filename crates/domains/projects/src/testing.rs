// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! Factories of realistic project input, builder style.

#[allow(unused_imports)]
use fake::Fake;
#[allow(unused_imports)]
use fake::faker::boolean::en::Boolean;
#[allow(unused_imports)]
use fake::faker::lorem::en::{Sentence, Word, Words};

use crate::model::{NewProject, ProjectStatus};

/// Builds a valid [`NewProject`] with fake but realistic values; override what a test
/// cares about.
#[derive(Debug, Clone)]
pub struct NewProjectFactory {
    input: NewProject,
}

impl Default for NewProjectFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl NewProjectFactory {
    /// A project with plausible values.
    pub fn new() -> Self {
        Self {
            input: NewProject {
                name: Words(1..4)
                    .fake::<Vec<String>>()
                    .join(" ")
                    .chars()
                    .take(200)
                    .collect::<String>(),
                description: Some(Sentence(5..15).fake::<String>()),
                status: None,
            },
        }
    }

    /// Sets `name`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.input.name = name.into();
        self
    }

    /// Sets `description`.
    #[must_use]
    pub fn description(mut self, description: Option<impl Into<String>>) -> Self {
        self.input.description = description.map(Into::into);
        self
    }

    /// Sets `status`.
    #[must_use]
    pub fn status(mut self, status: ProjectStatus) -> Self {
        self.input.status = Some(status);
        self
    }

    /// The input.
    pub fn build(self) -> NewProject {
        self.input
    }
}
