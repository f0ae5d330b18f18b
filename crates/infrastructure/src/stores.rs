//! Expiring counters and a cache behind the kernel's `throttle` ports: in process memory
//! (moka) by default, or Redis when `redis.url` is set, so limits and invalidations hold across
//! replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel_kernel::error::BoxError;
use keel_kernel::throttle::{Cache, Count, Counters};
use moka::Expiry;
use moka::sync::Cache as MokaCache;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Most entries an in-memory store keeps (least recently used ones go first).
const MEMORY_CAPACITY: u64 = 100_000;

#[derive(Debug, Clone)]
struct Expiring<T> {
    value: T,
    expires_at: Instant,
}

struct ByDeadline;

impl<T> Expiry<String, Expiring<T>> for ByDeadline {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Expiring<T>,
        now: Instant,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Expiring<T>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }
}

fn moka<T: Clone + Send + Sync + 'static>() -> MokaCache<String, Expiring<T>> {
    MokaCache::builder()
        .max_capacity(MEMORY_CAPACITY)
        .expire_after(ByDeadline)
        .build()
}

/// Counters in this process's memory (one replica).
#[derive(Clone)]
pub struct MemoryCounters(MokaCache<String, Expiring<u64>>);

impl std::fmt::Debug for MemoryCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCounters")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self(moka())
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn hit(&self, key: &str, window: Duration) -> Result<Count, BoxError> {
        let now = Instant::now();
        let entry = self
            .0
            .entry(key.to_owned())
            .and_upsert_with(|current| match current {
                Some(entry) if entry.value().expires_at > now => Expiring {
                    value: entry.value().value + 1,
                    expires_at: entry.value().expires_at,
                },
                _ => Expiring {
                    value: 1,
                    expires_at: now + window,
                },
            });
        let state = entry.into_value();
        Ok(Count {
            hits: state.value,
            ttl: state.expires_at.saturating_duration_since(now),
        })
    }

    async fn peek(&self, key: &str) -> Result<Option<Count>, BoxError> {
        let now = Instant::now();
        Ok(self
            .0
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| Count {
                hits: e.value,
                ttl: e.expires_at.saturating_duration_since(now),
            }))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), BoxError> {
        if let Some(mut entry) = self.0.get(key) {
            entry.expires_at = Instant::now() + ttl;
            self.0.insert(key.to_owned(), entry);
        }
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), BoxError> {
        self.0.invalidate(key);
        Ok(())
    }
}

/// A cache in this process's memory (one replica: other replicas keep their copies until they
/// expire).
#[derive(Clone)]
pub struct MemoryCache(MokaCache<String, Expiring<Vec<u8>>>);

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.0.entry_count())
            .finish()
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHE_BYTES)
    }
}

/// What an in-memory cache holds at most by default: 64 MiB of keys and values.
const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

impl MemoryCache {
    /// A cache holding at most `bytes` of keys and values (`cache.memory_capacity_mib`);
    /// moka evicts by recency and frequency. Bounded by size, not count: one client asking for
    /// many distinct pages cannot grow the process without limit.
    pub fn with_capacity(bytes: u64) -> Self {
        Self(
            MokaCache::builder()
                .max_capacity(bytes)
                .weigher(|key: &String, entry: &Expiring<Vec<u8>>| {
                    u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
                })
                .expire_after(ByDeadline)
                .build(),
        )
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        let now = Instant::now();
        Ok(self
            .0
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.value))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), BoxError> {
        self.0.insert(
            key.to_owned(),
            Expiring {
                value,
                expires_at: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BoxError> {
        self.0.invalidate(key);
        Ok(())
    }

    async fn add(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, BoxError> {
        let entry = self.0.entry(key.to_owned()).or_insert_with(|| Expiring {
            value,
            expires_at: Instant::now() + ttl,
        });
        Ok(entry.is_fresh())
    }
}

/// Longest a Redis command or connection attempt may take before the caller falls back.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed command, how long requests skip Redis (falling back at once) before trying
/// it again: a Redis that stops answering costs one timeout per pause, not one per request.
const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// How long startup waits for Redis to answer before refusing to start.
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Counters and cache in Redis, shared by every replica. Keys carry `redis.key_prefix`.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    pause: Arc<Pause>,
}

/// Skips Redis for [`REDIS_PAUSE`] after a failure.
#[derive(Debug)]
struct Pause {
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is skipped.
    until_ms: AtomicU64,
}

impl Pause {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn check(&self) -> Result<(), BoxError> {
        if self.now_ms() < self.until_ms.load(Ordering::Relaxed) {
            return Err("Redis is skipped for a moment after a failure".into());
        }
        Ok(())
    }

    fn settle<T>(&self, result: redis::RedisResult<T>) -> Result<T, BoxError> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                {
                    let until = self.now_ms() + millis(REDIS_PAUSE);
                    self.until_ms.store(until, Ordering::Relaxed);
                }
                Err(error.into())
            }
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Atomically counts a hit: the first hit of a window sets its expiry.
const HIT_SCRIPT: &str = r"
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// Connects, waiting up to 10 s for Redis to answer (the connection manager reconnects by
    /// itself after later failures).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        // A request never waits long for Redis (limits fail open, the session cache falls back
        // to the database): no reconnect retries inside a command while Redis is away, the
        // next command tries again. The default six retries with backoff held in-flight
        // requests until the request timeout (found by `cargo xtask fault redis`).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(0)
            .set_max_delay(REDIS_TIMEOUT);
        let store = Self {
            connection: ConnectionManager::new_lazy_with_config(client, config)?,
            prefix: prefix.to_owned(),
            pause: Arc::new(Pause {
                epoch: Instant::now(),
                until_ms: AtomicU64::new(0),
            }),
        };
        // A Redis that starts a little after the api is fine; a wrong URL still stops startup.
        let started = Instant::now();
        loop {
            match store.round_trip().await {
                Ok(()) => return Ok(store),
                Err(error) if started.elapsed() >= REDIS_STARTUP_WAIT => return Err(error),
                Err(_) => tokio::time::sleep(REDIS_TIMEOUT).await,
            }
        }
    }

    async fn round_trip(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// Publishes `payload` on the channel `name` (under the key prefix); returns how many
    /// subscribers received it.
    pub async fn publish(&self, name: &str, payload: &str) -> Result<u64, BoxError> {
        let mut connection = self.connection.clone();
        Ok(redis::cmd("PUBLISH")
            .arg(self.key(name))
            .arg(payload)
            .query_async::<u64>(&mut connection)
            .await?)
    }

    /// The full name of the channel `name` (under the key prefix).
    pub fn channel(&self, name: &str) -> String {
        self.key(name)
    }

    /// A round trip, for the readiness check (never skipped; a success ends a pause).
    pub async fn ping(&self) -> Result<(), BoxError> {
        let result = self.round_trip().await;
        if result.is_ok() {
            self.pause.until_ms.store(0, Ordering::Relaxed);
        }
        self.pause.settle(result)
    }
}

#[async_trait]
impl keel_kernel::health::HealthCheck for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), BoxError> {
        self.ping().await
    }
}

#[async_trait]
impl Counters for RedisStore {
    async fn hit(&self, key: &str, window: Duration) -> Result<Count, BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let (hits, ttl): (u64, i64) = self.pause.settle(
            redis::Script::new(HIT_SCRIPT)
                .key(self.key(key))
                .arg(millis(window))
                .invoke_async(&mut connection)
                .await,
        )?;
        Ok(Count {
            hits,
            ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        })
    }

    async fn peek(&self, key: &str) -> Result<Option<Count>, BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let key = self.key(key);
        let (hits, ttl): (Option<u64>, i64) = self.pause.settle(
            redis::pipe()
                .get(&key)
                .pttl(&key)
                .query_async(&mut connection)
                .await,
        )?;
        Ok(hits.filter(|_| ttl > 0).map(|hits| Count {
            hits,
            ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        }))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let _: bool = self.pause.settle(
            connection
                .pexpire(
                    self.key(key),
                    i64::try_from(millis(ttl)).unwrap_or(i64::MAX),
                )
                .await,
        )?;
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let _: u64 = self.pause.settle(connection.del(self.key(key)).await)?;
        Ok(())
    }
}

#[async_trait]
impl Cache for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        self.pause.settle(connection.get(self.key(key)).await)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let _: () = self
            .pause
            .settle(connection.pset_ex(self.key(key), value, millis(ttl)).await)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BoxError> {
        // Not skipped during a pause: a revocation's invalidation is worth one more try.
        let mut connection = self.connection.clone();
        let _: u64 = self.pause.settle(connection.del(self.key(key)).await)?;
        Ok(())
    }

    async fn add(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, BoxError> {
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let stored: Option<String> = self.pause.settle(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut connection)
                .await,
        )?;
        Ok(stored.is_some())
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BoxError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.pause.check()?;
        let mut connection = self.connection.clone();
        let keys: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        self.pause.settle(
            redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut connection)
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use keel_kernel::throttle::{Decision, Quota, check};

    use super::*;

    async fn exercise(counters: &dyn Counters, cache: &dyn Cache, prefix: &str) {
        let key = format!("{prefix}:quota");
        let quota = Quota::per_minute(2);
        assert!(
            matches!(check(counters, &key, quota).await.unwrap(), Decision::Allowed(a) if a.remaining == 1)
        );
        assert!(
            matches!(check(counters, &key, quota).await.unwrap(), Decision::Allowed(a) if a.remaining == 0)
        );
        let limited = check(counters, &key, quota).await.unwrap();
        assert!(
            matches!(limited, Decision::Limited(a) if a.reset_after <= Duration::from_secs(60) && a.reset_after > Duration::from_secs(50))
        );
        assert_eq!(counters.peek(&key).await.unwrap().unwrap().hits, 3);
        counters
            .expire(&key, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(counters.peek(&key).await.unwrap(), None);
        counters.hit(&key, Duration::from_secs(60)).await.unwrap();
        counters.clear(&key).await.unwrap();
        assert_eq!(counters.peek(&key).await.unwrap(), None);

        let entry = format!("{prefix}:entry");
        cache
            .set(&entry, b"v".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(cache.get(&entry).await.unwrap(), Some(b"v".to_vec()));
        cache.delete(&entry).await.unwrap();
        assert_eq!(cache.get(&entry).await.unwrap(), None);
        cache
            .set(&entry, b"v".to_vec(), Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(cache.get(&entry).await.unwrap(), None, "expired");

        let token = format!("{prefix}:token");
        let ttl = Duration::from_secs(60);
        assert!(cache.add(&token, b"first".to_vec(), ttl).await.unwrap());
        assert!(!cache.add(&token, b"second".to_vec(), ttl).await.unwrap());
        assert_eq!(
            cache
                .get_many(&[token.clone(), entry.clone(), token.clone()])
                .await
                .unwrap(),
            [Some(b"first".to_vec()), None, Some(b"first".to_vec())],
            "in the order asked, the absent one as None"
        );
        cache.delete(&token).await.unwrap();
        cache
            .add(&token, b"short".to_vec(), Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            cache.add(&token, b"again".to_vec(), ttl).await.unwrap(),
            "an expired value counts as absent"
        );
    }

    #[tokio::test]
    async fn memory_stores_count_expire_and_invalidate() {
        exercise(&MemoryCounters::default(), &MemoryCache::default(), "t").await;
    }

    #[tokio::test]
    async fn redis_store_counts_expire_and_invalidate() {
        // Runs where Redis is available (CI sets TEST_REDIS_URL); elsewhere there is nothing
        // to talk to.
        let Ok(url) = std::env::var("TEST_REDIS_URL") else {
            return;
        };
        let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
        let store = RedisStore::connect(&url, &prefix).await.unwrap();
        store.ping().await.unwrap();
        exercise(&store, &store, "t").await;
    }

    /// A loopback TCP relay to Redis that can be told to hold everything: a Redis that stops
    /// answering while connections stay open (a hung server, a network partition).
    fn swallowing_relay(target: std::net::SocketAddr) -> (u16, Arc<std::sync::atomic::AtomicBool>) {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::AtomicBool;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallow = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&swallow);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buffer) {
                            if n == 0 {
                                break;
                            }
                            // Held, not lost: TCP delivers late, never drops mid-stream.
                            while flag.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        (port, swallow)
    }

    #[tokio::test]
    async fn a_redis_that_stops_answering_costs_one_timeout_then_is_skipped_until_it_answers() {
        // Needs a real Redis behind the relay (CI sets TEST_REDIS_URL).
        let Ok(url) = std::env::var("TEST_REDIS_URL") else {
            return;
        };
        let address = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse::<std::net::SocketAddr>()
            .unwrap();
        let (port, swallow) = swallowing_relay(address);
        let prefix = format!("keel-test-{}", uuid::Uuid::new_v4().simple());
        let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"), &prefix)
            .await
            .unwrap();
        store
            .set("k", b"v".to_vec(), Duration::from_secs(60))
            .await
            .unwrap();

        swallow.store(true, Ordering::SeqCst);
        // The first command waits for its timeout, never for the request's.
        let started = Instant::now();
        assert!(store.get("k").await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Then Redis is skipped: callers fall back at once instead of each waiting.
        let started = Instant::now();
        for _ in 0..20 {
            assert!(store.get("k").await.is_err());
            assert!(store.hit("c", Duration::from_secs(60)).await.is_err());
        }
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        assert!(
            store.ping().await.is_err(),
            "the health check sees it failing"
        );

        // Answering again: the health check's round trip ends the pause, data is intact.
        swallow.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));
    }
}
