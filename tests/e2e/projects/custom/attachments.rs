//! Project attachments over HTTP: uploads checked by their bytes, size limits before and while
//! the body streams, scope, signed and presigned download links (local files, and a real
//! S3-compatible server when `moto_server` is installed; required in CI).

use std::io::{Read as _, Write as _};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_problem, spawn_app, spawn_app_with};

const PNG: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1F, 0x15, 0xC4, 0x89,
];
/// The start of a Windows executable.
const EXE: &[u8] = &[
    b'M', b'Z', 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xFF, 0xFF, 0, 0,
];
const BOUNDARY: &str = "keel-e2e-boundary-42";

fn form(filename: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(
    app: &TestApp,
    token: &str,
    project: &str,
    filename: &str,
    bytes: &[u8],
) -> reqwest::Response {
    app.authed(
        Method::POST,
        &format!("/api/v1/projects/{project}/attachments"),
        token,
    )
    .header(
        "content-type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    )
    .body(form(filename, bytes))
    .send()
    .await
    .unwrap()
}

async fn new_project(app: &TestApp, token: &str) -> String {
    let response = app
        .authed(Method::POST, "/api/v1/projects", token)
        .json(&json!({ "name": "With files" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The download link's path and query on this app (the link names `app.public_url`).
fn local(app: &TestApp, url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap();
    app.url(&format!(
        "{}?{}",
        parsed.path(),
        parsed.query().unwrap_or_default()
    ))
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .flat_map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        vec![e.path().display().to_string()]
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn files_on_disk(app: &TestApp) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        if e.path().is_dir() {
                            count(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(app.files_dir.path())
}

#[tokio::test]
async fn a_file_is_uploaded_listed_downloaded_by_signed_link_and_deleted() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    let project = new_project(&app, &token).await;

    let response = upload(&app, &token, &project, "../../plan.png", PNG).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["content_type"], "image/png", "from the bytes");
    assert_eq!(
        stored["filename"], "plan.png",
        "the name is data, never a path"
    );
    assert_eq!(stored["size_bytes"], PNG.len());
    assert_eq!(stored["sha256"].as_str().unwrap().len(), 64);
    assert!(location.ends_with(stored["id"].as_str().unwrap()));

    let page = app
        .get_authed_json(&format!("/api/v1/projects/{project}/attachments"), &token)
        .await;
    assert_eq!(page["total"], 1);
    let one = app
        .authed(Method::GET, &location, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(one.headers()["cache-control"], "no-store");
    let one: Value = one.json().await.unwrap();
    let link = one["download_url"].as_str().unwrap();

    // The link needs no token, and serves the file as a download.
    let download = app.client.get(local(&app, link)).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    assert_eq!(download.headers()["x-content-type-options"], "nosniff");
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"plan.png\""),
        "{disposition}"
    );
    assert_eq!(download.bytes().await.unwrap().as_ref(), PNG);

    // Altered, it is 404 like anything else that does not exist.
    for forged in [
        link.replace("signature=", "signature=0"),
        link.replace("name=plan.png", "name=plan.html"),
        link.replace("type=image%2Fpng", "type=text%2Fhtml"),
        link.replace(&stored["id"].as_str().unwrap()[..8], "00000000"),
    ] {
        let response = app.client.get(local(&app, &forged)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{forged}");
    }

    // Two deletes at once: one wins, the other finds nothing; neither is a 5xx.
    let (first, second) = tokio::join!(
        app.authed(Method::DELETE, &location, &token).send(),
        app.authed(Method::DELETE, &location, &token).send(),
    );
    let mut statuses = [
        first.unwrap().status().as_u16(),
        second.unwrap().status().as_u16(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 404]);
    assert_eq!(files_on_disk(&app), 0, "the object went with the row");
    let gone = app.client.get(local(&app, link)).send().await.unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn a_renamed_executable_is_415_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (_, token) = app.member("ada@example.com").await;
    let project = new_project(&app, &token).await;
    assert_problem(
        upload(&app, &token, &project, "cat.png", EXE).await,
        415,
        "unsupported_media_type",
    )
    .await;
    // JSON where a form belongs is 415 too.
    let json_body = app
        .authed(
            Method::POST,
            &format!("/api/v1/projects/{project}/attachments"),
            &token,
        )
        .json(&json!({ "file": "x" }))
        .send()
        .await
        .unwrap();
    assert_problem(json_body, 415, "unsupported_media_type").await;
    // A form without a file, and one with two.
    let empty_form = app
        .authed(Method::POST, &format!("/api/v1/projects/{project}/attachments"), &token)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--{BOUNDARY}--\r\n"))
        .send()
        .await
        .unwrap();
    assert_problem(empty_form, 422, "validation_failed").await;
    let mut two = form("a.png", PNG);
    two.truncate(two.len() - format!("--{BOUNDARY}--\r\n").len());
    two.extend_from_slice(&form("b.png", PNG));
    let two_files = app
        .authed(
            Method::POST,
            &format!("/api/v1/projects/{project}/attachments"),
            &token,
        )
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(two)
        .send()
        .await
        .unwrap();
    assert_problem(two_files, 422, "validation_failed").await;
    // Garbage where the form should be.
    let garbage = app
        .authed(
            Method::POST,
            &format!("/api/v1/projects/{project}/attachments"),
            &token,
        )
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(vec![0u8; 300])
        .send()
        .await
        .unwrap();
    assert!(garbage.status().is_client_error(), "{}", garbage.status());
    let page = app
        .get_authed_json(&format!("/api/v1/projects/{project}/attachments"), &token)
        .await;
    assert_eq!(page["total"], 0);
    assert_eq!(files_on_disk(&app), 0);
}

/// Sends request headers announcing `declared` body bytes and then only `send` of them over a
/// raw connection; returns the status line the server answered with.
fn raw_upload(
    base: &str,
    path: &str,
    token: &str,
    declared: usize,
    send: usize,
    chunked: bool,
) -> String {
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\r\n"
    );
    raw_body(
        base,
        path,
        token,
        declared,
        part.as_bytes(),
        b'a',
        send,
        chunked,
    )
}

/// Like [`raw_upload`] with any body: `prefix`, then `fill` repeated `send` times.
#[allow(clippy::too_many_arguments)]
fn raw_body(
    base: &str,
    path: &str,
    token: &str,
    declared: usize,
    prefix: &[u8],
    fill: u8,
    send: usize,
    chunked: bool,
) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n".to_owned()
    } else {
        format!("Content-Length: {declared}\r\n")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut body = prefix.to_vec();
    body.extend(std::iter::repeat_n(fill, send));
    for piece in body.chunks(16 * 1024) {
        let written = if chunked {
            stream
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| stream.write_all(piece))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(piece)
        };
        if written.is_err() {
            break;
        }
    }
    // No end of the body is ever sent: the answer must come without it.
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..n]);
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_oversize_upload_is_413_before_its_body_is_read() {
    let app = spawn_app_with(&[("APP__STORAGE__MAX_ATTACHMENT_BYTES", "65536")]).await;
    let (_, token) = app.member("ada@example.com").await;
    let project = new_project(&app, &token).await;
    let path = format!("/api/v1/projects/{project}/attachments");
    let base = app.base.clone();

    // A declared length over the limit: answered at once, with none of the body sent.
    let status = tokio::task::spawn_blocking({
        let (base, path, token) = (base.clone(), path.clone(), token.clone());
        move || raw_upload(&base, &path, &token, 50 * 1024 * 1024, 0, false)
    })
    .await
    .unwrap();
    assert!(status.contains(" 413 "), "{status}");

    // No length (chunked): refused as soon as the limit is passed, the rest never waited for.
    let status = tokio::task::spawn_blocking({
        let (base, path, token) = (base.clone(), path.clone(), token.clone());
        move || raw_upload(&base, &path, &token, 0, 200 * 1024, true)
    })
    .await
    .unwrap();
    assert!(status.contains(" 413 "), "{status}");

    // Endless part headers, or no boundary at all: the parser would buffer them; the body is
    // cut off once what is not file content passes its allowance (400), well before the limit
    // of the file itself would.
    let endless_headers = format!("--{BOUNDARY}\r\nX-Padding: ");
    for prefix in [endless_headers.as_bytes().to_vec(), Vec::new()] {
        let status = tokio::task::spawn_blocking({
            let (base, path, token) = (base.clone(), path.clone(), token.clone());
            move || {
                raw_body(
                    &base,
                    &path,
                    &token,
                    0,
                    &prefix,
                    b'h',
                    2 * 1024 * 1024,
                    true,
                )
            }
        })
        .await
        .unwrap();
        assert!(
            status.contains(" 400 ") || status.contains(" 413 "),
            "{status}"
        );
    }
    let big = spawn_app_with(&[("APP__STORAGE__MAX_ATTACHMENT_BYTES", "104857600")]).await;
    let (_, big_token) = big.member("bob@example.com").await;
    let big_project = new_project(&big, &big_token).await;
    let status = tokio::task::spawn_blocking({
        let base = big.base.clone();
        let path = format!("/api/v1/projects/{big_project}/attachments");
        let prefix = format!("--{BOUNDARY}\r\nX-Padding: ").into_bytes();
        move || {
            raw_body(
                &base,
                &path,
                &big_token,
                0,
                &prefix,
                b'h',
                4 * 1024 * 1024,
                true,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        status.contains(" 400 "),
        "a 100 MiB limit does not let 4 MiB of headers in: {status}"
    );

    // Just under the limit is fine.
    let ok = upload(&app, &token, &project, "fits.txt", &vec![b'a'; 65536]).await;
    assert_eq!(ok.status(), 201);
    let page = app.get_authed_json(&path, &token).await;
    assert_eq!(page["total"], 1, "the refused uploads left no row");
    assert_eq!(files_on_disk(&app), 1, "and no object");
}

#[tokio::test]
async fn another_users_attachment_is_404_for_every_operation() {
    let app = spawn_app().await;
    let (_, ada) = app.member("ada@example.com").await;
    let (_, bob) = app.member("bob@example.com").await;
    let project = new_project(&app, &ada).await;
    let stored: Value = upload(&app, &ada, &project, "a.png", PNG)
        .await
        .json()
        .await
        .unwrap();
    let id = stored["id"].as_str().unwrap();
    let base = format!("/api/v1/projects/{project}/attachments");
    assert_problem(
        upload(&app, &bob, &project, "b.png", PNG).await,
        404,
        "not_found",
    )
    .await;
    for (method, path) in [
        (Method::GET, base.clone()),
        (Method::GET, format!("{base}/{id}")),
        (Method::DELETE, format!("{base}/{id}")),
    ] {
        let response = app
            .authed(method.clone(), &path, &bob)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "not_found").await;
    }
    // Through Bob's own project, Ada's attachment does not exist either.
    let bobs = new_project(&app, &bob).await;
    let response = app
        .authed(
            Method::GET,
            &format!("/api/v1/projects/{bobs}/attachments/{id}"),
            &bob,
        )
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
    // Anonymous: 401. Malformed ids: 422.
    let anonymous = app.client.get(app.url(&base)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let response = app
        .authed(Method::GET, &format!("{base}/not-an-id"), &ada)
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "validation_failed").await;
    // Ada still has it.
    let mine = app.get_authed_json(&format!("{base}/{id}"), &ada).await;
    assert_eq!(mine["id"], id);
}

#[tokio::test]
async fn local_download_links_expire() {
    let app = spawn_app_with(&[("APP__STORAGE__LINK_TTL", "1s")]).await;
    let (_, token) = app.member("ada@example.com").await;
    let project = new_project(&app, &token).await;
    let stored: Value = upload(&app, &token, &project, "a.png", PNG)
        .await
        .json()
        .await
        .unwrap();
    let one = app
        .get_authed_json(
            &format!(
                "/api/v1/projects/{project}/attachments/{}",
                stored["id"].as_str().unwrap()
            ),
            &token,
        )
        .await;
    let link = local(&app, one["download_url"].as_str().unwrap());
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.client.get(&link).send().await.unwrap().status(), 404);
}

/// A real S3-compatible server (s3rver, from npm: it speaks S3's REST API with multipart
/// uploads and refuses expired presigned links) on a free port, with a bucket made at startup.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Its fixed credentials.
    const KEY: &str = "S3RVER";

    /// Starts `s3rver`, or `None` when it is not on PATH (`npm ci --prefix .ci/s3rver`, then
    /// `.ci/s3rver/node_modules/.bin` on PATH); with
    /// `KEEL_REQUIRE_S3=1` (CI) a missing server fails the test instead.
    #[allow(clippy::print_stderr)]
    fn start(bucket: &str) -> Option<Self> {
        let available = std::process::Command::new("s3rver")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(
                std::env::var_os("KEEL_REQUIRE_S3").is_none(),
                "KEEL_REQUIRE_S3 is set but s3rver is not installed"
            );
            eprintln!(
                "skipping: s3rver not on PATH (npm ci --prefix .ci/s3rver; PATH=.ci/s3rver/node_modules/.bin:$PATH)"
            );
            return None;
        }
        let port = crate::support::free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("s3rver")
            .args(["-d"])
            .arg(dir.path())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-s",
                "--no-vhost-buckets",
            ])
            .args(["--configure-bucket", bucket])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = Self {
            child,
            endpoint,
            _dir: dir,
        };
        crate::support::wait_for_port(port, "s3rver");
        Some(server)
    }
}

#[tokio::test]
async fn on_s3_uploads_stream_in_presigned_links_download_and_expire() {
    let Some(s3) = S3Server::start("keel-files") else {
        return;
    };
    let app = spawn_app_with(&[
        ("APP__STORAGE__BACKEND", "s3"),
        ("APP__STORAGE__S3__ENDPOINT", s3.endpoint.as_str()),
        ("APP__STORAGE__S3__BUCKET", "keel-files"),
        ("APP__STORAGE__S3__ACCESS_KEY_ID", S3Server::KEY),
        ("APP__STORAGE__S3__SECRET_ACCESS_KEY", S3Server::KEY),
        ("APP__STORAGE__S3__PATH_STYLE", "true"),
        ("APP__STORAGE__LINK_TTL", "2s"),
    ])
    .await;
    let ready = app.ops_get("/health").await.json::<Value>().await.unwrap();
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "storage" && c["status"] == "ok"),
        "{ready}"
    );
    let (_, token) = app.member("ada@example.com").await;
    let project = new_project(&app, &token).await;
    // Bigger than one S3 part, so the multipart upload really has parts.
    let big: Vec<u8> = b"line of text\n"
        .iter()
        .copied()
        .cycle()
        .take(6 * 1024 * 1024 + 7)
        .collect();
    let response = upload(&app, &token, &project, "notes €.txt", &big).await;
    assert_eq!(response.status(), 201);
    let stored: Value = response.json().await.unwrap();
    let one = app
        .get_authed_json(
            &format!(
                "/api/v1/projects/{project}/attachments/{}",
                stored["id"].as_str().unwrap()
            ),
            &token,
        )
        .await;
    let link = one["download_url"].as_str().unwrap().to_owned();
    assert!(link.starts_with(&s3.endpoint), "presigned by S3: {link}");
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let download = reqwest::get(&link).await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().len(), big.len());
    // (s3rver serves anonymous reads and does not check signatures, so forged links are
    // tested on the local store only; it does check a presigned link's expiry.)
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = reqwest::get(&link).await.unwrap();
    assert_eq!(expired.status(), 403, "the presigned link expired");

    // Delete removes the object from the bucket.
    let deleted = app
        .authed(
            Method::DELETE,
            &format!(
                "/api/v1/projects/{project}/attachments/{}",
                stored["id"].as_str().unwrap()
            ),
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let objects = walk(s3._dir.path());
    assert!(
        !objects.iter().any(|path| path.contains("attachments")),
        "{objects:?}"
    );
}
