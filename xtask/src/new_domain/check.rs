//! `cargo xtask new-domain-check` (part of CI): generates throwaway domains in a temporary copy
//! of the repository (`widgets`, the example of the docs, and `gadgets`, every field type),
//! checks that regenerating an untouched domain changes nothing, that generating again or on a
//! taken name fails and writes nothing, and that the result is clean and passes the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use xshell::{Shell, cmd};

use crate::process::target_dir;

/// The files of the working tree git knows of (committed or not, minus ignored ones).
fn working_tree(sh: &Shell) -> anyhow::Result<Vec<PathBuf>> {
    let listing = cmd!(sh, "git ls-files -z --cached --others --exclude-standard").read()?;
    Ok(listing
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Every file under `dir` with its content, skipping build output and git data.
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default();
            if name == "target" || name == ".git" || name == "data" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path)?);
            }
        }
    }
    Ok(files)
}

pub(crate) fn check(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    let result = check_in_a_copy(sh, root);
    // The copy built Keel's crates into the shared target directory under the same artifact
    // names as this checkout (cargo names path packages by their place in the workspace), and
    // later than this checkout's sources: without this, the next `cargo test` here would take
    // the copy's binaries (its templates, its paths) as fresh.
    touch_sources(sh, root)?;
    result
}

/// Marks every workspace crate of `root` as changed, so cargo rebuilds it from these sources.
fn touch_sources(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    let metadata = cmd!(sh, "cargo metadata --no-deps --format-version 1 --offline")
        .quiet()
        .read()?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    let now = std::time::SystemTime::now();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let Some(source) = target["src_path"].as_str().map(Path::new) else {
                continue;
            };
            if source.starts_with(root) && source.is_file() {
                std::fs::File::options()
                    .append(true)
                    .open(source)?
                    .set_modified(now)?;
            }
        }
    }
    Ok(())
}

fn check_in_a_copy(sh: &Shell, root: &Path) -> anyhow::Result<()> {
    let copy = sh.create_temp_dir()?;
    for file in working_tree(sh)? {
        let from = root.join(&file);
        if !from.is_file() {
            continue; // deleted but not yet staged
        }
        let to = copy.path().join(&file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", file.display()))?;
    }
    let inner = Shell::new()?;
    inner.change_dir(copy.path());
    // Dependencies compile once and are shared with the main build.
    inner.set_var("CARGO_TARGET_DIR", target_dir());
    inner.set_var("TEST_DATABASE_URL", "");

    // The example, then every field type at once (the snapshots show their text; this
    // proves they compile, migrate and pass their tests).
    cmd!(
        inner,
        "cargo xtask new-domain widgets name:string quantity:i32 note:text? status:enum(draft,live) --no-build"
    )
    .run()?;
    cmd!(
        inner,
        "cargo xtask new-domain gadgets label:string subtitle:string? body:text note:text? active:bool quantity:i32 total:i64? ratio:f64 price:decimal? external_id:uuid? due_on:date? starts_at:datetime extra:json? stage:enum(draft,review,live)"
    )
    .run()?;
    // Regenerating an untouched domain changes nothing.
    cmd!(inner, "cargo xtask new-domain --regenerate widgets --check").run()?;

    let before = snapshot(copy.path())?;
    for again in [
        "widgets name:string",
        "projects title:string",
        "gizmos bad-field:string",
        "gizmos size:float",
    ] {
        let args: Vec<&str> = again.split(' ').collect();
        let refused = cmd!(inner, "cargo xtask new-domain {args...}")
            .quiet()
            .ignore_stderr()
            .run()
            .is_err();
        ensure!(refused, "`new-domain {again}` should have been refused");
    }
    ensure!(
        snapshot(copy.path())? == before,
        "a refused `new-domain` changed files"
    );

    cmd!(inner, "cargo fmt --all -- --check").run()?;
    cmd!(
        inner,
        "cargo clippy --workspace --all-targets -- -D warnings"
    )
    .run()?;
    cmd!(inner, "cargo test --workspace").run()?;
    eprintln!(
        "the generated `widgets` and `gadgets` domains build cleanly and the whole suite passes"
    );
    Ok(())
}
