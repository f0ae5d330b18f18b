//! Object storage: the port features keep files behind (the local filesystem by default, any
//! S3-compatible service in production), and the checks every upload goes through.
//!
//! Keys are chosen by the feature (`attachments/<project>/<id>`), never from a client's file
//! name; the name is kept as data and only ever shown back.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::{BoxError, DomainError};

/// An object's key: `/`-separated segments of ASCII letters, digits, `-`, `_` and `.`, never
/// `.` or `..` alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// A key from segments, each checked.
    pub fn new<S: AsRef<str>>(segments: impl IntoIterator<Item = S>) -> Result<Self, StorageError> {
        let segments: Vec<String> = segments
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect();
        let valid = !segments.is_empty()
            && segments.iter().all(|segment| {
                !segment.is_empty()
                    && segment.len() <= 128
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !valid {
            return Err(StorageError::InvalidKey(segments.join("/")));
        }
        Ok(Self(segments.join("/")))
    }

    /// A key as stored (`a/b/c`), checked again.
    pub fn parse(raw: &str) -> Result<Self, StorageError> {
        Self::new(raw.split('/'))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What went wrong in the object store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("no object `{0}`")]
    NotFound(String),
    /// A key that is not a valid [`ObjectKey`]: a bug or a forged link.
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    /// The store could not be reached or failed.
    #[error("object storage failed: {0}")]
    Unavailable(#[source] BoxError),
}

impl From<StorageError> for DomainError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(_) => DomainError::NotFound { resource: "file" },
            StorageError::InvalidKey(_) => DomainError::internal(error),
            StorageError::Unavailable(_) => DomainError::Unavailable(Box::new(error)),
        }
    }
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: SystemTime,
}

/// How a download link presents the file.
#[derive(Debug, Clone)]
pub struct Download<'a> {
    /// The name the browser saves it as.
    pub filename: &'a str,
    /// Its media type.
    pub content_type: &'a str,
    /// How long the link works.
    pub expires_in: Duration,
}

/// An upload in progress: written chunk by chunk, so a file is never whole in memory.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError>;
    /// Stores the object under its key.
    async fn finish(self: Box<Self>) -> Result<(), StorageError>;
    /// Discards what was written.
    async fn abort(self: Box<Self>);
}

/// Where files live.
#[async_trait]
pub trait ObjectStorage: Send + Sync + std::fmt::Debug {
    /// Starts writing the object `key` (it appears only when finished).
    async fn writer(&self, key: &ObjectKey) -> Result<Box<dyn ObjectWriter>, StorageError>;
    /// Deletes the object; deleting a missing one is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError>;
    /// A link that downloads the object for a short while without credentials: presigned by
    /// the S3-compatible service, or signed by Keel and served by the api for local files.
    async fn download_url(
        &self,
        key: &ObjectKey,
        download: &Download<'_>,
    ) -> Result<String, StorageError>;
    /// A link that uploads the object with `PUT` for a short while, where the store offers one.
    async fn upload_url(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> Result<Option<String>, StorageError>;
    /// Every object whose key starts with `prefix` (a whole segment, e.g. `attachments`).
    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError>;
    /// The object behind a download link this store signed itself (`raw_key` from the link's
    /// path, `query` its query string), checked: `NotFound` for a forged, altered or expired
    /// link, and for stores whose links go elsewhere (S3).
    async fn open_link(&self, raw_key: &str, query: &str) -> Result<OpenedObject, StorageError>;
}

/// An object being served from a signed link.
pub struct OpenedObject {
    /// Its size in bytes.
    pub size: u64,
    /// The name the link was signed for.
    pub filename: String,
    /// The media type the link was signed for.
    pub content_type: String,
    /// Its bytes.
    pub stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, StorageError>>,
}

impl std::fmt::Debug for OpenedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedObject")
            .field("size", &self.size)
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// The media types of files recognised from their first bytes (magic numbers), and the checks
/// of one kind of upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadRules {
    /// Largest accepted file, in bytes.
    pub max_bytes: u64,
    /// The media types accepted, as sniffed from the content (`text/plain`: valid UTF-8
    /// without control characters other than whitespace).
    pub allowed_types: &'static [&'static str],
}

/// How many leading bytes [`UploadRules::sniff`] needs to decide.
pub const SNIFF_BYTES: usize = 8192;

impl UploadRules {
    /// The file's media type from its first bytes (up to [`SNIFF_BYTES`]), when it is one of
    /// the allowed types; the name and the client's `Content-Type` play no part.
    pub fn sniff(&self, head: &[u8]) -> Result<&'static str, DomainError> {
        let detected = infer::get(head)
            .map(|kind| kind.mime_type())
            .or_else(|| looks_like_text(head).then_some("text/plain"));
        match detected.and_then(|t| self.allowed_types.iter().find(|a| **a == t)) {
            Some(allowed) => Ok(*allowed),
            None => Err(DomainError::UnsupportedMediaType {
                allowed: self.allowed_types,
            }),
        }
    }

    /// The refusal of a file larger than [`UploadRules::max_bytes`].
    pub fn too_large(&self) -> DomainError {
        DomainError::TooLarge {
            limit: self.max_bytes,
        }
    }
}

/// What an upload turned out to be, once all of it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The media type sniffed from its first bytes.
    pub content_type: &'static str,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// An upload arriving chunk by chunk: the first bytes are held back until its type is known
/// (nothing of a refused type is written), the size is counted against the limit as it
/// grows, the checksum is computed on the way, and everything else goes straight to the store.
pub struct Incoming {
    writer: Box<dyn ObjectWriter>,
    rules: UploadRules,
    head: Vec<u8>,
    content_type: Option<&'static str>,
    size: u64,
    digest: sha2::Sha256,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("size", &self.size)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// An upload into `writer`, checked against `rules`.
    pub fn new(writer: Box<dyn ObjectWriter>, rules: UploadRules) -> Self {
        Self {
            writer,
            rules,
            head: Vec::new(),
            content_type: None,
            size: 0,
            digest: <sha2::Sha256 as sha2::Digest>::new(),
        }
    }

    /// Takes the next chunk. An error ends the upload: call [`Incoming::abort`].
    pub async fn push(&mut self, chunk: &[u8]) -> Result<(), DomainError> {
        self.size = self.size.saturating_add(chunk.len() as u64);
        if self.size > self.rules.max_bytes {
            return Err(self.rules.too_large());
        }
        sha2::Digest::update(&mut self.digest, chunk);
        if self.content_type.is_some() {
            return Ok(self.writer.write(chunk).await?);
        }
        self.head.extend_from_slice(chunk);
        if self.head.len() >= SNIFF_BYTES {
            self.release_head().await?;
        }
        Ok(())
    }

    async fn release_head(&mut self) -> Result<(), DomainError> {
        self.content_type = Some(self.rules.sniff(&self.head)?);
        let head = std::mem::take(&mut self.head);
        Ok(self.writer.write(&head).await?)
    }

    /// Stores what arrived; an empty or refused file is an error (then call `abort`).
    pub async fn finish(mut self) -> Result<Received, (DomainError, Self)> {
        if self.content_type.is_none() {
            if self.size == 0 {
                let empty = DomainError::invalid("file", "empty", "the file is empty");
                return Err((empty, self));
            }
            if let Err(error) = self.release_head().await {
                return Err((error, self));
            }
        }
        let digest = sha2::Digest::finalize(self.digest.clone());
        let received = Received {
            content_type: self.content_type.unwrap_or("application/octet-stream"),
            size: self.size,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        };
        let Self { writer, .. } = self;
        // The writer is consumed either way: a failed finish leaves an orphan for the sweep.
        writer
            .finish()
            .await
            .map_err(|error| (DomainError::from(error), Self::spent()))?;
        Ok(received)
    }

    /// A stand-in after the writer was consumed, so `abort` after a failed finish is harmless.
    fn spent() -> Self {
        Self::new(
            Box::new(Spent),
            UploadRules {
                max_bytes: 0,
                allowed_types: &[],
            },
        )
    }

    /// Discards what was written.
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

struct Spent;

#[async_trait]
impl ObjectWriter for Spent {
    async fn write(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Err(StorageError::Unavailable("the upload has ended".into()))
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        Err(StorageError::Unavailable("the upload has ended".into()))
    }

    async fn abort(self: Box<Self>) {}
}

/// Plain text: UTF-8 (a sequence cut at the end of the sample is fine) without control
/// characters other than tab, line feed, carriage return and form feed.
fn looks_like_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        // Only an incomplete character at the very end is forgiven.
        Err(error) if error.error_len().is_none() && head.len() - error.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..error.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

/// A file name as kept and shown back: the last path segment, control characters and quotes
/// removed, at most 255 bytes; `file` when nothing is left.
pub fn clean_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\'))
        .collect();
    name = name.trim().trim_start_matches('.').to_owned();
    while name.len() > 255 {
        name.pop();
    }
    if name.is_empty() {
        "file".to_owned()
    } else {
        name
    }
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback and the
/// real name, percent-encoded; nothing in the name can end the header or add another.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .filter(|c| !matches!(c, '"' | '\\'))
        .collect();
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// Objects in a map, for unit tests: links are `memory://<key>?name=<name>`.
#[derive(Debug, Default, Clone)]
pub struct InMemoryStorage {
    objects: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
}

impl InMemoryStorage {
    /// The stored object's bytes.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    /// Every stored key.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Vec<u8>>> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct InMemoryWriter {
    storage: InMemoryStorage,
    key: String,
    bytes: Vec<u8>,
}

#[async_trait]
impl ObjectWriter for InMemoryWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StorageError> {
        let Self {
            storage,
            key,
            bytes,
        } = *self;
        storage.lock().insert(key, bytes);
        Ok(())
    }

    async fn abort(self: Box<Self>) {}
}

#[async_trait]
impl ObjectStorage for InMemoryStorage {
    async fn writer(&self, key: &ObjectKey) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(InMemoryWriter {
            storage: self.clone(),
            key: key.as_str().to_owned(),
            bytes: Vec::new(),
        }))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.lock().remove(key.as_str());
        Ok(())
    }

    async fn download_url(
        &self,
        key: &ObjectKey,
        download: &Download<'_>,
    ) -> Result<String, StorageError> {
        Ok(format!("memory://{key}?name={}", download.filename))
    }

    async fn upload_url(&self, _: &ObjectKey, _: Duration) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    async fn open_link(&self, raw_key: &str, _: &str) -> Result<OpenedObject, StorageError> {
        Err(StorageError::NotFound(raw_key.to_owned()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, StorageError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(key, _)| key.starts_with(&format!("{prefix}/")))
            .filter_map(|(key, bytes)| {
                Some(StoredObject {
                    key: ObjectKey::parse(key).ok()?,
                    size: bytes.len() as u64,
                    last_modified: SystemTime::UNIX_EPOCH,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use futures_executor::block_on;

    use super::*;

    #[test]
    fn an_upload_is_sniffed_counted_hashed_and_stored_only_when_accepted() {
        let storage = InMemoryStorage::default();
        let key = ObjectKey::parse("attachments/p/a").unwrap();
        let writer = block_on(storage.writer(&key)).unwrap();
        let mut incoming = Incoming::new(writer, RULES);
        block_on(incoming.push(b"hello ")).unwrap();
        block_on(incoming.push(b"world\n")).unwrap();
        let received = block_on(incoming.finish()).map_err(|(e, _)| e).unwrap();
        assert_eq!(received.content_type, "text/plain");
        assert_eq!(received.size, 12);
        assert_eq!(
            received.sha256,
            "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
        );
        assert_eq!(storage.object("attachments/p/a").unwrap(), b"hello world\n");

        // Too large: refused as soon as the count passes the limit.
        let key = ObjectKey::parse("attachments/p/b").unwrap();
        let mut incoming = Incoming::new(block_on(storage.writer(&key)).unwrap(), RULES);
        block_on(incoming.push(&[b'a'; 1000])).unwrap();
        let error = block_on(incoming.push(&[b'a'; 100])).unwrap_err();
        assert_eq!(error.code(), "payload_too_large");
        block_on(incoming.abort());
        // A refused type: nothing reaches the store.
        let mut incoming = Incoming::new(block_on(storage.writer(&key)).unwrap(), RULES);
        block_on(incoming.push(&[b'M', b'Z', 0x90, 0, 3, 0, 0, 0])).unwrap();
        let (error, incoming) = block_on(incoming.finish()).unwrap_err();
        assert_eq!(error.code(), "unsupported_media_type");
        block_on(incoming.abort());
        // Empty.
        let incoming = Incoming::new(block_on(storage.writer(&key)).unwrap(), RULES);
        let (error, _) = block_on(incoming.finish()).unwrap_err();
        assert_eq!(error.code(), "validation_failed");
        assert_eq!(storage.keys(), ["attachments/p/a"]);
    }

    const RULES: UploadRules = UploadRules {
        max_bytes: 1024,
        allowed_types: &["image/png", "application/pdf", "text/plain"],
    };

    #[test]
    fn keys_refuse_anything_path_like() {
        assert_eq!(
            ObjectKey::new(["attachments", "p1", "a.b"])
                .unwrap()
                .as_str(),
            "attachments/p1/a.b"
        );
        for bad in [
            "../etc/passwd",
            "a//b",
            "/abs",
            "a/./b",
            "a b",
            "a/..",
            "ä",
            "",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_type_comes_from_the_bytes_not_the_name() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        assert_eq!(RULES.sniff(&png).unwrap(), "image/png");
        assert_eq!(RULES.sniff(b"%PDF-1.7\n").unwrap(), "application/pdf");
        assert_eq!(
            RULES.sniff("héllo\nworld\t".as_bytes()).unwrap(),
            "text/plain"
        );
        // A Windows executable, whatever it is called.
        let exe = [b'M', b'Z', 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xFF, 0xFF];
        let refused = RULES.sniff(&exe).unwrap_err();
        assert_eq!(refused.code(), "unsupported_media_type");
        // Binary noise and empty files are not text.
        assert!(RULES.sniff(&[0, 1, 2, 3, 0xFE]).is_err());
        assert!(RULES.sniff(b"").is_err());
        // A multi-byte character cut by the sample's end is still text.
        let cut = "ab€".as_bytes();
        assert_eq!(RULES.sniff(&cut[..cut.len() - 1]).unwrap(), "text/plain");
    }

    #[test]
    fn hostile_names_cannot_break_the_disposition_header() {
        let header = content_disposition("a\"b\\c€\r\n.pdf");
        assert!(
            header.starts_with("attachment; filename=\"abc___.pdf\"; filename*=UTF-8''"),
            "{header}"
        );
        assert!(header.contains("%E2%82%AC"));
        assert!(!header.contains('\n') && !header.contains('\r'));
    }

    #[test]
    fn file_names_are_data_never_paths() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\x\\report.pdf"), "report.pdf");
        assert_eq!(clean_filename("a\"b\r\nc.txt"), "abc.txt");
        assert_eq!(clean_filename("..."), "file");
        assert_eq!(clean_filename(".htaccess"), "htaccess");
        assert_eq!(clean_filename(&"x".repeat(300)).len(), 255);
    }
}
