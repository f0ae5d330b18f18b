//! The migration runner: status, rollback, fresh, and concurrent runners.

use keel_config::{DatabaseSettings, Settings, Sources};
use keel_infrastructure::migrate;
use keel_infrastructure::testing::TestDatabase;
use keel_migration::{Migrator, MigratorTrait};

/// Names of every migration this build knows, in order.
fn all() -> Vec<String> {
    Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

fn settings_for(database: &TestDatabase) -> DatabaseSettings {
    Settings::load_from(&Sources::from_vars([(
        "APP__DATABASE__URL",
        database.url(),
    )]))
    .unwrap()
    .database
}

#[tokio::test]
async fn status_rollback_and_reapply() {
    let database = TestDatabase::create().await.unwrap();
    let settings = settings_for(&database);

    let status = migrate::status(&settings).await.unwrap();
    let names: Vec<String> = status.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, all());
    assert!(!names.is_empty());
    assert!(status.iter().all(|m| !m.applied));

    let applied = migrate::apply_pending(&settings).await.unwrap();
    assert_eq!(applied, all());
    assert!(migrate::apply_pending(&settings).await.unwrap().is_empty());
    assert!(
        migrate::status(&settings)
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied)
    );

    let reverted = migrate::rollback(&settings, 1).await.unwrap();
    assert_eq!(reverted.last(), all().last());
    let status = migrate::status(&settings).await.unwrap();
    assert!(!status.last().unwrap().applied);
    assert_eq!(migrate::apply_pending(&settings).await.unwrap(), reverted);

    assert_eq!(migrate::fresh(&settings).await.unwrap(), all());
    assert!(
        migrate::status(&settings)
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied)
    );
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let database = TestDatabase::create().await.unwrap();
    let settings = settings_for(&database);
    let runners = (0..4).map(|_| {
        let settings = settings.clone();
        tokio::spawn(async move { migrate::apply_pending(&settings).await })
    });
    let mut applied = Vec::new();
    for runner in futures_util::future::join_all(runners).await {
        applied.extend(
            runner
                .unwrap()
                .expect("every runner succeeds: one applies, the others wait"),
        );
    }
    assert_eq!(
        applied,
        all(),
        "each migration applied by exactly one runner"
    );
    let status = migrate::status(&settings).await.unwrap();
    assert_eq!(status.len(), all().len());
    assert!(status.iter().all(|m| m.applied));
}
