//! The `api` binary: see `api --help`.

use std::process::ExitCode;

use clap::Parser;
use keel_app::cli::{ApiCli, run_api};

/// mimalloc: cheaper allocations on the request path, and memory returned to the OS when
/// freed (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    run_api(ApiCli::parse()).await
}
