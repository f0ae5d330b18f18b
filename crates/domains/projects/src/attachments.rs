//! Files attached to projects, written by hand: the example of object storage. An attachment
//! is scoped exactly like its project (whoever cannot see the project gets 404 for every
//! operation on its attachments), its type is judged from its bytes, its name is data (the
//! object's key is `attachments/<project>/<attachment>`), and an archived project's
//! attachments are read-only like the project.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::query::{FieldKind, FieldSpec, ListSpec};
use keel_kernel::storage::{
    Download, Incoming, ObjectKey, ObjectStorage, Received, UploadRules, clean_filename,
};
use keel_kernel::{
    ActivityLog, Caller, Clock, DomainError, ListQuery, NewActivity, Page, RepoError, Transaction,
    UnitOfWork, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use keel_kernel::crud::{Purpose, Resource as _, RowScope};

use crate::model::{Project, ProjectId, ProjectStatus};
use crate::service::Projects;

keel_kernel::define_id!(
    /// Identifies an attachment.
    AttachmentId
);

/// The media types attachments may have, as sniffed from their content.
pub const ALLOWED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
];

/// Sorting and filtering allowed on attachment lists.
pub const LIST_SPEC: ListSpec = ListSpec {
    fields: &[
        FieldSpec::new("filename", FieldKind::Text)
            .sortable()
            .filterable(),
        FieldSpec::new("content_type", FieldKind::Enum(ALLOWED_TYPES)).filterable(),
        FieldSpec::new("size_bytes", FieldKind::Integer)
            .sortable()
            .filterable(),
        FieldSpec::new("created_at", FieldKind::Timestamp)
            .sortable()
            .filterable(),
    ],
    default_sort: "-created_at",
    searchable: true,
};

/// The prefix of every attachment's key.
const PREFIX: &str = "attachments";

/// A file attached to a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Identity.
    pub id: AttachmentId,
    /// The project it belongs to.
    pub project_id: ProjectId,
    /// The name it was uploaded with (cleaned; shown back, never used as a path).
    pub filename: String,
    /// The media type sniffed from its content.
    pub content_type: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Where the object store keeps it.
    pub storage_key: String,
    /// Who uploaded it.
    pub created_by: Option<UserId>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Stores attachment rows.
#[async_trait]
pub trait AttachmentRepository: Send + Sync + std::fmt::Debug {
    /// Stores a new row in `tx`.
    async fn insert(&self, tx: &mut dyn Transaction, row: &Attachment) -> Result<(), RepoError>;
    /// One page of a project's attachments.
    async fn list(
        &self,
        project: ProjectId,
        query: &ListQuery,
    ) -> Result<Page<Attachment>, RepoError>;
    /// One attachment of a project.
    async fn find(
        &self,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<Option<Attachment>, RepoError>;
    /// Deletes one attachment of a project in `tx`; whether it existed.
    async fn delete(
        &self,
        tx: &mut dyn Transaction,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<bool, RepoError>;
    /// Which of `keys` some row refers to.
    async fn known_keys(&self, keys: &[String]) -> Result<HashSet<String>, RepoError>;
}

/// The attachments service's dependencies.
#[derive(Debug, Clone)]
pub struct Attachments {
    projects: Projects,
    repository: Arc<dyn AttachmentRepository>,
    storage: Arc<dyn ObjectStorage>,
    unit_of_work: Arc<dyn UnitOfWork>,
    activity: Arc<dyn ActivityLog>,
    clock: Arc<dyn Clock>,
    max_bytes: u64,
    link_ttl: Duration,
}

/// How attachments are stored and linked.
#[derive(Debug, Clone, Copy)]
pub struct AttachmentSettings {
    /// Largest accepted file (`storage.max_attachment_bytes`).
    pub max_bytes: u64,
    /// How long download links work (`storage.link_ttl`).
    pub link_ttl: Duration,
}

/// The attachment's row and a link that downloads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The row.
    pub attachment: Attachment,
    /// A presigned or signed URL, valid for `storage.link_ttl`.
    pub download_url: String,
}

/// An upload accepted for a project, arriving: push its chunks into `incoming`, then
/// [`AttachmentService::finish_upload`] (or `abort` on any error).
#[derive(Debug)]
pub struct PendingUpload {
    project: ProjectId,
    /// The project's owner: whom the activity entry (and its live event) concerns.
    owner: UserId,
    id: AttachmentId,
    key: ObjectKey,
    /// Where the bytes go.
    pub incoming: Incoming,
}

impl Attachments {
    /// Wires the service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        projects: Projects,
        repository: Arc<dyn AttachmentRepository>,
        storage: Arc<dyn ObjectStorage>,
        unit_of_work: Arc<dyn UnitOfWork>,
        activity: Arc<dyn ActivityLog>,
        clock: Arc<dyn Clock>,
        settings: AttachmentSettings,
    ) -> Self {
        Self {
            projects,
            repository,
            storage,
            unit_of_work,
            activity,
            clock,
            max_bytes: settings.max_bytes,
            link_ttl: settings.link_ttl,
        }
    }

    /// What an upload must satisfy.
    pub fn rules(&self) -> UploadRules {
        UploadRules {
            max_bytes: self.max_bytes,
            allowed_types: ALLOWED_TYPES,
        }
    }

    /// The use cases as `caller` may run them.
    pub fn for_caller<'a>(&'a self, caller: &'a Caller) -> AttachmentService<'a> {
        AttachmentService { deps: self, caller }
    }

    /// Deletes stored objects no attachment refers to, older than `grace` (uploads whose row
    /// was never written, rows whose object delete failed): the `purge_orphaned_attachments`
    /// schedule. Returns how many went.
    pub async fn purge_orphans(&self, grace: Duration) -> Result<usize, DomainError> {
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let old: Vec<_> = self
            .storage
            .list(PREFIX)
            .await?
            .into_iter()
            .filter(|object| object.last_modified < cutoff)
            .collect();
        let mut purged = 0;
        for batch in old.chunks(500) {
            let keys: Vec<String> = batch.iter().map(|o| o.key.as_str().to_owned()).collect();
            let known = self.repository.known_keys(&keys).await?;
            for object in batch.iter().filter(|o| !known.contains(o.key.as_str())) {
                self.storage.delete(&object.key).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Deletes stored attachment objects no row refers to: the `purge_orphaned_attachments`
/// schedule's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeOrphanedAttachments {
    /// Objects younger than this many seconds are left alone (an upload may still be writing
    /// its row).
    pub grace_secs: u64,
}

impl keel_kernel::jobs::Job for PurgeOrphanedAttachments {
    const KIND: &'static str = "projects.purge_orphaned_attachments";
    const QUEUE: keel_kernel::jobs::Queue = keel_kernel::jobs::Queue::Low;
}

/// Attachment use cases bound to one caller.
#[derive(Debug)]
pub struct AttachmentService<'a> {
    deps: &'a Attachments,
    caller: &'a Caller,
}

impl AttachmentService<'_> {
    /// The project, if the caller reaches it (the project's own scope); else 404.
    async fn project(&self, project: ProjectId) -> Result<Project, DomainError> {
        self.deps
            .projects
            .for_caller(self.caller)
            .get(project)
            .await
    }

    async fn project_status(&self, project: ProjectId) -> Result<ProjectStatus, DomainError> {
        Ok(self.project(project).await?.status)
    }

    /// The caller may change the project's attachments when it may change the project: its
    /// write scope (narrower than the read scope for shared projects), and not archived.
    async fn writable(&self, project: ProjectId) -> Result<UserId, DomainError> {
        let project = self.project(project).await?;
        let scope = RowScope::for_caller::<Project>(self.caller, Purpose::Write)?;
        if !scope.admits(project.meta.owner, |name| project.field(name)) {
            return Err(DomainError::NotFound {
                resource: "project",
            });
        }
        if project.status == ProjectStatus::Archived {
            return Err(DomainError::invalid(
                "project",
                "archived",
                "the project is archived: its attachments are read-only until it is not",
            ));
        }
        Ok(project.meta.owner)
    }

    /// Accepts an upload to `project` before any of its bytes are read: the caller must
    /// reach the project and may write to it.
    pub async fn begin_upload(&self, project: ProjectId) -> Result<PendingUpload, DomainError> {
        let owner = self.writable(project).await?;
        let id = AttachmentId::new();
        let key = ObjectKey::new([
            PREFIX,
            project.to_string().as_str(),
            id.to_string().as_str(),
        ])?;
        let writer = self.deps.storage.writer(&key).await?;
        Ok(PendingUpload {
            project,
            owner,
            id,
            key,
            incoming: Incoming::new(writer, self.deps.rules()),
        })
    }

    /// Stores the upload and its row (the row only if the whole file is stored; the object
    /// is removed again if the row cannot be written).
    pub async fn finish_upload(
        &self,
        upload: PendingUpload,
        filename: &str,
    ) -> Result<Attachment, DomainError> {
        let PendingUpload {
            project,
            owner,
            id,
            key,
            incoming,
        } = upload;
        let received: Received = match incoming.finish().await {
            Ok(received) => received,
            Err((error, incoming)) => {
                incoming.abort().await;
                return Err(error);
            }
        };
        let now = self.deps.clock.now();
        let row = Attachment {
            id,
            project_id: project,
            filename: clean_filename(filename),
            content_type: received.content_type.to_owned(),
            size_bytes: received.size,
            sha256: received.sha256,
            storage_key: key.as_str().to_owned(),
            created_by: self.caller.actor.user_id(),
            created_at: now,
        };
        let stored = async {
            let mut tx = self.deps.unit_of_work.begin().await?;
            self.deps.repository.insert(tx.as_mut(), &row).await?;
            let entry = NewActivity::new("project.attachment_added", "project", now)
                .resource(project)
                .subject(owner)
                .changes(json!({
                    "attachment_id": row.id,
                    "filename": row.filename,
                    "content_type": row.content_type,
                    "size_bytes": row.size_bytes,
                }));
            self.deps
                .activity
                .record(tx.as_mut(), self.caller, entry)
                .await?;
            tx.commit().await?;
            Ok::<_, DomainError>(())
        }
        .await;
        if let Err(error) = stored {
            // Best effort; the orphan sweep removes it otherwise.
            let _ = self.deps.storage.delete(&key).await;
            return Err(error);
        }
        Ok(row)
    }

    /// One page of the project's attachments.
    pub async fn list(
        &self,
        project: ProjectId,
        query: ListQuery,
    ) -> Result<Page<Attachment>, DomainError> {
        self.project_status(project).await?;
        Ok(self.deps.repository.list(project, &query).await?)
    }

    /// One attachment of the project; 404 when the project has none with this id.
    async fn find(&self, project: ProjectId, id: AttachmentId) -> Result<Attachment, DomainError> {
        self.deps
            .repository
            .find(project, id)
            .await?
            .ok_or(DomainError::NotFound {
                resource: "attachment",
            })
    }

    /// One attachment with a short-lived download link.
    pub async fn get(&self, project: ProjectId, id: AttachmentId) -> Result<Linked, DomainError> {
        self.project_status(project).await?;
        let attachment = self.find(project, id).await?;
        let key = ObjectKey::parse(&attachment.storage_key)?;
        let download_url = self
            .deps
            .storage
            .download_url(
                &key,
                &Download {
                    filename: &attachment.filename,
                    content_type: &attachment.content_type,
                    expires_in: self.deps.link_ttl,
                },
            )
            .await?;
        Ok(Linked {
            attachment,
            download_url,
        })
    }

    /// Deletes an attachment: its row at once, its object right after (or by the sweep).
    pub async fn delete(&self, project: ProjectId, id: AttachmentId) -> Result<(), DomainError> {
        let owner = self.writable(project).await?;
        let attachment = self.find(project, id).await?;
        let mut tx = self.deps.unit_of_work.begin().await?;
        if !self
            .deps
            .repository
            .delete(tx.as_mut(), project, id)
            .await?
        {
            return Err(DomainError::NotFound {
                resource: "attachment",
            });
        }
        let entry = NewActivity::new(
            "project.attachment_removed",
            "project",
            self.deps.clock.now(),
        )
        .resource(project)
        .subject(owner)
        .changes(json!({ "attachment_id": id, "filename": attachment.filename }));
        self.deps
            .activity
            .record(tx.as_mut(), self.caller, entry)
            .await?;
        tx.commit().await?;
        if let Ok(key) = ObjectKey::parse(&attachment.storage_key) {
            let _ = self.deps.storage.delete(&key).await;
        }
        Ok(())
    }
}

/// In-memory attachment rows, for unit tests.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct InMemoryAttachments {
    rows: std::sync::Mutex<Vec<Attachment>>,
}

#[cfg(any(test, feature = "testing"))]
impl InMemoryAttachments {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<Attachment>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(any(test, feature = "testing"))]
#[async_trait]
impl AttachmentRepository for InMemoryAttachments {
    async fn insert(&self, _: &mut dyn Transaction, row: &Attachment) -> Result<(), RepoError> {
        self.rows().push(row.clone());
        Ok(())
    }

    async fn list(
        &self,
        project: ProjectId,
        query: &ListQuery,
    ) -> Result<Page<Attachment>, RepoError> {
        let rows: Vec<Attachment> = self
            .rows()
            .iter()
            .filter(|r| r.project_id == project)
            .cloned()
            .collect();
        Ok(Page {
            total: rows.len() as u64,
            items: rows,
            limit: query.limit,
            offset: Some(0),
            next_cursor: None,
        })
    }

    async fn find(
        &self,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<Option<Attachment>, RepoError> {
        Ok(self
            .rows()
            .iter()
            .find(|r| r.project_id == project && r.id == id)
            .cloned())
    }

    async fn delete(
        &self,
        _: &mut dyn Transaction,
        project: ProjectId,
        id: AttachmentId,
    ) -> Result<bool, RepoError> {
        let mut rows = self.rows();
        let before = rows.len();
        rows.retain(|r| !(r.project_id == project && r.id == id));
        Ok(rows.len() < before)
    }

    async fn known_keys(&self, keys: &[String]) -> Result<HashSet<String>, RepoError> {
        Ok(self
            .rows()
            .iter()
            .filter(|r| keys.contains(&r.storage_key))
            .map(|r| r.storage_key.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use futures_executor::block_on;
    use keel_kernel::activity::InMemoryActivityLog;
    use keel_kernel::crud::InMemoryCrud;
    use keel_kernel::repo::InMemoryUnitOfWork;
    use keel_kernel::storage::InMemoryStorage;
    use keel_kernel::{Actor, ManualClock, PermissionSet, SessionId};

    use super::*;
    use crate::model::{NewProject, ProjectPatch};
    use crate::policy::WRITE;

    struct Fixture {
        attachments: Attachments,
        projects: Projects,
        storage: InMemoryStorage,
        ada: Caller,
        bob: Caller,
    }

    fn member() -> Caller {
        Caller::new(Actor::User {
            id: UserId::new(),
            session: SessionId::new(),
            permissions: [WRITE].into_iter().collect::<PermissionSet>(),
        })
    }

    fn fixture() -> Fixture {
        let activity = Arc::new(InMemoryActivityLog::default());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let projects = Projects::new(
            Arc::new(InMemoryCrud::default()),
            Arc::new(InMemoryUnitOfWork),
            activity.clone(),
            clock.clone(),
        );
        let storage = InMemoryStorage::default();
        Fixture {
            attachments: Attachments::new(
                projects.clone(),
                Arc::new(InMemoryAttachments::default()),
                Arc::new(storage.clone()),
                Arc::new(InMemoryUnitOfWork),
                activity,
                clock,
                AttachmentSettings {
                    max_bytes: 1024,
                    link_ttl: Duration::from_secs(60),
                },
            ),
            projects,
            storage,
            ada: member(),
            bob: member(),
        }
    }

    fn upload(
        service: &AttachmentService<'_>,
        project: ProjectId,
        bytes: &[u8],
        name: &str,
    ) -> Result<Attachment, DomainError> {
        let mut pending = block_on(service.begin_upload(project))?;
        if let Err(error) = block_on(pending.incoming.push(bytes)) {
            block_on(pending.incoming.abort());
            return Err(error);
        }
        block_on(service.finish_upload(pending, name))
    }

    fn new_project(projects: &Projects, owner: &Caller, name: &str) -> crate::model::Project {
        block_on(projects.for_caller(owner).create(NewProject {
            name: name.into(),
            description: None,
            status: None,
        }))
        .unwrap()
    }

    #[test]
    fn an_attachment_is_stored_listed_linked_and_deleted_within_its_project_scope() {
        let f = fixture();
        let project = new_project(&f.projects, &f.ada, "Site");
        let ada = f.attachments.for_caller(&f.ada);
        let stored = upload(&ada, project.id, b"notes\n", "../../etc/notes.txt").unwrap();
        assert_eq!(stored.filename, "notes.txt", "the name is data");
        assert_eq!(stored.content_type, "text/plain");
        assert_eq!(
            stored.storage_key,
            format!("attachments/{}/{}", project.id, stored.id)
        );
        assert_eq!(f.storage.object(&stored.storage_key).unwrap(), b"notes\n");
        let linked = block_on(ada.get(project.id, stored.id)).unwrap();
        assert!(linked.download_url.contains(&stored.storage_key));
        let page = block_on(ada.list(project.id, ListQuery::first_page(&LIST_SPEC))).unwrap();
        assert_eq!(page.total, 1);

        // Bob cannot see Ada's project: every operation is 404, nothing is stored.
        let bob = f.attachments.for_caller(&f.bob);
        let not_found = |r: Result<_, DomainError>| {
            matches!(
                r,
                Err(DomainError::NotFound {
                    resource: "project"
                })
            )
        };
        assert!(not_found(block_on(bob.begin_upload(project.id)).map(drop)));
        assert!(not_found(
            block_on(bob.list(project.id, ListQuery::first_page(&LIST_SPEC))).map(drop)
        ));
        assert!(not_found(
            block_on(bob.get(project.id, stored.id)).map(drop)
        ));
        assert!(not_found(block_on(bob.delete(project.id, stored.id))));
        // Nor can an attachment be reached through another project.
        let other = new_project(&f.projects, &f.bob, "Bob's");
        assert!(matches!(
            block_on(bob.get(other.id, stored.id)),
            Err(DomainError::NotFound {
                resource: "attachment"
            })
        ));

        block_on(ada.delete(project.id, stored.id)).unwrap();
        assert!(f.storage.keys().is_empty(), "the object went with the row");
        assert!(matches!(
            block_on(ada.delete(project.id, stored.id)),
            Err(DomainError::NotFound { .. })
        ));
    }

    #[test]
    fn refused_uploads_leave_nothing_and_archived_projects_are_read_only() {
        let f = fixture();
        let project = new_project(&f.projects, &f.ada, "Site");
        let ada = f.attachments.for_caller(&f.ada);
        let exe = [b'M', b'Z', 0x90, 0, 3, 0, 0, 0, 4, 0];
        assert_eq!(
            upload(&ada, project.id, &exe, "cat.png")
                .unwrap_err()
                .code(),
            "unsupported_media_type"
        );
        assert_eq!(
            upload(&ada, project.id, &[b'a'; 2000], "big.txt")
                .unwrap_err()
                .code(),
            "payload_too_large"
        );
        assert!(f.storage.keys().is_empty());

        let kept = upload(&ada, project.id, b"keep", "k.txt").unwrap();
        block_on(f.projects.for_caller(&f.ada).update(
            project.id,
            ProjectPatch {
                status: Some(ProjectStatus::Archived),
                ..Default::default()
            },
            None,
        ))
        .unwrap();
        assert_eq!(
            upload(&ada, project.id, b"x", "x.txt").unwrap_err().code(),
            "validation_failed"
        );
        assert_eq!(
            block_on(ada.delete(project.id, kept.id))
                .unwrap_err()
                .code(),
            "validation_failed"
        );
        assert!(
            block_on(ada.get(project.id, kept.id)).is_ok(),
            "still readable"
        );
    }

    #[test]
    fn the_sweep_removes_only_objects_no_row_refers_to() {
        let f = fixture();
        let project = new_project(&f.projects, &f.ada, "Site");
        let ada = f.attachments.for_caller(&f.ada);
        let kept = upload(&ada, project.id, b"keep", "k.txt").unwrap();
        let orphan = ObjectKey::parse("attachments/p/orphan").unwrap();
        let mut writer = block_on(f.storage.writer(&orphan)).unwrap();
        block_on(writer.write(b"lost")).unwrap();
        block_on(writer.finish()).unwrap();
        assert_eq!(
            block_on(f.attachments.purge_orphans(Duration::ZERO)).unwrap(),
            1
        );
        assert_eq!(f.storage.keys(), [kept.storage_key]);
    }
}
