//! Records the commit the binaries are built from (`--version`, `build_info`, trace resource).
//! Docker builds have no `.git`: they pass it as the `KEEL_GIT_SHA` build argument.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEEL_GIT_SHA");
    let from_env = std::env::var("KEEL_GIT_SHA")
        .ok()
        .filter(|sha| !sha.trim().is_empty());
    let sha = from_env.or_else(|| {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|text| text.trim().to_owned())
        };
        // Rebuild (only this crate: the sha lives in the binaries' crate, not below it) when
        // HEAD moves: a commit, a checkout. Only files that exist are watched, or cargo would
        // rerun this on every build.
        let watch = |path: Option<String>| {
            if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={path}");
            }
        };
        watch(git(&["rev-parse", "--git-path", "HEAD"]));
        watch(git(&["rev-parse", "--git-path", "packed-refs"]));
        watch(
            git(&["symbolic-ref", "-q", "HEAD"])
                .and_then(|name| git(&["rev-parse", "--git-path", &name])),
        );
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=KEEL_GIT_SHA={}",
        sha.unwrap_or_else(|| "unknown".to_owned())
    );
}
