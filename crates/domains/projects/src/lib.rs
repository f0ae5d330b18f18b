//! Projects: named, owned, soft-deletable pieces of work. The reference domain: every crate
//! `cargo xtask new-domain` writes has this shape.
//!
//! - `model`: the entity, its input types and every rule on their fields (including one
//!   business rule: archived projects are read-only until un-archived);
//! - `policy`: permissions and the list allow-list;
//! - `service`: the use cases, which are the kernel's generic [`keel_kernel::crud::Crud`];
//! - `reports`: a custom query beside them (counts per status), with its own port;
//! - `testing`: factories of realistic input.

pub mod model;
pub mod policy;
pub mod reports;

pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use model::{NewProject, Project, ProjectId, ProjectPatch, ProjectStatus};
pub use policy::{LIST_SPEC, MANAGE_ALL, PERMISSIONS, WRITE};
pub use reports::{ProjectReportRepository, ProjectReports, StatusSummary};
pub use service::Projects;
