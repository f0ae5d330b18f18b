//! Readiness probes: dependencies whose reachability decides whether a process can serve.

use async_trait::async_trait;

use crate::error::BoxError;

/// One dependency check (database, cache, queue) run by the health endpoints.
#[async_trait]
pub trait HealthCheck: Send + Sync + std::fmt::Debug {
    /// A short stable name shown in health responses, e.g. `database`.
    fn name(&self) -> &'static str;

    /// Succeeds when the dependency answers. The error is logged, never shown to callers.
    async fn check(&self) -> Result<(), BoxError>;
}
