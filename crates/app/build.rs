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
        // Rebuild when HEAD moves (a commit, a checkout), not on every build.
        if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={head}");
        }
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
            .and_then(|name| git(&["rev-parse", "--git-path", &name]))
        {
            println!("cargo:rerun-if-changed={reference}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!(
        "cargo:rustc-env=KEEL_GIT_SHA={}",
        sha.unwrap_or_else(|| "unknown".to_owned())
    );
}
