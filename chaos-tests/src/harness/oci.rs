//! OCI Distribution helpers shared by the HTTP API tests: digests, blob and
//! manifest pushes, OCI error-body assertions, raw HTTP requests (for paths a
//! URL library would normalise) and data-directory inspection.

use super::Node;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const EMPTY_BYTES: &[u8] = b"{}";

// ---------------------------------------------------------------- digests

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// The hex part of a digest (`sha256:abcd…` → `abcd…`).
pub fn encoded(digest: &str) -> &str {
    digest.split_once(':').map(|(_, e)| e).unwrap_or(digest)
}

/// Deterministic pseudo-random bytes, so blobs in one test never collide by accident.
pub fn test_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------- http plumbing

pub fn client() -> Client {
    Client::new()
}

/// Turns a `Location` header (relative or absolute) into a URL to request.
pub fn abs_url(node: &Node, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        node.url(location)
    }
}

/// Appends a query parameter to a URL that may already carry a query.
pub fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_string())
}

pub fn require_header(resp: &Response, name: &str) -> String {
    header(resp, name).unwrap_or_else(|| {
        panic!("{} {}: missing header {name}; headers: {:?}", resp.status(), resp.url(), resp.headers())
    })
}

/// All values of a header, each split on commas (RFC 9110 list syntax).
pub fn header_list(resp: &Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Asserts the status, printing the body when it differs.
pub async fn expect_status(resp: Response, status: u16) -> Response {
    if resp.status().as_u16() != status {
        let got = resp.status();
        let url = resp.url().clone();
        let body = resp.text().await.unwrap_or_default();
        panic!("{url}: expected status {status}, got {got}; body: {body}");
    }
    resp
}

/// Checks that a location header ends with the given path (it may be absolute).
pub fn assert_location_path(resp: &Response, path: &str) {
    let loc = require_header(resp, "location");
    assert!(
        loc == path || loc.ends_with(path) && loc.starts_with("http"),
        "Location {loc:?} does not point at {path:?}"
    );
}

// ---------------------------------------------------------------- OCI error bodies

/// Checks status, `Content-Type: application/json` and an OCI error body that
/// contains `code`; returns the parsed body.
pub fn check_error_parts(
    context: &str,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    expected_status: &[u16],
    expected_codes: &[&str],
) -> Value {
    let text = String::from_utf8_lossy(body);
    assert!(
        expected_status.contains(&status),
        "{context}: expected status {expected_status:?}, got {status}; body: {text}"
    );
    let ct = content_type.unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{context}: error Content-Type should be application/json, got {ct:?}; body: {text}"
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{context}: error body is not JSON ({e}): {text}"));
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: error body has no `errors` array: {text}"));
    assert!(!errors.is_empty(), "{context}: empty `errors` array");
    for e in errors {
        let code = e["code"].as_str().unwrap_or_else(|| panic!("{context}: error without code: {text}"));
        assert!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{context}: malformed error code {code:?}"
        );
        assert!(e["message"].is_string(), "{context}: error without a string message: {text}");
    }
    assert!(
        errors.iter().any(|e| expected_codes.contains(&e["code"].as_str().unwrap_or(""))),
        "{context}: expected one of codes {expected_codes:?}, got {text}"
    );
    v
}

/// Asserts an OCI error response with exactly this status and code.
pub async fn assert_oci_error(resp: Response, status: u16, code: &str) -> Value {
    assert_oci_error_any(resp, &[status], &[code]).await
}

/// Asserts an OCI error response whose status and code are each one of the options.
pub async fn assert_oci_error_any(resp: Response, statuses: &[u16], codes: &[&str]) -> Value {
    let status = resp.status().as_u16();
    let context = format!("{} {}", resp.url(), status);
    let ct = header(&resp, "content-type");
    let body = resp.bytes().await.expect("read error body");
    check_error_parts(&context, status, ct.as_deref(), &body, statuses, codes)
}

// ---------------------------------------------------------------- blobs

#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor { media_type: media_type.to_string(), digest: sha256_digest(data), size: data.len() as u64 }
    }

    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// POST /v2/<repo>/blobs/uploads/ → 202; returns the absolute upload URL and the response.
pub async fn start_upload(node: &Node, repo: &str) -> (String, Response) {
    start_upload_query(node, repo, "").await
}

/// Like [`start_upload`] with a query string (e.g. `digest-algorithm=sha512`).
pub async fn start_upload_query(node: &Node, repo: &str, query: &str) -> (String, Response) {
    let mut url = node.url(&format!("/v2/{repo}/blobs/uploads/"));
    if !query.is_empty() {
        url = with_query(&url, query);
    }
    let resp = client().post(url).header("content-length", "0").send().await.expect("POST upload");
    let resp = expect_status(resp, 202).await;
    let loc = require_header(&resp, "location");
    (abs_url(node, &loc), resp)
}

/// Pushes a blob with POST then PUT (the portable monolithic upload); returns its digest.
pub async fn push_blob(node: &Node, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    push_blob_with_digest(node, repo, data, &digest).await;
    digest
}

/// POST then PUT with a caller-chosen digest (sha256 or sha512), expecting 201.
pub async fn push_blob_with_digest(node: &Node, repo: &str, data: &[u8], digest: &str) {
    let (url, _) = start_upload(node, repo).await;
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("PUT upload");
    let resp = expect_status(resp, 201).await;
    assert_location_path(&resp, &format!("/v2/{repo}/blobs/{digest}"));
}

/// Single-request monolithic push: POST /v2/<repo>/blobs/uploads/?digest=<d>.
pub async fn post_blob(node: &Node, repo: &str, data: &[u8], digest: &str) -> Response {
    client()
        .post(node.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("POST ?digest")
}

/// Pushes a blob and returns its descriptor with the given media type.
pub async fn push_blob_desc(node: &Node, repo: &str, media_type: &str, data: &[u8]) -> Descriptor {
    push_blob(node, repo, data).await;
    Descriptor::of(media_type, data)
}

pub async fn blob_status(node: &Node, repo: &str, digest: &str) -> u16 {
    client()
        .head(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD blob")
        .status()
        .as_u16()
}

/// HEAD → 404 and GET → 404 BLOB_UNKNOWN.
pub async fn assert_blob_absent(node: &Node, repo: &str, digest: &str) {
    assert_eq!(blob_status(node, repo, digest).await, 404, "HEAD {repo}@{digest} should be 404");
    let resp = client().get(node.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.expect("GET blob");
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

/// GET → 200 with exactly these bytes.
pub async fn assert_blob_content(node: &Node, repo: &str, digest: &str, data: &[u8]) {
    let resp = client().get(node.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.expect("GET blob");
    let resp = expect_status(resp, 200).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    let body = resp.bytes().await.expect("blob body");
    assert_eq!(body.len(), data.len(), "blob length");
    assert!(body.as_ref() == data, "blob bytes differ");
}

/// GET <upload location> status: returns (status, Range header).
pub async fn upload_status(url: &str) -> (u16, Option<String>) {
    let resp = client().get(url).send().await.expect("GET upload status");
    let status = resp.status().as_u16();
    (status, header(&resp, "range"))
}

/// GET <upload location> → 404 BLOB_UPLOAD_UNKNOWN.
pub async fn assert_upload_gone(url: &str) {
    let resp = client().get(url).send().await.expect("GET upload status");
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

// ---------------------------------------------------------------- manifests

pub async fn put_manifest(node: &Node, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
    client()
        .put(node.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("PUT manifest")
}

/// PUT a manifest, expecting 201 and `Docker-Content-Digest` = sha256 of the bytes; returns the digest.
pub async fn push_manifest(node: &Node, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let resp = put_manifest(node, repo, reference, media_type, body).await;
    let resp = expect_status(resp, 201).await;
    let digest = sha256_digest(body);
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    require_header(&resp, "location");
    digest
}

pub async fn get_manifest(node: &Node, repo: &str, reference: &str) -> Response {
    client()
        .get(node.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .expect("GET manifest")
}

pub async fn manifest_status(node: &Node, repo: &str, reference: &str) -> u16 {
    client()
        .head(node.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .expect("HEAD manifest")
        .status()
        .as_u16()
}

/// GET → 404 MANIFEST_UNKNOWN (or NAME_UNKNOWN when the whole repository is unknown) and HEAD → 404.
pub async fn assert_manifest_absent(node: &Node, repo: &str, reference: &str) {
    assert_eq!(manifest_status(node, repo, reference).await, 404, "HEAD {repo}:{reference} should be 404");
    let resp = get_manifest(node, repo, reference).await;
    assert_oci_error_any(resp, &[404], &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]).await;
}

/// GET → 200 with these exact bytes, the pushed media type and digest.
pub async fn assert_manifest_content(node: &Node, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let resp = expect_status(get_manifest(node, repo, reference).await, 200).await;
    assert_eq!(require_header(&resp, "content-type"), media_type);
    assert_eq!(require_header(&resp, "docker-content-digest"), sha256_digest(body));
    assert_eq!(require_header(&resp, "content-length"), body.len().to_string());
    let got = resp.bytes().await.expect("manifest body");
    assert!(got.as_ref() == body, "manifest bytes differ:\n got  {}\n want {}", String::from_utf8_lossy(&got), String::from_utf8_lossy(body));
}

pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

/// An OCI image manifest value.
pub fn image_manifest(config: &Descriptor, layers: &[Descriptor]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.json(),
        "layers": layers.iter().map(Descriptor::json).collect::<Vec<_>>(),
    })
}

/// An OCI image index value over (media type, digest, size) children.
pub fn image_index(children: &[Descriptor]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|d| {
            let mut v = d.json();
            v["platform"] = json!({"architecture": "amd64", "os": "linux"});
            v
        }).collect::<Vec<_>>(),
    })
}

pub struct PushedImage {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl PushedImage {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor { media_type: OCI_MANIFEST.into(), digest: self.digest.clone(), size: self.manifest.len() as u64 }
    }
}

/// Uploads a config and one layer (content derived from `seed`) and pushes an
/// OCI image manifest under `reference` (a tag or "" to push by digest).
pub async fn push_image(node: &Node, repo: &str, reference: &str, seed: &str) -> PushedImage {
    let config_bytes = to_bytes(&json!({"architecture": "amd64", "os": "linux", "seed": seed}));
    let config = push_blob_desc(node, repo, OCI_CONFIG, &config_bytes).await;
    let layer = push_blob_desc(node, repo, OCI_LAYER, &test_bytes(&format!("layer-{seed}"), 1000)).await;
    let manifest = to_bytes(&image_manifest(&config, &[layer.clone()]));
    let digest = sha256_digest(&manifest);
    let reference = if reference.is_empty() { digest.clone() } else { reference.to_string() };
    push_manifest(node, repo, &reference, OCI_MANIFEST, &manifest).await;
    PushedImage { config, layers: vec![layer], manifest, digest }
}

/// Uploads the empty config blob `{}` into `repo`.
pub async fn push_empty_config(node: &Node, repo: &str) -> Descriptor {
    let d = push_blob(node, repo, EMPTY_BYTES).await;
    assert_eq!(d, EMPTY_DIGEST);
    Descriptor { media_type: EMPTY_MEDIA_TYPE.into(), digest: d, size: 2 }
}

/// An artifact manifest (empty config) with one layer, an optional subject and annotations.
pub fn artifact_manifest(
    artifact_type: &str,
    layer: &Descriptor,
    subject: Option<&Descriptor>,
    annotations: Option<Value>,
) -> Value {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="},
        "layers": [layer.json()],
    });
    if let Some(s) = subject {
        v["subject"] = s.json();
    }
    if let Some(a) = annotations {
        v["annotations"] = a;
    }
    v
}

// ---------------------------------------------------------------- listings

/// GET /v2/<repo>/tags/list: `None` on 404, the tags otherwise.
pub async fn list_tags(node: &Node, repo: &str) -> Option<Vec<String>> {
    let resp = client().get(node.url(&format!("/v2/{repo}/tags/list"))).send().await.expect("tags list");
    if resp.status() == StatusCode::NOT_FOUND {
        return None;
    }
    let resp = expect_status(resp, 200).await;
    let v: Value = resp.json().await.expect("tags json");
    Some(
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().expect("tag string").to_string()).collect())
            .unwrap_or_default(),
    )
}

/// Asserts that `tag` is not listed (the repository may also be unknown).
pub async fn assert_tag_not_listed(node: &Node, repo: &str, tag: &str) {
    if let Some(tags) = list_tags(node, repo).await {
        assert!(!tags.iter().any(|t| t == tag), "tag {tag} still listed in {repo}: {tags:?}");
    }
}

pub async fn catalog(node: &Node) -> Vec<String> {
    let resp = expect_status(client().get(node.url("/v2/_catalog")).send().await.expect("catalog"), 200).await;
    let v: Value = resp.json().await.expect("catalog json");
    v["repositories"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().expect("repo string").to_string()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- data directory

/// Every regular file under `dir`, recursively; empty when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => out.push(p),
                Err(_) => {}
            }
        }
    }
    out
}

/// No leftover bytes of upload sessions under `<data_dir>/uploads/`.
pub fn assert_no_upload_files(node: &Node) {
    let files = files_under(&node.data_dir.join("uploads"));
    assert!(files.is_empty(), "leftover upload files: {files:?}");
}

/// Whether the node's blob store (its disk, or its prefix in a bucket) holds the blob.
pub fn holds_blob(node: &Node, digest: &str) -> bool {
    let hex = encoded(digest);
    node.stored_blob_names().iter().any(|p| p.contains(hex))
}

/// The node's blob store holds nothing named after this digest.
pub fn assert_no_blob_file(node: &Node, digest: &str) {
    let hex = encoded(digest);
    let files: Vec<_> = node.stored_blob_names().into_iter().filter(|p| p.contains(hex)).collect();
    assert!(files.is_empty(), "blob files left for {digest}: {files:?}");
}

/// The node's blob store holds nothing at all.
pub fn assert_no_blob_files(node: &Node) {
    let files = node.stored_blob_names();
    assert!(files.is_empty(), "unexpected blob files: {files:?}");
}

// ---------------------------------------------------------------- raw HTTP

/// A response read off a raw HTTP/1.1 connection.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn assert_oci_error(&self, context: &str, status: u16, code: &str) -> Value {
        check_error_parts(context, self.status, self.header("content-type"), &self.body, &[status], &[code])
    }
}

/// Sends one request with the path written verbatim (no URL normalisation),
/// `Connection: close`, and reads the whole response.
pub async fn raw_request(node: &Node, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", node.port);
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" || method == "PATCH" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write request");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    let deadline = std::time::Duration::from_secs(20);
    tokio::time::timeout(deadline, stream.read_to_end(&mut raw))
        .await
        .expect("raw response timed out")
        .expect("read response");
    parse_raw_response(&raw, method == "HEAD")
}

fn parse_raw_response(raw: &[u8], head: bool) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header terminator in response: {}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked && !head {
        body = dechunk(&body);
    }
    RawResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { break };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

// ---------------------------------------------------------------- region blob files

/// Where a node keeps a verified blob: `<data_dir>/blobs/<algorithm>/<first 2 hex>/<hex>`.
pub fn blob_path(node: &Node, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    node.data_dir.join("blobs").join(alg).join(&hex[..2]).join(hex)
}

/// The node's store holds `digest` (its file, or its object in the node's bucket) and
/// the bytes hash to it.
pub fn blob_file_verified(node: &Node, digest: &str) -> bool {
    if let Some(bucket) = &node.s3 {
        return bucket.blob(digest).is_some_and(|bytes| sha256_digest(&bytes) == digest);
    }
    match std::fs::read(blob_path(node, digest)) {
        Ok(bytes) => sha256_digest(&bytes) == digest,
        Err(_) => false,
    }
}

/// Polls until the node's store holds every digest with the right bytes (a file on its
/// disk, or an object in its bucket); returns how long it took, or which digests are
/// still missing (or wrong) at the deadline.
pub async fn wait_blob_files(node: &Node, digests: &[String], timeout: std::time::Duration) -> Result<std::time::Duration, String> {
    let t0 = std::time::Instant::now();
    loop {
        // Cheap existence check first; hash only when every file is there (objects in a
        // bucket are read and hashed each time).
        let all_there = node.s3.is_some() || digests.iter().all(|d| blob_path(node, d).exists());
        let missing: Vec<&String> = if all_there {
            digests.iter().filter(|d| !blob_file_verified(node, d)).collect()
        } else {
            digests.iter().filter(|d| !blob_path(node, d).exists()).collect()
        };
        if missing.is_empty() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            return Err(format!("{}: after {timeout:?} no verified blob file for {missing:?}", node.base));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// GET a blob and return its status and body (no assertions).
pub async fn get_blob(node: &Node, repo: &str, digest: &str) -> Result<(u16, Vec<u8>), String> {
    let resp = client()
        .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .map_err(|e| format!("GET {repo}@{digest}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| format!("GET {repo}@{digest} body (status {status}): {e}"))?;
    Ok((status, body.to_vec()))
}

/// An image pushed with layers of chosen sizes, and those layers' bytes.
pub struct SizedImage {
    pub image: PushedImage,
    pub layer_bytes: Vec<Vec<u8>>,
}

impl SizedImage {
    /// Digests of the config and every layer.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(self.image.config.digest.clone())
            .chain(self.image.layers.iter().map(|l| l.digest.clone()))
            .collect()
    }
}

/// Uploads a config and one layer per entry of `layer_sizes` (content derived from `seed`)
/// and pushes an OCI image manifest under `tag`.
pub async fn push_image_sized(node: &Node, repo: &str, tag: &str, seed: &str, layer_sizes: &[usize]) -> SizedImage {
    let config_bytes = to_bytes(&json!({"architecture": "amd64", "os": "linux", "seed": seed}));
    let config = push_blob_desc(node, repo, OCI_CONFIG, &config_bytes).await;
    let mut layers = Vec::new();
    let mut layer_bytes = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let bytes = test_bytes(&format!("layer-{seed}-{i}"), *size);
        layers.push(push_blob_desc(node, repo, OCI_LAYER, &bytes).await);
        layer_bytes.push(bytes);
    }
    let manifest = to_bytes(&image_manifest(&config, &layers));
    let digest = push_manifest(node, repo, tag, OCI_MANIFEST, &manifest).await;
    SizedImage { image: PushedImage { config, layers, manifest, digest }, layer_bytes }
}
