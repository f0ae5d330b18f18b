//! The `api` binary: see `api --help`.

use std::process::ExitCode;

use clap::Parser;
use keel_app::cli::{ApiCli, run_api};

#[tokio::main]
async fn main() -> ExitCode {
    run_api(ApiCli::parse()).await
}
