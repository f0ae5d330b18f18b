//! Rate limits and backoff on expiring counters (in memory, or Redis across replicas).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{BoxError, DomainError};

// The cache port lived here first; its users still import it from here.
pub use crate::cache::{Cache, InMemoryCache};

/// A counter's state after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Hits in the current window.
    pub hits: u64,
    /// Time until the counter expires (the window resets).
    pub ttl: Duration,
}

/// Counters that expire: the storage behind rate limits and login backoff. Keys are opaque;
/// callers namespace them (`login-failures:…`).
#[async_trait]
pub trait Counters: Send + Sync + std::fmt::Debug {
    /// Adds one to `key`. A new counter expires after `window`; an existing one keeps its
    /// expiry (a fixed window).
    async fn hit(&self, key: &str, window: Duration) -> Result<Count, BoxError>;

    /// The counter's state, if it exists.
    async fn peek(&self, key: &str) -> Result<Option<Count>, BoxError>;

    /// Sets the counter's remaining lifetime (backoff after repeated failures).
    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), BoxError>;

    /// Forgets the counter.
    async fn clear(&self, key: &str) -> Result<(), BoxError>;
}

/// A rate limit: at most `limit` hits per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Hits allowed per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

impl Quota {
    /// `limit` hits per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(60),
        }
    }

    /// `limit` hits per hour.
    pub const fn per_hour(limit: u32) -> Self {
        Self {
            limit,
            window: Duration::from_secs(3600),
        }
    }
}

/// What is left of a quota after a hit, for `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The quota's limit.
    pub limit: u32,
    /// Hits left in the window.
    pub remaining: u32,
    /// Time until the window resets.
    pub reset_after: Duration,
}

/// The outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the quota.
    Allowed(Allowance),
    /// Over the quota; retry after the window resets.
    Limited(Allowance),
}

/// Counts a hit on `key` against `quota`. When the counter store fails, the request is
/// allowed (and the failure logged by the caller): an outage of the limiter must not take the
/// service down.
pub async fn check(counters: &dyn Counters, key: &str, quota: Quota) -> Result<Decision, BoxError> {
    let count = counters.hit(key, quota.window).await?;
    let allowance = Allowance {
        limit: quota.limit,
        remaining: u32::try_from(u64::from(quota.limit).saturating_sub(count.hits)).unwrap_or(0),
        reset_after: count.ttl,
    };
    Ok(if count.hits > u64::from(quota.limit) {
        Decision::Limited(allowance)
    } else {
        Decision::Allowed(allowance)
    })
}

impl Decision {
    /// `Ok` when allowed, else the 429 domain error.
    pub fn into_result(self) -> Result<Allowance, DomainError> {
        match self {
            Self::Allowed(allowance) => Ok(allowance),
            Self::Limited(allowance) => Err(DomainError::RateLimited {
                retry_after: allowance.reset_after.max(Duration::from_secs(1)),
            }),
        }
    }
}

/// Counters in a mutex-guarded map, for unit tests (infrastructure uses moka or Redis).
#[derive(Debug, Default)]
pub struct InMemoryCounters {
    counters: Mutex<HashMap<String, (u64, Instant)>>,
}

impl InMemoryCounters {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (u64, Instant)>) -> T) -> T {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, expires)| *expires > now);
        f(&mut map)
    }
}

#[async_trait]
impl Counters for InMemoryCounters {
    async fn hit(&self, key: &str, window: Duration) -> Result<Count, BoxError> {
        Ok(self.with(|map| {
            let now = Instant::now();
            let entry = map.entry(key.to_owned()).or_insert((0, now + window));
            entry.0 += 1;
            Count {
                hits: entry.0,
                ttl: entry.1.saturating_duration_since(now),
            }
        }))
    }

    async fn peek(&self, key: &str) -> Result<Option<Count>, BoxError> {
        Ok(self.with(|map| {
            map.get(key).map(|(hits, expires)| Count {
                hits: *hits,
                ttl: expires.saturating_duration_since(Instant::now()),
            })
        }))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), BoxError> {
        self.with(|map| {
            if let Some(entry) = map.get_mut(key) {
                entry.1 = Instant::now() + ttl;
            }
        });
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), BoxError> {
        self.with(|map| map.remove(key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The counters never await anything, so one poll finishes them.
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("in-memory counters never wait"),
        }
    }

    #[test]
    fn quotas_allow_up_to_the_limit_then_limit() {
        let counters = InMemoryCounters::default();
        let quota = Quota::per_minute(3);
        for remaining in [2, 1, 0] {
            match block_on(check(&counters, "k", quota)).unwrap() {
                Decision::Allowed(a) => assert_eq!(a.remaining, remaining),
                Decision::Limited(_) => panic!("limited too early"),
            }
        }
        let decision = block_on(check(&counters, "k", quota)).unwrap();
        assert!(matches!(decision, Decision::Limited(a) if a.remaining == 0));
        assert!(matches!(
            decision.into_result(),
            Err(DomainError::RateLimited { retry_after }) if retry_after <= Duration::from_secs(60)
        ));
        // Other keys are independent.
        assert!(matches!(
            block_on(check(&counters, "other", quota)).unwrap(),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn counters_expire_and_clear() {
        let counters = InMemoryCounters::default();
        block_on(counters.hit("k", Duration::from_secs(60))).unwrap();
        block_on(counters.expire("k", Duration::ZERO)).unwrap();
        assert_eq!(block_on(counters.peek("k")).unwrap(), None);
        block_on(counters.hit("k", Duration::from_secs(60))).unwrap();
        block_on(counters.clear("k")).unwrap();
        assert_eq!(block_on(counters.peek("k")).unwrap(), None);
    }
}
