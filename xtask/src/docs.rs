//! `cargo xtask openapi` (the committed document) and `cargo xtask docs-check` (the
//! interactive docs render offline in a real browser).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use xshell::{Shell, cmd};

use crate::process::{free_port, start_api, target_dir, wait_ready};

/// Where the committed document lives.
const DOCUMENT: &str = "docs/openapi.json";

/// Writes `docs/openapi.json` from the code, or with `check` fails when it differs.
pub(crate) fn openapi(sh: &Shell, root: &Path, check: bool) -> anyhow::Result<()> {
    let document = cmd!(sh, "cargo run --quiet --locked --bin api -- openapi").read()? + "\n";
    let path = root.join(DOCUMENT);
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        ensure!(
            committed == document,
            "{DOCUMENT} is stale: run `cargo xtask openapi` and commit the result"
        );
        eprintln!("{DOCUMENT} is current");
    } else {
        std::fs::write(&path, document)?;
        eprintln!("wrote {DOCUMENT}");
    }
    Ok(())
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KEEL_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// Loads `/docs/` in headless Chromium with every host but 127.0.0.1 unresolvable, then
/// checks that Swagger UI rendered the document and that the page asked no other host for
/// anything. Without Chromium it is skipped, unless `KEEL_REQUIRE_CHROMIUM` is set (CI).
pub(crate) fn docs_check(sh: &Shell) -> anyhow::Result<()> {
    let Some(browser) = chromium() else {
        if std::env::var_os("KEEL_REQUIRE_CHROMIUM").is_some() {
            bail!(
                "Chromium is required (KEEL_REQUIRE_CHROMIUM) but not installed: apt-get install chromium"
            );
        }
        eprintln!(
            "docs-check skipped: no Chromium (apt-get install chromium, or set KEEL_CHROMIUM)"
        );
        return Ok(());
    };
    cmd!(sh, "cargo build --quiet --locked --bin api").run()?;
    let binary = target_dir().join("debug/api");
    let dir = sh.create_temp_dir()?;
    let port = free_port()?;
    let _api = start_api(&binary, dir.path(), port)?;
    wait_ready(port, Duration::from_secs(60))?;

    let origin = format!("http://127.0.0.1:{port}");
    let net_log = dir.path().join("net-log.json");
    let profile = dir.path().join("profile");
    let output = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=20000",
            // Any host but the app is unresolvable: a page that needs a CDN cannot render.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg("--dump-dom")
        .arg(format!("{origin}/docs/"))
        .output()
        .with_context(|| format!("running {}", browser.display()))?;
    ensure!(
        output.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "class=\"swagger-ui\"",
        "Keel API",
        "data-path=\"/api/v1/projects\"",
        "data-path=\"/api/v1/auth/login\"",
        "data-tag=\"release-notes\"",
    ] {
        ensure!(
            dom.contains(expected),
            "the rendered docs lack {expected}: Swagger UI did not render the document"
        );
    }

    let requests = page_requests(&net_log, &origin)?;
    let foreign: Vec<&String> = requests
        .iter()
        .filter(|url| !url.starts_with(&format!("{origin}/")))
        .collect();
    ensure!(
        foreign.is_empty(),
        "the docs page requested other hosts: {foreign:?}"
    );
    for needed in ["/docs/swagger-ui-bundle.js", "/openapi.json"] {
        ensure!(
            requests.iter().any(|url| url.ends_with(needed)),
            "the docs page never loaded {needed}: {requests:?}"
        );
    }
    eprintln!(
        "/docs rendered in {} with {} requests, all to {origin}",
        browser.display(),
        requests.len()
    );
    Ok(())
}

/// URLs of the requests the page made: its navigation and everything it initiated
/// (Chromium's own background traffic has no page initiator and is ignored).
fn page_requests(net_log: &Path, origin: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(net_log)
        .with_context(|| format!("reading Chromium's net log {}", net_log.display()))?;
    // Chromium may stop before closing the JSON array when killed; the events are complete.
    let log: Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .context("parsing Chromium's net log")?;
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .context("the net log has no URL_REQUEST_START_JOB constant")?;
    let mut urls = Vec::new();
    for event in log["events"].as_array().into_iter().flatten() {
        if event["type"].as_u64() != Some(start_job) {
            continue;
        }
        let params = &event["params"];
        let Some(url) = params["url"].as_str() else {
            continue;
        };
        let initiator = params["initiator"].as_str().unwrap_or_default();
        if initiator == origin || url.starts_with(origin) {
            urls.push(url.to_owned());
        }
    }
    Ok(urls)
}
