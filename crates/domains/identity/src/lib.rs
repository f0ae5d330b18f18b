//! Identity and access: accounts, sessions with rotating refresh tokens, roles and
//! permissions, API keys, password recovery and email verification.
//!
//! Framework-free like every domain crate: hashing, tokens, storage, caching and mail are
//! ports (`ports`, `repository`, and the kernel's `throttle`, `mail` and `activity`), so the
//! rules here are unit-tested against in-memory fakes (`testing`).

pub mod error;
pub mod jobs;
pub mod mail;
pub mod model;
pub mod password;
pub mod policy;
pub mod repository;
pub mod security;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::IdentityError;
pub use model::{ApiKey, Email, Role, RoleId, Session, User, UserStatus};
pub use policy::{PERMISSIONS, USER_LIST_SPEC};
pub use service::{
    Identity, IdentityPorts, IdentityService, IdentitySettings, Me, MfaStatus, NewApiKey,
    NewApiKeyRequest, Registration, SecondFactor, SessionView, Tokens, TotpEnrolment, UserPatch,
    UserWithRoles,
};
