//! The `worker` binary: see `worker --help`.

use std::process::ExitCode;

use clap::Parser;
use keel_app::cli::{WorkerCli, run_worker};

#[tokio::main]
async fn main() -> ExitCode {
    run_worker(WorkerCli::parse()).await
}
