// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! The storage port of projects: the kernel's generic CRUD repository, which
//! `keel-infrastructure` implements once for every resource (`SeaCrud`). Ports of custom
//! queries live beside their use cases.

use keel_kernel::crud::CrudRepository;

use crate::model::Project;

/// Where projects are stored.
pub type ProjectRepository = dyn CrudRepository<Project>;
