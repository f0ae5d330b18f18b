//! `cargo xtask fuzz`: coverage-guided fuzzing of Keel's parsers with cargo-fuzz (libFuzzer,
//! nightly). New inputs that reach new code are kept in `fuzz/corpus/<target>/` (commit them:
//! the end-to-end suite replays the corpus on stable); a crash leaves its input in
//! `fuzz/artifacts/<target>/`, to be fixed and copied into `fuzz/regressions/<target>/`.

use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use xshell::{Shell, cmd};

/// Every fuzz target (also listed in fuzz/Cargo.toml and tests/e2e/fuzz_corpus.rs).
const TARGETS: &[&str] = &["list_query", "cursor", "config", "credentials", "if_match"];

/// Whether the nightly toolchain and cargo-fuzz are installed.
pub(crate) fn available() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn fuzz(sh: &Shell, target: Option<&str>, seconds: u32) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        Some(name) => {
            ensure!(
                TARGETS.contains(&name),
                "unknown fuzz target `{name}`; one of: {}",
                TARGETS.join(", ")
            );
            vec![name]
        }
        None => TARGETS.to_vec(),
    };
    if !available() {
        bail!(
            "fuzzing needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); without them `cargo test` still replays fuzz/corpus on stable"
        );
    }
    let root = crate::workspace_root();
    // Its own target directory: sanitizer builds never mix with the project's.
    let target_dir = std::env::var("KEEL_FUZZ_TARGET_DIR").unwrap_or_else(|_| {
        std::env::var("HOME").map_or_else(
            |_| root.join("fuzz/target").display().to_string(),
            |home| format!("{home}/.cache/keel/fuzz-target"),
        )
    });
    let _dir = sh.push_dir(root.join("fuzz"));
    let _env = sh.push_env("CARGO_TARGET_DIR", &target_dir);
    cmd!(sh, "cargo +nightly fuzz build -O").run()?;
    let max_time = format!("-max_total_time={seconds}");
    for target in targets {
        eprintln!("fuzz: {target} for {seconds} s");
        let corpus = format!("corpus/{target}");
        // -rss_limit_mb: a parser that balloons on one input is a bug too.
        cmd!(
            sh,
            "cargo +nightly fuzz run -O {target} {corpus} -- {max_time} -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1"
        )
        .run()
        .with_context(|| format!("fuzz target {target} found a crash: see fuzz/artifacts/{target}/"))?;
    }
    Ok(())
}
