//! Projects: named, owned, soft-deletable pieces of work. The reference domain: it is generated
//! from `domain.toml` by `cargo xtask new-domain` like any team's domain, and shows where
//! hand-written code goes.
//!
//! Generated: `model` (the entity and its field rules), `policy` (permissions and the list
//! allow-list), `repository` (the storage port), `service` (the use cases, the kernel's generic
//! [`keel_kernel::crud::Crud`]), `error` and `testing` (factories). Written by hand: this file,
//! `rules` (a business rule, archived projects are read-only, and the row scope) and `reports`
//! (a custom query with its own port), `attachments` (files on projects, in object storage).

pub mod attachments;
pub mod error;
pub mod model;
pub mod policy;
pub mod reports;
pub mod repository;
pub mod rules;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::ProjectError;
pub use model::{NewProject, Project, ProjectId, ProjectPatch, ProjectStatus};
pub use policy::{LIST_SPEC, MANAGE_ALL, PERMISSIONS, WRITE};
pub use reports::{ProjectReportRepository, ProjectReports, ProjectReportsService, StatusSummary};
pub use repository::ProjectRepository;
pub use service::Projects;
