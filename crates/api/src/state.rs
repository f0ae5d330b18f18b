//! From the application state to actix app data: each feature names the services its handlers
//! take (`web::Data<T>`), and the server registers them once, failing at startup, not at the
//! first request, when one is missing.

use std::sync::Arc;

use actix_web::web;
use keel_kernel::{AppState, MissingService};

/// One service from the state, ready to register as `web::Data<T>`.
#[derive(Clone)]
pub struct AppData(Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>);

impl std::fmt::Debug for AppData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppData")
    }
}

impl AppData {
    /// The state's `T`, shared by every worker thread as one `web::Data<T>`.
    pub fn of<T: Clone + Send + Sync + 'static>(state: &AppState) -> Result<Self, MissingService> {
        let data = web::Data::new(state.get::<T>()?);
        Ok(Self(Arc::new(move |cfg| {
            cfg.app_data(data.clone());
        })))
    }

    /// Adds the service to an app (call at the `App` level, so middleware sees it too).
    pub fn register(&self, cfg: &mut web::ServiceConfig) {
        (self.0)(cfg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_is_refused_at_startup_naming_the_missing_service() {
        let missing = crate::feature_data(&AppState::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            missing.as_deref().is_some_and(|m| m.contains("Identity")),
            "{missing:?}"
        );
    }
}
