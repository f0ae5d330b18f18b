//! Keel's composition root: builds the services from configuration and runs the `api` and
//! `worker` processes. Wiring only: every rule lives in a domain crate, every adapter in
//! `keel-api` or `keel-infrastructure`.

pub mod api;
pub mod background;
pub mod cli;
pub mod seed;
pub mod services;
pub mod signals;
mod startup;
pub mod worker;

pub use api::ApiApplication;
pub use services::Services;
pub use worker::WorkerApplication;
