//! `GET /api/v1/ws`: WebSocket connections that receive changes as they commit.
//!
//! A connection authenticates without a token in the URL (the `keel.bearer.<token>`
//! subprotocol, or a first `{"type":"auth","token":…}` message), subscribes to topics, and
//! receives only the events its caller may read ([`Topic::may_see`]). The server pings every
//! `realtime.heartbeat_interval`, re-checks the credential on each ping (a revoked session or an
//! expired token ends the connection), disconnects a client that lets `realtime.send_queue`
//! events pile up, and refuses connections beyond `realtime.max_connections`.
//! The message shapes are in docs/realtime.md.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use keel_config::Settings;
use keel_identity::Identity;
use keel_kernel::realtime::{Missed, RealtimeEvent, RealtimeFeed};
use keel_kernel::{Actor, DomainError};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::error::ApiError;

/// The subprotocol a client offers beside `keel.bearer.<token>`; the server selects it.
pub const PROTOCOL: &str = "keel.v1";
/// The prefix of the subprotocol that carries the access token (or API key).
pub const BEARER_PROTOCOL: &str = "keel.bearer.";
/// Largest message a client may send.
const MAX_FRAME: usize = 4096;
/// Close codes (RFC 6455 leaves 4000–4999 to applications).
const UNAUTHORIZED: u16 = 4401;
const TOO_SLOW: u16 = 4408;
/// Longest a control frame may wait to be queued before the client counts as too slow.
const WRITE_WAIT: Duration = Duration::from_secs(2);

/// `[realtime]`, as the handler needs it.
#[derive(Debug, Clone)]
pub struct RealtimeLimits {
    max_connections: usize,
    send_queue: usize,
    heartbeat: Duration,
    auth_timeout: Duration,
}

impl RealtimeLimits {
    /// From the configuration.
    pub fn new(settings: &Settings) -> Self {
        let realtime = &settings.realtime;
        Self {
            max_connections: realtime.max_connections,
            send_queue: realtime.send_queue,
            heartbeat: realtime.heartbeat_interval,
            auth_timeout: realtime.auth_timeout,
        }
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Auth { token: String },
    Subscribe { topic: String },
    Unsubscribe { topic: String },
    Ping,
}

/// The token in a `keel.bearer.<token>` subprotocol, if one was offered.
fn bearer_protocol(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Whether the client offered the subprotocol `name`.
fn offers(req: &HttpRequest, name: &str) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == name)
}

async fn authenticate(identity: &Identity, token: &str) -> Result<Actor, DomainError> {
    let token = token.trim();
    let actor = if token.starts_with("keel_") {
        identity.authenticate_api_key(token).await
    } else {
        identity.authenticate_bearer(token).await
    };
    let actor = actor.map_err(DomainError::from)?;
    match actor {
        Actor::User { .. } | Actor::ApiKey { .. } | Actor::Federated { .. } => Ok(actor),
        // An account waiting for email confirmation reads only its profile.
        Actor::Unverified { .. } => Err(DomainError::EMAIL_UNVERIFIED),
        Actor::Anonymous | Actor::System => Err(DomainError::Unauthenticated),
    }
}

/// Open a WebSocket for live changes
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "realtime",
    operation_id = "open_websocket",
    description = "Upgrades to a WebSocket (offer the subprotocols `keel.v1` and `keel.bearer.<access token>`, or send `{\"type\":\"auth\",\"token\":\"…\"}` first). Then `{\"type\":\"subscribe\",\"topic\":\"projects\"}`; events arrive as `{\"type\":\"event\",\"topic\",\"event\",\"data\"}`. Messages: docs/realtime.md.",
    security(()),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthenticated),
        (status = 403, response = crate::openapi::Forbidden),
    )
)]
async fn open(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Arc<dyn RealtimeFeed>>,
    identity: web::Data<Identity>,
    limits: web::Data<RealtimeLimits>,
) -> Result<HttpResponse, ApiError> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(ApiError::BadRequest(
            "this endpoint speaks WebSocket: send `Upgrade: websocket`".to_owned(),
        ));
    }
    // A credential in the handshake is checked before the upgrade: a bad one is a plain 401.
    let bearer = bearer_protocol(&req);
    // The server selects `keel.v1`, never the token's protocol: echoing that would put the
    // token in the response headers.
    if bearer.is_some() && !offers(&req, PROTOCOL) {
        return Err(ApiError::BadRequest(format!(
            "offer the `{PROTOCOL}` subprotocol beside `{BEARER_PROTOCOL}<token>`"
        )));
    }
    let actor = match &bearer {
        Some(token) => Some(authenticate(&identity, token).await?),
        None => None,
    };
    let Some(slot) = hub.admit(limits.max_connections) else {
        return Err(ApiError::Domain(DomainError::Unavailable(
            "realtime.max_connections open connections".into(),
        )));
    };
    let (response, session, stream) = actix_ws::handle_with_protocols(&req, body, &[PROTOCOL])
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    let connection = Connection {
        hub: Arc::clone(hub.get_ref()),
        identity: identity.get_ref().clone(),
        limits: limits.get_ref().clone(),
        actor: actor.map(|a| (a, bearer_protocol(&req).unwrap_or_default())),
        request_id: crate::extract::origin(&req).request_id,
    };
    let span = tracing::info_span!("websocket", request_id = connection.request_id.as_deref());
    actix_web::rt::spawn(
        async move {
            let _slot = slot;
            connection
                .run(session, stream.max_frame_size(MAX_FRAME))
                .await;
        }
        .instrument(span),
    );
    Ok(response)
}

struct Connection {
    hub: Arc<dyn RealtimeFeed>,
    identity: Identity,
    limits: RealtimeLimits,
    /// The caller and the credential it proved (re-checked on every heartbeat).
    actor: Option<(Actor, String)>,
    request_id: Option<String>,
}

fn text(value: &serde_json::Value) -> String {
    value.to_string()
}

fn error(code: &str, message: &str) -> String {
    text(&json!({ "type": "error", "code": code, "message": message }))
}

impl Connection {
    async fn run(mut self, session: Session, mut stream: actix_ws::MessageStream) {
        // Events for this client wait here; the writer drains it at the client's pace.
        let (queue, mut pending) = mpsc::channel::<String>(self.limits.send_queue);
        let mut writer_session = session.clone();
        let writer = actix_web::rt::spawn(async move {
            while let Some(message) = pending.recv().await {
                if writer_session.text(message).await.is_err() {
                    break;
                }
            }
        });
        let mut events = self.hub.listen();
        let mut topics: BTreeSet<String> = BTreeSet::new();
        let mut heartbeat = tokio::time::interval(self.limits.heartbeat);
        heartbeat.tick().await;
        let started = Instant::now();
        let mut last_heard = Instant::now();
        if let Some((actor, _)) = &self.actor {
            let _ = queue.try_send(ready(actor));
        }
        let close = loop {
            tokio::select! {
                message = stream.recv() => {
                    let Some(Ok(message)) = message else {
                        break None;
                    };
                    last_heard = Instant::now();
                    match message {
                        Message::Text(body) => {
                            if let Some(reason) = self.on_text(&body, &queue, &mut topics).await {
                                break Some(reason);
                            }
                        }
                        Message::Ping(bytes) => {
                            // Bounded: a client that pings without reading must not stall this
                            // loop (and with it the deadlines below).
                            let mut session = session.clone();
                            match tokio::time::timeout(WRITE_WAIT, session.pong(&bytes)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break None,
                                Err(_) => break Some(slow()),
                            }
                        }
                        Message::Close(_) => break None,
                        Message::Binary(_) => {
                            let _ = queue.try_send(error("unsupported", "send JSON text messages"));
                        }
                        _ => {}
                    }
                }
                event = events.next() => match event {
                    Ok(event) => {
                        if let Some(message) = self.visible(&event, &topics)
                            && queue.try_send(message).is_err()
                        {
                            break Some(slow());
                        }
                    }
                    // The bus ran past this connection: it is not keeping up either.
                    Err(Missed::Lagged) => break Some(slow()),
                    Err(Missed::Closed) => break None,
                },
                _ = heartbeat.tick() => {
                    if self.actor.is_none() && started.elapsed() >= self.limits.auth_timeout {
                        break Some(unauthorized("authenticate within realtime.auth_timeout"));
                    }
                    if last_heard.elapsed() >= self.limits.heartbeat * 3 {
                        break Some(CloseReason { code: CloseCode::Away, description: Some("no answer to pings".into()) });
                    }
                    // The credential again, and the rights it carries now: a revoked session, an
                    // expired token or a withdrawn permission takes effect here.
                    if let Some((_, token)) = &self.actor {
                        match authenticate(&self.identity, token).await {
                            Ok(actor) => {
                                let hub = &self.hub;
                                topics.retain(|t| hub.topic(t).is_some_and(|t| t.may_subscribe(&actor)));
                                let token = token.clone();
                                self.actor = Some((actor, token));
                            }
                            Err(_) => break Some(unauthorized("the session ended or the token expired: reconnect with a fresh one")),
                        }
                    }
                    let mut session = session.clone();
                    match tokio::time::timeout(WRITE_WAIT, session.ping(b"keel")).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break None,
                        Err(_) => break Some(slow()),
                    }
                }
                _ = tokio::time::sleep(self.limits.auth_timeout.saturating_sub(started.elapsed())), if self.actor.is_none() => {
                    break Some(unauthorized("authenticate within realtime.auth_timeout"));
                }
            }
        };
        writer.abort();
        if let Some(reason) = &close {
            tracing::info!(
                code = u16::from(reason.code),
                reason = reason.description.as_deref(),
                "websocket closed by the server"
            );
        }
        // Bounded: a client that stopped reading must not hold this task.
        let _ = tokio::time::timeout(Duration::from_secs(1), session.close(close)).await;
    }

    /// Handles one client message; `Some` closes the connection.
    async fn on_text(
        &mut self,
        body: &str,
        queue: &mpsc::Sender<String>,
        topics: &mut BTreeSet<String>,
    ) -> Option<CloseReason> {
        let message = match serde_json::from_str::<ClientMessage>(body) {
            Ok(message) => message,
            Err(e) => {
                let _ = queue.try_send(error(
                    "invalid_message",
                    &format!("not a message this server knows: {e}"),
                ));
                return None;
            }
        };
        match (message, &self.actor) {
            (ClientMessage::Auth { token }, None) => {
                match authenticate(&self.identity, &token).await {
                    Ok(actor) => {
                        let _ = queue.try_send(ready(&actor));
                        self.actor = Some((actor, token));
                        None
                    }
                    Err(_) => Some(unauthorized("the token is not valid")),
                }
            }
            (ClientMessage::Auth { .. }, Some(_)) => {
                let _ = queue.try_send(error(
                    "already_authenticated",
                    "this connection is authenticated",
                ));
                None
            }
            (_, None) => Some(unauthorized(
                "authenticate first: {\"type\":\"auth\",\"token\":\"…\"}",
            )),
            (ClientMessage::Subscribe { topic }, Some((actor, _))) => {
                let reply = match self.hub.topic(&topic) {
                    None => error(
                        "unknown_topic",
                        &format!("topics: {}", self.hub.topic_names().join(", ")),
                    ),
                    Some(t) if !t.may_subscribe(actor) => {
                        error("forbidden", &format!("`{topic}` needs `{}`", t.read))
                    }
                    Some(_) => {
                        topics.insert(topic.clone());
                        text(&json!({ "type": "subscribed", "topic": topic }))
                    }
                };
                let _ = queue.try_send(reply);
                None
            }
            (ClientMessage::Unsubscribe { topic }, Some(_)) => {
                topics.remove(&topic);
                let _ = queue.try_send(text(&json!({ "type": "unsubscribed", "topic": topic })));
                None
            }
            (ClientMessage::Ping, Some(_)) => {
                let _ = queue.try_send(text(&json!({ "type": "pong" })));
                None
            }
        }
    }

    /// The message for `event` when this connection follows its topic and may see it.
    fn visible(&self, event: &Arc<RealtimeEvent>, topics: &BTreeSet<String>) -> Option<String> {
        let (actor, _) = self.actor.as_ref()?;
        if !topics.contains(&event.topic) {
            return None;
        }
        let topic = self.hub.topic(&event.topic)?;
        topic.may_see(actor, event).then(|| {
            text(&json!({ "type": "event", "topic": event.topic, "event": event.event, "data": event.data }))
        })
    }
}

fn ready(actor: &Actor) -> String {
    text(&json!({ "type": "ready", "user_id": actor.user_id() }))
}

fn unauthorized(why: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::Other(UNAUTHORIZED),
        description: Some(why.to_owned()),
    }
}

fn slow() -> CloseReason {
    metrics::counter!(WS_SLOW_CONSUMERS_TOTAL).increment(1);
    CloseReason {
        code: CloseCode::Other(TOO_SLOW),
        description: Some("too slow: more than realtime.send_queue events waited".to_owned()),
    }
}

/// `ws_slow_consumers_total`: connections closed because they did not keep up.
pub const WS_SLOW_CONSUMERS_TOTAL: &str = "ws_slow_consumers_total";

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ws").route(web::get().to(open)));
}

/// The route's OpenAPI operation.
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(open))]
pub struct RealtimeDoc;

/// The OpenAPI document of the route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <RealtimeDoc as utoipa::OpenApi>::openapi()
}

/// The services the handler takes from the application state.
pub fn data(
    state: &keel_kernel::AppState,
) -> Result<Vec<crate::state::AppData>, keel_kernel::MissingService> {
    Ok(vec![crate::state::AppData::of::<Arc<dyn RealtimeFeed>>(
        state,
    )?])
}
