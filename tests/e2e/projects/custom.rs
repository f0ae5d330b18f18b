//! Projects over HTTP beyond the generated tests, written by hand (regenerating never
//! overwrites this file): owner scope, the list query language, validation, bulk create,
//! conditional requests, soft delete, the archived rule, the summary; and the bulk use cases
//! against the database.

mod attachments;

use std::collections::HashSet;

use keel_kernel::{Actor, Caller, DomainError, PermissionSet, SessionId, UserId};
use keel_projects::{ProjectPatch, ProjectStatus, WRITE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, error_fields, spawn_app};

const PROJECTS: &str = "/api/v1/projects";

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.authed(Method::POST, PROJECTS, token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_named(app: &TestApp, token: &str, name: &str) -> Value {
    let response = create(app, token, json!({ "name": name })).await;
    assert_eq!(response.status(), 201, "create {name}");
    response.json().await.unwrap()
}

async fn list(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.authed(Method::GET, &format!("{PROJECTS}?{query}"), token)
        .send()
        .await
        .unwrap()
}

async fn list_json(app: &TestApp, token: &str, query: &str) -> Value {
    let response = list(app, token, query).await;
    assert_eq!(response.status(), 200, "GET ?{query}");
    response.json().await.unwrap()
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn bulk_create(app: &TestApp, token: &str, count: usize) -> Vec<Value> {
    let items: Vec<Value> = (0..count)
        .map(|i| json!({ "name": format!("Project {i:02}"), "status": "active" }))
        .collect();
    let response = app
        .authed(Method::POST, &format!("{PROJECTS}/bulk"), token)
        .json(&json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn another_users_project_is_not_found_and_an_admin_sees_it() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    let project = create_named(&app, &ada, "Ada's secret plan").await;
    assert_eq!(project["owner_id"], ada_id.as_str());
    let path = format!("{PROJECTS}/{}", project["id"].as_str().unwrap());

    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "name": "Bob was here" }))),
        (Method::DELETE, None),
    ] {
        let mut request = app.authed(method.clone(), &path, &bob);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert_problem(request.send().await.unwrap(), 404, "not_found").await;
    }
    let restore = app
        .authed(Method::POST, &format!("{path}/restore"), &bob)
        .send()
        .await
        .unwrap();
    assert_problem(restore, 404, "not_found").await;
    let bobs = list_json(&app, &bob, "").await;
    assert_eq!(bobs["total"], 0);
    assert!(bobs["items"].as_array().unwrap().is_empty());
    // Filtering on the owner does not widen the scope either.
    let probing = list_json(&app, &bob, &format!("owner_id={ada_id}")).await;
    assert_eq!(probing["total"], 0);

    // Nothing changed, and the owner and an administrator both see the project.
    let own = app.authed(Method::GET, &path, &ada).send().await.unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(
        own.json::<Value>().await.unwrap()["name"],
        "Ada's secret plan"
    );
    let seen = app.authed(Method::GET, &path, &admin).send().await.unwrap();
    assert_eq!(seen.status(), 200);
    let everyone = list_json(&app, &admin, "").await;
    assert_eq!(everyone["total"], 1);
    assert_eq!(everyone["items"][0]["id"], project["id"]);
}

#[tokio::test]
async fn anonymous_callers_are_refused() {
    let app = spawn_app().await;
    let response = app.get(PROJECTS).await;
    assert_problem(response, 401, "unauthenticated").await;
}

#[tokio::test]
async fn twenty_five_projects_page_by_offset_and_by_cursor() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let created = bulk_create(&app, &ada, 25).await;
    assert_eq!(created.len(), 25);

    let mut seen = Vec::new();
    for (offset, expected) in [(0, 10), (10, 10), (20, 5)] {
        let page = list_json(&app, &ada, &format!("limit=10&offset={offset}")).await;
        assert_eq!(page["total"], 25);
        assert_eq!(page["limit"], 10);
        assert_eq!(page["offset"], offset);
        assert_eq!(page["items"].as_array().unwrap().len(), expected);
        seen.extend(ids(&page));
    }
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);

    let mut by_cursor = Vec::new();
    let mut query = "limit=7".to_owned();
    for _ in 0..10 {
        let page = list_json(&app, &ada, &query).await;
        assert_eq!(page["total"], 25);
        by_cursor.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=7&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(by_cursor.len(), 25, "every project once");
    assert_eq!(
        by_cursor.iter().collect::<HashSet<_>>().len(),
        25,
        "no repeats"
    );

    let descending = list_json(&app, &ada, "sort=-name&limit=100").await;
    let names = names(&descending);
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(names, sorted);
    assert_eq!(names[0], "Project 24");

    // A cursor keeps the sort it was made for.
    let first = list_json(&app, &ada, "sort=name&limit=20").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = list_json(&app, &ada, &format!("sort=name&limit=20&cursor={cursor}")).await;
    assert_eq!(
        self::names(&rest),
        [
            "Project 20",
            "Project 21",
            "Project 22",
            "Project 23",
            "Project 24"
        ]
    );
}

#[tokio::test]
async fn filters_and_search_narrow_the_list() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    create_named(&app, &ada, "Alpha").await;
    create_named(&app, &ada, "Beta").await;
    let done = create(
        &app,
        &ada,
        json!({ "name": "Gamma", "status": "completed", "description": "Shipped in May" }),
    )
    .await;
    assert_eq!(done.status(), 201);

    assert_eq!(
        names(&list_json(&app, &ada, "status=completed").await),
        ["Gamma"]
    );
    let either = list_json(&app, &ada, "name__in=Alpha,Beta&sort=name").await;
    assert_eq!(names(&either), ["Alpha", "Beta"]);
    assert_eq!(names(&list_json(&app, &ada, "q=shipped").await), ["Gamma"]);
    let all = list_json(&app, &ada, "created_at__gte=2000-01-01T00:00:00Z").await;
    assert_eq!(all["total"], 3);
    let none = list_json(&app, &ada, "created_at__lte=2000-01-01T00:00:00Z").await;
    assert_eq!(none["total"], 0);
}

#[tokio::test]
async fn unlisted_fields_unknown_parameters_and_big_limits_are_rejected() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    for (query, field) in [
        ("sort=description", "sort"),
        ("sort=owner_id", "sort"),
        ("description=plans", "description"),
        ("version__gte=2", "version__gte"),
        ("name__gte=a", "name__gte"),
        ("colour=blue", "colour"),
        ("limit=1000", "limit"),
        ("limit=0", "limit"),
        ("status=finished", "status"),
        ("offset=5&cursor=abc", "cursor"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let problem = assert_problem(list(&app, &ada, query).await, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field], "?{query}");
    }
}

#[tokio::test]
async fn sql_in_a_filter_value_is_just_data() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let hostile = "x' OR '1'='1'; DROP TABLE projects; --";
    create_named(&app, &ada, "Harmless").await;
    create_named(&app, &ada, hostile).await;
    create_named(&app, &ada, "100% done").await;

    for query in [
        format!("name={}", urlencode(hostile)),
        format!("name__in={}", urlencode(&format!("nothing,{hostile}"))),
        format!("q={}", urlencode("'1'='1")),
    ] {
        let page = list_json(&app, &ada, &query).await;
        assert_eq!(names(&page), [hostile], "?{query}");
    }
    // LIKE wildcards in a search are literal characters too.
    assert_eq!(names(&list_json(&app, &ada, "q=%25").await), ["100% done"]);
    assert_eq!(
        names(&list_json(&app, &ada, "q=_").await),
        Vec::<String>::new()
    );
    assert_eq!(
        list_json(&app, &ada, "").await["total"],
        3,
        "the table is intact"
    );
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn invalid_input_is_422_naming_the_field_and_oversized_bodies_are_413() {
    let app = spawn_app().await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    for (body, field) in [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "   " }), "name"),
        (json!({ "name": "x".repeat(10_000) }), "name"),
        (json!({ "name": "Mine", "owner_id": ada_id }), "owner_id"),
        (json!({ "name": "Mine", "status": "finished" }), "status"),
        (json!({ "name": 42 }), "name"),
        (json!({}), "name"),
        (
            json!({ "name": "Ok", "description": "d".repeat(10_001) }),
            "description",
        ),
    ] {
        let problem =
            assert_problem(create(&app, &ada, body).await, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field]);
    }

    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let response = app
        .authed(Method::POST, PROJECTS, &ada)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large").await;

    let project = create_named(&app, &ada, "Valid").await;
    let path = format!("{PROJECTS}/{}", project["id"].as_str().unwrap());
    let patch = app
        .authed(Method::PATCH, &path, &ada)
        .json(&json!({ "name": "", "owner_id": ada_id }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(patch, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["owner_id"]);
    let bad_id = app
        .authed(Method::GET, &format!("{PROJECTS}/42"), &ada)
        .send()
        .await
        .unwrap();
    let problem = assert_problem(bad_id, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["id"]);
    assert_eq!(
        list_json(&app, &ada, "").await["total"],
        1,
        "nothing else was stored"
    );
}

#[tokio::test]
async fn a_bulk_request_with_one_invalid_item_creates_nothing() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let bulk = format!("{PROJECTS}/bulk");
    let response = app
        .authed(Method::POST, &bulk, &ada)
        .json(&json!({ "items": [
            { "name": "One" },
            { "name": "" },
            { "name": "Three" },
            { "name": "y".repeat(201) },
        ] }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["items[1].name", "items[3].name"]);
    let unknown = app
        .authed(Method::POST, &bulk, &ada)
        .json(&json!({ "items": [{ "name": "One" }, { "name": "Two", "owner_id": "x" }] }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(unknown, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["items[1].owner_id"]);
    for items in [json!([]), json!(vec![json!({ "name": "n" }); 101])] {
        let response = app
            .authed(Method::POST, &bulk, &ada)
            .json(&json!({ "items": items }))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), ["items"]);
    }
    assert_eq!(list_json(&app, &ada, "").await["total"], 0);
    assert_eq!(bulk_create(&app, &ada, 3).await.len(), 3);
    assert_eq!(list_json(&app, &ada, "").await["total"], 3);
}

fn etag_of(response: &reqwest::Response) -> String {
    response.headers()["etag"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn etags_guard_against_lost_updates() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let created = create(&app, &ada, json!({ "name": "Draft" })).await;
    assert_eq!(created.status(), 201);
    assert_eq!(etag_of(&created), "\"v1\"");
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let project: Value = created.json().await.unwrap();
    assert_eq!(
        location,
        format!("{PROJECTS}/{}", project["id"].as_str().unwrap())
    );
    assert_eq!(project["status"], "planned");
    assert_eq!(project["version"], 1);

    let read = app
        .authed(Method::GET, &location, &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(etag_of(&read), "\"v1\"");
    let unchanged = app
        .authed(Method::GET, &location, &ada)
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    let patch = |tag: &'static str, body: Value| {
        app.authed(Method::PATCH, &location, &ada)
            .header("if-match", tag)
            .json(&body)
            .send()
    };
    let first = patch("\"v1\"", json!({ "name": "Plan A" })).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(etag_of(&first), "\"v2\"");
    // A second writer still holding v1 does not overwrite the first one's change.
    let stale = patch("\"v1\"", json!({ "name": "Plan B" })).await.unwrap();
    assert_problem(stale, 412, "precondition_failed").await;
    let weak = patch("W/\"v2\"", json!({ "name": "Plan B" }))
        .await
        .unwrap();
    assert_problem(weak, 412, "precondition_failed").await;
    let stale_delete = app
        .authed(Method::DELETE, &location, &ada)
        .header("if-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_problem(stale_delete, 412, "precondition_failed").await;
    let current = app
        .authed(Method::GET, &location, &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(current.json::<Value>().await.unwrap()["name"], "Plan A");

    // Clearing the description and the archived rule.
    let archived = patch(
        "\"v2\"",
        json!({ "status": "archived", "description": null }),
    )
    .await
    .unwrap();
    assert_eq!(archived.status(), 200);
    let frozen = patch("*", json!({ "name": "Renamed" })).await.unwrap();
    let problem = assert_problem(frozen, 422, "validation_failed").await;
    assert_eq!(error_fields(&problem), ["status"]);

    let deleted = app
        .authed(Method::DELETE, &location, &ada)
        .header("if-match", "\"v3\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .authed(Method::GET, &location, &ada)
        .send()
        .await
        .unwrap();
    assert_problem(gone, 404, "not_found").await;
    assert_eq!(list_json(&app, &ada, "").await["total"], 0);
    let again = app
        .authed(Method::DELETE, &location, &ada)
        .send()
        .await
        .unwrap();
    assert_problem(again, 404, "not_found").await;

    let restored = app
        .authed(Method::POST, &format!("{location}/restore"), &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), 200);
    assert_eq!(etag_of(&restored), "\"v5\"");
    assert_eq!(list_json(&app, &ada, "").await["total"], 1);

    let activity = app
        .authed(
            Method::GET,
            "/api/v1/activity?resource_type=project&sort=created_at&limit=100",
            &ada,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(activity.status(), 200);
    let activity: Value = activity.json().await.unwrap();
    let actions: Vec<&str> = activity["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "project.created",
            "project.updated",
            "project.updated",
            "project.deleted",
            "project.restored"
        ]
    );
}

fn member(id: &str) -> Caller {
    Caller::new(Actor::User {
        id: id.parse::<UserId>().unwrap(),
        session: SessionId::new(),
        permissions: [WRITE].into_iter().collect::<PermissionSet>(),
    })
}

#[tokio::test]
async fn bulk_updates_and_deletes_are_scoped_and_all_or_nothing() {
    let app = spawn_app().await;
    let (ada_id, ada) = app.member("ada@example.com").await;
    let (bob_id, bob) = app.member("bob@example.com").await;
    let adas: Vec<_> = bulk_create(&app, &ada, 5)
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let bobs: Vec<_> = bulk_create(&app, &bob, 1)
        .await
        .iter()
        .map(|p| p["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let ada_caller = member(&ada_id);
    let projects = app.services.projects.for_caller(&ada_caller);
    let complete = ProjectPatch {
        status: Some(ProjectStatus::Completed),
        ..ProjectPatch::default()
    };

    // Bob's project among Ada's ids: nothing is found, nothing changes.
    let mut mixed = adas.clone();
    mixed.push(bobs[0]);
    assert!(matches!(
        projects.update_many(&mixed, complete.clone()).await,
        Err(DomainError::NotFound { .. })
    ));
    assert!(matches!(
        projects.delete_many(&mixed).await,
        Err(DomainError::NotFound { .. })
    ));
    assert_eq!(list_json(&app, &ada, "status=active").await["total"], 5);
    assert_eq!(list_json(&app, &bob, "").await["total"], 1);

    // One archived project makes the whole rename invalid.
    projects
        .update(
            adas[2],
            ProjectPatch {
                status: Some(ProjectStatus::Archived),
                ..ProjectPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    let rename = ProjectPatch {
        name: Some("Renamed".into()),
        ..ProjectPatch::default()
    };
    assert!(matches!(
        projects.update_many(&adas, rename.clone()).await,
        Err(DomainError::Validation(errors)) if errors[0].field == "items[2].status"
    ));
    assert_eq!(list_json(&app, &ada, "name=Renamed").await["total"], 0);

    let live = [adas[0], adas[1], adas[3], adas[4]];
    let renamed = projects.update_many(&live, rename).await.unwrap();
    assert!(
        renamed
            .iter()
            .all(|p| p.name == "Renamed" && p.meta.version == 2)
    );
    assert_eq!(list_json(&app, &ada, "name=Renamed").await["total"], 4);

    projects.delete_many(&live[..3]).await.unwrap();
    let left = list_json(&app, &ada, "limit=100").await;
    assert_eq!(left["total"], 2);
    // Bob's project is untouched by all of it.
    let bob_caller = member(&bob_id);
    let bobs_project = app
        .services
        .projects
        .for_caller(&bob_caller)
        .get(bobs[0])
        .await
        .unwrap();
    assert_eq!(bobs_project.meta.version, 1);
    assert_eq!(bobs_project.name, "Project 00");
}

#[tokio::test]
async fn the_summary_counts_only_what_the_caller_may_see() {
    let app = spawn_app().await;
    let admin = app.admin("root@example.com").await;
    let (_, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    bulk_create(&app, &ada, 2).await; // active
    create_named(&app, &ada, "Later").await; // planned
    let gone = create_named(&app, &ada, "Gone").await;
    let deleted = app
        .authed(
            Method::DELETE,
            &format!("{PROJECTS}/{}", gone["id"].as_str().unwrap()),
            &ada,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    bulk_create(&app, &bob, 1).await;

    let summary = |token: String| {
        let app = &app;
        async move {
            let response = app
                .authed(Method::GET, &format!("{PROJECTS}/summary"), &token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        summary(ada.clone()).await,
        json!({ "total": 3, "by_status": { "planned": 1, "active": 2, "completed": 0, "archived": 0 } })
    );
    assert_eq!(summary(bob.clone()).await["total"], 1);
    assert_eq!(summary(admin.clone()).await["by_status"]["active"], 3);
    assert_problem(
        app.get(&format!("{PROJECTS}/summary")).await,
        401,
        "unauthenticated",
    )
    .await;
}
