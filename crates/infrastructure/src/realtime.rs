//! The real-time hub of one process: the topics features declared, the in-process bus that
//! WebSocket connections listen on, and (with Redis) the subscription that feeds it every
//! replica's events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use keel_kernel::realtime::{EventReceiver, Missed, RealtimeEvent, RealtimeFeed, Topic};
use tokio::sync::broadcast;

/// The Redis channel (under `redis.key_prefix`) events travel on between replicas.
pub const CHANNEL: &str = "realtime";

/// Events kept for a connection that has not read them yet before it misses some (each
/// connection also has its own bounded send queue).
const BUS_CAPACITY: usize = 4096;

/// The process's real-time hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct RealtimeHub {
    topics: Arc<RwLock<BTreeMap<&'static str, Topic>>>,
    bus: broadcast::Sender<Arc<RealtimeEvent>>,
    connections: Arc<AtomicUsize>,
    /// Events go through the outbox and Redis (every replica), rather than straight onto
    /// this process's bus after commit.
    pub via_redis: bool,
}

impl RealtimeHub {
    /// A hub; `via_redis` when `redis.url` is set.
    pub fn new(via_redis: bool) -> Self {
        Self {
            topics: Arc::default(),
            bus: broadcast::channel(BUS_CAPACITY).0,
            connections: Arc::default(),
            via_redis,
        }
    }

    /// Declares a topic (a feature's `register` does, once).
    pub fn add_topic(&self, topic: Topic) {
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.resource, topic);
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .find(|t| t.name == name)
            .cloned()
    }

    /// The topic that carries `resource`'s changes.
    pub fn topic_of(&self, resource: &str) -> Option<Topic> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(resource)
            .cloned()
    }

    /// Every topic's name.
    pub fn topic_names(&self) -> Vec<&'static str> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| t.name)
            .collect()
    }

    /// Hands `event` to this process's connections.
    pub fn publish_local(&self, event: RealtimeEvent) {
        // No receiver is fine: nobody is connected.
        let _ = self.bus.send(Arc::new(event));
    }

    /// A receiver of every event from now on.
    pub fn listen(&self) -> broadcast::Receiver<Arc<RealtimeEvent>> {
        self.bus.subscribe()
    }

    /// Takes a connection slot unless `max` are taken; the slot is freed when the guard drops.
    pub fn admit(&self, max: usize) -> Option<ConnectionSlot> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| {
                metrics::gauge!(WS_CONNECTIONS).increment(1.0);
                ConnectionSlot(self.connections.clone())
            })
    }
}

/// A connection's receiver on the bus.
struct BusReceiver(broadcast::Receiver<Arc<RealtimeEvent>>);

#[async_trait::async_trait]
impl EventReceiver for BusReceiver {
    async fn next(&mut self) -> Result<Arc<RealtimeEvent>, Missed> {
        self.0.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(_) => Missed::Lagged,
            broadcast::error::RecvError::Closed => Missed::Closed,
        })
    }
}

impl RealtimeFeed for RealtimeHub {
    fn topic(&self, name: &str) -> Option<Topic> {
        RealtimeHub::topic(self, name)
    }

    fn topic_names(&self) -> Vec<&'static str> {
        RealtimeHub::topic_names(self)
    }

    fn listen(&self) -> Box<dyn EventReceiver> {
        Box::new(BusReceiver(RealtimeHub::listen(self)))
    }

    fn admit(&self, max: usize) -> Option<Box<dyn std::any::Any + Send>> {
        RealtimeHub::admit(self, max).map(|slot| Box::new(slot) as Box<dyn std::any::Any + Send>)
    }
}

/// `ws_connections`: open WebSocket connections in this process.
pub const WS_CONNECTIONS: &str = "ws_connections";

/// One admitted connection.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(WS_CONNECTIONS).decrement(1.0);
    }
}

/// Feeds the hub with every replica's events from Redis until the task is aborted,
/// reconnecting (1 s, doubling to 30 s) whenever the subscription drops.
pub async fn relay_from_redis(hub: RealtimeHub, url: String, channel: String) {
    let mut pause = Duration::from_secs(1);
    loop {
        match subscribe(&url, &channel).await {
            Ok(mut pubsub) => {
                tracing::info!(%channel, "listening for real-time events in Redis");
                pause = Duration::from_secs(1);
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    match message
                        .get_payload::<String>()
                        .map_err(|e| e.to_string())
                        .and_then(|p| {
                            serde_json::from_str::<RealtimeEvent>(&p).map_err(|e| e.to_string())
                        }) {
                        Ok(event) => hub.publish_local(event),
                        Err(error) => {
                            tracing::warn!(%error, "an unreadable real-time event was skipped");
                        }
                    }
                }
                tracing::warn!("the Redis subscription for real-time events ended; reconnecting");
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?pause, "cannot subscribe to real-time events in Redis");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

async fn subscribe(url: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Registers the hub (one per process) in the state.
pub fn register(
    adapters: &crate::Adapters,
    state: &mut keel_kernel::AppStateBuilder,
) -> Result<(), crate::RegisterError> {
    let hub = adapters.realtime();
    state.insert(Arc::new(hub.clone()) as Arc<dyn RealtimeFeed>);
    state.insert(hub);
    Ok(())
}
