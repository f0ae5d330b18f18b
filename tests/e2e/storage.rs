//! Persistence against the real database, through the domain's ports.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use keel_infrastructure::SeaUnitOfWork;
use keel_infrastructure::release_notes::SeaReleaseNoteRepository;
use keel_kernel::{ListQuery, UnitOfWork};
use keel_release_notes::{
    ChangeType, LIST_SPEC, NewReleaseNote, ReleaseError, ReleaseNote, ReleaseNoteId,
    ReleaseNotePatch, ReleaseNoteRepository, ReleaseStatus, Version,
};

use crate::support::spawn_app;

#[tokio::test]
async fn a_taken_version_is_a_conflict_and_changes_nothing() {
    let app = spawn_app().await;
    let first = app.release_note("3.0.0", "Original", true).await;
    let duplicate = app
        .release_notes()
        .create(NewReleaseNote {
            version: "v3.0.0".into(),
            title: "Impostor".into(),
            body: String::new(),
            change_type: ChangeType::Breaking,
        })
        .await;
    assert!(matches!(duplicate, Err(ReleaseError::VersionTaken(v)) if v == "3.0.0"));

    let other = app.release_note("3.1.0", "Other", false).await;
    let renamed = app
        .release_notes()
        .update(
            other.id,
            ReleaseNotePatch {
                version: Some("3.0.0".into()),
                title: Some("Renamed".into()),
                ..ReleaseNotePatch::default()
            },
        )
        .await;
    assert!(matches!(renamed, Err(ReleaseError::VersionTaken(_))));
    let stored = app.release_notes().get(other.id).await.unwrap();
    assert_eq!(
        stored.title, "Other",
        "a failed update leaves the row as it was"
    );
    assert_eq!(app.release_notes().get(first.id).await.unwrap(), first);
}

#[tokio::test]
async fn a_transaction_dropped_without_commit_stores_nothing() {
    let app = spawn_app().await;
    let repository = SeaReleaseNoteRepository::new(app.pool.clone());
    let unit_of_work = SeaUnitOfWork::new(app.pool.clone());
    let now = keel_kernel::clock::to_storage_precision(Utc::now());
    let note = ReleaseNote {
        id: ReleaseNoteId::new(),
        version: Version::parse("9.9.9").unwrap(),
        title: "Never committed".into(),
        body: String::new(),
        change_type: ChangeType::Bugfix,
        status: ReleaseStatus::Draft,
        published_at: None,
        created_by: None,
        created_at: now,
        updated_at: now,
    };
    {
        let mut tx = unit_of_work.begin().await.unwrap();
        repository.insert(tx.as_mut(), &note).await.unwrap();
        // Dropped here: rolled back.
    }
    assert!(matches!(
        app.release_notes().get(note.id).await,
        Err(ReleaseError::NotFound)
    ));

    let mut tx = unit_of_work.begin().await.unwrap();
    repository.insert(tx.as_mut(), &note).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.release_notes().get(note.id).await.unwrap(), note);
}

#[tokio::test]
async fn stored_values_read_back_exactly() {
    let app = spawn_app().await;
    let body = "# Ünïcödé ✓\n\n```rust\nfn main() {}\n```\n'quotes' \"double\" \\ backslash";
    let created = app
        .release_notes()
        .create(NewReleaseNote {
            version: "4.0.0-beta.2+build.7".into(),
            title: "Exact".into(),
            body: body.into(),
            change_type: ChangeType::Improvement,
        })
        .await
        .unwrap();
    let published = app.release_notes().publish(created.id).await.unwrap();
    let read = app.release_notes().get(created.id).await.unwrap();
    assert_eq!(
        read, published,
        "timestamps keep microseconds on every backend"
    );
    assert_eq!(read.body, body);
    assert_eq!(read.version.as_str(), "4.0.0-beta.2+build.7");
}

#[tokio::test]
async fn concurrent_writers_all_succeed() {
    let app = spawn_app().await;
    let note = app.release_note("5.0.0", "Contended", false).await;
    let services = Arc::new(app.services.clone());
    let writers = (0..16).map(|i| {
        let services = Arc::clone(&services);
        tokio::spawn(async move {
            services
                .release_notes
                .for_system()
                .update(
                    note.id,
                    ReleaseNotePatch {
                        title: Some(format!("Writer {i}")),
                        ..ReleaseNotePatch::default()
                    },
                )
                .await
        })
    });
    for result in futures_util::future::join_all(writers).await {
        result.unwrap().expect("no writer fails with a lock error");
    }
    let stored = app.release_notes().get(note.id).await.unwrap();
    assert!(stored.title.starts_with("Writer "));
}

#[tokio::test]
async fn keyset_pages_over_nullable_sort_keys_cover_every_row_once() {
    let app = spawn_app().await;
    for i in 0..13 {
        app.release_note(&format!("6.{i}.0"), &format!("Note {i}"), i % 2 == 0)
            .await;
    }
    // Keel itself sees drafts too; drafts have no published_at and sort last.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![("limit".to_owned(), "4".to_owned())];
        if let Some(cursor) = &cursor {
            params.push(("cursor".to_owned(), cursor.clone()));
        }
        let query = ListQuery::parse(&LIST_SPEC, params).unwrap();
        let page = app.release_notes().list(query).await.unwrap();
        assert_eq!(page.total, 13);
        seen.extend(page.items.iter().map(|n| (n.id, n.published_at.is_some())));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 13);
    assert_eq!(
        seen.iter().map(|(id, _)| id).collect::<HashSet<_>>().len(),
        13
    );
    let first_draft = seen.iter().position(|(_, published)| !published).unwrap();
    assert!(
        seen[first_draft..].iter().all(|(_, published)| !published),
        "NULLs sort last"
    );
    assert_eq!(first_draft, 7);
}
