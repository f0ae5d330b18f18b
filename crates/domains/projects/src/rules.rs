//! Projects' rules beyond their fields, written by hand (regenerating never overwrites this
//! file): an archived project is read-only until it is un-archived, and members reach only
//! their own projects.

use keel_kernel::crud::ScopeRule;
use keel_kernel::validation::FieldErrors;

use crate::model::{NewProject, Project, ProjectPatch, ProjectStatus};

/// The WebSocket topic of project changes: owners see their own, `projects:manage_all`
/// sees all (the same reach as [`SCOPE`]).
pub const TOPIC: keel_kernel::realtime::Topic = keel_kernel::realtime::Topic {
    name: "projects",
    resource: "project",
    read: crate::policy::WRITE,
    see_all: crate::policy::MANAGE_ALL,
};

/// Which rows a caller without `projects:manage_all` reaches besides their own: none.
pub(crate) const SCOPE: ScopeRule = ScopeRule::Owner;

/// No rule on new projects beyond their fields'.
pub(crate) fn check_new(_input: &NewProject) -> Result<(), FieldErrors> {
    Ok(())
}

/// An archived project only accepts being un-archived (with other changes in the same patch).
pub(crate) fn check_patch(current: &Project, patch: &ProjectPatch) -> Result<(), FieldErrors> {
    let unarchiving = patch.status.is_some_and(|s| s != ProjectStatus::Archived);
    if current.status == ProjectStatus::Archived && !unarchiving {
        let mut errors = FieldErrors::new();
        errors.add(
            "status",
            "archived",
            "the project is archived: set another status before changing it",
        );
        return Err(errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::crud::InMemoryCrud;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{Actor, Caller, DomainError, ManualClock, PermissionSet, SessionId, UserId};

    use super::*;
    use crate::Projects;
    use crate::policy::WRITE;

    #[test]
    fn archived_projects_are_read_only_until_unarchived() {
        let projects = Projects::new(
            Arc::new(InMemoryCrud::default()),
            Arc::new(InMemoryUnitOfWork),
            Arc::new(InMemoryActivityLog::default()),
            Arc::new(ManualClock::new(chrono::Utc::now())),
        );
        let ada = Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: [WRITE].into_iter().collect::<PermissionSet>(),
        });
        let service = projects.for_caller(&ada);
        let project = block_on(service.create(NewProject {
            name: "Old".into(),
            description: None,
            status: Some(ProjectStatus::Archived),
        }))
        .unwrap();
        let rename = ProjectPatch {
            name: Some("New".into()),
            ..Default::default()
        };
        match block_on(service.update(project.id, rename, None)) {
            Err(DomainError::Validation(errors)) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(
                    (errors[0].field.as_str(), errors[0].code.as_str()),
                    ("status", "archived")
                );
            }
            other => panic!("expected the archived rule, got {other:?}"),
        }
        let active = block_on(service.update(
            project.id,
            ProjectPatch {
                name: Some("New".into()),
                status: Some(ProjectStatus::Active),
                ..Default::default()
            },
            None,
        ))
        .unwrap();
        assert_eq!(
            (active.name.as_str(), active.status),
            ("New", ProjectStatus::Active)
        );
    }
}
