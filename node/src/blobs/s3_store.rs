//! The region's blobs in an S3-compatible object store (AWS S3, Garage, MinIO, …), through
//! the `object_store` crate: `<prefix>/blobs/<algorithm>/<hex>` in one bucket.
//!
//! Bytes arrive in the node's local staging area as with the filesystem store (hashed as
//! they come, so nothing unverified ever reaches the bucket), and `commit` uploads the
//! verified file under its digest: one PUT for a small blob, a multipart upload streamed
//! part by part for a large one (a few parts in memory at a time, whatever the size). The
//! object appears only when the upload completes, so a reader never sees a partial blob;
//! a failed upload is aborted, its parts dropped, and one a crash cut short is aborted at
//! the next start (a ledger of open uploads in `s3-uploads/`).
//!
//! Garbage collection needs each blob's last use, which object stores cannot update in
//! place: `touch` writes a mark object, `<prefix>/marks/<algorithm>/<hex>`, which every
//! node of the region sees, and `stat` reads the later of the blob's and the mark's write
//! times.
//!
//! Several nodes of a region share the prefix, and a node's pins (which keep its own sweep
//! off a blob it is using) are not seen by the others. Two orders close that gap without
//! a lock between nodes: whoever starts using a stored blob writes its mark *then* checks
//! the blob is there (`touch`, and `commit` of a blob already stored); the sweep reads the
//! mark, moves the blob aside (`gc-trash/`), deletes it, and reads the mark again — if it
//! changed, someone started using the blob meanwhile and the sweep puts it back. Either
//! the user's check comes before the delete (then the sweep sees the new mark and
//! restores) or after it (then the user sees the blob gone and treats it as absent). Each
//! mark write carries a fresh body, so even two within one second differ (by ETag).

use super::pins::{BlobPins, Pin};
use super::staging::{remove_file_if_present, Staging};
use super::store::{BlobReader, BlobStore, Leftover, StoredBlob};
use super::BlobError;
use crate::config::StorageConfig;
use bytes::BytesMut;
use futures::StreamExt;
use meridian_replication::Digest;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use futures::stream::FuturesUnordered;
use object_store::multipart::{MultipartStore, PartId};
use object_store::{ClientOptions, MultipartId, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Blobs up to this size go up in one PUT; larger ones as a multipart upload of parts this
/// size (above S3's 5 MiB minimum part; grown for blobs past 10,000 such parts).
const PART_SIZE: usize = 8 << 20;
/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Parts uploading at once: memory per commit stays near `PARTS_IN_FLIGHT + 1` parts.
const PARTS_IN_FLIGHT: usize = 4;
/// A metadata request (HEAD, DELETE, a list page) that takes longer is a failing store.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A part (or a small blob's PUT) that takes longer is a failing store.
const PART_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a presigned URL a pull is redirected to stays valid: long enough for any client
/// to follow the redirect (the store checks it when the GET starts, not while it streams).
const REDIRECT_VALID_FOR: Duration = Duration::from_secs(300);

/// Why an S3 store cannot be used: the message names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum S3SetupError {
    #[error("{0}")]
    Invalid(String),
    #[error("the object store refused or could not be reached: {detail} (check {setting})")]
    Unusable { setting: &'static str, detail: String },
    #[error("blob store I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct S3BlobStore {
    s3: Arc<AmazonS3>,
    /// `<prefix>/blobs`, without a trailing slash.
    blobs_prefix: String,
    /// `<prefix>/quarantine`: copies whose bytes did not match their digest.
    quarantine_prefix: String,
    /// `<prefix>/marks`: last-use marks for garbage collection, one empty object per blob.
    marks_prefix: String,
    /// `<prefix>/gc-trash`: blobs the sweep is removing, until it has checked nobody
    /// started using them meanwhile.
    trash_prefix: String,
    /// `<prefix>/links`: which repositories a blob was pushed or mounted into, one small
    /// object per blob and repository holding the size (`links/<alg>/<hex>/<repo>`), so
    /// every node of the region knows; they go with the blob.
    links_prefix: String,
    staging: Arc<Staging>,
    pins: Arc<BlobPins>,
    /// Runs the store's requests for the blocking methods (the sweep's thread).
    runtime: tokio::runtime::Handle,
    /// Answer blob GETs with a presigned URL of the object (`storage.redirect`).
    redirect: bool,
    open_uploads: OpenUploads,
}

impl S3BlobStore {
    /// Connects to the bucket `config` names and checks that this node can write and delete
    /// there (so wrong credentials, a missing bucket or an unreachable endpoint stop the
    /// node at startup, not its first push).
    pub async fn open(config: &StorageConfig, data_dir: &Path) -> Result<S3BlobStore, S3SetupError> {
        let s3 = Arc::new(build_client(config)?);
        let root = config.prefix.trim_matches('/');
        let under = |name: &str| if root.is_empty() { name.to_string() } else { format!("{root}/{name}") };
        let store = S3BlobStore {
            s3,
            blobs_prefix: under("blobs"),
            quarantine_prefix: under("quarantine"),
            marks_prefix: under("marks"),
            links_prefix: under("links"),
            trash_prefix: under("gc-trash"),
            staging: Arc::new(Staging::open(data_dir.join("uploads"))?),
            pins: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
            redirect: config.redirect,
            open_uploads: OpenUploads::open(data_dir.join("s3-uploads"))?,
        };
        store.probe(config).await?;
        store.open_uploads.abort_left_over(&store.s3).await?;
        Ok(store)
    }

    /// Writes and deletes a small object under the prefix.
    async fn probe(&self, config: &StorageConfig) -> Result<(), S3SetupError> {
        let probe = ObjectPath::from(format!("{}/.meridian-probe-{}", self.quarantine_prefix, uuid::Uuid::new_v4()));
        let put = within(SMALL_REQUEST_TIMEOUT, self.s3.put(&probe, PutPayload::from_static(b"meridian start-up check")));
        let result = match put.await {
            Ok(_) => within(SMALL_REQUEST_TIMEOUT, self.s3.delete(&probe)).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            let setting = setting_to_check(&e, config);
            S3SetupError::Unusable { setting, detail: e.to_string() }
        })
    }

    fn key(&self, digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("{}/{}/{}", self.blobs_prefix, digest.algorithm().name(), digest.hex()))
    }

    /// The digest a listed key stands for; `None` for anything else under the prefix.
    fn digest_of(&self, key: &ObjectPath) -> Option<Digest> {
        let rest = key.as_ref().strip_prefix(&self.blobs_prefix)?.strip_prefix('/')?;
        let (algorithm, hex) = rest.split_once('/')?;
        Digest::parse(&format!("{algorithm}:{hex}")).ok()
    }

    fn mark_key(&self, digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("{}/{}/{}", self.marks_prefix, digest.algorithm().name(), digest.hex()))
    }

    /// Where a blob's repository links are: `<prefix>/links/<alg>/<hex>`.
    fn links_of(&self, digest: &Digest) -> String {
        format!("{}/{}/{}", self.links_prefix, digest.algorithm().name(), digest.hex())
    }

    fn link_key(&self, repo: &str, digest: &Digest) -> ObjectPath {
        ObjectPath::from(format!("{}/{repo}", self.links_of(digest)))
    }

    /// The blob as garbage collection sees it: its size, and the later of its own write
    /// time and its mark's.
    async fn stat_async(&self, digest: &Digest) -> Result<Option<StoredBlob>, object_store::Error> {
        let Some(blob) = self.head(&self.key(digest)).await? else { return Ok(None) };
        let marked = self.head(&self.mark_key(digest)).await?.map(|m| unix_ms(&m)).unwrap_or(0);
        Ok(Some(StoredBlob { digest: digest.clone(), size: blob.size, modified_ms: unix_ms(&blob).max(marked) }))
    }

    async fn head(&self, key: &ObjectPath) -> Result<Option<object_store::ObjectMeta>, object_store::Error> {
        match within(SMALL_REQUEST_TIMEOUT, self.s3.head(key)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; one already gone counts as deleted.
    async fn delete_if_present(&self, key: &ObjectPath) -> Result<(), object_store::Error> {
        match within(SMALL_REQUEST_TIMEOUT, self.s3.delete(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs one of the store's requests to completion from a blocking method. On a
    /// runtime worker (a caller that did not move to a blocking thread) the worker is
    /// handed over to the runtime first, so the other tasks keep running.
    fn wait<F: Future>(&self, request: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(request)),
            Err(_) => self.runtime.block_on(request),
        }
    }

    /// Calls `f` with every object under `prefix`, page by page (the list stream fetches
    /// the next page as the last one is consumed; blocking, like `wait`).
    fn for_each_listed(&self, prefix: &str, f: &mut dyn FnMut(object_store::ObjectMeta)) -> std::io::Result<()> {
        let prefix = ObjectPath::from(prefix);
        self.wait(async {
            let mut listing = self.s3.list(Some(&prefix));
            while let Some(meta) = within(SMALL_REQUEST_TIMEOUT, async { listing.next().await.transpose() }).await.map_err(io_error)? {
                f(meta);
            }
            Ok(())
        })
    }

    /// Uploads the staged file under `key`: one PUT when small, else part by part. A
    /// multipart upload is entered in the ledger while it is open, so one a crash leaves
    /// open is aborted (its parts dropped) when the node next starts.
    async fn upload(&self, staged: &Path, key: &ObjectPath) -> Result<(), BlobError> {
        let size = tokio::fs::metadata(staged).await?.len();
        if size <= PART_SIZE as u64 {
            let bytes = tokio::fs::read(staged).await?;
            within(PART_TIMEOUT, self.s3.put(key, PutPayload::from(bytes))).await?;
            return Ok(());
        }
        let part_size = (PART_SIZE as u64).max(size.div_ceil(MAX_PARTS)) as usize;
        let id = within(SMALL_REQUEST_TIMEOUT, self.s3.create_multipart(key)).await?;
        let entry = self.open_uploads.enter(key, &id)?;
        let parts = match self.send_parts(staged, key, &id, part_size).await {
            Ok(parts) => within(PART_TIMEOUT, self.s3.complete_multipart(key, &id, parts)).await.map_err(BlobError::from),
            Err(e) => Err(e),
        };
        match parts {
            Ok(_) => {
                self.open_uploads.leave(&entry);
                Ok(())
            }
            Err(e) => {
                match within(SMALL_REQUEST_TIMEOUT, self.s3.abort_multipart(key, &id)).await {
                    Ok(()) => self.open_uploads.leave(&entry),
                    // Left in the ledger: the next start aborts it.
                    Err(abort) => tracing::warn!(key = %key, error = %abort, "could not abort a failed multipart upload"),
                }
                Err(e)
            }
        }
    }

    /// Sends the staged file as parts of upload `id`, at most `PARTS_IN_FLIGHT` at once
    /// (so at most that many parts, plus the one being read, are in memory); returns the
    /// parts in order.
    async fn send_parts(&self, staged: &Path, key: &ObjectPath, id: &MultipartId, part_size: usize) -> Result<Vec<PartId>, BlobError> {
        let mut file = tokio::fs::File::open(staged).await?;
        let mut sent: Vec<Option<PartId>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        let mut read_all = false;
        loop {
            while !read_all && in_flight.len() < PARTS_IN_FLIGHT {
                let mut part = BytesMut::with_capacity(part_size);
                while part.len() < part_size {
                    if file.read_buf(&mut part).await? == 0 {
                        read_all = true;
                        break;
                    }
                }
                if part.is_empty() {
                    break;
                }
                let index = sent.len();
                sent.push(None);
                let payload = PutPayload::from(part.freeze());
                in_flight.push(async move { (index, within(PART_TIMEOUT, self.s3.put_part(key, id, index, payload)).await) });
            }
            match in_flight.next().await {
                Some((index, done)) => sent[index] = Some(done?),
                None => break,
            }
        }
        Ok(sent.into_iter().flatten().collect())
    }
}

/// Multipart uploads this node has open, one small file each under
/// `<data_dir>/s3-uploads/` (the key, then the upload id): what a crash leaves there is
/// aborted at the next start, so no parts stay behind in the bucket.
struct OpenUploads {
    dir: PathBuf,
}

impl OpenUploads {
    fn open(dir: PathBuf) -> std::io::Result<OpenUploads> {
        std::fs::create_dir_all(&dir)?;
        Ok(OpenUploads { dir })
    }

    /// Records an open upload: written whole under a temporary name, then renamed, so a
    /// crash never leaves a torn entry under an entry's name.
    fn enter(&self, key: &ObjectPath, id: &MultipartId) -> std::io::Result<PathBuf> {
        let name = uuid::Uuid::new_v4().to_string();
        let (temp, entry) = (self.dir.join(format!(".tmp-{name}")), self.dir.join(name));
        std::fs::write(&temp, format!("{key}\n{id}\n"))?;
        std::fs::rename(&temp, &entry)?;
        Ok(entry)
    }

    fn leave(&self, entry: &Path) {
        if let Err(e) = remove_file_if_present(entry) {
            tracing::warn!(entry = %entry.display(), error = %e, "could not remove a closed upload from the ledger");
        }
    }

    /// Aborts every upload the ledger holds (a crash cut them short).
    async fn abort_left_over(&self, s3: &AmazonS3) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            // An entry that cannot be read as one (a temporary file a crash left, a
            // damaged one) names no upload this node can abort: dropped, with a word, so
            // it never blocks a start. The bucket's lifecycle rule covers such uploads.
            let text = std::fs::read(&path).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_default();
            let mut lines = text.lines();
            let (Some(key), Some(id)) = (lines.next().filter(|k| !k.is_empty()), lines.next().filter(|i| !i.is_empty())) else {
                tracing::warn!(entry = %path.display(), "dropping an unreadable entry of the open-upload ledger");
                self.leave(&path);
                continue;
            };
            let key = ObjectPath::from(key);
            match within(SMALL_REQUEST_TIMEOUT, s3.abort_multipart(&key, &id.to_string())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    tracing::info!(key = %key, "aborted a multipart upload a crash left open");
                    self.leave(&path);
                }
                Err(e) => tracing::warn!(key = %key, error = %e, "could not abort a multipart upload a crash left open; trying at the next start"),
            }
        }
        Ok(())
    }
}

/// The client for the configured bucket: settings from the config over the standard
/// `AWS_*` environment variables, credentials from the config, a credentials file or the
/// environment.
fn build_client(config: &StorageConfig) -> Result<AmazonS3, S3SetupError> {
    if config.bucket.trim().is_empty() {
        return Err(S3SetupError::Invalid("storage.bucket is required when storage.kind = \"s3\"".into()));
    }
    // reqwest is built without a default TLS provider: use ring, as the rest of the node.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(config.bucket.trim())
        .with_region(&config.region)
        .with_virtual_hosted_style_request(!config.path_style)
        // Conditional PUTs are not used (a blob's key is its digest: two writers write the
        // same bytes), and some S3-compatible stores ignore them.
        .with_conditional_put(S3ConditionalPut::Disabled)
        .with_retry(RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() })
        // No overall request timeout: a large blob streams to a slow client for as long as
        // it takes. Each request is bounded where it is made instead.
        .with_client_options(ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout_disabled());
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    match (&config.access_key_id, &config.secret_access_key, &config.credentials_file) {
        (Some(id), Some(secret), _) => {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret.expose());
        }
        (None, None, Some(file)) => {
            let creds = read_credentials_file(file)?;
            builder = builder.with_access_key_id(creds.access_key_id).with_secret_access_key(creds.secret_access_key);
            if let Some(token) = creds.session_token {
                builder = builder.with_token(token);
            }
        }
        (None, None, None) => {} // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or instance credentials
        _ => {
            return Err(S3SetupError::Invalid(
                "set both storage.access_key_id and storage.secret_access_key, or neither (then storage.credentials_file or the AWS_* environment variables)".into(),
            ))
        }
    }
    builder.build().map_err(|e| S3SetupError::Unusable { setting: "storage.endpoint and storage.region", detail: e.to_string() })
}

struct FileCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Reads the AWS shared credentials file format: the `[default]` profile, or the one
/// `AWS_PROFILE` names; `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`.
fn read_credentials_file(path: &Path) -> Result<FileCredentials, S3SetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| S3SetupError::Invalid(format!("storage.credentials_file {}: {e}", path.display())))?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut in_profile = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if !in_profile {
            continue;
        }
        let value = Some(value.trim().to_string());
        match key.trim() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(FileCredentials { access_key_id, secret_access_key, session_token: token })
        }
        _ => Err(S3SetupError::Invalid(format!(
            "storage.credentials_file {}: profile [{profile}] lacks aws_access_key_id or aws_secret_access_key",
            path.display()
        ))),
    }
}

/// Which setting a failed start-up check points at.
fn setting_to_check(e: &object_store::Error, config: &StorageConfig) -> &'static str {
    let text = e.to_string();
    let credentials = if config.access_key_id.is_some() {
        "storage.access_key_id and storage.secret_access_key"
    } else if config.credentials_file.is_some() {
        "storage.credentials_file"
    } else {
        "the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables"
    };
    match e {
        _ if text.contains("NoSuchBucket") => "storage.bucket",
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => credentials,
        _ if text.contains("InvalidAccessKeyId") || text.contains("SignatureDoesNotMatch") || text.contains("AccessDenied") => {
            credentials
        }
        object_store::Error::NotFound { .. } => "storage.bucket",
        _ if text.contains("timed out") || text.contains("error sending request") || text.contains("connect") => {
            "storage.endpoint"
        }
        _ => "storage.endpoint, storage.bucket and the credentials",
    }
}

/// `request`, or a timeout error naming how long it waited.
async fn within<T>(limit: Duration, request: impl Future<Output = object_store::Result<T>>) -> object_store::Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(object_store::Error::Generic {
            store: "S3",
            source: format!("no answer within {} s (timed out)", limit.as_secs()).into(),
        }),
    }
}

/// When the object was written, in Unix milliseconds.
fn unix_ms(meta: &object_store::ObjectMeta) -> u64 {
    meta.last_modified.timestamp_millis().max(0) as u64
}

fn io_error(e: object_store::Error) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn size(&self, digest: &Digest) -> Result<Option<u64>, BlobError> {
        Ok(self.head(&self.key(digest)).await?.map(|m| m.size))
    }

    async fn open(&self, digest: &Digest) -> Result<Option<BlobReader>, BlobError> {
        let key = self.key(digest);
        let Some(meta) = self.head(&key).await? else { return Ok(None) };
        let store: Arc<dyn ObjectStore> = self.s3.clone();
        Ok(Some(BlobReader::Object { store, path: key, size: meta.size }))
    }

    /// Only for a blob the bucket holds now (never for one still arriving from another
    /// region, which the node serves as it comes).
    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>, BlobError> {
        if !self.redirect {
            return Ok(None);
        }
        let key = self.key(digest);
        if self.head(&key).await?.is_none() {
            return Ok(None);
        }
        let url = self.s3.signed_url(axum::http::Method::GET, &key, REDIRECT_VALID_FOR).await?;
        Ok(Some(url.to_string()))
    }

    async fn commit(&self, staged: &Path, digest: &Digest) -> Result<(), BlobError> {
        let key = self.key(digest);
        // Two writers of one digest write the same bytes: whichever completes last
        // replaces an identical object, so only an existing one is worth skipping — and
        // only once marked (a touch that finds it: see the module's note on sweeps). A new
        // object needs no mark: its own write time is recent.
        let kept = self.head(&key).await?.is_some() && self.touch(digest).await?;
        if !kept {
            crate::failpoints::io("blob-rename")?;
            self.upload(staged, &key).await?;
        }
        self.staging.discard(staged).await;
        Ok(())
    }

    /// Copies the object under `quarantine/` and removes it from the blobs.
    async fn quarantine(&self, digest: &Digest) -> Result<(), BlobError> {
        let key = self.key(digest);
        let aside = ObjectPath::from(format!(
            "{}/{}-{}-{}",
            self.quarantine_prefix,
            digest.algorithm().name(),
            digest.hex(),
            uuid::Uuid::new_v4()
        ));
        within(PART_TIMEOUT, self.s3.copy(&key, &aside)).await?;
        within(SMALL_REQUEST_TIMEOUT, self.s3.delete(&key)).await?;
        Ok(())
    }

    /// Writes the blob's mark (a fresh body each time), then looks for the blob: a sweep
    /// of another node that deletes it after this look sees the new mark and puts it back.
    async fn touch(&self, digest: &Digest) -> Result<bool, BlobError> {
        let mark = PutPayload::from(uuid::Uuid::new_v4().to_string().into_bytes());
        within(SMALL_REQUEST_TIMEOUT, self.s3.put(&self.mark_key(digest), mark)).await?;
        Ok(self.head(&self.key(digest)).await?.is_some())
    }

    fn shares_links(&self) -> bool {
        true
    }

    async fn link_repo(&self, repo: &str, digest: &Digest, size: u64) -> Result<(), BlobError> {
        let body = PutPayload::from(size.to_string().into_bytes());
        within(SMALL_REQUEST_TIMEOUT, self.s3.put(&self.link_key(repo, digest), body)).await?;
        Ok(())
    }

    /// The link's size, when the blob itself is still there (a link a crash left behind
    /// its blob's removal counts for nothing).
    async fn repo_link(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, BlobError> {
        let link = async {
            let body = self.s3.get(&self.link_key(repo, digest)).await?.bytes().await?;
            Ok(body)
        };
        let body = match within(SMALL_REQUEST_TIMEOUT, link).await {
            Ok(body) => body,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(size) = std::str::from_utf8(&body).ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
            return Ok(None);
        };
        Ok(self.head(&self.key(digest)).await?.filter(|blob| blob.size == size).map(|_| size))
    }

    async fn unlink_repo(&self, repo: &str, digest: &Digest) -> Result<(), BlobError> {
        Ok(self.delete_if_present(&self.link_key(repo, digest)).await?)
    }

    fn stat(&self, digest: &Digest) -> std::io::Result<Option<StoredBlob>> {
        self.wait(self.stat_async(digest)).map_err(io_error)
    }

    fn pin(&self, digests: Vec<String>) -> Pin {
        self.pins.pin(digests)
    }

    fn unless_pinned(&self, digest: &Digest, f: &mut dyn FnMut()) -> bool {
        self.pins.unless_pinned(&digest.to_string(), f).is_some()
    }

    /// Lists `<prefix>/blobs/` page by page (the list stream fetches the next page as the
    /// last one is consumed). The times are the blobs' own: marks are read by `stat`, which
    /// the sweep asks again before it removes anything.
    fn for_each_stored_blob(&self, f: &mut dyn FnMut(StoredBlob)) -> std::io::Result<()> {
        self.for_each_listed(&self.blobs_prefix, &mut |meta| {
            if let Some(digest) = self.digest_of(&meta.location) {
                f(StoredBlob { digest, size: meta.size, modified_ms: unix_ms(&meta) });
            }
        })
    }

    /// Under the pin lock: the mark as it is, the caller's check, then the blob moved aside
    /// and deleted, and the mark read again — a node that started using the blob meanwhile
    /// changed it, and the blob goes back (see the module's note). A GET already streaming
    /// the object finishes (object stores keep the bytes of a read in progress).
    fn remove_unneeded(&self, digest: &Digest, unneeded: &mut dyn FnMut() -> bool) -> std::io::Result<Option<u64>> {
        let key = self.key(digest);
        let mark_key = self.mark_key(digest);
        self.pins
            .unless_pinned(&digest.to_string(), || -> std::io::Result<Option<u64>> {
                let mark_before = self.wait(self.head(&mark_key)).map_err(io_error)?.map(|m| m.e_tag);
                if !unneeded() {
                    return Ok(None);
                }
                let Some(meta) = self.wait(self.head(&key)).map_err(io_error)? else { return Ok(None) };
                let aside = ObjectPath::from(format!(
                    "{}/{}-{}-{}",
                    self.trash_prefix,
                    digest.algorithm().name(),
                    digest.hex(),
                    uuid::Uuid::new_v4()
                ));
                match self.wait(within(PART_TIMEOUT, self.s3.copy(&key, &aside))) {
                    Ok(()) => {}
                    // Another node's sweep of the region removed it first.
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(io_error(e)),
                }
                self.wait(within(SMALL_REQUEST_TIMEOUT, self.s3.delete(&key))).map_err(io_error)?;
                let mark_after = self.wait(self.head(&mark_key)).map_err(io_error)?.map(|m| m.e_tag);
                if mark_after != mark_before {
                    self.wait(within(PART_TIMEOUT, self.s3.copy(&aside, &key))).map_err(io_error)?;
                    self.wait(within(SMALL_REQUEST_TIMEOUT, self.s3.delete(&aside))).map_err(io_error)?;
                    tracing::info!(%digest, "another node started using a blob the sweep was removing; put it back");
                    return Ok(None);
                }
                self.wait(within(SMALL_REQUEST_TIMEOUT, self.s3.delete(&aside))).map_err(io_error)?;
                self.wait(self.delete_if_present(&mark_key)).map_err(io_error)?;
                // The repositories' links go with the blob (a crash before this leaves
                // links that `repo_link` ignores, since the blob is gone).
                let mut links = Vec::new();
                self.for_each_listed(&self.links_of(digest), &mut |link| links.push(link.location))?;
                for link in links {
                    self.wait(self.delete_if_present(&link)).map_err(io_error)?;
                }
                Ok(Some(meta.size))
            })
            .unwrap_or(Ok(None))
    }

    /// Staged files on this node, and quarantined copies in the bucket (with blobs a sweep
    /// that stopped midway left in `gc-trash/`).
    fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        let mut out = Vec::new();
        self.staging.leftovers(&mut out)?;
        let mut aside = Vec::new();
        self.for_each_listed(&self.trash_prefix, &mut |meta| aside.push(meta))?;
        self.for_each_listed(&self.quarantine_prefix, &mut |meta| aside.push(meta))?;
        for meta in aside {
            out.push(Leftover {
                path: PathBuf::from(meta.location.as_ref()),
                name: meta.location.filename().unwrap_or_default().to_string(),
                size: meta.size,
                modified_ms: unix_ms(&meta),
                quarantined: true,
            });
        }
        Ok(out)
    }

    fn remove_leftover(&self, leftover: &Leftover) -> std::io::Result<()> {
        if !leftover.quarantined {
            return remove_file_if_present(&leftover.path);
        }
        let key = ObjectPath::from(leftover.path.to_string_lossy().as_ref());
        self.wait(self.delete_if_present(&key)).map_err(io_error)
    }

    fn staging_path(&self, name: &str) -> PathBuf {
        self.staging.path(name)
    }

    async fn discard(&self, staged: &Path) {
        self.staging.discard(staged).await
    }
}
