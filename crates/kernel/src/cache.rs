//! A cache any feature can put its reads behind: the [`Cache`] port (process memory, or Redis
//! when `redis.url` is set) and [`CacheAside`], which reads through it with a lifetime, one load
//! per cold key however many requests ask at once, and invalidation by tag.
//!
//! Why tags are tokens, not sets of keys: invalidating a tag writes it a fresh random token,
//! one write whatever the number of entries. Every entry carries the tokens its tags had
//! *before* its value was loaded, and a read whose tokens no longer match is a miss. So a load
//! that raced a write can never serve what the write made stale (its tokens are already old),
//! a token lost to eviction is a miss rather than a false hit, and Redis needs neither `KEYS`
//! nor sets that grow with every entry. Stale entries are not deleted: they expire.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_channel::oneshot;
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use crate::error::BoxError;

/// A key-value store with expiry: the session check's cache and every feature's [`CacheAside`].
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// The value, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError>;
    /// Stores `value` for `ttl`.
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), BoxError>;
    /// Removes the value (invalidation).
    async fn delete(&self, key: &str) -> Result<(), BoxError>;
    /// Stores `value` for `ttl` only when `key` holds nothing; whether it did.
    async fn add(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, BoxError>;
    /// The values of `keys` in order, in one round trip where the store has one.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BoxError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }
}

/// A cache in a mutex-guarded map, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryCache {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl InMemoryCache {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (Vec<u8>, Instant)>) -> T) -> T {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (_, expires)| *expires > Instant::now());
        f(&mut map)
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(self.with(|map| map.get(key).map(|(value, _)| value.clone())))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), BoxError> {
        self.with(|map| map.insert(key.to_owned(), (value, Instant::now() + ttl)));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BoxError> {
        self.with(|map| map.remove(key));
        Ok(())
    }

    async fn add(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, BoxError> {
        Ok(self.with(|map| {
            if map.contains_key(key) {
                return false;
            }
            map.insert(key.to_owned(), (value, Instant::now() + ttl));
            true
        }))
    }
}

/// How long a tag's token lives without an invalidation. Its expiry only costs one miss per
/// entry (a missing token never matches), so it need not outlive the entries.
const TAG_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Keys longer than this are stored under their SHA-256, so a hostile query string cannot make
/// a key of unbounded size.
const MAX_PLAIN_KEY: usize = 120;

type Flight = Shared<oneshot::Receiver<Arc<[u8]>>>;

/// The loads in progress, by entry and tag tokens. One per process (the app keeps it with the
/// process-wide resources), so concurrent misses of a key wait for one load however many
/// states the process built.
#[derive(Clone, Default)]
pub struct Flights(Arc<Mutex<HashMap<String, Flight>>>);

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flights")
    }
}

enum Turn {
    Lead(Leader),
    Follow(Flight),
}

impl Flights {
    fn join(&self, key: &str) -> Turn {
        let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key) {
            return Turn::Follow(flight.clone());
        }
        let (sender, receiver) = oneshot::channel();
        flights.insert(key.to_owned(), receiver.shared());
        Turn::Lead(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            sender: Some(sender),
        })
    }
}

/// The one request loading a key. Dropped without [`Leader::finish`] (its load failed or its
/// request went away), its followers see the flight cancelled and try again.
struct Leader {
    flights: Flights,
    key: String,
    sender: Option<oneshot::Sender<Arc<[u8]>>>,
}

impl Leader {
    fn finish(mut self, value: Arc<[u8]>) {
        if let Some(sender) = self.sender.take() {
            // Followers that went away meanwhile are no one's concern.
            let _ = sender.send(value);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// What one read-through found.
enum Lookup {
    /// A fresh entry: its value's bytes.
    Hit(Vec<u8>),
    /// No fresh entry; the tags' current tokens (`None` where a tag has none yet).
    Miss(Vec<Option<String>>),
}

/// Reads through a [`Cache`] for one feature: entries under `cache:<space>:`, tags under
/// `cache-tag:<space>:`. Cheap to clone.
///
/// A cache that fails (Redis away) never fails the read: it goes to the database as if nothing
/// were cached, and `cache_requests_total{outcome="error"}` counts it. The other outcomes are
/// `hit`, `miss` (this read loaded) and `coalesced` (it waited for another read's load).
#[derive(Clone)]
pub struct CacheAside {
    cache: Arc<dyn Cache>,
    flights: Flights,
    space: &'static str,
    ttl: Duration,
    enabled: bool,
}

/// How long an entry lives unless [`CacheAside::ttl`] says otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for CacheAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheAside")
            .field("space", &self.space)
            .field("ttl", &self.ttl)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl CacheAside {
    /// Reads through `cache` for the feature `space` (also the `cache` label of the metrics),
    /// coalescing loads in `flights`.
    pub fn new(cache: Arc<dyn Cache>, flights: Flights, space: &'static str) -> Self {
        Self {
            cache,
            flights,
            space,
            ttl: DEFAULT_TTL,
            enabled: true,
        }
    }

    /// Entries live at most `ttl` (`cache.ttl`, never zero there); zero switches caching off.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The same, but every read loads (`cache.enabled = false`: to rule the cache out).
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The value under `key` if fresh (none of `tags` invalidated since it was loaded), else
    /// `load`'s, stored for the feature's lifetime. While one request loads a key, the others asking for it
    /// wait for that load instead of running their own. `load`'s errors are returned as they
    /// are and never cached.
    pub async fn get_or_load<T, E, Fut>(
        &self,
        key: &str,
        tags: &[&str],
        load: impl FnOnce() -> Fut,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, E>>,
    {
        let ttl = self.ttl;
        if !self.enabled || ttl.is_zero() {
            return load().await;
        }
        let entry_key = self.entry_key(key);
        let tag_keys: Vec<String> = tags.iter().map(|tag| self.tag_key(tag)).collect();
        // A follower whose leader gave up tries once more, then loads by itself: a failing
        // database is not queued behind one request at a time.
        for _ in 0..2 {
            let tokens = match self.lookup(&entry_key, &tag_keys).await {
                Ok(Lookup::Hit(bytes)) => {
                    if let Ok(value) = serde_json::from_slice(&bytes) {
                        self.count("hit");
                        return Ok(value);
                    }
                    // Written by another version of the feature: load and overwrite it.
                    match self.lookup("", &tag_keys).await {
                        Ok(Lookup::Miss(tokens)) => tokens,
                        _ => return load().await,
                    }
                }
                Ok(Lookup::Miss(tokens)) => tokens,
                Err(error) => {
                    self.failed(&error);
                    return load().await;
                }
            };
            let tokens = match self.ensure_tokens(&tag_keys, tokens).await {
                Ok(tokens) => tokens,
                Err(error) => {
                    self.failed(&error);
                    return load().await;
                }
            };
            let header = tokens.join(",");
            // Loads under different tokens are different flights: a request that starts after
            // an invalidation never waits for a load that started before it.
            match self.flights.join(&format!("{entry_key}#{header}")) {
                Turn::Follow(flight) => {
                    if let Ok(bytes) = flight.await
                        && let Ok(value) = serde_json::from_slice(&bytes)
                    {
                        self.count("coalesced");
                        return Ok(value);
                    }
                }
                Turn::Lead(leader) => {
                    // `miss` counts loads: hits + misses + coalesced = reads.
                    self.count("miss");
                    let value = load().await?;
                    let Ok(bytes) = serde_json::to_vec(&value) else {
                        return Ok(value);
                    };
                    let mut entry = Vec::with_capacity(header.len() + 1 + bytes.len());
                    entry.extend_from_slice(header.as_bytes());
                    entry.push(b'\n');
                    entry.extend_from_slice(&bytes);
                    if let Err(error) = self.cache.set(&entry_key, entry, ttl).await {
                        self.failed(&error);
                    }
                    leader.finish(Arc::from(bytes));
                    return Ok(value);
                }
            }
        }
        load().await
    }

    /// Makes every entry stored under any of `tags` stale, in every replica sharing the cache.
    /// Call it after the write commits; an error means entries may stay stale until they
    /// expire.
    pub async fn invalidate(&self, tags: &[&str]) -> Result<(), BoxError> {
        for tag in tags {
            self.cache
                .set(&self.tag_key(tag), fresh_token(), TAG_TTL)
                .await
                .inspect_err(|error| self.failed(error))?;
        }
        Ok(())
    }

    /// The entry (when `entry_key` is not empty) and the tags' tokens, in one round trip.
    async fn lookup(&self, entry_key: &str, tag_keys: &[String]) -> Result<Lookup, BoxError> {
        let mut keys = Vec::with_capacity(tag_keys.len() + 1);
        if !entry_key.is_empty() {
            keys.push(entry_key.to_owned());
        }
        keys.extend_from_slice(tag_keys);
        let mut values = self.cache.get_many(&keys).await?.into_iter();
        let entry = if entry_key.is_empty() {
            None
        } else {
            values.next().flatten()
        };
        let tokens: Vec<Option<String>> = values
            .map(|value| value.and_then(|bytes| String::from_utf8(bytes).ok()))
            .collect();
        if let Some(entry) = entry
            && let Some(split) = entry.iter().position(|&b| b == b'\n')
        {
            let stored = std::str::from_utf8(&entry[..split]).unwrap_or_default();
            let current: Option<Vec<&str>> = tokens.iter().map(|t| t.as_deref()).collect();
            let fresh = current
                .is_some_and(|current| stored.split(',').filter(|t| !t.is_empty()).eq(current));
            if fresh {
                return Ok(Lookup::Hit(entry[split + 1..].to_vec()));
            }
        }
        Ok(Lookup::Miss(tokens))
    }

    /// The tags' tokens, giving each tag that has none its first.
    async fn ensure_tokens(
        &self,
        tag_keys: &[String],
        tokens: Vec<Option<String>>,
    ) -> Result<Vec<String>, BoxError> {
        let mut ensured = Vec::with_capacity(tokens.len());
        for (key, token) in tag_keys.iter().zip(tokens) {
            if let Some(token) = token {
                ensured.push(token);
                continue;
            }
            let candidate = fresh_token();
            if self.cache.add(key, candidate.clone(), TAG_TTL).await? {
                ensured.push(String::from_utf8(candidate).unwrap_or_default());
            } else {
                // Another request gave it one first.
                let token = self.cache.get(key).await?.unwrap_or_default();
                ensured.push(String::from_utf8(token).unwrap_or_default());
            }
        }
        Ok(ensured)
    }

    fn entry_key(&self, key: &str) -> String {
        let plain = key.len() <= MAX_PLAIN_KEY
            && key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'#' && b != b',');
        // Different prefixes: no plain key can be spelled like another key's hash.
        if plain {
            format!("cache:{}:k:{key}", self.space)
        } else {
            let digest = Sha256::digest(key.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("cache:{}:h:{hex}", self.space)
        }
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("cache-tag:{}:{tag}", self.space)
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!("cache_requests_total", "cache" => self.space, "outcome" => outcome)
            .increment(1);
    }

    fn failed(&self, error: &BoxError) {
        self.count("error");
        tracing::warn!(cache = self.space, error = %error, "cache unavailable; reading from the source");
    }
}

fn fresh_token() -> Vec<u8> {
    uuid::Uuid::new_v4().simple().to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;

    use futures_executor::block_on;
    use futures_util::future::join_all;

    use super::*;

    /// Gives way to the other futures of a `join_all` `times` times.
    async fn yield_now(times: usize) {
        let mut left = times;
        std::future::poll_fn(|cx| {
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    }

    fn aside(cache: &Arc<InMemoryCache>) -> CacheAside {
        CacheAside::new(cache.clone(), Flights::default(), "things")
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_cold_key_asked_for_by_many_at_once_is_loaded_once() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            yield_now(10).await;
            Ok::<_, ()>(vec![1, 2, 3])
        };
        let values = block_on(join_all(
            (0..64).map(|_| aside.get_or_load("list", &["all"], load)),
        ));
        assert!(values.iter().all(|v| v == &Ok(vec![1, 2, 3])));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "one load for 64 readers");
        // And later reads are hits.
        let again: Result<Vec<u8>, ()> =
            block_on(aside.get_or_load("list", &["all"], || async { Ok(vec![9]) }));
        assert_eq!(again, Ok(vec![1, 2, 3]));
    }

    #[test]
    fn an_invalidated_tag_makes_its_entries_miss_and_others_stay() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        let get = |key: &'static str, tag: &'static str, value: u32| {
            block_on(aside.get_or_load(key, &[tag], || async move { Ok::<_, ()>(value) }))
        };
        assert_eq!(get("a", "one", 1), Ok(1));
        assert_eq!(get("b", "two", 2), Ok(2));
        block_on(aside.invalidate(&["one"])).unwrap();
        assert_eq!(get("a", "one", 10), Ok(10), "invalidated: loaded again");
        assert_eq!(get("b", "two", 20), Ok(2), "another tag: still cached");
        // Another feature's tag of the same name is another tag.
        let other = CacheAside::new(cache.clone(), Flights::default(), "others");
        block_on(other.invalidate(&["two"])).unwrap();
        assert_eq!(get("b", "two", 30), Ok(2));
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_served_afterwards() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        // The load reads the old value, then the write commits and invalidates before the
        // load stores what it read.
        let stale: Result<String, ()> = block_on(aside.get_or_load("k", &["t"], || async {
            aside.invalidate(&["t"]).await.unwrap();
            Ok("old".to_owned())
        }));
        assert_eq!(
            stale.as_deref(),
            Ok("old"),
            "the racing request itself gets what it read"
        );
        let next: Result<String, ()> =
            block_on(aside.get_or_load("k", &["t"], || async { Ok("new".to_owned()) }));
        assert_eq!(next.as_deref(), Ok("new"), "but nobody after it");
    }

    #[test]
    fn a_lost_tag_token_is_a_miss_never_a_false_hit() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        let first: Result<u8, ()> = block_on(aside.get_or_load("k", &["t"], || async { Ok(1) }));
        assert_eq!(first, Ok(1));
        block_on(cache.delete("cache-tag:things:t")).unwrap();
        let second: Result<u8, ()> = block_on(aside.get_or_load("k", &["t"], || async { Ok(2) }));
        assert_eq!(second, Ok(2));
    }

    #[test]
    fn errors_are_returned_not_cached_and_waiting_readers_load_again() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        let loads = AtomicUsize::new(0);
        let results = block_on(join_all((0..3).map(|_| {
            aside.get_or_load("k", &[], || async {
                let n = loads.fetch_add(1, Ordering::SeqCst);
                yield_now(5).await;
                if n == 0 { Err("down") } else { Ok(n) }
            })
        })));
        assert_eq!(results[0], Err("down"));
        assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
        let after: Result<usize, &str> = block_on(aside.get_or_load("k", &[], || async { Ok(99) }));
        assert_eq!(after, Ok(1), "the success after the failure was cached");
    }

    #[test]
    fn long_or_odd_keys_are_hashed_and_a_corrupt_entry_is_reloaded() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache);
        let long = "q=".repeat(500);
        let value: Result<u8, ()> = block_on(aside.get_or_load(&long, &[], || async { Ok(7) }));
        assert_eq!(value, Ok(7));
        let keys: Vec<String> = cache.entries.lock().unwrap().keys().cloned().collect();
        assert!(keys.iter().all(|k| k.len() < 100), "{keys:?}");
        // An entry another version wrote in another shape: loaded again and overwritten.
        block_on(cache.set("cache:things:k:n", b"\n\"text\"".to_vec(), TTL)).unwrap();
        let n: Result<u8, ()> = block_on(aside.get_or_load("n", &[], || async { Ok(5) }));
        assert_eq!(n, Ok(5));
        let n: Result<u8, ()> = block_on(aside.get_or_load("n", &[], || async { Ok(6) }));
        assert_eq!(n, Ok(5), "the reload was stored");
    }

    /// A cache that fails every call, as Redis does while it is away.
    #[derive(Debug)]
    struct Down;

    #[async_trait]
    impl Cache for Down {
        async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, BoxError> {
            Err("connection refused".into())
        }
        async fn set(&self, _: &str, _: Vec<u8>, _: Duration) -> Result<(), BoxError> {
            Err("connection refused".into())
        }
        async fn delete(&self, _: &str) -> Result<(), BoxError> {
            Err("connection refused".into())
        }
        async fn add(&self, _: &str, _: Vec<u8>, _: Duration) -> Result<bool, BoxError> {
            Err("connection refused".into())
        }
    }

    #[test]
    fn a_cache_that_is_down_sends_reads_to_the_source_and_reports_invalidations() {
        let aside = CacheAside::new(Arc::new(Down), Flights::default(), "things");
        for expected in [1, 2] {
            let value: Result<u8, ()> =
                block_on(aside.get_or_load("k", &["t"], || async move { Ok(expected) }));
            assert_eq!(value, Ok(expected), "every read loads, none fails");
        }
        // The writer learns the invalidation did not happen (it logs; the write stands).
        assert!(block_on(aside.invalidate(&["t"])).is_err());
    }

    #[test]
    fn switched_off_every_read_loads() {
        let cache = Arc::new(InMemoryCache::default());
        let aside = aside(&cache).enabled(false);
        for expected in [1, 2] {
            let value: Result<u8, ()> =
                block_on(aside.get_or_load("k", &[], || async move { Ok(expected) }));
            assert_eq!(value, Ok(expected));
        }
    }
}
