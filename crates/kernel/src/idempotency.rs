//! Idempotent retries (`Idempotency-Key`): a client that repeats a request that creates or
//! starts something, because a response was lost, gets the first response again instead of a
//! second effect.
//!
//! The rules, per caller and key: the same request again within 24 h replays the stored answer;
//! a different request under a used key is refused; a repeat while the first is still running
//! is refused (the client retries later). An answer that says the server failed (5xx) is not
//! kept, so a retry runs the request again, unless its effect had already committed. A request
//! whose process died mid-way releases its key after [`LEASE`] if nothing it did committed;
//! if its effect committed, the key answers [`Claim::AnswerLost`] rather than run twice.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::jobs::{Job, Queue};
use crate::repo::{RepoError, Transaction};

/// How long a stored answer is replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The least time a request holds its key before a retry may take it over (a process killed
/// mid-request never finishes its own); the api adds its request timeout on top, which already
/// bounds the original, so this only covers clock skew between replicas and a commit in flight
/// at the timeout. A claim whose effect committed is never taken over ([`Claim::AnswerLost`]).
pub const LEASE: Duration = Duration::from_secs(30);
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Largest answer kept for replay (four times the default request body limit); a larger one
/// is served, and its key stays claimed until the lease ends.
pub const MAX_STORED_BODY: usize = 4 << 20;

/// A finished answer, as it will be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// The headers worth replaying (content type, location, entity tag), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use (or an expired or abandoned one): run the request, then complete or release
    /// with this claim token (a late finisher cannot touch a claim taken over since).
    Started(String),
    /// The same request is running now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// The same request finished: replay this.
    Completed(StoredResponse),
    /// The first request's effect committed, but its process died before the answer was
    /// stored: running it again would do it twice, and there is nothing to replay.
    AnswerLost,
}

/// Whether `key` is usable: 1 to [`MAX_KEY_LEN`] visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Where keys and their answers are kept (the database: every replica sees them).
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `key` for `scope` (the caller) and a request with `fingerprint`, atomically:
    /// of two concurrent first uses, one gets [`Claim::Started`].
    /// A claim older than `lease` that never finished counts as abandoned.
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Claim, RepoError>;

    /// Stores the answer of the claim `token` (a no-op when the claim was taken over).
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: &StoredResponse,
    ) -> Result<(), RepoError>;

    /// Records, inside the use case's own transaction `tx` just before it commits, that claim
    /// `token`'s effect is committing: if the transaction commits and the process dies before
    /// [`IdempotencyStore::complete`], the key is never run again ([`Claim::AnswerLost`]); if
    /// it rolls back, so does the mark. Fails when the claim is no longer `token`'s (taken over
    /// after its lease), so the late effect rolls back.
    async fn mark_committed(
        &self,
        tx: &mut dyn Transaction,
        scope: &str,
        key: &str,
        token: &str,
    ) -> Result<(), RepoError>;

    /// Gives the claim `token` back (the request was refused and nothing committed): a retry
    /// runs again.
    async fn release(&self, scope: &str, key: &str, token: &str) -> Result<(), RepoError>;

    /// Deletes keys created before `before`; returns how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, RepoError>;
}

/// Deletes idempotency keys past [`RETENTION`]. Scheduled hourly.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeIdempotencyKeys {
    /// Keys created before this instant go.
    pub created_before: DateTime<Utc>,
}

impl Job for PurgeIdempotencyKeys {
    const KIND: &'static str = "idempotency.purge_expired_keys";
    const QUEUE: Queue = Queue::Low;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(valid_key("7f2c1e9a-create-invoice"));
        for bad in ["", "has space", "tab\there", "ünïcode", &"k".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_key(&"k".repeat(255)));
    }
}
