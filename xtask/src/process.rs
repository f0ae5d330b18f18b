//! Running the `api` binary for tasks that measure or inspect it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The directory cargo builds into.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| crate::workspace_root().join("target"), PathBuf::from)
}

/// A port nobody listens on now (the OS picks it).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed when dropped.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_api(binary: &Path, dir: &Path, port: u16) -> anyhow::Result<Running> {
    start_api_with(binary, dir, port, &[])
}

pub(crate) fn start_api_with(
    binary: &Path,
    dir: &Path,
    port: u16,
    vars: &[(&str, &str)],
) -> anyhow::Result<Running> {
    let child = Command::new(binary)
        .current_dir(dir)
        // Quiet unless the caller asks for more (`vars` come after, and win).
        .env("APP__TELEMETRY__LOG_LEVEL", "warn")
        .envs(vars.iter().copied())
        .env("APP__SERVER__PORT", port.to_string())
        // Any free port for the operations listener: runs never collide on 8082.
        .env("APP__OPS__PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Running(child))
}

/// Polls `/health/ready` with a raw HTTP/1.1 request (no client dependency in xtask).
pub(crate) fn wait_ready(port: u16, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let request =
                "GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("the api was not ready within {timeout:?}")
}
