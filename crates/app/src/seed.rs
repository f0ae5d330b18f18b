//! `api seed`: idempotent example data, created through the domain services.

use keel_release_notes::{ChangeType, NewReleaseNote, ReleaseError, ReleaseNotes};

/// What seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Release notes created.
    pub created: Vec<String>,
    /// Release notes that already existed.
    pub skipped: Vec<String>,
}

struct SeedNote {
    version: &'static str,
    title: &'static str,
    body: &'static str,
    change_type: ChangeType,
    publish: bool,
}

const RELEASE_NOTES: &[SeedNote] = &[SeedNote {
    version: "0.1.0",
    title: "Keel foundation",
    body: "## What's new\n\n\
           - Layered workspace: framework-free domains, sea-orm infrastructure, actix-web API.\n\
           - SQLite by default, PostgreSQL by URL; migrations guarded across replicas.\n\
           - RFC 9457 errors, request ids, JSON logs and Prometheus metrics.\n\
           - Health endpoints and graceful shutdown.\n",
    change_type: ChangeType::Feature,
    publish: true,
}];

/// Creates the example release notes that do not exist yet, as the system actor.
pub async fn run(release_notes: &ReleaseNotes) -> Result<SeedReport, ReleaseError> {
    let mut report = SeedReport::default();
    let releases = release_notes.for_system();
    for seed in RELEASE_NOTES {
        let created = releases
            .create(NewReleaseNote {
                version: seed.version.to_owned(),
                title: seed.title.to_owned(),
                body: seed.body.to_owned(),
                change_type: seed.change_type,
            })
            .await;
        match created {
            Ok(note) => {
                if seed.publish {
                    releases.publish(note.id).await?;
                }
                report.created.push(seed.version.to_owned());
            }
            Err(ReleaseError::VersionTaken(_)) => report.skipped.push(seed.version.to_owned()),
            Err(other) => return Err(other),
        }
    }
    Ok(report)
}
