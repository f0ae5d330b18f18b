//! WebSockets at `/api/v1/ws`: authentication without a token in the URL, subscriptions
//! limited to what the caller may read, slow clients, the connection cap, and events across
//! replicas through Redis.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{TestApp, spawn_app, spawn_app_with, spawn_replica};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(app: &TestApp) -> String {
    app.url("/api/v1/ws").replacen("http://", "ws://", 1)
}

/// A handshake offering `protocols` (`Sec-WebSocket-Protocol`).
async fn handshake(
    app: &TestApp,
    protocols: &str,
) -> Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    u16,
> {
    let mut request = ws_url(app).into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map_err(|error| match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
            other => panic!("the handshake failed below HTTP: {other}"),
        })
}

/// Connects with the token in the subprotocol (as a browser would: `keel.v1` beside it).
async fn connect_with_protocol(app: &TestApp, token: &str) -> Socket {
    let (socket, response) = handshake(app, &format!("keel.v1, keel.bearer.{token}"))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "keel.v1");
    socket
}

/// Connects, then authenticates with a first message.
async fn connect_then_auth(app: &TestApp, token: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(app)).await.unwrap();
    send(&mut socket, json!({ "type": "auth", "token": token })).await;
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next JSON message within `wait`, skipping pings (reading answers them); `None` when
/// none came. A close is not "no message": it fails the test.
async fn next(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, socket.next()).await.ok()? {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).ok(),
            Some(Ok(Message::Close(frame))) => {
                panic!("the server closed the connection: {frame:?}")
            }
            Some(Err(error)) => panic!("the connection failed: {error}"),
            None => panic!("the connection ended"),
            Some(Ok(_)) => {}
        }
    }
}

/// Waits for a message of `kind`, failing on anything else first.
async fn expect(socket: &mut Socket, kind: &str) -> Value {
    let message = next(socket, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no `{kind}` message"));
    assert_eq!(message["type"], kind, "{message}");
    message
}

/// The close frame's code, reading past anything else (5 s at most).
async fn close_code(socket: &mut Socket) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, socket.next()).await.ok()? {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
    None
}

async fn subscribe(socket: &mut Socket, topic: &str) {
    send(socket, json!({ "type": "subscribe", "topic": topic })).await;
    let reply = expect(socket, "subscribed").await;
    assert_eq!(reply["topic"], topic);
}

async fn create_project(app: &TestApp, token: &str, name: &str) -> String {
    let response = app
        .post("/api/v1/projects", Some(token), &json!({ "name": name }))
        .await;
    assert_eq!(response.status(), 201);
    let project: Value = response.json().await.unwrap();
    project["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_project_change_reaches_its_owner_and_managers_and_nobody_else() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    let admin = app.admin("root@example.com").await;

    let mut ada_socket = connect_with_protocol(&app, &ada).await;
    expect(&mut ada_socket, "ready").await;
    let mut bob_socket = connect_then_auth(&app, &bob).await;
    expect(&mut bob_socket, "ready").await;
    let mut admin_socket = connect_then_auth(&app, &admin).await;
    expect(&mut admin_socket, "ready").await;
    for socket in [&mut ada_socket, &mut bob_socket, &mut admin_socket] {
        subscribe(socket, "projects").await;
    }

    let id = create_project(&app, &ada, "Launch").await;
    let event = expect(&mut ada_socket, "event").await;
    assert_eq!(event["topic"], "projects");
    assert_eq!(event["event"], "project.created");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(
        expect(&mut admin_socket, "event").await["data"]["id"],
        id.as_str()
    );
    let renamed = crate::support::send(
        &app,
        reqwest::Method::PATCH,
        &format!("/api/v1/projects/{id}"),
        &ada,
        Some(json!({ "name": "Launch 2" })),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(
        expect(&mut ada_socket, "event").await["event"],
        "project.updated"
    );
    // Bob's own change reaches him; Ada's never did.
    let bobs = create_project(&app, &bob, "Bob's").await;
    let seen = expect(&mut bob_socket, "event").await;
    assert_eq!(
        seen["data"]["id"],
        bobs.as_str(),
        "bob saw someone else's change: {seen}"
    );
    assert!(
        next(&mut bob_socket, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        next(&mut ada_socket, Duration::from_millis(300))
            .await
            .is_none(),
        "ada saw bob's project"
    );

    // After unsubscribing, nothing more arrives.
    send(
        &mut ada_socket,
        json!({ "type": "unsubscribe", "topic": "projects" }),
    )
    .await;
    expect(&mut ada_socket, "unsubscribed").await;
    create_project(&app, &ada, "Quiet").await;
    assert!(
        next(&mut ada_socket, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_connection_must_authenticate_and_stays_within_its_rights() {
    let app = spawn_app_with(&[("APP__REALTIME__AUTH_TIMEOUT", "300ms")]).await;
    let (_, ada) = app.member("ada@example.com").await;

    // A bad token in the handshake is a plain 401, before any upgrade.
    assert_eq!(
        handshake(&app, "keel.v1, keel.bearer.not-a-token")
            .await
            .err(),
        Some(401)
    );
    // The token's subprotocol alone would have to be echoed back: `keel.v1` must be offered.
    assert_eq!(
        handshake(&app, &format!("keel.bearer.{ada}")).await.err(),
        Some(400)
    );
    // Without an upgrade, the endpoint says what it speaks.
    let plain = app.client.get(app.url("/api/v1/ws")).send().await.unwrap();
    crate::support::assert_problem(plain, 400, "bad_request").await;

    // Silent clients are closed when the time to authenticate is up.
    let (mut silent, _) = tokio_tungstenite::connect_async(ws_url(&app))
        .await
        .unwrap();
    assert_eq!(close_code(&mut silent).await, Some(4401));
    // Subscribing first, or a wrong token in the first message, closes too.
    let (mut eager, _) = tokio_tungstenite::connect_async(ws_url(&app))
        .await
        .unwrap();
    send(
        &mut eager,
        json!({ "type": "subscribe", "topic": "projects" }),
    )
    .await;
    assert_eq!(close_code(&mut eager).await, Some(4401));
    let mut wrong = connect_then_auth(&app, "forged").await;
    assert_eq!(close_code(&mut wrong).await, Some(4401));

    let mut socket = connect_then_auth(&app, &ada).await;
    expect(&mut socket, "ready").await;
    send(&mut socket, json!({ "type": "subscribe", "topic": "nope" })).await;
    assert_eq!(expect(&mut socket, "error").await["code"], "unknown_topic");
    socket.send(Message::text("{not json")).await.unwrap();
    assert_eq!(
        expect(&mut socket, "error").await["code"],
        "invalid_message"
    );
    send(&mut socket, json!({ "type": "ping" })).await;
    expect(&mut socket, "pong").await;
    // An oversized message ends the connection rather than being buffered.
    let huge = json!({ "type": "subscribe", "topic": "x".repeat(10_000) });
    let _ = socket.send(Message::text(huge.to_string())).await;
    assert!(
        close_code(&mut socket)
            .await
            .is_none_or(|code| code != 1000)
    );

    // Signing out everywhere ends open connections at the next heartbeat.
    let app = spawn_app_with(&[("APP__REALTIME__HEARTBEAT_INTERVAL", "300ms")]).await;
    let (_, cy) = app.member("cy@example.com").await;
    let mut socket = connect_with_protocol(&app, &cy).await;
    expect(&mut socket, "ready").await;
    let out = crate::support::send(
        &app,
        reqwest::Method::POST,
        "/api/v1/auth/logout-all",
        &cy,
        None,
    )
    .await;
    assert_eq!(out.status(), 204);
    assert_eq!(close_code(&mut socket).await, Some(4401));
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_connections_are_capped() {
    let app = spawn_app_with(&[
        ("APP__REALTIME__SEND_QUEUE", "1"),
        ("APP__REALTIME__MAX_CONNECTIONS", "1"),
    ])
    .await;
    let (_, ada) = app.member("ada@example.com").await;
    let mut socket = connect_with_protocol(&app, &ada).await;
    expect(&mut socket, "ready").await;
    subscribe(&mut socket, "projects").await;

    // The cap: a second connection is refused before the upgrade.
    assert_eq!(
        handshake(&app, &format!("keel.v1, keel.bearer.{ada}"))
            .await
            .err(),
        Some(503)
    );

    // A burst larger than the send queue: the client cannot keep up and is cut off.
    let items: Vec<Value> = (0..50)
        .map(|i| json!({ "name": format!("P{i}") }))
        .collect();
    let bulk = app
        .post(
            "/api/v1/projects/bulk",
            Some(&ada),
            &json!({ "items": items }),
        )
        .await;
    assert_eq!(bulk.status(), 201);
    assert_eq!(close_code(&mut socket).await, Some(4408));
    drop(socket);

    // Its slot is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if handshake(&app, &format!("keel.v1, keel.bearer.{ada}"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_two_replicas_sharing_redis_a_change_through_one_reaches_a_client_on_the_other() {
    // Needs a Redis server: CI sets TEST_REDIS_URL.
    let Ok(redis) = std::env::var("TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
    let vars = [
        ("APP__REDIS__URL", redis.as_str()),
        ("APP__REDIS__KEY_PREFIX", prefix.as_str()),
    ];
    let a = spawn_app_with(&vars).await;
    let b = spawn_replica(&a, &vars).await;
    let worker = a.start_worker().await;
    let (_, ada) = a.member("ada@example.com").await;
    let (_, bob) = a.member("bob@example.com").await;

    let mut ada_on_b = connect_with_protocol(&b, &ada).await;
    expect(&mut ada_on_b, "ready").await;
    subscribe(&mut ada_on_b, "projects").await;
    let mut bob_on_b = connect_with_protocol(&b, &bob).await;
    expect(&mut bob_on_b, "ready").await;
    subscribe(&mut bob_on_b, "projects").await;
    // The relay on B subscribes at startup; give a slow machine a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let id = create_project(&a, &ada, "Across").await;
    let event = next(&mut ada_on_b, Duration::from_secs(5))
        .await
        .expect("the event reached replica B");
    let took = started.elapsed();
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["data"]["id"], id.as_str());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        next(&mut bob_on_b, Duration::from_millis(500))
            .await
            .is_none(),
        "another user's client saw it"
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_withdrawn_permission_stops_other_users_events_at_the_next_heartbeat() {
    let app = spawn_app_with(&[("APP__REALTIME__HEARTBEAT_INTERVAL", "300ms")]).await;
    let root = app.admin("root@example.com").await;
    let (mo_id, _) = app.member("mo@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    let roles = app.get_authed_json("/api/v1/roles", &root).await;
    let admin_role = roles["items"]
        .as_array()
        .or_else(|| roles.as_array())
        .unwrap()
        .iter()
        .find(|r| r["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let granted = crate::support::send(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/users/{mo_id}/roles"),
        &root,
        Some(json!({ "role_id": admin_role })),
    )
    .await;
    assert_eq!(granted.status(), 200);
    let mo = app.token("mo@example.com").await;
    let mut socket = connect_with_protocol(&app, &mo).await;
    expect(&mut socket, "ready").await;
    subscribe(&mut socket, "projects").await;
    let first = create_project(&app, &bob, "Seen").await;
    assert_eq!(
        expect(&mut socket, "event").await["data"]["id"],
        first.as_str()
    );

    let revoked = crate::support::send(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v1/users/{mo_id}/roles/{admin_role}"),
        &root,
        None,
    )
    .await;
    assert_eq!(revoked.status(), 204);
    // Past the next heartbeat, reading meanwhile (as any client does, which answers the
    // server's pings; one that does not is closed as gone after three heartbeats).
    assert!(
        next(&mut socket, Duration::from_millis(900))
            .await
            .is_none()
    );
    create_project(&app, &bob, "Unseen").await;
    assert!(
        next(&mut socket, Duration::from_millis(500))
            .await
            .is_none(),
        "the withdrawn manage_all still showed bob's project"
    );
    // Still connected, and still told about its own.
    let own = create_project(&app, &mo, "Mine").await;
    assert_eq!(
        expect(&mut socket, "event").await["data"]["id"],
        own.as_str()
    );
}
