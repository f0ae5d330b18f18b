// @generated from crates/domains/projects/domain.toml by `cargo xtask new-domain`; edit the spec
// or xtask/templates, then run `cargo xtask new-domain --regenerate projects`.
// Hand-written code goes in the files without this header.
//! Failures of project use cases.
//!
//! The generic use cases fail only in ways every domain shares (not found, not allowed,
//! invalid input, a stale version, storage), so the error is the kernel's; a rule in
//! `rules.rs` reports its own field errors through it.

/// What a project use case can fail with.
pub type ProjectError = keel_kernel::DomainError;
