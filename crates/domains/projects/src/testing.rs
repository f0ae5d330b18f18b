//! Factories of realistic project input, builder style.

use fake::Fake;
use fake::faker::company::en::{Buzzword, CatchPhrase};
use fake::faker::lorem::en::Sentence;

use crate::model::{NewProject, ProjectStatus};

/// Builds a valid [`NewProject`] with fake but realistic values; override what a test cares
/// about.
#[derive(Debug, Clone)]
pub struct NewProjectFactory {
    project: NewProject,
}

impl Default for NewProjectFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl NewProjectFactory {
    /// A project with a plausible name and description.
    pub fn new() -> Self {
        let buzzword: String = Buzzword().fake();
        let phrase: String = CatchPhrase().fake();
        Self {
            project: NewProject {
                name: format!("{buzzword} {phrase}").chars().take(200).collect(),
                description: Some(Sentence(5..15).fake()),
                status: None,
            },
        }
    }

    /// Sets the name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.project.name = name.into();
        self
    }

    /// Sets the status.
    #[must_use]
    pub fn status(mut self, status: ProjectStatus) -> Self {
        self.project.status = Some(status);
        self
    }

    /// The input.
    pub fn build(self) -> NewProject {
        self.project
    }
}
