//! Workload clients: in every region, pushes of small unique images, tag moves and
//! deletes on a few shared tags, tag reads (local and linearizable) and pulls by digest
//! of what any region acknowledged. Every operation lands in the [`History`].
//!
//! Clients talk plain HTTP to their region's node, the way docker or skopeo would, with
//! a per-request timeout; a timeout or a 5xx is recorded as an unknown outcome, never
//! retried behind the checker's back.

use crate::harness::oci::{sha256_digest, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
use crate::history::{Blob, History, Image, OpKind, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The repository every client writes to (so tag moves can reuse any client's blobs).
pub const REPO: &str = "chaos/app";

/// The manifest types the workload and the checkers accept.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub clients_per_region: usize,
    /// Tags every client moves, deletes and reads: `shared-0` …
    pub shared_tags: usize,
    /// Pause between one client's operations.
    pub think: Duration,
    /// Size range of each pushed layer.
    pub layer_bytes: std::ops::Range<usize>,
    /// Per-request timeout (a write may wait for a Raft commit: above `write_timeout_ms`).
    pub request_timeout: Duration,
}

impl WorkloadConfig {
    pub fn new(seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            clients_per_region: 2,
            shared_tags: 3,
            think: Duration::from_millis(60),
            layer_bytes: 256..16 * 1024,
            request_timeout: Duration::from_secs(8),
        }
    }
}

pub fn shared_tag(i: usize) -> String {
    format!("shared-{i}")
}

/// Running clients; [`Workload::stop`] ends them and returns the history.
pub struct Workload {
    pub history: History,
    cfg: WorkloadConfig,
    acked: Arc<Mutex<Vec<Image>>>,
    clients: Vec<ClientHandle>,
}

/// A running client: its region, how to stop it, and its task.
struct ClientHandle {
    region: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Workload {
    /// Starts `clients_per_region` clients against each `(region, base URL)`.
    pub fn start(regions: &[(String, String)], cfg: WorkloadConfig) -> Workload {
        let mut w = Workload { history: History::new(), cfg, acked: Default::default(), clients: Vec::new() };
        for (region, base) in regions {
            w.add_clients(region, base);
        }
        w
    }

    /// More clients, e.g. for a region added mid-run.
    pub fn add_clients(&mut self, region: &str, base: &str) {
        for _ in 0..self.cfg.clients_per_region {
            let id = self.clients.len();
            let client = Client {
                id,
                region: region.to_string(),
                base: base.to_string(),
                http: reqwest::Client::builder().timeout(self.cfg.request_timeout).build().expect("http client"),
                rng: StdRng::seed_from_u64(self.cfg.seed.wrapping_mul(1_000_003).wrapping_add(id as u64)),
                history: self.history.clone(),
                acked: self.acked.clone(),
                own: Vec::new(),
                seq: 0,
                shared_tags: self.cfg.shared_tags,
                layer_bytes: self.cfg.layer_bytes.clone(),
            };
            let think = self.cfg.think;
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(client.run(think, stopped));
            self.clients.push(ClientHandle { region: region.to_string(), stop, task });
        }
    }

    /// Every image some client had acknowledged so far.
    pub fn acknowledged(&self) -> Vec<Image> {
        self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the clients of `region` (e.g. before it is removed) after their current operation.
    pub async fn stop_region(&mut self, region: &str) {
        let (stopping, running): (Vec<ClientHandle>, Vec<ClientHandle>) =
            std::mem::take(&mut self.clients).into_iter().partition(|c| c.region == region);
        self.clients = running;
        for c in stopping {
            let _ = c.stop.send(true);
            let _ = c.task.await;
        }
    }

    /// Stops every client after its current operation and returns the history.
    pub async fn stop(self) -> History {
        for c in &self.clients {
            let _ = c.stop.send(true);
        }
        for c in self.clients {
            let _ = c.task.await;
        }
        self.history
    }
}

struct Client {
    id: usize,
    region: String,
    base: String,
    http: reqwest::Client,
    rng: StdRng,
    history: History,
    /// Images any client had acknowledged (pull targets).
    acked: Arc<Mutex<Vec<Image>>>,
    /// This client's acknowledged images (blobs it may reference in tag moves).
    own: Vec<Image>,
    seq: u64,
    shared_tags: usize,
    layer_bytes: std::ops::Range<usize>,
}

/// How one HTTP exchange ended.
enum Answer {
    Status(u16, reqwest::header::HeaderMap, Vec<u8>),
    /// Transport error, timeout, or a body cut short.
    Lost(String),
}

/// Sends a request and reads the whole body; `Lost` on a transport error or timeout.
async fn exchange(req: reqwest::RequestBuilder) -> Answer {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            match resp.bytes().await {
                Ok(b) => Answer::Status(status, headers, b.to_vec()),
                Err(e) => Answer::Lost(format!("body: {e}")),
            }
        }
        Err(e) => Answer::Lost(if e.is_timeout() { "timeout".to_string() } else { format!("transport: {e}") }),
    }
}

/// `GET /v2/<REPO>/manifests/<tag>` (optionally linearizable), as the tag register sees
/// it: the digest served (checked against the body), `None` for an unknown tag.
pub async fn read_tag(http: &reqwest::Client, base: &str, tag: &str, linearizable: bool) -> Outcome {
    let mut req = http.get(format!("{base}/v2/{REPO}/manifests/{tag}")).header("accept", ACCEPT);
    if linearizable {
        req = req.header("meridian-consistency", "linearizable");
    }
    match &exchange(req).await {
        Answer::Status(200, headers, body) => {
            let served = headers.get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or("");
            let actual = sha256_digest(body);
            if served != actual {
                Outcome::BadBytes(format!("manifest body hashes to {actual}, served as {served:?}"))
            } else {
                Outcome::Ok(Some(actual))
            }
        }
        Answer::Status(404, _, body) if error_code(body) == "MANIFEST_UNKNOWN" => Outcome::Ok(None),
        other => write_outcome(other, None),
    }
}

/// The OCI error code of a JSON error body (`?` when there is none).
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(String::from))
        .unwrap_or_else(|| "?".to_string())
}

/// A write's outcome: 2xx took effect, 4xx did not, anything else may have.
fn write_outcome(answer: &Answer, ok: Option<String>) -> Outcome {
    match answer {
        Answer::Status(s, _, _) if (200..300).contains(s) => Outcome::Ok(ok),
        Answer::Status(s, _, body) if (400..500).contains(s) => Outcome::Failed(format!("{s} {}", error_code(body))),
        Answer::Status(s, _, body) => Outcome::Unknown(format!("{s} {}", error_code(body))),
        Answer::Lost(e) => Outcome::Unknown(e.clone()),
    }
}

impl Client {
    async fn run(mut self, think: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let roll = self.rng.random_range(0..100);
            match roll {
                _ if self.own.is_empty() => self.push().await,
                0..=19 => self.push().await,
                20..=44 => self.move_tag().await,
                45..=49 => self.delete_tag().await,
                50..=79 => self.read_tag().await,
                _ => self.pull_digest().await,
            }
            tokio::select! {
                _ = tokio::time::sleep(think) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads one blob in a single POST; `Err` with the outcome when it did not land.
    async fn upload(&self, bytes: &[u8]) -> Result<Blob, Outcome> {
        let digest = sha256_digest(bytes);
        let req = self
            .http
            .post(self.url(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec());
        match exchange(req).await {
            Answer::Status(201, _, _) => Ok(Blob { digest, bytes: Arc::new(bytes.to_vec()) }),
            other => Err(write_outcome(&other, None)),
        }
    }

    fn manifest(config: &Blob, layer: &Blob, label: &str) -> Vec<u8> {
        let v = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.bytes.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.bytes.len()}],
            "annotations": {"org.meridian.chaos.write": label},
        });
        serde_json::to_vec(&v).expect("manifest json")
    }

    async fn put_manifest(&self, tag: &str, manifest: &[u8]) -> Answer {
        let req = self
            .http
            .put(self.url(&format!("/v2/{REPO}/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.to_vec());
        exchange(req).await
    }

    /// A unique image: config and layer blobs, then its manifest under a tag of its own.
    async fn push(&mut self) {
        self.seq += 1;
        let label = format!("c{}-{}", self.id, self.seq);
        let tag = format!("img-{label}");
        let invoke = self.history.now();
        let config_bytes = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "chaos": label}))
            .expect("config json");
        let mut layer_bytes = vec![0u8; self.rng.random_range(self.layer_bytes.clone())];
        self.rng.fill_bytes(&mut layer_bytes);
        let blobs = match (self.upload(&config_bytes).await, self.upload(&layer_bytes).await) {
            (Ok(c), Ok(l)) => vec![c, l],
            (Err(e), _) | (_, Err(e)) => {
                // The blobs are region-local and no manifest refers to them: not a tag write.
                let image = Image { repo: REPO.into(), digest: String::new(), manifest: Arc::new(Vec::new()), blobs: Vec::new() };
                let e = match e {
                    Outcome::Unknown(s) | Outcome::Failed(s) => Outcome::Failed(format!("blob upload: {s}")),
                    other => other,
                };
                self.history.record(self.id, &self.region, invoke, OpKind::Push { tag, image }, e);
                return;
            }
        };
        let manifest = Client::manifest(&blobs[0], &blobs[1], &label);
        let digest = sha256_digest(&manifest);
        let answer = self.put_manifest(&tag, &manifest).await;
        let outcome = write_outcome(&answer, Some(digest.clone()));
        let image = Image { repo: REPO.into(), digest, manifest: Arc::new(manifest), blobs };
        if outcome == Outcome::Ok(Some(image.digest.clone())) {
            self.own.push(image.clone());
            self.acked.lock().unwrap_or_else(|p| p.into_inner()).push(image.clone());
        }
        self.history.record(self.id, &self.region, invoke, OpKind::Push { tag, image }, outcome);
    }

    /// A fresh manifest (unique digest) over one of this client's images' blobs, PUT
    /// under a shared tag.
    async fn move_tag(&mut self) {
        self.seq += 1;
        let tag = shared_tag(self.rng.random_range(0..self.shared_tags));
        let base = self.own[self.rng.random_range(0..self.own.len())].clone();
        let label = format!("c{}-{}-{tag}", self.id, self.seq);
        let manifest = Client::manifest(&base.blobs[0], &base.blobs[1], &label);
        let digest = sha256_digest(&manifest);
        let invoke = self.history.now();
        let answer = self.put_manifest(&tag, &manifest).await;
        let outcome = write_outcome(&answer, Some(digest.clone()));
        let image = Image { repo: REPO.into(), digest, manifest: Arc::new(manifest), blobs: base.blobs.clone() };
        if matches!(outcome, Outcome::Ok(_)) {
            self.acked.lock().unwrap_or_else(|p| p.into_inner()).push(image.clone());
        }
        self.history.record(self.id, &self.region, invoke, OpKind::MoveTag { tag, image }, outcome);
    }

    async fn delete_tag(&mut self) {
        let tag = shared_tag(self.rng.random_range(0..self.shared_tags));
        let invoke = self.history.now();
        let answer = exchange(self.http.delete(self.url(&format!("/v2/{REPO}/manifests/{tag}")))).await;
        match &answer {
            // The delete went through Raft and found no such tag: a read of "absent".
            Answer::Status(404, _, body) if error_code(body) == "MANIFEST_UNKNOWN" => {
                let kind = OpKind::ReadTag { repo: REPO.into(), tag, linearizable: true };
                self.history.record(self.id, &self.region, invoke, kind, Outcome::Ok(None));
            }
            _ => {
                let outcome = write_outcome(&answer, None);
                self.history.record(self.id, &self.region, invoke, OpKind::DeleteTag { repo: REPO.into(), tag }, outcome);
            }
        }
    }

    async fn read_tag(&mut self) {
        let tag = shared_tag(self.rng.random_range(0..self.shared_tags));
        let linearizable = self.rng.random_bool(0.5);
        let invoke = self.history.now();
        let outcome = read_tag(&self.http, &self.base, &tag, linearizable).await;
        self.history.record(self.id, &self.region, invoke, OpKind::ReadTag { repo: REPO.into(), tag, linearizable }, outcome);
    }

    /// Manifest and blobs of an image some client had acknowledged, by digest.
    async fn pull_digest(&mut self) {
        let image = {
            let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            if acked.is_empty() {
                return;
            }
            acked[self.rng.random_range(0..acked.len())].clone()
        };
        let invoke = self.history.now();
        let outcome = self.pull(&image).await;
        self.history.record(self.id, &self.region, invoke, OpKind::PullDigest { image }, outcome);
    }

    async fn pull(&self, image: &Image) -> Outcome {
        let req = self.http.get(self.url(&format!("/v2/{}/manifests/{}", image.repo, image.digest))).header("accept", ACCEPT);
        match exchange(req).await {
            Answer::Status(200, _, body) if body == *image.manifest => {}
            Answer::Status(200, _, body) => {
                return Outcome::BadBytes(format!("manifest {} served {} bytes hashing to {}", image.digest, body.len(), sha256_digest(&body)))
            }
            Answer::Status(404, _, body) => return Outcome::NotFound(format!("manifest {}", error_code(&body))),
            other => return write_outcome(&other, None),
        }
        for blob in &image.blobs {
            match exchange(self.http.get(self.url(&format!("/v2/{}/blobs/{}", image.repo, blob.digest)))).await {
                Answer::Status(200, _, body) if body == *blob.bytes => {}
                Answer::Status(200, _, body) => {
                    return Outcome::BadBytes(format!("blob {} served {} bytes hashing to {}", blob.digest, body.len(), sha256_digest(&body)))
                }
                Answer::Status(404, _, body) => return Outcome::NotFound(format!("blob {}", error_code(&body))),
                other => return write_outcome(&other, None),
            }
        }
        Outcome::Ok(Some(image.digest.clone()))
    }
}
