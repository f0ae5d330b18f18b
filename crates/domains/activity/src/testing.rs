//! An in-memory [`ActivityRepository`] for unit tests here and in other crates (the `testing`
//! feature): it applies the scope as the SQL adapter does and remembers every scope and purge
//! batch asked for.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keel_kernel::{ListQuery, Page, RepoError};

use crate::model::{ActivityEntry, ActivityId};
use crate::policy::ActivityScope;
use crate::repository::ActivityRepository;

/// An in-memory activity table: applies the scope as the SQL adapter does and remembers
/// every scope and purge batch asked for.
#[derive(Debug, Default)]
pub struct InMemoryActivityRepository {
    entries: Mutex<Vec<ActivityEntry>>,
    scopes: Mutex<Vec<ActivityScope>>,
    batches: Mutex<Vec<u64>>,
}

impl InMemoryActivityRepository {
    /// A table holding `entries`.
    pub fn with(entries: Vec<ActivityEntry>) -> Self {
        Self {
            entries: Mutex::new(entries),
            ..Self::default()
        }
    }

    /// The entries left.
    pub fn entries(&self) -> Vec<ActivityEntry> {
        lock(&self.entries).clone()
    }

    /// Every scope a list was asked with, in order.
    pub fn scopes(&self) -> Vec<ActivityScope> {
        lock(&self.scopes).clone()
    }

    /// The size of every purge batch, in order.
    pub fn batches(&self) -> Vec<u64> {
        lock(&self.batches).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock has already failed.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[async_trait]
impl ActivityRepository for InMemoryActivityRepository {
    async fn list(
        &self,
        scope: ActivityScope,
        query: &ListQuery,
    ) -> Result<Page<ActivityEntry>, RepoError> {
        lock(&self.scopes).push(scope);
        let items: Vec<ActivityEntry> = lock(&self.entries)
            .iter()
            .filter(|e| {
                scope.own_user().is_none_or(|user| {
                    e.actor_user_id == Some(user) || e.subject_user_id == Some(user)
                })
            })
            .cloned()
            .collect();
        Ok(Page {
            total: items.len() as u64,
            items,
            limit: query.limit,
            offset: Some(0),
            next_cursor: None,
        })
    }

    async fn purge_batch(&self, before: DateTime<Utc>, limit: u64) -> Result<u64, RepoError> {
        let mut entries = lock(&self.entries);
        let mut old: Vec<ActivityId> = entries
            .iter()
            .filter(|e| e.created_at < before)
            .map(|e| e.id)
            .collect();
        old.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        entries.retain(|e| !old.contains(&e.id));
        lock(&self.batches).push(old.len() as u64);
        Ok(old.len() as u64)
    }
}
