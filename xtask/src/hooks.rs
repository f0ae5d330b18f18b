//! `cargo xtask hooks`: installs the git hooks kept in `xtask/hooks/` (pre-commit: fmt and
//! clippy; commit-msg: Conventional Commits) into the repository's hooks directory.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use xshell::{Shell, cmd};

/// The hooks `cargo xtask hooks` installs, by file name in `xtask/hooks/` and in the git hooks
/// directory.
pub(crate) const HOOKS: [&str; 2] = ["pre-commit", "commit-msg"];

/// What happened to one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// There was none; now there is.
    Installed,
    /// The same file was already there.
    UpToDate,
    /// A different hook was there and `--force` replaced it.
    Replaced,
}

pub(crate) fn run(sh: &Shell, root: &Path, force: bool) -> anyhow::Result<()> {
    // Where git looks for hooks: `.git/hooks`, a worktree's common dir, or `core.hooksPath`.
    let relative = cmd!(sh, "git rev-parse --git-path hooks")
        .read()
        .context("`git rev-parse --git-path hooks` failed: is this a git checkout?")?;
    let target = sh.current_dir().join(relative.trim());
    let source = root.join("xtask").join("hooks");
    for (name, outcome) in install(&source, &target, force)? {
        let what = match outcome {
            Outcome::Installed => "installed",
            Outcome::UpToDate => "already up to date",
            Outcome::Replaced => "replaced (--force)",
        };
        println!("{name}: {what} at {}", target.join(name).display());
    }
    Ok(())
}

/// Copies every hook in [`HOOKS`] from `source` into `target` (made executable). Refuses, before
/// writing anything, when `target` holds a different hook of the same name, unless `force`.
pub(crate) fn install(
    source: &Path,
    target: &Path,
    force: bool,
) -> anyhow::Result<Vec<(&'static str, Outcome)>> {
    let mut planned: Vec<(&'static str, Vec<u8>, PathBuf, Outcome)> = Vec::new();
    let mut conflicts = Vec::new();
    for name in HOOKS {
        let from = source.join(name);
        let content =
            std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        let to = target.join(name);
        let outcome = match std::fs::read(&to) {
            Ok(existing) if existing == content => Outcome::UpToDate,
            Ok(_) if force => Outcome::Replaced,
            Ok(_) => {
                conflicts.push(to.display().to_string());
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Outcome::Installed,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", to.display()));
            }
        };
        planned.push((name, content, to, outcome));
    }
    if !conflicts.is_empty() {
        bail!(
            "a different hook is already installed at {}; compare it with xtask/hooks/, then \
             rerun with --force to replace it",
            conflicts.join(" and ")
        );
    }
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let mut done = Vec::new();
    for (name, content, to, outcome) in planned {
        if outcome != Outcome::UpToDate {
            std::fs::write(&to, &content).with_context(|| format!("writing {}", to.display()))?;
        }
        make_executable(&to)?;
        done.push((name, outcome));
    }
    Ok(done)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut permissions = std::fs::metadata(path)?.permissions();
    permissions.set_mode(permissions.mode() | 0o755);
    std::fs::set_permissions(path, permissions)
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn hooks_source() -> PathBuf {
        crate::workspace_root().join("xtask").join("hooks")
    }

    /// A fresh empty directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "keel-xtask-hooks-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn installs_then_refuses_a_different_hook_unless_forced() {
        let target = scratch("install").join("hooks");
        let outcomes = install(&hooks_source(), &target, false).unwrap();
        assert_eq!(
            outcomes,
            [
                ("pre-commit", Outcome::Installed),
                ("commit-msg", Outcome::Installed)
            ]
        );
        for name in HOOKS {
            assert_eq!(
                std::fs::read(target.join(name)).unwrap(),
                std::fs::read(hooks_source().join(name)).unwrap()
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(target.join(name))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o111, 0o111, "{name} is executable");
            }
        }

        let again = install(&hooks_source(), &target, false).unwrap();
        assert!(again.iter().all(|(_, o)| *o == Outcome::UpToDate));

        std::fs::write(target.join("commit-msg"), "#!/bin/sh\nexit 0\n").unwrap();
        let refused = install(&hooks_source(), &target, false).unwrap_err();
        assert!(refused.to_string().contains("--force"), "{refused}");
        assert_eq!(
            std::fs::read_to_string(target.join("commit-msg")).unwrap(),
            "#!/bin/sh\nexit 0\n",
            "a refused install leaves the existing hook alone"
        );

        let forced = install(&hooks_source(), &target, true).unwrap();
        assert_eq!(
            forced,
            [
                ("pre-commit", Outcome::UpToDate),
                ("commit-msg", Outcome::Replaced)
            ]
        );
        assert_eq!(
            std::fs::read(target.join("commit-msg")).unwrap(),
            std::fs::read(hooks_source().join("commit-msg")).unwrap()
        );
        std::fs::remove_dir_all(target.parent().unwrap()).unwrap();
    }

    /// Runs the commit-msg hook (bash) on `message`; `None` when bash is not available.
    fn commit_msg_accepts(dir: &Path, message: &str) -> Option<bool> {
        let file = dir.join("COMMIT_EDITMSG");
        std::fs::write(&file, message).unwrap();
        let status = Command::new("bash")
            .arg(hooks_source().join("commit-msg"))
            .arg(&file)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        match status.code() {
            Some(0) => Some(true),
            Some(1) => Some(false),
            other => panic!("commit-msg exited with {other:?} for {message:?}"),
        }
    }

    #[test]
    fn commit_msg_hook_accepts_conventional_commits_only() {
        let dir = scratch("commit-msg");
        let accepted = [
            "feat: add widgets",
            "feat(api): list projects by status\n\nA body.\n",
            "fix(identity)!: refuse expired keys",
            "feat!: drop the v0 routes",
            "docs(readme): mail arrives through the worker",
            "refactor(new-domain): one renderer",
            "perf(api/auth): fewer queries",
            "test(e2e): a case",
            "build: bump sqlx",
            "ci: cache the target directory",
            "chore: correct a comment",
            "style: rustfmt",
            "revert: feat(api): add widgets",
            "# Please enter the commit message\n\nfeat(jobs): a queue\n# comment\n",
            "fix: windows line ending\r\n",
            "Merge branch 'main' into topic",
            "Revert \"feat: add widgets\"",
            "fixup! feat: add widgets",
            "squash! fix(api): a thing",
        ];
        let rejected = [
            "",
            "# only a comment\n\n",
            "added widgets",
            "Feat: add widgets",
            "feature: add widgets",
            "feat add widgets",
            "feat:add widgets",
            "feat: ",
            "feat():  empty scope",
            "feat(API): upper-case scope",
            "feat(api) : space before the colon",
            "feat!(api): bang before the scope",
            "wip: later",
            "\nchore",
        ];
        for message in accepted {
            let Some(ok) = commit_msg_accepts(&dir, message) else {
                eprintln!("bash is not available; skipping the commit-msg hook test");
                return;
            };
            assert!(ok, "should accept {message:?}");
        }
        for message in rejected {
            assert_eq!(
                commit_msg_accepts(&dir, message),
                Some(false),
                "should reject {message:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
