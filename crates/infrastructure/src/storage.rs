//! Object storage on the `object_store` crate behind the kernel's `ObjectStorage` port: the
//! local filesystem (`storage.local.dir`, the default) or any S3-compatible service
//! (`storage.backend = "s3"`: AWS S3, MinIO, R2, Spaces).
//!
//! Download links: S3 presigns them itself; for local files Keel signs a link to its own
//! `GET /api/v1/files/{key}` (HMAC-SHA256 over the key, expiry, name and type, keyed from
//! `auth.jwt_secret`), which the api checks and streams from disk.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::{StreamExt as _, TryStreamExt as _};
use hmac::{Hmac, KeyInit, Mac as _};
use keel_config::{Settings, StorageBackend};
use keel_kernel::storage::{
    Download, ObjectKey, ObjectStorage, ObjectWriter, OpenedObject, StorageError, StoredObject,
    content_disposition,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::signer::{SignedUrlOptions, Signer as _};
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use secrecy::ExposeSecret as _;
use sha2::Sha256;

/// The part size of S3 multipart uploads (S3's minimum for every part but the last).
const S3_PART_BYTES: usize = 5 * 1024 * 1024;
/// The part size of local writes: what an upload holds in memory at most.
const LOCAL_PART_BYTES: usize = 64 * 1024;

/// The object store configured by `[storage]`.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local { links: LocalLinks },
    S3(Arc<AmazonS3>),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Local { .. } => "local",
            Backend::S3(_) => "s3",
        };
        f.debug_struct("Storage")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

/// Storage could not be set up: the message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct StorageConfigError {
    /// The configuration key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn unavailable(error: object_store::Error) -> StorageError {
    match error {
        object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
        other => StorageError::Unavailable(Box::new(other)),
    }
}

fn path(key: &ObjectKey) -> StorePath {
    StorePath::from(key.as_str())
}

impl Storage {
    /// The store `[storage]` names; the local directory is created.
    pub fn new(settings: &Settings) -> Result<Self, StorageConfigError> {
        let storage = &settings.storage;
        match storage.backend {
            StorageBackend::Local => {
                let dir = &storage.local.dir;
                std::fs::create_dir_all(dir).map_err(|e| StorageConfigError {
                    key: "storage.local.dir",
                    message: format!("cannot create {dir}: {e}"),
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| StorageConfigError {
                        key: "storage.local.dir",
                        message: e.to_string(),
                    })?
                    // Empty directories left by deleted objects go too.
                    .with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    backend: Backend::Local {
                        links: LocalLinks::new(settings),
                    },
                })
            }
            StorageBackend::S3 => {
                let s3 = &storage.s3;
                let mut builder = AmazonS3Builder::new()
                    .with_region(&s3.region)
                    .with_bucket_name(&s3.bucket)
                    .with_virtual_hosted_style_request(!s3.path_style);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder
                        .with_access_key_id(id)
                        .with_secret_access_key(secret.expose_secret());
                }
                let s3 = Arc::new(builder.build().map_err(|e| StorageConfigError {
                    key: "storage.s3",
                    message: e.to_string(),
                })?);
                Ok(Self {
                    store: s3.clone(),
                    backend: Backend::S3(s3),
                })
            }
        }
    }

    /// Whether the store answers: a listing of one page (the readiness check).
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut listing = self.store.list(Some(&StorePath::from("keel-health")));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(unavailable(error)),
        }
    }
}

#[async_trait]
impl keel_kernel::health::HealthCheck for Storage {
    fn name(&self) -> &'static str {
        "storage"
    }

    async fn check(&self) -> Result<(), keel_kernel::error::BoxError> {
        self.ping().await.map_err(Into::into)
    }
}

/// The query of a signed local download link.
#[derive(Debug, Clone)]
struct SignedLink {
    key: String,
    expires: u64,
    name: String,
    content_type: String,
    signature: String,
}

impl SignedLink {
    fn parse(key: &str, query: &str) -> Option<Self> {
        let mut expires = None;
        let (mut name, mut content_type, mut signature) = (None, None, None);
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "expires" => {
                    expires = v.parse::<u64>().ok();
                    continue;
                }
                "name" => &mut name,
                "type" => &mut content_type,
                "signature" => &mut signature,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        Some(Self {
            key: key.to_owned(),
            expires: expires?,
            name: name?,
            content_type: content_type?,
            signature: signature?,
        })
    }
}

/// Signs and checks local download links.
#[derive(Clone)]
struct LocalLinks {
    key: Vec<u8>,
    base: String,
}

impl LocalLinks {
    fn new(settings: &Settings) -> Self {
        // A key of its own, derived from the JWT secret: a link signature can never be a
        // token's, and rotating the secret ends every outstanding link.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(
            settings.auth.jwt_secret.expose_secret().as_bytes(),
        )
        .unwrap_or_else(|_| unreachable_hmac());
        mac.update(b"keel.storage.download-links.v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
            base: format!(
                "{}/api/v1/files",
                settings.app.public_url.trim_end_matches('/')
            ),
        }
    }

    fn signature(&self, key: &str, expires: u64, name: &str, content_type: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable_hmac());
        for part in [key, &expires.to_string(), name, content_type] {
            // Length-prefixed: no two different tuples sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn verify(&self, link: &SignedLink) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if link.expires < now {
            return false;
        }
        let expected = self.signature(&link.key, link.expires, &link.name, &link.content_type);
        // Constant time: the comparison leaks nothing about how much of a forgery matched.
        expected.len() == link.signature.len()
            && expected
                .bytes()
                .zip(link.signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn link(&self, key: &ObjectKey, download: &Download<'_>) -> String {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(download.expires_in.as_secs().max(1));
        let signature = self.signature(
            key.as_str(),
            expires,
            download.filename,
            download.content_type,
        );
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("expires", &expires.to_string())
            .append_pair("name", download.filename)
            .append_pair("type", download.content_type)
            .append_pair("signature", &signature)
            .finish();
        format!("{}/{}?{query}", self.base, key.as_str())
    }
}

/// HMAC-SHA256 takes keys of any length: this cannot happen.
fn unreachable_hmac() -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as KeyInit>::new_from_slice(b"keel").expect("HMAC accepts any key length")
}

struct Writer {
    upload: Option<WriteMultipart>,
}

impl Drop for Writer {
    /// An upload dropped unfinished (its request timed out or the client went away) is
    /// aborted: an S3 multipart upload left open keeps its parts, and never shows in listings
    /// the orphan sweep could see.
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = upload.abort().await {
                    tracing::warn!(%error, "aborting an abandoned upload failed");
                }
            });
        }
    }
}

#[async_trait]
impl ObjectWriter for Writer {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let Some(upload) = self.upload.as_mut() else {
            return Err(StorageError::Unavailable("the upload has ended".into()));
        };
        // Backpressure: at most two parts in flight, so memory stays bounded however fast
        // the client sends.
        upload.wait_for_capacity(2).await.map_err(unavailable)?;
        upload.write(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        match self.upload.take() {
            Some(upload) => upload.finish().await.map(drop).map_err(unavailable),
            None => Err(StorageError::Unavailable("the upload has ended".into())),
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take()
            && let Err(error) = upload.abort().await
        {
            tracing::warn!(%error, "aborting an upload failed; the orphan sweep removes what is left");
        }
    }
}

#[async_trait]
impl ObjectStorage for Storage {
    async fn writer(&self, key: &ObjectKey) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let upload = self
            .store
            .put_multipart(&path(key))
            .await
            .map_err(unavailable)?;
        let part = match self.backend {
            Backend::Local { .. } => LOCAL_PART_BYTES,
            Backend::S3(_) => S3_PART_BYTES,
        };
        Ok(Box::new(Writer {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, part)),
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self.store.delete(&path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn download_url(
        &self,
        key: &ObjectKey,
        download: &Download<'_>,
    ) -> Result<String, StorageError> {
        match &self.backend {
            Backend::Local { links } => Ok(links.link(key, download)),
            Backend::S3(s3) => {
                let disposition = content_disposition(download.filename);
                let options = SignedUrlOptions::new().with_query([
                    ("response-content-disposition", disposition.as_str()),
                    ("response-content-type", download.content_type),
                ]);
                s3.signed_url_opts(
                    reqwest::Method::GET,
                    &path(key),
                    download.expires_in,
                    &options,
                )
                .await
                .map(String::from)
                .map_err(unavailable)
            }
        }
    }

    async fn upload_url(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError> {
        match &self.backend {
            Backend::Local { .. } => Ok(None),
            Backend::S3(s3) => s3
                .signed_url(reqwest::Method::PUT, &path(key), expires_in)
                .await
                .map(|url| Some(String::from(url)))
                .map_err(unavailable),
        }
    }

    async fn open_link(&self, raw_key: &str, query: &str) -> Result<OpenedObject, StorageError> {
        let not_found = || StorageError::NotFound(raw_key.to_owned());
        let Backend::Local { links } = &self.backend else {
            return Err(not_found());
        };
        let link = SignedLink::parse(raw_key, query).ok_or_else(not_found)?;
        if !links.verify(&link) {
            return Err(not_found());
        }
        let key = ObjectKey::parse(&link.key).map_err(|_| not_found())?;
        let result = self.store.get(&path(&key)).await.map_err(unavailable)?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(|error| StorageError::Unavailable(Box::new(error)))
            .boxed();
        Ok(OpenedObject {
            size,
            filename: link.name,
            content_type: link.content_type,
            stream,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError> {
        let prefix = StorePath::from(prefix);
        let mut listing = self.store.list(Some(&prefix));
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(unavailable)?;
            // Anything not a valid key (a temporary file of an interrupted local write) is
            // not an object of Keel's.
            let Ok(key) = ObjectKey::parse(meta.location.as_ref()) else {
                continue;
            };
            objects.push(StoredObject {
                key,
                size: meta.size,
                last_modified: SystemTime::from(meta.last_modified),
            });
        }
        Ok(objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> Settings {
        let mut settings = keel_config::Settings::load_from(&keel_config::Sources::from_vars(
            Vec::<(String, String)>::new(),
        ))
        .unwrap();
        settings.storage.local.dir = dir.display().to_string();
        settings
    }

    #[tokio::test]
    async fn local_files_stream_in_list_and_delete_and_links_are_signed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(&settings(dir.path())).unwrap();
        storage.ping().await.unwrap();
        let key = ObjectKey::new(["attachments", "p", "a"]).unwrap();
        let mut writer = storage.writer(&key).await.unwrap();
        for _ in 0..10 {
            writer.write(&[7u8; 100_000]).await.unwrap();
        }
        writer.finish().await.unwrap();
        let listed = storage.list("attachments").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].size),
            ("attachments/p/a", 1_000_000)
        );

        let url = storage
            .download_url(
                &key,
                &Download {
                    filename: "ré port.pdf",
                    content_type: "application/pdf",
                    expires_in: Duration::from_secs(60),
                },
            )
            .await
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:8080/api/v1/files/attachments/p/a?"),
            "{url}"
        );
        let parsed = url::Url::parse(&url).unwrap();
        let query = parsed.query().unwrap();
        let link = SignedLink::parse("attachments/p/a", query).unwrap();
        let opened = storage.open_link("attachments/p/a", query).await.unwrap();
        assert_eq!(
            (opened.size, opened.filename.as_str()),
            (1_000_000, "ré port.pdf")
        );
        let bytes: Vec<bytes::Bytes> = opened.stream.try_collect().await.unwrap();
        assert_eq!(bytes.iter().map(|b| b.len()).sum::<usize>(), 1_000_000);

        // Any change to the link, or its expiry, and it stops working.
        for forged in [
            SignedLink {
                key: "attachments/p/b".into(),
                ..link.clone()
            },
            SignedLink {
                name: "other.pdf".into(),
                ..link.clone()
            },
            SignedLink {
                content_type: "text/html".into(),
                ..link.clone()
            },
            SignedLink {
                expires: link.expires + 1,
                ..link.clone()
            },
            SignedLink {
                signature: "00".repeat(32),
                ..link.clone()
            },
        ] {
            assert!(!verify(&storage, &forged), "{forged:?}");
        }
        let expired_at = 1;
        let expired = SignedLink {
            expires: expired_at,
            signature: match &storage.backend {
                Backend::Local { links } => {
                    links.signature(&link.key, expired_at, &link.name, &link.content_type)
                }
                Backend::S3(_) => unreachable!(),
            },
            ..link.clone()
        };
        assert!(!verify(&storage, &expired), "expired");
        assert!(verify(&storage, &link));
        assert!(
            storage.open_link("attachments/p/b", query).await.is_err(),
            "another key"
        );
        assert!(
            storage
                .open_link("attachments/p/a", "expires=1")
                .await
                .is_err(),
            "malformed"
        );

        // An aborted upload leaves nothing behind.
        let other = ObjectKey::new(["attachments", "p", "b"]).unwrap();
        let mut writer = storage.writer(&other).await.unwrap();
        writer.write(b"partial").await.unwrap();
        writer.abort().await;
        assert_eq!(storage.list("attachments").await.unwrap().len(), 1);

        storage.delete(&key).await.unwrap();
        storage.delete(&key).await.unwrap();
        assert!(storage.list("attachments").await.unwrap().is_empty());
    }

    fn verify(storage: &Storage, link: &SignedLink) -> bool {
        match &storage.backend {
            Backend::Local { links } => links.verify(link),
            Backend::S3(_) => false,
        }
    }
}
