//! Keel's end-to-end suite: one test binary, one module per area.
//!
//! Every test starts the real application (the same code as the `api` binary) on a random port
//! with its own fresh database, and talks to it over HTTP. The database is SQLite unless
//! `TEST_DATABASE_URL` names a PostgreSQL server, in which case each test creates (and drops)
//! its own database there.
// Test code reports failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activity;
mod architecture;
mod deploy;
mod edge;
mod errors;
mod fuzz_corpus;
mod health;
mod http_basics;
mod idempotency;
mod identity;
mod inputs;
mod jobs;
mod migrations;
mod openapi;
mod outbound;
mod projects;
mod realtime;
mod release_notes;
mod security;
mod storage;
mod support;
mod webhooks;
// keel:new-domain:modules
