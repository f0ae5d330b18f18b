//! Keel's schema migrations, applied in order by `api migrate` (or at startup when
//! `database.auto_migrate` is on). Each feature keeps its migrations in its own folder
//! (`src/<feature>/mYYYYMMDD_NNNNNN_description.rs`, with `up` and `down`; `down` must undo `up`
//! exactly) and lists them in its `mod.rs`; the names start with their date, and [`Migrator`]
//! runs every feature's migrations sorted by name.
//!
//! Table names: apalis (the job queue) owns `Jobs` and `Workers` in SQLite's main schema, so no
//! domain table may be called `jobs` or `workers`.

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

/// Declares every feature's migration folder once and collects their migrations.
macro_rules! features {
    ($($feature:ident),* $(,)?) => {
        $(mod $feature;)*

        /// Every feature's migrations, oldest first.
        fn all_migrations() -> Vec<Box<dyn MigrationTrait>> {
            let mut all: Vec<Box<dyn MigrationTrait>> = Vec::new();
            $(all.extend($feature::migrations());)*
            // Names start with their date: sorting by name is applying in the order written.
            all.sort_by(|a, b| a.name().cmp(b.name()));
            all
        }
    };
}

features! {
    release_notes,
    identity,
    activity,
    projects,
    jobs,
    idempotency,
    webhooks,
    // keel:new-domain:features
}

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        all_migrations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_name_is_dated_and_unique() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "duplicate migration names: {names:?}"
        );
        for name in &names {
            let date = name.get(1..9).unwrap_or_default();
            assert!(
                name.starts_with('m') && date.chars().all(|c| c.is_ascii_digit()),
                "{name} must be named mYYYYMMDD_NNNNNN_description"
            );
        }
        assert_eq!(
            names.first().map(String::as_str),
            Some("m20261123_000001_create_release_notes")
        );
    }
}
