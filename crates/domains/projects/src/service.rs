//! Project use cases: the kernel's generic CRUD, which runs the permission check, the owner
//! scope, validation (the rules in `model`), one transaction per use case and its activity
//! entry.

use keel_kernel::crud::Crud;

use crate::model::Project;

/// Every project use case: `list`, `get`, `create`, `create_many`, `update`, `update_many`,
/// `delete`, `delete_many`, `restore`.
pub type Projects = Crud<Project>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::crud::InMemoryCrud;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{
        Actor, Caller, DomainError, ListQuery, ManualClock, PermissionSet, SessionId, UserId,
    };

    use super::*;
    use crate::model::{NewProject, ProjectPatch, ProjectStatus};
    use crate::policy::{LIST_SPEC, MANAGE_ALL, WRITE};
    use crate::testing::NewProjectFactory;

    struct Fixture {
        projects: Projects,
        activity: Arc<InMemoryActivityLog>,
        ada: Caller,
        bob: Caller,
        admin: Caller,
    }

    fn caller(permissions: &[keel_kernel::Permission]) -> Caller {
        Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect::<PermissionSet>(),
        })
    }

    fn fixture() -> Fixture {
        let activity = Arc::new(InMemoryActivityLog::default());
        let start = DateTime::parse_from_rfc3339("2026-06-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Fixture {
            projects: Projects::new(
                Arc::new(InMemoryCrud::default()),
                Arc::new(InMemoryUnitOfWork),
                activity.clone(),
                Arc::new(ManualClock::new(start)),
            ),
            activity,
            ada: caller(&[WRITE]),
            bob: caller(&[WRITE]),
            admin: caller(&[WRITE, MANAGE_ALL]),
        }
    }

    fn domain_fields(error: DomainError) -> Vec<String> {
        match error {
            DomainError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn owners_see_their_projects_and_admins_see_all() {
        let f = fixture();
        let mine = block_on(
            f.projects
                .for_caller(&f.ada)
                .create(NewProjectFactory::new().build()),
        )
        .unwrap();
        assert_eq!(mine.meta.owner, f.ada.actor.user_id().unwrap());
        assert_eq!(mine.meta.version, 1);
        assert_eq!(mine.status, ProjectStatus::Planned);

        let bob = f.projects.for_caller(&f.bob);
        assert!(matches!(
            block_on(bob.get(mine.id)),
            Err(DomainError::NotFound {
                resource: "project"
            })
        ));
        assert!(matches!(
            block_on(bob.update(
                mine.id,
                ProjectPatch {
                    name: Some("x".into()),
                    ..Default::default()
                },
                None
            )),
            Err(DomainError::NotFound { .. })
        ));
        assert!(matches!(
            block_on(bob.delete(mine.id, None)),
            Err(DomainError::NotFound { .. })
        ));
        assert_eq!(
            block_on(bob.list(ListQuery::first_page(&LIST_SPEC)))
                .unwrap()
                .total,
            0
        );
        assert_eq!(
            block_on(f.projects.for_caller(&f.admin).get(mine.id)).unwrap(),
            mine
        );
        assert_eq!(f.activity.actions(), ["project.created"]);
    }

    #[test]
    fn callers_without_the_permission_are_refused() {
        let f = fixture();
        let stranger = caller(&[]);
        assert!(matches!(
            block_on(
                f.projects
                    .for_caller(&stranger)
                    .create(NewProjectFactory::new().build())
            ),
            Err(DomainError::Forbidden { .. })
        ));
        assert!(matches!(
            block_on(
                f.projects
                    .for_caller(&Caller::new(Actor::Anonymous))
                    .list(ListQuery::first_page(&LIST_SPEC))
            ),
            Err(DomainError::Unauthenticated)
        ));
    }

    #[test]
    fn stale_versions_are_refused_and_changes_bump_the_version() {
        let f = fixture();
        let service = f.projects.for_caller(&f.ada);
        let project = block_on(service.create(NewProjectFactory::new().build())).unwrap();
        let rename = ProjectPatch {
            name: Some("Renamed".into()),
            ..Default::default()
        };
        assert!(matches!(
            block_on(service.update(project.id, rename.clone(), Some(&[7]))),
            Err(DomainError::PreconditionFailed)
        ));
        let renamed = block_on(service.update(project.id, rename.clone(), Some(&[1]))).unwrap();
        assert_eq!(
            (renamed.name.as_str(), renamed.meta.version),
            ("Renamed", 2)
        );
        // The same change again changes nothing and keeps the version.
        assert_eq!(
            block_on(service.update(project.id, rename, Some(&[2])))
                .unwrap()
                .meta
                .version,
            2
        );
        assert!(matches!(
            block_on(service.delete(project.id, Some(&[1]))),
            Err(DomainError::PreconditionFailed)
        ));
        block_on(service.delete(project.id, Some(&[2]))).unwrap();
        assert!(matches!(
            block_on(service.get(project.id)),
            Err(DomainError::NotFound { .. })
        ));
        let restored = block_on(service.restore(project.id)).unwrap();
        assert!(restored.meta.deleted_at.is_none());
        assert_eq!(restored.meta.version, 4);
    }

    #[test]
    fn invalid_input_names_every_field_and_bulk_is_all_or_nothing() {
        let f = fixture();
        let service = f.projects.for_caller(&f.ada);
        let err = block_on(service.create(NewProject {
            name: " ".into(),
            description: Some("x".repeat(10_001)),
            status: None,
        }))
        .unwrap_err();
        assert_eq!(domain_fields(err), ["name", "description"]);

        let mut items: Vec<NewProject> = (0..5).map(|_| NewProjectFactory::new().build()).collect();
        items[3].name = "y".repeat(201);
        let err = block_on(service.create_many(items)).unwrap_err();
        assert_eq!(domain_fields(err), ["items[3].name"]);
        assert_eq!(
            block_on(service.list(ListQuery::first_page(&LIST_SPEC)))
                .unwrap()
                .total,
            0
        );

        let created = block_on(
            service.create_many((0..3).map(|_| NewProjectFactory::new().build()).collect()),
        )
        .unwrap();
        assert_eq!(created.len(), 3);
        let ids: Vec<_> = created.iter().map(|p| p.id).collect();
        let done = block_on(service.update_many(
            &ids,
            ProjectPatch {
                status: Some(ProjectStatus::Completed),
                ..Default::default()
            },
        ))
        .unwrap();
        assert!(
            done.iter()
                .all(|p| p.status == ProjectStatus::Completed && p.meta.version == 2)
        );
        block_on(service.delete_many(&ids)).unwrap();
        assert_eq!(
            block_on(service.list(ListQuery::first_page(&LIST_SPEC)))
                .unwrap()
                .total,
            0
        );
    }

    #[test]
    fn bulk_changes_touching_anothers_project_change_nothing() {
        let f = fixture();
        let mine = block_on(
            f.projects
                .for_caller(&f.ada)
                .create(NewProjectFactory::new().build()),
        )
        .unwrap();
        let theirs = block_on(
            f.projects
                .for_caller(&f.bob)
                .create(NewProjectFactory::new().build()),
        )
        .unwrap();
        let service = f.projects.for_caller(&f.ada);
        assert!(matches!(
            block_on(service.delete_many(&[mine.id, theirs.id])),
            Err(DomainError::NotFound { .. })
        ));
        assert!(block_on(service.get(mine.id)).is_ok(), "all or nothing");
    }

    #[test]
    fn archived_projects_are_read_only_until_unarchived() {
        let f = fixture();
        let service = f.projects.for_caller(&f.ada);
        let project = block_on(service.create(NewProject {
            name: "Old".into(),
            description: None,
            status: Some(ProjectStatus::Archived),
        }))
        .unwrap();
        let err = block_on(service.update(
            project.id,
            ProjectPatch {
                name: Some("New".into()),
                ..Default::default()
            },
            None,
        ))
        .unwrap_err();
        assert_eq!(domain_fields(err), ["status"]);
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
