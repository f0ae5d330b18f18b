//! Projects' custom query, written by hand (regenerating never overwrites this file): the
//! status counts behind `GET /projects/summary`, scoped exactly like every generated query;
//! the attachments' registration (`attachments.rs`); and the real-time topic of project
//! changes (`projects`, for WebSocket clients).

pub mod attachments;

use std::sync::Arc;

use async_trait::async_trait;
use keel_kernel::crud::RowScope;
use keel_kernel::{AppStateBuilder, RepoError};
use keel_projects::{Project, ProjectReportRepository, ProjectReports, ProjectStatus};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use super::entity::{Column, Entity};
use crate::crud::scope_condition;
use crate::error::repo_err;
use crate::{Adapters, RegisterError};

/// The project reports on a connection pool.
#[derive(Debug, Clone)]
pub struct SeaProjectReports {
    db: DatabaseConnection,
}

impl SeaProjectReports {
    /// The reports on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl ProjectReportRepository for SeaProjectReports {
    async fn count_by_status(
        &self,
        scope: RowScope,
    ) -> Result<Vec<(ProjectStatus, u64)>, RepoError> {
        // The same scope condition as every CRUD query: one GROUP BY, never another owner's rows.
        let rows: Vec<(String, i64)> = Entity::find()
            .select_only()
            .column(Column::Status)
            .column_as(Column::Id.count(), "count")
            .filter(scope_condition::<Project>(scope)?)
            .filter(Column::DeletedAt.is_null())
            .group_by(Column::Status)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(repo_err)?;
        rows.into_iter()
            .map(|(status, count)| {
                let status = status
                    .parse::<ProjectStatus>()
                    .map_err(|e| RepoError::Other(e.into()))?;
                Ok((status, u64::try_from(count).unwrap_or_default()))
            })
            .collect()
    }
}

/// Registers the project reports.
pub(super) fn register(
    adapters: &Adapters,
    state: &mut AppStateBuilder,
) -> Result<(), RegisterError> {
    state.insert(ProjectReports::new(Arc::new(SeaProjectReports::new(
        adapters.db.clone(),
    ))));
    adapters.realtime().add_topic(keel_projects::rules::TOPIC);
    attachments::register(adapters, state)
}
