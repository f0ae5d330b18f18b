//! `cargo xtask contract`: schemathesis explores the running api from its own `/openapi.json`,
//! once as a member and once as an administrator, and fails on any server error or any answer
//! the document does not describe (status, body schema, content type).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use xshell::{Shell, cmd};

use crate::process::{free_port, target_dir, wait_ready};

/// The checks that must all pass: no 5xx, and every answer is one the document describes.
/// What CPython 3.11's `ast.parse` raises when two threads parse at once (its recursion
/// bookkeeping is shared, python/cpython#106905), as hypothesis' lambda descriptions do under
/// `--workers 2`: an error in the tool, not in Keel. Schemathesis reports it with or without the
/// `SystemError:` prefix, so only the message is matched.
const INTERPRETER_CRASH: &str = "AST constructor recursion depth mismatch";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// The fewest generated cases a role's run must reach to count.
const MIN_CASES: u64 = 500;
const ADMIN_EMAIL: &str = "contract-admin@example.com";
const MEMBER_EMAIL: &str = "contract-member@example.com";
const PASSWORD: &str = "contract-plum-orbit-kettle-7";

/// Runs the contract pass; without schemathesis it is skipped unless
/// `KEEL_REQUIRE_SCHEMATHESIS=1` (CI), where its absence fails.
pub(crate) fn contract(sh: &Shell, max_examples: u32, seed: u64) -> anyhow::Result<()> {
    let present = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        ensure!(
            std::env::var("KEEL_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
            "schemathesis is required here (KEEL_REQUIRE_SCHEMATHESIS=1): python3 -m pip install -r .ci/contract-requirements.txt"
        );
        eprintln!(
            "schemathesis is not installed: contract pass skipped (python3 -m pip install -r .ci/contract-requirements.txt)"
        );
        return Ok(());
    }
    cmd!(sh, "cargo build --locked --quiet --bin api").run()?;
    let binary = target_dir().join("debug/api");
    let hooks_dir = crate::workspace_root().join("xtask/contract");
    let mut failures = Vec::new();
    for (role, email) in [("member", MEMBER_EMAIL), ("admin", ADMIN_EMAIL)] {
        let run = |workers: &str| -> anyhow::Result<std::process::Output> {
            // A fresh api and database every time: a run changes accounts (passwords, roles,
            // sessions), so a second run against the first one's data would fail to sign in.
            let dir = sh.create_temp_dir()?;
            let port = free_port()?;
            let port_text = port.to_string();
            let logs = crate::workspace_root().join("target/contract");
            std::fs::create_dir_all(&logs)?;
            let log = std::fs::File::create(logs.join(format!("{role}-api.log")))?;
            let _api = crate::process::Running(
                Command::new(&binary)
                    .current_dir(dir.path())
                    .env("APP__SERVER__PORT", &port_text)
                    .env("APP__OPS__PORT", "0")
                    .env("APP__BOOTSTRAP__ADMIN_EMAIL", ADMIN_EMAIL)
                    .env("APP__BOOTSTRAP__ADMIN_PASSWORD", PASSWORD)
                    // The run sends thousands of sign-ins and sign-ups from one address; the
                    // limits have their own tests.
                    .env("APP__RATE_LIMIT__ENABLED", "false")
                    .env("APP__TELEMETRY__LOG_FORMAT", "json")
                    .env("APP__TELEMETRY__LOG_LEVEL", "info")
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting the api")?,
            );
            wait_ready(port, Duration::from_secs(60))?;
            let base = format!("http://127.0.0.1:{port_text}");
            eprintln!("contract: {role} against {base}");
            Command::new("schemathesis")
                .current_dir(dir.path())
                .env("SCHEMATHESIS_HOOKS", "hooks")
                .env("PYTHONPATH", &hooks_dir)
                .env("KEEL_CONTRACT_BASE", &base)
                .env("KEEL_CONTRACT_ROLE", role)
                .env("KEEL_CONTRACT_EMAIL", email)
                .env("KEEL_CONTRACT_PASSWORD", PASSWORD)
                .args(["run", &format!("{base}/openapi.json"), "--url", &base])
                .args(["--checks", CHECKS])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args(["--max-examples", &max_examples.to_string()])
                .args(["--seed", &seed.to_string()])
                .args([
                    "--workers",
                    workers,
                    "--no-color",
                    "--request-timeout",
                    "20",
                ])
                .output()
                .context("running schemathesis")
        };
        let mut output = run("2")?;
        if !output.status.success() && interpreter_crashed(&output) {
            // One thread cannot race itself: the rerun takes longer but cannot hit the crash.
            eprintln!(
                "contract: {role}: schemathesis crashed ({INTERPRETER_CRASH}); running it again with one worker, on a fresh api"
            );
            output = run("1")?;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        println!("{stdout}");
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        let cases = generated_cases(&stdout);
        if !output.status.success() {
            failures.push(format!(
                "{role}: schemathesis found failures (the api's log: target/contract/{role}-api.log)"
            ));
        } else if cases < MIN_CASES {
            failures.push(format!(
                "{role}: only {cases} generated cases (at least {MIN_CASES})"
            ));
        } else {
            eprintln!("contract: {role}: {cases} generated cases, no failure");
        }
    }
    if !failures.is_empty() {
        bail!("contract pass failed: {}", failures.join("; "));
    }
    Ok(())
}

/// Whether schemathesis failed on CPython's parser rather than on anything Keel answered.
fn interpreter_crashed(output: &std::process::Output) -> bool {
    [&output.stdout, &output.stderr]
        .iter()
        .any(|text| String::from_utf8_lossy(text).contains(INTERPRETER_CRASH))
}

/// The `N generated` figure of schemathesis' summary.
fn generated_cases(summary: &str) -> u64 {
    summary
        .lines()
        .filter_map(|line| line.trim().split_once(" generated"))
        .filter_map(|(number, _)| number.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn output(stdout: &str) -> std::process::Output {
        std::process::Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn the_parser_crash_is_told_apart_from_a_finding() {
        // As schemathesis 4 prints it in its summary: the message without the exception name.
        let crash =
            "Runtime Error\n\nAST constructor recursion depth mismatch (before=66, after=64)\n";
        assert!(interpreter_crashed(&output(crash)));
        let finding = "Server error\n\n[500] Internal Server Error\n";
        assert!(!interpreter_crashed(&output(finding)));
    }
}
