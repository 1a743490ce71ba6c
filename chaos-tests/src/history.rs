//! What the workload clients did and saw: every operation's invocation, completion and
//! result, on one clock, for the checkers to judge after the faults heal.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The bytes of one pushed blob, kept so the checkers can compare what regions serve.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub bytes: Arc<Vec<u8>>,
}

/// A manifest a client PUT (its exact bytes, the blobs it references).
#[derive(Clone, Debug)]
pub struct Image {
    pub repo: String,
    pub digest: String,
    pub manifest: Arc<Vec<u8>>,
    pub blobs: Vec<Blob>,
}

#[derive(Clone, Debug)]
pub enum OpKind {
    /// Blobs uploaded, then the manifest PUT under `tag` (a tag written once).
    Push { tag: String, image: Image },
    /// A fresh manifest over already-pushed blobs PUT under a shared `tag`.
    MoveTag { tag: String, image: Image },
    /// `DELETE /v2/<repo>/manifests/<tag>`.
    DeleteTag { repo: String, tag: String },
    /// `GET /v2/<repo>/manifests/<tag>`, optionally `Meridian-Consistency: linearizable`.
    ReadTag { repo: String, tag: String, linearizable: bool },
    /// Manifest and blobs of an acknowledged image, by digest.
    PullDigest { image: Image },
}

impl OpKind {
    /// The (repository, tag) a write or tag read is about.
    pub fn tag(&self) -> Option<(&str, &str)> {
        match self {
            OpKind::Push { tag, image } | OpKind::MoveTag { tag, image } => Some((&image.repo, tag)),
            OpKind::DeleteTag { repo, tag } | OpKind::ReadTag { repo, tag, .. } => Some((repo, tag)),
            OpKind::PullDigest { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Push { .. } => "push",
            OpKind::MoveTag { .. } => "move-tag",
            OpKind::DeleteTag { .. } => "delete-tag",
            OpKind::ReadTag { linearizable: true, .. } => "read-tag(lin)",
            OpKind::ReadTag { .. } => "read-tag(local)",
            OpKind::PullDigest { .. } => "pull-digest",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation took effect; for tag reads, the digest served (`None`: no such tag).
    Ok(Option<String>),
    /// Refused with a definite answer (a 4xx): it did not take effect.
    Failed(String),
    /// No definite answer (5xx, timeout, connection cut): it may or may not have taken effect.
    Unknown(String),
    /// The node served bytes that do not hash to the digest they were served under.
    BadBytes(String),
    /// Acknowledged content answered with 404 (recorded; judged by the checkers).
    NotFound(String),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub id: usize,
    pub client: usize,
    pub region: String,
    /// Microseconds since the history began.
    pub invoke: u64,
    pub complete: u64,
    pub kind: OpKind,
    pub outcome: Outcome,
}

impl Op {
    /// One line for reports: `#id c<client>@region [invoke..complete ms] kind tag → outcome`.
    pub fn line(&self) -> String {
        let what = match &self.kind {
            OpKind::Push { tag, image } | OpKind::MoveTag { tag, image } => format!("{}:{tag} := {}", image.repo, short(&image.digest)),
            OpKind::DeleteTag { repo, tag } => format!("{repo}:{tag} := ∅"),
            OpKind::ReadTag { repo, tag, .. } => format!("{repo}:{tag}"),
            OpKind::PullDigest { image } => format!("{}@{}", image.repo, short(&image.digest)),
        };
        let outcome = match &self.outcome {
            Outcome::Ok(Some(d)) => format!("ok {}", short(d)),
            Outcome::Ok(None) => "ok ∅".to_string(),
            Outcome::Failed(e) => format!("failed {e}"),
            Outcome::Unknown(e) => format!("unknown {e}"),
            Outcome::BadBytes(e) => format!("BAD BYTES {e}"),
            Outcome::NotFound(e) => format!("404 {e}"),
        };
        format!(
            "#{:<5} c{}@{:<3} [{:>8.1} .. {:>8.1} ms] {:<15} {what} → {outcome}",
            self.id,
            self.client,
            self.region,
            self.invoke as f64 / 1000.0,
            self.complete as f64 / 1000.0,
            self.kind.name()
        )
    }
}

/// `sha256:0123456789ab` (enough to tell digests apart in a report).
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// A history shared by all clients of a run.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    pub fn new() -> History {
        History { start: Instant::now(), ops: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Microseconds since the history began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn record(&self, client: usize, region: &str, invoke: u64, kind: OpKind, outcome: Outcome) {
        let complete = self.now();
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let id = ops.len();
        ops.push(Op { id, client, region: region.to_string(), invoke, complete, kind, outcome });
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts by operation and outcome, for the scenario's report.
    pub fn summary(&self) -> String {
        use std::collections::BTreeMap;
        let mut counts: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
        for op in self.ops() {
            let outcome = match op.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed(_) => "failed",
                Outcome::Unknown(_) => "unknown",
                Outcome::BadBytes(_) => "bad-bytes",
                Outcome::NotFound(_) => "404",
            };
            *counts.entry((op.kind.name(), outcome)).or_default() += 1;
        }
        let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((kind, outcome), n) in counts {
            by_kind.entry(kind).or_default().push(format!("{n} {outcome}"));
        }
        by_kind.into_iter().map(|(k, v)| format!("{k}: {}", v.join(", "))).collect::<Vec<_>>().join("; ")
    }
}
