//! Every bad input gets a precise RFC 9457 problem, and nothing is stored.

use keel_kernel::ListQuery;
use keel_release_notes::LIST_SPEC;

use crate::support::{assert_problem, error_fields, spawn_app};

const NOTES: &str = "/api/v1/release-notes";

#[tokio::test]
async fn bad_ids_unknown_ids_and_unknown_routes_are_distinct_problems() {
    let app = spawn_app().await;

    let problem = assert_problem(
        app.get(&format!("{NOTES}/not-a-uuid")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error_fields(&problem), ["id"]);
    assert_eq!(problem["instance"], "/api/v1/release-notes/not-a-uuid");

    let unknown = uuid::Uuid::now_v7();
    assert_problem(
        app.get(&format!("{NOTES}/{unknown}")).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/api/v1/no-such-thing").await,
        404,
        "route_not_found",
    )
    .await;
    assert_problem(app.get("/").await, 404, "route_not_found").await;

    let put = app
        .client
        .put(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_problem(put, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn malformed_json_wrong_media_type_and_oversized_bodies() {
    let app = spawn_app().await;

    let problem = assert_problem(
        app.post_raw(NOTES, "application/json", b"{\"version\": ".to_vec())
            .await,
        400,
        "malformed_json",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    assert_problem(
        app.post_raw(NOTES, "text/plain", b"{}".to_vec()).await,
        415,
        "unsupported_media_type",
    )
    .await;
    let no_type = app
        .client
        .post(app.url(NOTES))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(no_type, 415, "unsupported_media_type").await;

    let three_mib = vec![b' '; 3 * 1024 * 1024];
    assert_problem(
        app.post_raw(NOTES, "application/json", three_mib).await,
        413,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn wrong_shapes_name_the_field_at_fault() {
    let app = spawn_app().await;
    let cases = [
        (
            r#"{"version":"1.0.0","title":"x","change_type":"feature","created_by":"someone"}"#,
            "created_by",
        ),
        (r#"{"version":"1.0.0","title":"x"}"#, "change_type"),
        (
            r#"{"version":"1.0.0","title":42,"change_type":"feature"}"#,
            "title",
        ),
        (
            r#"{"version":"1.0.0","title":"x","change_type":"major"}"#,
            "change_type",
        ),
    ];
    for (body, field) in cases {
        let response = app
            .post_raw(NOTES, "application/json", body.as_bytes().to_vec())
            .await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(error_fields(&problem), [field], "{body}");
    }
}

#[tokio::test]
async fn anonymous_writes_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let body = br#"{"version":"1.0.0","title":"Hello","change_type":"feature"}"#.to_vec();
    let response = app.post_raw(NOTES, "application/json", body).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="keel""#
    );
    assert_problem(response, 401, "unauthenticated").await;

    let note = app.release_note("2.0.0", "Existing", true).await;
    let patch = app
        .client
        .patch(app.url(&format!("{NOTES}/{}", note.id)))
        .json(&serde_json::json!({"title": "Defaced"}))
        .send()
        .await
        .unwrap();
    assert_problem(patch, 401, "unauthenticated").await;
    let delete = app
        .client
        .delete(app.url(&format!("{NOTES}/{}", note.id)))
        .send()
        .await
        .unwrap();
    assert_problem(delete, 401, "unauthenticated").await;

    let page = app
        .release_notes()
        .list(ListQuery::first_page(&LIST_SPEC))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].title, "Existing");
}

#[tokio::test]
async fn no_error_leaks_internals() {
    let app = spawn_app().await;
    let probes = [
        format!("{NOTES}?sort=password"),
        format!("{NOTES}?limit=1000"),
        format!("{NOTES}/'%20OR%201=1"),
        format!("{NOTES}?cursor=eyJzIjoiIiwidiI6W119"),
    ];
    for path in probes {
        let body = app
            .get(&path)
            .await
            .text()
            .await
            .unwrap()
            .to_ascii_lowercase();
        for leak in [
            "select ",
            "sqlx",
            "sea_orm",
            "panicked",
            "backtrace",
            "src/",
        ] {
            assert!(!body.contains(leak), "{path} leaked `{leak}`: {body}");
        }
    }
}
