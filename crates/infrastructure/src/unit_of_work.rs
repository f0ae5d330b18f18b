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
        Ok(Box::new(SeaTransaction(txn)))
    }
}

/// A sea-orm transaction behind the kernel's [`Transaction`] port.
#[derive(Debug)]
pub struct SeaTransaction(DatabaseTransaction);

#[async_trait]
impl Transaction for SeaTransaction {
    async fn commit(self: Box<Self>) -> Result<(), RepoError> {
        self.0.commit().await.map_err(repo_err)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The sea-orm transaction inside a kernel transaction handed to a repository.
pub(crate) fn sea_txn(tx: &mut dyn Transaction) -> Result<&DatabaseTransaction, RepoError> {
    tx.as_any_mut()
        .downcast_mut::<SeaTransaction>()
        .map(|t| &t.0)
        .ok_or(RepoError::ForeignTransaction)
}
