//! Identity's repositories on sea-orm: accounts, roles and the permission catalogue,
//! sessions and refresh tokens, one-time tokens and API keys.

mod accounts;
mod api_keys;
mod roles;
mod security;
mod sessions;

use keel_kernel::RepoError;
use sea_orm::DatabaseConnection;
pub use security::{Argon2Hasher, HmacSecrets, JwtTokens, SecurityConfigError};

pub mod entities;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> RepoError {
    RepoError::Other(format!("stored {what} is invalid: {detail}").into())
}

/// Every identity repository on one connection pool.
#[derive(Debug, Clone)]
pub struct SeaIdentityStore {
    db: DatabaseConnection,
}

impl SeaIdentityStore {
    /// The store on this pool.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}
