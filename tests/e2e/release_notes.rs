//! The public release-notes feed and the list contract, over HTTP.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, error_fields, json_of, send, spawn_app};

const NOTES: &str = "/api/v1/release-notes";

fn versions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["version"].as_str().unwrap().to_owned())
        .collect()
}

async fn publish_many(app: &TestApp, count: usize) {
    for i in 0..count {
        app.release_note(&format!("1.{i}.0"), &format!("Release {i:02}"), true)
            .await;
    }
}

#[tokio::test]
async fn the_feed_shows_published_notes_newest_first() {
    let app = spawn_app().await;
    app.release_note("1.0.0", "First", true).await;
    app.release_note("1.1.0", "Second", true).await;
    let draft = app.release_note("2.0.0-rc.1", "Secret draft", false).await;
    app.release_note("1.2.0", "Third", true).await;

    let page = app.get_json(NOTES, 200).await;
    assert_eq!(versions(&page), ["1.2.0", "1.1.0", "1.0.0"]);
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 20);
    assert_eq!(page["offset"], 0);
    assert!(page["next_cursor"].is_null());

    let item = &page["items"][0];
    for field in [
        "id",
        "version",
        "title",
        "body",
        "change_type",
        "status",
        "published_at",
        "created_by",
        "created_at",
        "updated_at",
    ] {
        assert!(item.get(field).is_some(), "missing `{field}` in {item}");
    }
    assert_eq!(item["status"], "published");
    assert!(item["published_at"].as_str().unwrap().ends_with('Z'));

    assert_problem(
        app.get(&format!("{NOTES}/{}", draft.id)).await,
        404,
        "not_found",
    )
    .await;
    let latest = app.get_json(&format!("{NOTES}/latest"), 200).await;
    assert_eq!(latest["version"], "1.2.0");
    let one = app
        .get_json(&format!("{NOTES}/{}", latest["id"].as_str().unwrap()), 200)
        .await;
    assert_eq!(one, latest);
}

#[tokio::test]
async fn latest_is_not_found_until_something_is_published() {
    let app = spawn_app().await;
    app.release_note("0.9.0", "Draft only", false).await;
    assert_problem(app.get(&format!("{NOTES}/latest")).await, 404, "not_found").await;
}

#[tokio::test]
async fn twenty_five_notes_page_by_offset_and_by_cursor() {
    let app = spawn_app().await;
    publish_many(&app, 25).await;

    let mut by_offset = Vec::new();
    for (offset, expected) in [(0, 10), (10, 10), (20, 5)] {
        let page = app
            .get_json(&format!("{NOTES}?limit=10&offset={offset}"), 200)
            .await;
        assert_eq!(page["total"], 25);
        assert_eq!(page["offset"], offset);
        assert_eq!(page["items"].as_array().unwrap().len(), expected);
        by_offset.extend(versions(&page));
    }
    assert_eq!(by_offset.iter().collect::<HashSet<_>>().len(), 25);

    let mut by_cursor = Vec::new();
    let mut path = format!("{NOTES}?limit=10");
    let mut pages = 0;
    loop {
        let page = app.get_json(&path, 200).await;
        pages += 1;
        assert_eq!(page["total"], 25);
        by_cursor.extend(versions(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{NOTES}?limit=10&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "the cursor must terminate");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        by_cursor, by_offset,
        "cursor and offset pages agree, no repeats"
    );
}

#[tokio::test]
async fn sorting_filtering_and_search() {
    let app = spawn_app().await;
    app.release_note("1.0.0", "Bravo search", true).await;
    app.release_note("1.1.0", "Alpha", true).await;
    app.release_note("1.2.0", "Charlie", true).await;

    let page = app.get_json(&format!("{NOTES}?sort=title"), 200).await;
    assert_eq!(versions(&page), ["1.1.0", "1.0.0", "1.2.0"]);
    let page = app.get_json(&format!("{NOTES}?sort=-title"), 200).await;
    assert_eq!(versions(&page), ["1.2.0", "1.0.0", "1.1.0"]);

    let page = app.get_json(&format!("{NOTES}?version=1.1.0"), 200).await;
    assert_eq!(versions(&page), ["1.1.0"]);
    let page = app
        .get_json(&format!("{NOTES}?version__in=1.0.0,1.2.0&sort=title"), 200)
        .await;
    assert_eq!(versions(&page), ["1.0.0", "1.2.0"]);
    let page = app
        .get_json(&format!("{NOTES}?change_type=bugfix"), 200)
        .await;
    assert_eq!(page["total"], 0);
    let page = app.get_json(&format!("{NOTES}?q=SEARCH"), 200).await;
    assert_eq!(versions(&page), ["1.0.0"], "search is case-insensitive");

    let second = app
        .get_json(&format!("{NOTES}?sort=published_at"), 200)
        .await["items"][1]["published_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = app
        .get_json(
            &format!("{NOTES}?published_at__gte={second}&sort=published_at"),
            200,
        )
        .await;
    assert_eq!(versions(&page), ["1.1.0", "1.2.0"]);
    let page = app
        .get_json(&format!("{NOTES}?published_at__lte={second}"), 200)
        .await;
    assert_eq!(versions(&page), ["1.1.0", "1.0.0"]);
}

#[tokio::test]
async fn the_query_language_rejects_what_it_does_not_know() {
    let app = spawn_app().await;
    let cases: &[(&str, &[&str])] = &[
        ("owner_id=1", &["owner_id"]),
        ("limit=1000", &["limit"]),
        ("limit=0", &["limit"]),
        ("sort=body", &["sort"]),
        ("title=x", &["title"]),
        ("status=archived", &["status"]),
        ("published_at__gte=yesterday", &["published_at__gte"]),
        ("limit=5&limit=6", &["limit"]),
        ("cursor=garbage", &["cursor"]),
        ("offset=5&cursor=abc", &["cursor"]),
        ("foo=1&bar=2", &["foo", "bar"]),
    ];
    for (query, fields) in cases {
        let problem = assert_problem(
            app.get(&format!("{NOTES}?{query}")).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error_fields(&problem), *fields, "?{query}");
    }
}

#[tokio::test]
async fn sql_looking_values_are_just_data() {
    let app = spawn_app().await;
    app.release_note("1.0.0", "Survivor", true).await;
    for query in [
        "version=1.0.0'%20OR%20'1'%3D'1",
        "q=%25'%3B%20DROP%20TABLE%20release_notes%3B%20--",
        "q=%25",
        "q=_",
        "version__in=1.0.0')%3B--,x",
    ] {
        let page = app.get_json(&format!("{NOTES}?{query}"), 200).await;
        assert_eq!(page["total"], 0, "?{query} must match nothing");
    }
    let page = app.get_json(NOTES, 200).await;
    assert_eq!(versions(&page), ["1.0.0"], "the table is intact");
}

#[tokio::test]
async fn release_note_writes_need_the_permission_and_publish_by_patch() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let created = json_of(
        send(
            &app,
            Method::POST,
            "/api/v1/release-notes",
            &admin,
            Some(json!({ "version": "2.0.0", "title": "Big", "change_type": "breaking" })),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.get_json("/api/v1/release-notes", 200).await["total"],
        0,
        "drafts are not public"
    );
    let published = json_of(
        send(
            &app,
            Method::PATCH,
            &format!("/api/v1/release-notes/{id}"),
            &admin,
            Some(json!({ "published": true })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(published["status"], "published");
    assert_eq!(app.get_json("/api/v1/release-notes", 200).await["total"], 1);
    let activity = json_of(
        send(
            &app,
            Method::GET,
            &format!("/api/v1/activity?resource_id={id}&sort=created_at"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    let actions: Vec<&str> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["release_note.created", "release_note.published"]);
    assert_eq!(
        send(
            &app,
            Method::DELETE,
            &format!("/api/v1/release-notes/{id}"),
            &admin,
            None
        )
        .await
        .status(),
        204
    );
}

/// The release-notes repository on the real database, counting the reads that reach it.
#[derive(Debug)]
struct CountingRepository {
    inner: keel_infrastructure::release_notes::SeaReleaseNoteRepository,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl keel_release_notes::ReleaseNoteRepository for CountingRepository {
    async fn list(
        &self,
        visibility: keel_release_notes::Visibility,
        query: &keel_kernel::ListQuery,
    ) -> Result<keel_kernel::Page<keel_release_notes::ReleaseNote>, keel_kernel::RepoError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Slow enough that every concurrent reader arrives while the load runs.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.inner.list(visibility, query).await
    }

    async fn find(
        &self,
        visibility: keel_release_notes::Visibility,
        id: keel_release_notes::ReleaseNoteId,
    ) -> Result<Option<keel_release_notes::ReleaseNote>, keel_kernel::RepoError> {
        self.inner.find(visibility, id).await
    }

    async fn latest_published(
        &self,
    ) -> Result<Option<keel_release_notes::ReleaseNote>, keel_kernel::RepoError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        self.inner.latest_published().await
    }

    async fn find_for_update(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        id: keel_release_notes::ReleaseNoteId,
    ) -> Result<Option<keel_release_notes::ReleaseNote>, keel_kernel::RepoError> {
        self.inner.find_for_update(tx, id).await
    }

    async fn insert(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        note: &keel_release_notes::ReleaseNote,
    ) -> Result<(), keel_kernel::RepoError> {
        self.inner.insert(tx, note).await
    }

    async fn update(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        note: &keel_release_notes::ReleaseNote,
    ) -> Result<(), keel_kernel::RepoError> {
        self.inner.update(tx, note).await
    }

    async fn delete(
        &self,
        tx: &mut dyn keel_kernel::Transaction,
        id: keel_release_notes::ReleaseNoteId,
    ) -> Result<bool, keel_kernel::RepoError> {
        self.inner.delete(tx, id).await
    }
}

/// 64 concurrent readers of a cold key, on the real database and the cache the app uses (Redis
/// when TEST_REDIS_URL is set, else memory): one read reaches the database.
#[tokio::test]
async fn a_cold_key_read_by_64_at_once_reaches_the_database_once() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use keel_kernel::cache::{Cache, CacheAside, Flights};

    let app = spawn_app().await;
    app.release_note("4.0.0", "Cached", true).await;
    let cache: Arc<dyn Cache> = match std::env::var("TEST_REDIS_URL") {
        Ok(url) => {
            let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
            Arc::new(
                keel_infrastructure::stores::RedisStore::connect(&url, &prefix)
                    .await
                    .unwrap(),
            )
        }
        Err(_) => Arc::new(keel_infrastructure::stores::MemoryCache::default()),
    };
    let repository = Arc::new(CountingRepository {
        inner: keel_infrastructure::release_notes::SeaReleaseNoteRepository::new(app.pool.clone()),
        reads: Default::default(),
    });
    let notes = keel_release_notes::ReleaseNotes::new(
        repository.clone(),
        Arc::new(keel_infrastructure::SeaUnitOfWork::new(app.pool.clone())),
        Arc::new(keel_infrastructure::activity::SeaActivity::new(
            app.pool.clone(),
        )),
        Arc::new(keel_kernel::SystemClock),
        CacheAside::new(cache, Flights::default(), "release_notes"),
    );
    let anonymous = keel_kernel::Caller::new(keel_kernel::Actor::Anonymous);
    let first_page = keel_kernel::ListQuery::first_page(&keel_release_notes::LIST_SPEC);

    let readers: Vec<_> = (0..64)
        .map(|i| {
            let (notes, anonymous, query) = (notes.clone(), anonymous.clone(), first_page.clone());
            tokio::spawn(async move {
                let readers = notes.for_caller(&anonymous);
                if i % 2 == 0 {
                    readers.latest().await.map(|note| note.title)
                } else {
                    readers
                        .list(query)
                        .await
                        .map(|page| page.items[0].title.clone())
                }
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), "Cached");
    }
    assert_eq!(
        repository.reads.load(Ordering::SeqCst),
        2,
        "one read of `latest` and one of the first page for 64 readers"
    );
    // Warm: no more reads.
    let readers = notes.for_caller(&anonymous);
    readers.latest().await.unwrap();
    readers.list(first_page.clone()).await.unwrap();
    assert_eq!(repository.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_publish_is_seen_by_the_next_read_and_drafts_never_leak_into_the_cache() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    app.release_note("1.0.0", "One", true).await;
    // Warm the public views.
    assert_eq!(
        app.get_json(&format!("{NOTES}/latest"), 200).await["version"],
        "1.0.0"
    );
    assert_eq!(app.get_json(NOTES, 200).await["total"], 1);
    // A writer's list shows the draft; the public list, served from the cache, does not.
    let draft = app.release_note("2.0.0", "Two", false).await;
    let writers_view = json_of(send(&app, Method::GET, NOTES, &admin, None).await, 200).await;
    assert_eq!(writers_view["total"], 2);
    assert_eq!(app.get_json(NOTES, 200).await["total"], 1);
    // That read was a hit, and the metrics say so.
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    for outcome in ["hit", "miss"] {
        let series =
            format!(r#"cache_requests_total{{cache="release_notes",outcome="{outcome}"}}"#);
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    // Publishing over HTTP: the very next public reads see it.
    json_of(
        send(
            &app,
            Method::PATCH,
            &format!("{NOTES}/{}", draft.id),
            &admin,
            Some(json!({ "published": true })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        app.get_json(&format!("{NOTES}/latest"), 200).await["version"],
        "2.0.0"
    );
    assert_eq!(app.get_json(NOTES, 200).await["total"], 2);
    // Deleting too.
    let deleted = send(
        &app,
        Method::DELETE,
        &format!("{NOTES}/{}", draft.id),
        &admin,
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        app.get_json(&format!("{NOTES}/latest"), 200).await["version"],
        "1.0.0"
    );
    assert_eq!(app.get_json(NOTES, 200).await["total"], 1);
}

#[tokio::test]
async fn with_redis_a_publish_on_one_replica_is_seen_on_the_other_at_once() {
    // Needs a Redis server: CI sets TEST_REDIS_URL.
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
    // A long lifetime: only the invalidation can make the second replica see the change.
    let vars = [
        ("REDIS_URL", redis.as_str()),
        ("APP__REDIS__KEY_PREFIX", prefix.as_str()),
        ("APP__CACHE__TTL", "1h"),
    ];
    let first = crate::support::spawn_app_with(&vars).await;
    let second = crate::support::spawn_replica(&first, &vars).await;
    let admin = first.admin("root@example.com").await;
    first.release_note("1.0.0", "One", true).await;
    let draft = first.release_note("2.0.0", "Two", false).await;
    for app in [&first, &second] {
        assert_eq!(
            app.get_json(&format!("{NOTES}/latest"), 200).await["version"],
            "1.0.0"
        );
        assert_eq!(app.get_json(NOTES, 200).await["total"], 1);
    }
    json_of(
        send(
            &first,
            Method::PATCH,
            &format!("{NOTES}/{}", draft.id),
            &admin,
            Some(json!({ "published": true })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        second.get_json(&format!("{NOTES}/latest"), 200).await["version"],
        "2.0.0",
        "the other replica sees the publish at once"
    );
    assert_eq!(second.get_json(NOTES, 200).await["total"], 2);
    // The entries really are shared: Redis holds them under the prefix.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let tag: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}:cache-tag:release_notes:published"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(tag.is_some(), "the tag's token is in Redis");
}
