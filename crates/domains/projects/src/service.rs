// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! Projects use cases: the kernel's generic CRUD, which runs the permission check, the scope,
//! validation (the field rules in `model`, the custom ones in `rules`), one transaction per
//! use case and its activity entry. `Projects::for_caller(&caller)` is the entry point.

use keel_kernel::crud::Crud;

use crate::model::Project;

/// Every project use case: `list`, `get`, `create`, `create_many`, `update`, `update_many`,
/// `delete`, `delete_many`, `restore`.
pub type Projects = Crud<Project>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::crud::InMemoryCrud;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::{
        Actor, Caller, DomainError, ListQuery, ManualClock, PermissionSet, SessionId, UserId,
    };

    use super::*;
    use crate::model::NewProject;
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
        Fixture {
            projects: Projects::new(
                Arc::new(InMemoryCrud::default()),
                Arc::new(InMemoryUnitOfWork),
                activity.clone(),
                Arc::new(ManualClock::new(chrono::Utc::now())),
            ),
            activity,
            ada: caller(&[WRITE]),
            bob: caller(&[WRITE]),
            admin: caller(&[WRITE, MANAGE_ALL]),
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

        let bob = f.projects.for_caller(&f.bob);
        assert!(matches!(
            block_on(bob.get(mine.id)),
            Err(DomainError::NotFound {
                resource: "project"
            })
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
        assert!(matches!(
            block_on(
                f.projects
                    .for_caller(&caller(&[]))
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
    fn stale_versions_are_refused_and_deletes_can_be_undone() {
        let f = fixture();
        let service = f.projects.for_caller(&f.ada);
        let row = block_on(service.create(NewProjectFactory::new().build())).unwrap();
        assert!(matches!(
            block_on(service.delete(row.id, Some(&[7]))),
            Err(DomainError::PreconditionFailed)
        ));
        block_on(service.delete(row.id, Some(&[1]))).unwrap();
        assert!(matches!(
            block_on(service.get(row.id)),
            Err(DomainError::NotFound { .. })
        ));
        let restored = block_on(service.restore(row.id)).unwrap();
        assert!(restored.meta.deleted_at.is_none());
        assert_eq!(restored.meta.version, 3);
    }

    #[test]
    fn bulk_changes_touching_anothers_project_change_nothing() {
        let f = fixture();
        let ada = f.projects.for_caller(&f.ada);
        let bob = f.projects.for_caller(&f.bob);
        let mine = block_on(ada.create(NewProjectFactory::new().build())).unwrap();
        let theirs = block_on(bob.create(NewProjectFactory::new().build())).unwrap();
        assert!(matches!(
            block_on(ada.delete_many(&[mine.id, theirs.id])),
            Err(DomainError::NotFound { .. })
        ));
        assert!(block_on(ada.get(mine.id)).is_ok(), "all or nothing");
        assert!(block_on(bob.get(theirs.id)).is_ok());
    }

    #[test]
    fn invalid_input_names_the_field_and_bulk_is_all_or_nothing() {
        let f = fixture();
        let service = f.projects.for_caller(&f.ada);
        let mut bad = NewProjectFactory::new().build();
        bad.name = "x".repeat(201);
        let err = block_on(service.create(bad.clone())).unwrap_err();
        assert_eq!(domain_fields(err), ["name"]);

        let mut items: Vec<NewProject> = (0..4).map(|_| NewProjectFactory::new().build()).collect();
        items[2] = bad;
        let err = block_on(service.create_many(items)).unwrap_err();
        assert_eq!(domain_fields(err), ["items[2].name"]);
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
    }

    fn domain_fields(error: DomainError) -> Vec<String> {
        match error {
            DomainError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }
}
