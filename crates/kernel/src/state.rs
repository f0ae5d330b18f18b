//! The application's state: every feature's services, built once by the app and shared by the
//! api and the worker.
//!
//! Why a map by type rather than a struct with a field per feature: the state has to be known
//! below the api and the worker (they may not depend on the app that builds it), and a struct
//! there would need one more field, and one more edit outside the feature's folders, for every
//! feature a team adds. Each feature registers its services under their own type, and the
//! adapters that need them ask for that type; a missing service is an error at startup, never
//! at request time.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::PermissionDef;

/// A service was asked for that no feature registered.
#[derive(Debug, thiserror::Error)]
#[error("no feature registered a `{0}` in the application state")]
pub struct MissingService(pub &'static str);

type Services = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

fn lookup<T: Clone + Send + Sync + 'static>(services: &Services) -> Result<T, MissingService> {
    services
        .get(&TypeId::of::<T>())
        .and_then(|service| service.downcast_ref::<T>())
        .cloned()
        .ok_or(MissingService(type_name::<T>()))
}

/// What the features registered: their services (one value per type) and their permissions.
#[derive(Clone, Default)]
pub struct AppState {
    services: Arc<Services>,
    permissions: Arc<Vec<PermissionDef>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("services", &self.services.len())
            .field("permissions", &self.permissions.len())
            .finish()
    }
}

impl AppState {
    /// An empty builder.
    pub fn builder() -> AppStateBuilder {
        AppStateBuilder::default()
    }

    /// The registered `T` (services are cheap handles: cloning shares them).
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingService> {
        lookup(&self.services)
    }

    /// Every permission the registered features define: the catalogue RBAC is synced to.
    pub fn permissions(&self) -> &[PermissionDef] {
        &self.permissions
    }
}

/// Collects the features' services, then freezes them into an [`AppState`].
#[derive(Default)]
pub struct AppStateBuilder {
    services: Services,
    permissions: Vec<PermissionDef>,
}

impl std::fmt::Debug for AppStateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStateBuilder")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

impl AppStateBuilder {
    /// Registers `service` under its type, replacing an earlier one of the same type.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, service: T) -> &mut Self {
        self.services.insert(TypeId::of::<T>(), Arc::new(service));
        self
    }

    /// The registered `T`, for a feature built on another feature's service.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Result<T, MissingService> {
        lookup(&self.services)
    }

    /// Adds a feature's permissions to the catalogue.
    pub fn permissions(&mut self, permissions: &[PermissionDef]) -> &mut Self {
        self.permissions.extend_from_slice(permissions);
        self
    }

    /// The finished state.
    pub fn build(self) -> AppState {
        AppState {
            services: Arc::new(self.services),
            permissions: Arc::new(self.permissions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permission;

    #[derive(Debug, Clone, PartialEq)]
    struct Greeter(&'static str);

    #[derive(Debug, Clone)]
    struct Unregistered;

    #[test]
    fn a_registered_service_comes_back_and_a_missing_one_is_named() {
        let mut builder = AppState::builder();
        builder.insert(Greeter("hello"));
        builder.permissions(&[PermissionDef {
            permission: Permission::from_static("greetings:read"),
            description: "Read greetings.",
            for_members: true,
        }]);
        let state = builder.build();
        assert_eq!(state.get::<Greeter>().ok(), Some(Greeter("hello")));
        let missing = state.get::<Unregistered>().err().map(|e| e.to_string());
        assert!(
            missing.is_some_and(|m| m.contains("Unregistered")),
            "the error names the type"
        );
        assert_eq!(state.permissions().len(), 1);
    }

    #[test]
    fn a_later_registration_of_the_same_type_replaces_the_earlier() {
        let mut builder = AppState::builder();
        builder.insert(Greeter("first")).insert(Greeter("second"));
        assert_eq!(
            builder.build().get::<Greeter>().ok(),
            Some(Greeter("second"))
        );
    }
}
