//! Signed webhooks in: the Standard Webhooks receiver, deduplication by webhook id, and the
//! example handler that keeps accounts in step with an identity provider's user events.

use std::time::Duration;

use chrono::Utc;
use keel_infrastructure::identity::entities::users;
use keel_infrastructure::identity::external::entity as links;
use keel_infrastructure::webhooks::entity as receipts;
use keel_jobs::{JobRepository, JobState};
use keel_kernel::JobId;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use standardwebhooks::Webhook;

use crate::support::{TestApp, assert_problem, spawn_app, spawn_app_with};

const SECRET: &str = "whsec_HY0Jvpuj4RWKROOtL28y4e11BibhIRDXqYnsvOnC+/U=";
const NEXT_SECRET: &str = "whsec_qMC0bKPLNjOcQWVcDnCXO+hATm6WqEWTZDlWi3htJNg=";
const UNKNOWN_SECRET: &str = "whsec_lQrvn65MjD8MK+OAikhxLaFtueDonw6m9fvWAOW9cDg=";

/// An app receiving from `idp` (an identity provider whose user events are synced) and from
/// `billing` (received, no handler).
async fn receiving_app() -> TestApp {
    spawn_app_with(&[
        (
            "APP__WEBHOOKS__INBOUND__IDP__SECRETS",
            &format!("{SECRET},{NEXT_SECRET}"),
        ),
        ("APP__WEBHOOKS__INBOUND__IDP__SYNC_USERS", "true"),
        ("APP__WEBHOOKS__INBOUND__BILLING__SECRETS", SECRET),
    ])
    .await
}

/// A delivery: its id, the unix second it was signed, the body, signed with `secret`.
struct Delivery {
    id: String,
    signed_at: i64,
    body: String,
    secret: &'static str,
}

impl Delivery {
    fn new(id: &str, event_type: &str, data: Value) -> Self {
        let mut body = json!({ "type": event_type, "timestamp": Utc::now() });
        body["data"] = data;
        Self {
            id: id.to_owned(),
            signed_at: Utc::now().timestamp(),
            body: body.to_string(),
            secret: SECRET,
        }
    }

    fn signature(&self) -> String {
        Webhook::new(self.secret)
            .unwrap()
            .sign(&self.id, self.signed_at, self.body.as_bytes())
            .unwrap()
    }

    async fn send(&self, app: &TestApp, source: &str) -> reqwest::Response {
        app.client
            .post(app.url(&format!("/api/v1/webhooks/{source}")))
            .header("content-type", "application/json")
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", self.signed_at.to_string())
            .header("webhook-signature", self.signature())
            .body(self.body.clone())
            .send()
            .await
            .unwrap()
    }
}

async fn status_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["status"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn receipt_count(app: &TestApp) -> u64 {
    receipts::Entity::find().count(&app.pool).await.unwrap()
}

/// The job of the delivery `id`, once it finished (15 s at most).
async fn finished_job(app: &TestApp, id: &str) -> keel_jobs::model::JobRecord {
    let receipt = receipts::Entity::find()
        .filter(receipts::Column::WebhookId.eq(id))
        .one(&app.pool)
        .await
        .unwrap()
        .expect("a receipt");
    let job_id = JobId::from_uuid(receipt.job_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let job = app.services.jobs.get(job_id).await.unwrap();
        if let Some(job) = job.filter(|j| j.state.is_finished()) {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job of {id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The account row with `email`, deleted or not.
async fn account(app: &TestApp, email: &str) -> Option<users::Model> {
    users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(&app.pool)
        .await
        .unwrap()
}

/// Waits until the job of delivery `id` succeeded.
async fn processed(app: &TestApp, id: &str) {
    let job = finished_job(app, id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
}

#[tokio::test]
async fn a_delivery_is_processed_once_even_when_sent_three_times() {
    let app = receiving_app().await;
    let delivery = Delivery::new(
        "msg_created_1",
        "user.created",
        json!({ "id": "usr_1", "email": "ada@example.com", "name": "Ada", "email_verified": true }),
    );
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(status_of(delivery.send(&app, "idp").await).await);
    }
    assert_eq!(
        answers,
        [
            (202, "accepted".to_owned()),
            (200, "duplicate".to_owned()),
            (200, "duplicate".to_owned())
        ]
    );
    // Three more at once, as a sender retrying from several workers would: one is new.
    let racing = Delivery::new(
        "msg_billing_1",
        "invoice.paid",
        json!({ "invoice": "inv_1" }),
    );
    let answers = futures_util::future::join_all(
        (0..3).map(|_| async { status_of(racing.send(&app, "billing").await).await.0 }),
    )
    .await;
    assert_eq!(
        answers.iter().filter(|s| **s == 202).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 200).count(),
        2,
        "{answers:?}"
    );
    assert_eq!(receipt_count(&app).await, 2);

    let worker = app.start_worker().await;
    processed(&app, "msg_created_1").await;
    processed(&app, "msg_billing_1").await;
    let created = account(&app, "ada@example.com").await.expect("the account");
    assert_eq!(created.full_name.as_deref(), Some("Ada"));
    assert!(created.email_verified_at.is_some());
    // Once more after processing: still acknowledged, still one account.
    assert_eq!(status_of(delivery.send(&app, "idp").await).await.0, 200);
    assert_eq!(
        users::Entity::find()
            .filter(users::Column::Email.eq("ada@example.com"))
            .count(&app.pool)
            .await
            .unwrap(),
        1
    );
    // Signed in by the provider only: no password opens it.
    for password in ["", "!external", "external"] {
        let login = app
            .post(
                "/api/v1/auth/login",
                None,
                &json!({ "email": "ada@example.com", "password": password }),
            )
            .await;
        assert_ne!(login.status().as_u16(), 200);
    }
    worker.stop().await;
}

#[tokio::test]
async fn forged_late_and_malformed_deliveries_are_refused_and_store_nothing() {
    let app = receiving_app().await;
    let data = json!({ "id": "usr_2", "email": "bob@example.com" });

    let mut forged = Delivery::new("msg_forged", "user.created", data.clone());
    forged.secret = UNKNOWN_SECRET;
    assert_problem(
        forged.send(&app, "idp").await,
        401,
        "webhook.signature_invalid",
    )
    .await;

    // A signature of one body does not carry another.
    let honest = Delivery::new("msg_tampered", "user.created", data.clone());
    let response = app
        .client
        .post(app.url("/api/v1/webhooks/idp"))
        .header("webhook-id", &honest.id)
        .header("webhook-timestamp", honest.signed_at.to_string())
        .header("webhook-signature", honest.signature())
        .body(honest.body.replace("bob@", "mallory@"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "webhook.signature_invalid").await;

    // The id is signed too: a captured delivery replayed under a new id fails.
    let mut renamed = Delivery::new("msg_original", "user.created", data.clone());
    let signature = renamed.signature();
    renamed.id = "msg_renamed".to_owned();
    let response = app
        .client
        .post(app.url("/api/v1/webhooks/idp"))
        .header("webhook-id", &renamed.id)
        .header("webhook-timestamp", renamed.signed_at.to_string())
        .header("webhook-signature", signature)
        .body(renamed.body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "webhook.signature_invalid").await;

    for offset in [-301, 400] {
        let mut late = Delivery::new(&format!("msg_late_{offset}"), "user.created", data.clone());
        late.signed_at += offset;
        assert_problem(
            late.send(&app, "idp").await,
            401,
            "webhook.timestamp_out_of_tolerance",
        )
        .await;
    }

    // A signed body that is not the Standard Webhooks payload names the body.
    let mut not_json = Delivery::new("msg_not_json", "x", json!(null));
    not_json.body = "[1, 2".to_owned();
    let problem = assert_problem(not_json.send(&app, "idp").await, 422, "validation_failed").await;
    assert_eq!(crate::support::error_fields(&problem), ["body"]);

    let missing = app
        .client
        .post(app.url("/api/v1/webhooks/idp"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let problem = assert_problem(missing, 422, "validation_failed").await;
    assert_eq!(crate::support::error_fields(&problem), ["webhook-id"]);

    let spaced = Delivery::new("msg with spaces", "user.created", data.clone());
    let problem = assert_problem(spaced.send(&app, "idp").await, 422, "validation_failed").await;
    assert_eq!(crate::support::error_fields(&problem), ["webhook-id"]);

    let unknown = Delivery::new("msg_unknown_source", "user.created", data.clone());
    assert_problem(unknown.send(&app, "nobody").await, 404, "not_found").await;

    assert_eq!(receipt_count(&app).await, 0);
    // The registry is the process's, shared by every test in this binary: at least ours.
    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(value(r#"webhooks_received_total{source="idp",outcome="bad_signature"}"#) >= 3);
    assert!(value(r#"webhooks_received_total{source="idp",outcome="out_of_tolerance"}"#) >= 2);
    assert!(value(r#"webhooks_received_total{source="unknown",outcome="unknown_source"}"#) >= 1);
    assert!(
        !metrics.contains(r#"source="nobody""#),
        "made-up names never become labels"
    );
}

#[tokio::test]
async fn a_new_secret_is_accepted_beside_the_old_one_while_rotating() {
    let app = receiving_app().await;
    let old = Delivery::new("msg_old_secret", "user.created", json!({ "id": "usr_3" }));
    let mut new = Delivery::new("msg_new_secret", "user.created", json!({ "id": "usr_4" }));
    new.secret = NEXT_SECRET;
    assert_eq!(status_of(old.send(&app, "idp").await).await.0, 202);
    assert_eq!(status_of(new.send(&app, "idp").await).await.0, 202);
    // `billing` has only the old one.
    let mut other = Delivery::new("msg_new_secret", "invoice.paid", json!({}));
    other.secret = NEXT_SECRET;
    assert_problem(
        other.send(&app, "billing").await,
        401,
        "webhook.signature_invalid",
    )
    .await;
}

#[tokio::test]
async fn provider_user_events_keep_the_account_in_step_and_in_order() {
    let app = receiving_app().await;
    let worker = app.start_worker().await;
    let at = |secs: i64| (Utc::now() - chrono::Duration::seconds(60 - secs)).to_rfc3339();
    let send = |id: &'static str, event_type: &'static str, secs: i64, data: Value| {
        let mut delivery = Delivery::new(id, event_type, data.clone());
        delivery.body =
            json!({ "type": event_type, "timestamp": at(secs), "data": data }).to_string();
        delivery
    };

    // An address the provider has not confirmed makes no account (it may be someone else's).
    let unconfirmed = send(
        "m1a",
        "user.created",
        0,
        json!({ "id": "usr_5", "email": "cy@example.com", "name": "Cy" }),
    );
    assert_eq!(status_of(unconfirmed.send(&app, "idp").await).await.0, 202);
    let job = finished_job(&app, "m1a").await;
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert!(account(&app, "cy@example.com").await.is_none());

    let created = send(
        "m1",
        "user.created",
        1,
        json!({ "id": "usr_5", "email": "cy@example.com", "name": "Cy", "email_verified": true }),
    );
    assert_eq!(status_of(created.send(&app, "idp").await).await.0, 202);
    processed(&app, "m1").await;
    let id = account(&app, "cy@example.com").await.expect("created").id;

    let renamed = send(
        "m2",
        "user.updated",
        10,
        json!({ "id": "usr_5", "email": "cy@new.example.com", "name": "Cyrus", "email_verified": true }),
    );
    assert_eq!(status_of(renamed.send(&app, "idp").await).await.0, 202);
    processed(&app, "m2").await;
    let row = account(&app, "cy@new.example.com").await.expect("renamed");
    assert_eq!((row.id, row.full_name.as_deref()), (id, Some("Cyrus")));
    assert!(row.email_verified_at.is_some());

    // The sender's retry of an older event arrives late: it changes nothing.
    let late = send(
        "m0",
        "user.updated",
        5,
        json!({ "id": "usr_5", "email": "cy@old.example.com", "name": "Old" }),
    );
    assert_eq!(status_of(late.send(&app, "idp").await).await.0, 202);
    processed(&app, "m0").await;
    assert_eq!(
        account(&app, "cy@new.example.com")
            .await
            .unwrap()
            .full_name
            .as_deref(),
        Some("Cyrus")
    );
    assert!(account(&app, "cy@old.example.com").await.is_none());

    let deleted = send("m3", "user.deleted", 20, json!({ "id": "usr_5" }));
    assert_eq!(status_of(deleted.send(&app, "idp").await).await.0, 202);
    processed(&app, "m3").await;
    assert!(
        account(&app, "cy@new.example.com")
            .await
            .unwrap()
            .deleted_at
            .is_some()
    );
    let stale = send(
        "m2b",
        "user.updated",
        15,
        json!({ "id": "usr_5", "name": "Back" }),
    );
    assert_eq!(status_of(stale.send(&app, "idp").await).await.0, 202);
    processed(&app, "m2b").await;
    assert!(
        account(&app, "cy@new.example.com")
            .await
            .unwrap()
            .deleted_at
            .is_some(),
        "a stale update does not restore"
    );

    // A deletion that overtook its creation: the creation, older, never makes an account.
    let early_delete = send("m5", "user.deleted", 30, json!({ "id": "usr_6" }));
    assert_eq!(status_of(early_delete.send(&app, "idp").await).await.0, 202);
    processed(&app, "m5").await;
    let late_create = send(
        "m4",
        "user.created",
        25,
        json!({ "id": "usr_6", "email": "dee@example.com", "email_verified": true }),
    );
    assert_eq!(status_of(late_create.send(&app, "idp").await).await.0, 202);
    processed(&app, "m4").await;
    assert!(account(&app, "dee@example.com").await.is_none());
    let link = links::Entity::find()
        .filter(links::Column::Subject.eq("usr_6"))
        .one(&app.pool)
        .await
        .unwrap()
        .unwrap();
    assert!(link.deleted && link.user_id.is_none());

    // An address that belongs to an account the provider does not own is never taken over.
    app.register("eve@example.com").await;
    let takeover = send(
        "m6",
        "user.created",
        40,
        json!({ "id": "usr_7", "email": "EVE@example.com", "email_verified": true }),
    );
    assert_eq!(status_of(takeover.send(&app, "idp").await).await.0, 202);
    let job = finished_job(&app, "m6").await;
    assert_eq!(job.state, JobState::Dead, "a refused change is not retried");
    assert!(job.last_error.unwrap_or_default().contains("email"));
    let eve = account(&app, "eve@example.com").await.unwrap();
    assert!(
        eve.password_hash.starts_with("$argon2"),
        "the account keeps its password"
    );

    // Events of other kinds from the provider are acknowledged and ignored.
    let other = send("m7", "organization.created", 50, json!({ "id": "org_1" }));
    assert_eq!(status_of(other.send(&app, "idp").await).await.0, 202);
    processed(&app, "m7").await;
    worker.stop().await;
}

/// A receiver on loopback for outbound deliveries: `/fail-then-ok/{n}` answers 503 to the
/// first n requests, anything else 200. Keeps every request's headers and body.
struct Receiver {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, http_headers::Headers, String)>>>,
    handle: actix_web::dev::ServerHandle,
}

mod http_headers {
    /// Lower-case header name → value.
    pub(super) type Headers = std::collections::BTreeMap<String, String>;
}

impl Receiver {
    async fn start() -> Self {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, http_headers::Headers, String)>>>;
        async fn receive(
            req: HttpRequest,
            body: web::Bytes,
            seen: web::Data<Seen>,
        ) -> HttpResponse {
            let path = req.path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let hits = {
                let mut seen = seen.lock().unwrap();
                seen.push((
                    path.clone(),
                    headers,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                seen.iter().filter(|(p, _, _)| *p == path).count()
            };
            match path
                .strip_prefix("/fail-then-ok/")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(failures) if hits <= failures => HttpResponse::ServiceUnavailable().finish(),
                _ => HttpResponse::Ok().finish(),
            }
        }
        let seen: Seen = std::sync::Arc::default();
        let data = web::Data::new(seen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let base = format!("http://127.0.0.1:{}", server.addrs()[0].port());
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { base, seen, handle }
    }

    fn requests(&self, path: &str) -> Vec<(http_headers::Headers, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

/// Polls the endpoint's deliveries until `done` accepts them (15 s at most).
async fn deliveries_until(
    app: &TestApp,
    token: &str,
    endpoint: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = app
            .get_authed_json(
                &format!("/api/v1/webhooks/endpoints/{endpoint}/deliveries"),
                token,
            )
            .await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if done(&items) || std::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_then_succeeds_and_every_attempt_is_signed_and_logged() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(&[
        ("APP__WEBHOOKS__OUTBOUND__ALLOW_PRIVATE_TARGETS", "true"),
        ("APP__WEBHOOKS__OUTBOUND__BACKOFF", "100ms"),
        ("APP__WEBHOOKS__OUTBOUND__MAX_ATTEMPTS", "4"),
    ])
    .await;
    let admin = app.admin("ops@example.com").await;
    let created = app
        .post(
            "/api/v1/webhooks/endpoints",
            Some(&admin),
            &json!({
                "url": format!("{}/fail-then-ok/2", receiver.base),
                "events": ["project.created"],
                "description": "CRM"
            }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.unwrap();
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    // A second endpoint follows everything: sign-in attempts and endpoint changes are never
    // sent (they carry what strangers typed, and endpoint URLs).
    let everything: Value = app
        .post(
            "/api/v1/webhooks/endpoints",
            Some(&admin),
            &json!({ "url": format!("{}/all", receiver.base), "events": ["*"] }),
        )
        .await
        .json()
        .await
        .unwrap();
    let everything_id = everything["id"].as_str().unwrap().to_owned();
    let wrong = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ops@example.com", "password": "hunter2-not-it" }),
        )
        .await;
    assert_eq!(wrong.status(), 401);
    let listed = app
        .get_authed_json("/api/v1/webhooks/endpoints", &admin)
        .await;
    assert_eq!(listed["items"][0]["id"], endpoint_id.as_str());
    assert!(listed["items"][0].get("secret").is_none(), "shown once");

    // A member's change becomes an event; an event type nobody follows does not.
    let (_, member) = app.member("mia@example.com").await;
    let project: Value = app
        .post(
            "/api/v1/projects",
            Some(&member),
            &json!({ "name": "Relaunch" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let project_id = project["id"].as_str().unwrap().to_owned();
    let worker = app.start_worker().await;
    let items = deliveries_until(&app, &admin, &endpoint_id, |items| {
        items.first().is_some_and(|d| d["state"] == "succeeded")
    })
    .await;
    assert_eq!(items.len(), 1, "{items:?}");
    let delivery = &items[0];
    assert_eq!(delivery["event_type"], "project.created");
    let statuses: Vec<Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, [json!(503), json!(503), json!(200)]);
    assert!(
        delivery["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["latency_ms"].is_u64())
    );

    // What the endpoint got: three copies under one webhook id, each verifiable with the secret.
    let requests = receiver.requests("/fail-then-ok/2");
    assert_eq!(requests.len(), 3);
    let verifier = Webhook::new(&secret).unwrap();
    for (headers, body) in &requests {
        assert_eq!(
            headers["webhook-id"],
            delivery["webhook_id"].as_str().unwrap()
        );
        let mut map = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            map.insert(name, headers[name].parse().unwrap());
        }
        verifier
            .verify(body.as_bytes(), &map)
            .expect("a valid signature");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "project.created");
        assert_eq!(event["data"]["id"], project_id.as_str());
        assert_eq!(event["data"]["resource"], "project");
        assert!(
            !body.contains("127.0.0.1") || !body.contains("ip"),
            "no client address"
        );
    }
    let updated = crate::support::send(
        &app,
        reqwest::Method::PATCH,
        &format!("/api/v1/projects/{project_id}"),
        &member,
        Some(json!({ "name": "Relaunch 2" })),
    )
    .await;
    assert_eq!(updated.status(), 200);

    // Redelivered by an admin: one more attempt, same webhook id; two at once send it once.
    // No worker meanwhile: one that finished the first redelivery before the second arrived
    // would rightly let the second through too.
    worker.stop().await;
    let delivery_id = delivery["id"].as_str().unwrap();
    let path = format!("/api/v1/webhooks/deliveries/{delivery_id}/redeliver");
    let empty = json!({});
    let (one, two) = tokio::join!(
        app.post(&path, Some(&admin), &empty),
        app.post(&path, Some(&admin), &empty)
    );
    let mut statuses = [one.status().as_u16(), two.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409]);
    let worker = app.start_worker().await;
    let items = deliveries_until(&app, &admin, &endpoint_id, |items| {
        items[0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 4)
            && items[0]["state"] == "succeeded"
    })
    .await;
    assert_eq!(items.len(), 1, "project.updated is not followed: {items:?}");
    assert_eq!(receiver.requests("/fail-then-ok/2").len(), 4);
    let all = deliveries_until(&app, &admin, &everything_id, |items| {
        items.iter().all(|d| d["state"] == "succeeded")
    })
    .await;
    let types: Vec<&str> = all
        .iter()
        .filter_map(|d| d["event_type"].as_str())
        .collect();
    assert!(types.contains(&"project.created"), "{types:?}");
    assert!(
        types
            .iter()
            .all(|t| !t.starts_with("auth.") && !t.starts_with("webhook_")),
        "{types:?}"
    );
    // Members manage nothing here.
    let refused = app
        .client
        .get(app.url("/api/v1/webhooks/endpoints"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_problem(refused, 403, "forbidden").await;
    worker.stop().await;
}

/// A host name that is not `localhost` but resolves only to non-public addresses here
/// (from /etc/hosts, or the machine's own name); `None` when this machine has none.
fn private_name() -> Option<String> {
    use std::net::ToSocketAddrs as _;
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let from_hosts = hosts.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip: std::net::IpAddr = fields.next()?.parse().ok()?;
        (!keel_webhooks::outbound::is_public(ip))
            .then(|| fields.map(str::to_owned).collect::<Vec<_>>())
    });
    let own = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    from_hosts
        .flatten()
        .chain(own.split_whitespace().map(str::to_owned))
        .filter(|name| {
            let bare = name.trim_end_matches('.');
            bare != "localhost"
                && !bare.ends_with(".localhost")
                && bare.parse::<std::net::IpAddr>().is_err()
        })
        .find(|name| {
            (name.as_str(), 80).to_socket_addrs().is_ok_and(|addrs| {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty()
                    && addrs
                        .iter()
                        .all(|a| !keel_webhooks::outbound::is_public(a.ip()))
            })
        })
}

#[tokio::test]
async fn a_loopback_target_is_refused_when_subscribing_and_when_delivering() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let admin = app.admin("ops@example.com").await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        receiver.base.clone(),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://2130706433:{port}/"),
    ] {
        let response = app
            .post(
                "/api/v1/webhooks/endpoints",
                Some(&admin),
                &json!({ "url": url, "events": ["*"] }),
            )
            .await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "url", "{url}");
        assert_eq!(problem["errors"][0]["code"], "private_target", "{url}");
    }
    // A name is checked where it is resolved: at every attempt, so DNS cannot be switched
    // to a private address after the check.
    let Some(name) = private_name() else {
        eprintln!("no host name resolves to a private address here: the DNS half is skipped");
        return;
    };
    let sneaky = format!("http://{name}:{port}/sneaky");
    let created = app
        .post(
            "/api/v1/webhooks/endpoints",
            Some(&admin),
            &json!({ "url": sneaky, "events": ["project.created"] }),
        )
        .await;
    assert_eq!(created.status(), 201, "{sneaky}");
    let endpoint: Value = created.json().await.unwrap();
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let (_, member) = app.member("mia@example.com").await;
    app.post(
        "/api/v1/projects",
        Some(&member),
        &json!({ "name": "Secret plans" }),
    )
    .await;
    let worker = app.start_worker().await;
    let items = deliveries_until(&app, &admin, &endpoint_id, |items| {
        items.first().is_some_and(|d| d["state"] == "failed")
    })
    .await;
    assert_eq!(items[0]["state"], "failed", "{items:?}");
    let attempts = items[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a refused target is not retried");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("no public address"),
        "{attempts:?}"
    );
    assert!(
        receiver.requests("/sneaky").is_empty(),
        "nothing reached the loopback receiver"
    );

    // Deleting the endpoint takes its deliveries with it.
    let deleted = crate::support::send(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v1/webhooks/endpoints/{endpoint_id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let gone = app
        .client
        .get(app.url(&format!(
            "/api/v1/webhooks/endpoints/{endpoint_id}/deliveries"
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(gone, 404, "not_found").await;
    worker.stop().await;
}
