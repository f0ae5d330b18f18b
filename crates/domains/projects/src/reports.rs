//! A custom query next to the generic CRUD: how many projects the caller can see, by status.
//! It shows the pattern for any aggregate or report: a port of its own, a service that builds
//! the caller's [`RowScope`] (permission first), and a repository that applies the scope in
//! its query.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use keel_kernel::crud::{Purpose, RowScope};
use keel_kernel::{Caller, DomainError, RepoError};

use crate::model::{Project, ProjectStatus};

/// Aggregates over the `projects` table.
#[async_trait]
pub trait ProjectReportRepository: Send + Sync + Debug {
    /// Live projects in `scope`, counted per status (statuses with none may be absent).
    async fn count_by_status(
        &self,
        scope: RowScope,
    ) -> Result<Vec<(ProjectStatus, u64)>, RepoError>;
}

/// Live projects the caller can see, per status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSummary {
    /// All of them.
    pub total: u64,
    /// Every status, in lifecycle order, with its count (zero included).
    pub by_status: Vec<(ProjectStatus, u64)>,
}

/// Project reports.
#[derive(Debug, Clone)]
pub struct ProjectReports {
    repository: Arc<dyn ProjectReportRepository>,
}

impl ProjectReports {
    /// Wires the reports to their repository.
    pub fn new(repository: Arc<dyn ProjectReportRepository>) -> Self {
        Self { repository }
    }

    /// The reports as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> ProjectReportsService<'a> {
        ProjectReportsService {
            reports: self,
            caller,
        }
    }
}

/// The project reports bound to one caller.
#[derive(Debug)]
pub struct ProjectReportsService<'a> {
    reports: &'a ProjectReports,
    caller: &'a Caller,
}

impl ProjectReportsService<'_> {
    /// Counts per status of the projects the caller may read: their own, or everyone's with
    /// `projects:manage_all`.
    pub async fn status_summary(&self) -> Result<StatusSummary, DomainError> {
        let scope = RowScope::for_caller::<Project>(self.caller, Purpose::Read)?;
        let counts = self.reports.repository.count_by_status(scope).await?;
        let by_status: Vec<(ProjectStatus, u64)> = ProjectStatus::ALL
            .iter()
            .map(|status| {
                let count = counts
                    .iter()
                    .filter(|(s, _)| s == status)
                    .map(|(_, n)| n)
                    .sum();
                (*status, count)
            })
            .collect();
        Ok(StatusSummary {
            total: by_status.iter().map(|(_, n)| n).sum(),
            by_status,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_executor::block_on;
    use keel_kernel::{Actor, PermissionSet, SessionId, UserId};

    use super::*;
    use crate::policy::{MANAGE_ALL, WRITE};

    /// Answers fixed counts and remembers the scope it was asked for.
    #[derive(Debug, Default)]
    struct Recording {
        scopes: Mutex<Vec<RowScope>>,
    }

    #[async_trait]
    impl ProjectReportRepository for Recording {
        async fn count_by_status(
            &self,
            scope: RowScope,
        ) -> Result<Vec<(ProjectStatus, u64)>, RepoError> {
            self.scopes.lock().unwrap().push(scope);
            Ok(vec![
                (ProjectStatus::Active, 2),
                (ProjectStatus::Archived, 1),
            ])
        }
    }

    fn user(permissions: &[keel_kernel::Permission]) -> (UserId, Caller) {
        let id = UserId::new();
        let caller = Caller::new(Actor::User {
            id,
            session: SessionId::new(),
            permissions: permissions.iter().cloned().collect::<PermissionSet>(),
        });
        (id, caller)
    }

    #[test]
    fn members_count_their_own_and_admins_everyone() {
        let repository = Arc::new(Recording::default());
        let reports = ProjectReports::new(repository.clone());
        let (ada, member) = user(&[WRITE]);
        let summary = block_on(reports.for_caller(&member).status_summary()).unwrap();
        assert_eq!(summary.total, 3);
        assert_eq!(
            summary.by_status,
            [
                (ProjectStatus::Planned, 0),
                (ProjectStatus::Active, 2),
                (ProjectStatus::Completed, 0),
                (ProjectStatus::Archived, 1),
            ]
        );
        let (_, admin) = user(&[WRITE, MANAGE_ALL]);
        block_on(reports.for_caller(&admin).status_summary()).unwrap();
        let scopes = repository.scopes.lock().unwrap().clone();
        assert_eq!(scopes[0].owner(), Some(ada));
        assert_eq!(scopes[0].purpose(), Purpose::Read);
        assert_eq!(scopes[1].owner(), None);
    }

    #[test]
    fn callers_without_the_permission_never_reach_the_repository() {
        let repository = Arc::new(Recording::default());
        let reports = ProjectReports::new(repository.clone());
        let (_, stranger) = user(&[]);
        assert!(matches!(
            block_on(reports.for_caller(&stranger).status_summary()),
            Err(DomainError::Forbidden { .. })
        ));
        assert!(matches!(
            block_on(
                reports
                    .for_caller(&Caller::new(Actor::Anonymous))
                    .status_summary()
            ),
            Err(DomainError::Unauthenticated)
        ));
        assert!(repository.scopes.lock().unwrap().is_empty());
    }
}
