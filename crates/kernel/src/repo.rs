//! Persistence ports: the storage error vocabulary and the unit of work.
//!
//! A use case that writes opens one [`Transaction`] through a [`UnitOfWork`], hands it to every
//! repository call that must commit together (the change, its activity entry, the jobs it
//! enqueues) and commits once. Reads take no transaction: a single autocommit statement is the
//! cheapest thing a database does.

use std::any::Any;

use async_trait::async_trait;

use crate::error::{BoxError, DomainError};

/// What a repository can report, independent of the database behind it.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A unique constraint rejected the write.
    #[error("unique constraint `{constraint}` violated")]
    UniqueViolation {
        /// The constraint or index name, when the database reports it.
        constraint: String,
    },
    /// The database cannot be reached or the pool is exhausted; retrying later may work.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// The transaction handed to a repository does not belong to its storage backend.
    #[error("a transaction from another storage backend was passed to a repository")]
    ForeignTransaction,
    /// Anything else: a bug, a schema mismatch, corrupt data.
    #[error("storage error")]
    Other(#[source] BoxError),
}

impl From<RepoError> for DomainError {
    fn from(error: RepoError) -> Self {
        match error {
            // Index names are not field names: a domain that knows which field a constraint
            // guards maps the violation itself (see releases' `VersionTaken`).
            RepoError::UniqueViolation { .. } => DomainError::Conflict {
                code: "conflict",
                message: "the change conflicts with an existing record".to_owned(),
                field: None,
            },
            RepoError::Unavailable(cause) => DomainError::Unavailable(cause),
            other => DomainError::Internal(Box::new(other)),
        }
    }
}

/// Starts transactions.
#[async_trait]
pub trait UnitOfWork: Send + Sync + std::fmt::Debug {
    /// Opens a transaction. Dropping it without [`Transaction::commit`] rolls it back.
    async fn begin(&self) -> Result<Box<dyn Transaction>, RepoError>;
}

/// An open transaction, passed to repository methods that write.
#[async_trait]
pub trait Transaction: Send + Any {
    /// Makes every write done through this transaction durable, atomically.
    async fn commit(self: Box<Self>) -> Result<(), RepoError>;

    /// Lets a repository implementation reach its own backend's transaction type.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A unit of work for in-memory repository fakes in unit tests: transactions do nothing.
///
/// Fakes apply writes immediately; rollback behaviour is covered by the infrastructure's
/// integration tests against real databases.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryUnitOfWork;

/// The transaction handed out by [`InMemoryUnitOfWork`].
#[derive(Debug, Default)]
pub struct InMemoryTransaction;

#[async_trait]
impl UnitOfWork for InMemoryUnitOfWork {
    async fn begin(&self) -> Result<Box<dyn Transaction>, RepoError> {
        Ok(Box::new(InMemoryTransaction))
    }
}

#[async_trait]
impl Transaction for InMemoryTransaction {
    async fn commit(self: Box<Self>) -> Result<(), RepoError> {
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
