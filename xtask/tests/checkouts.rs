//! One `xtask` binary, two checkouts: with a target directory shared between copies of the
//! repository (a global `CARGO_TARGET_DIR`, CI's cache), the binary built for one copy must act
//! on the copy it is run in, never on the one it was compiled from.
// Test code reports failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

/// A minimal second checkout: a workspace manifest, `xtask/hooks/` with its own hook texts,
/// and a git repository.
fn second_checkout(dir: &Path) {
    std::fs::create_dir_all(dir.join("xtask/hooks")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    for hook in ["pre-commit", "commit-msg"] {
        std::fs::write(
            dir.join("xtask/hooks").join(hook),
            format!("#!/bin/sh\n# the second checkout's {hook}\nexit 0\n"),
        )
        .unwrap();
    }
    let init = Command::new("git")
        .args(["init", "--quiet"])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(init.success());
}

#[test]
fn the_binary_acts_on_the_checkout_it_runs_in() {
    let dir = tempfile_dir();
    second_checkout(&dir);
    let nested = dir.join("xtask/hooks");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("hooks")
        .current_dir(&nested)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let installed = std::fs::read_to_string(dir.join(".git/hooks/pre-commit")).unwrap();
    assert!(
        installed.contains("the second checkout's pre-commit"),
        "installed from the wrong checkout: {installed}"
    );

    // Outside any workspace, it says so instead of editing the one it was built from.
    let outside = tempfile_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("hooks")
        .current_dir(&outside)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not inside Keel's workspace"));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keel-xtask-checkout-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
