//! Keel's composition root: builds the application state from configuration and runs the `api` and
//! `worker` processes. Wiring only: every rule lives in a domain crate, every adapter in
//! `keel-api` or `keel-infrastructure`.

pub mod api;
pub mod background;
pub mod cli;
pub mod seed;
pub mod signals;
mod startup;
pub mod state;
pub mod worker;

/// The commit the binaries were built from (`KEEL_GIT_SHA` at build time, else `git`, else
/// `unknown`); recorded here, in the binaries' crate, so a new commit rebuilds only this crate.
pub const GIT_SHA: &str = env!("KEEL_GIT_SHA");
/// `--version` text: `0.1.0 (git 1a2b3c4d5e6f)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("KEEL_GIT_SHA"),
    ")"
);

pub use api::ApiApplication;
pub use state::{build_state, state_builder};
pub use worker::WorkerApplication;
