//! The unit of work over sea-orm transactions.

use std::any::Any;

use async_trait::async_trait;
use keel_kernel::{RepoError, Transaction, UnitOfWork};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};

use crate::error::repo_err;

/// Starts database transactions for use cases.
#[derive(Debug, Clone)]
pub struct SeaUnitOfWork {
    db: DatabaseConnection,
}

impl SeaUnitOfWork {
    /// A unit of work on this connection pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UnitOfWork for SeaUnitOfWork {
    async fn begin(&self) -> Result<Box<dyn Transaction>, RepoError> {
        // On SQLite, take the write lock at BEGIN: a deferred transaction that reads and then
        // writes fails with SQLITE_BUSY_SNAPSHOT when another writer commits in between, while
        // an immediate one simply waits its turn (up to the busy timeout). Other backends
        // ignore the option.
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let txn = self
            .db
            .begin_with_options(options)
            .await
            .map_err(repo_err)?;
        Ok(Box::new(SeaTransaction {
            txn,
            after_commit: Vec::new(),
        }))
    }
}

/// Work to do once a transaction has committed (never after a rollback).
type AfterCommit = Box<dyn FnOnce() + Send>;

/// A sea-orm transaction behind the kernel's [`Transaction`] port.
pub struct SeaTransaction {
    txn: DatabaseTransaction,
    after_commit: Vec<AfterCommit>,
}

impl std::fmt::Debug for SeaTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaTransaction")
            .field("after_commit", &self.after_commit.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transaction for SeaTransaction {
    async fn commit(self: Box<Self>) -> Result<(), RepoError> {
        let Self { txn, after_commit } = *self;
        txn.commit().await.map_err(repo_err)?;
        for hook in after_commit {
            hook();
        }
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The sea-orm transaction inside a kernel transaction handed to a repository.
pub(crate) fn sea_txn(tx: &mut dyn Transaction) -> Result<&DatabaseTransaction, RepoError> {
    tx.as_any_mut()
        .downcast_mut::<SeaTransaction>()
        .map(|t| &t.txn)
        .ok_or(RepoError::ForeignTransaction)
}

/// Runs `hook` once `tx` has committed; dropped with it on rollback.
pub(crate) fn after_commit(
    tx: &mut dyn Transaction,
    hook: impl FnOnce() + Send + 'static,
) -> Result<(), RepoError> {
    tx.as_any_mut()
        .downcast_mut::<SeaTransaction>()
        .ok_or(RepoError::ForeignTransaction)?
        .after_commit
        .push(Box::new(hook));
    Ok(())
}
