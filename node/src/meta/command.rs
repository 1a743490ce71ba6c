//! The entries of Meridian's one history: every repository, manifest and tag change is
//! one of these commands, applied in log order on every node.

use super::events::{DeliveryStatus, DeliveryUpdate, Origin, ParkedRange, Seq, WebhookRecord};
use super::quotas::QuotaExceeded;
use super::retention::RetentionPolicy;
use super::usage::{Replicated, Traffic};
use super::records::{GcSweepReport, RobotRecord, ScopeMap, SigningKey, UserRecord};
use meridian_replication::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// One manifest PUT: its bytes, tags and everything it references (one entry, not one
    /// per blob — blobs stay region-local until a manifest references them).
    PutManifest(PutManifest),
    /// Deletes a manifest, every tag pointing at it in the repository, and its referrer
    /// entry, and gives back its references on blobs. `at_unix` is the proposer's clock:
    /// a blob left unreferenced is so from then (0 in entries from before it was sent).
    DeleteManifest {
        repo: String,
        digest: Digest,
        #[serde(default)]
        at_unix: u64,
        /// Soft delete: the manifest goes to the trash until then (Unix seconds), keeping
        /// its blobs, instead of going for good.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trash_until: Option<u64>,
        /// A retention policy's delete: refused (`StillNeeded`) when a tag points at the
        /// manifest by the time it applies.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        only_if_untagged: bool,
        /// Who asked (for the `delete` event).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    /// Removes one tag; the manifest stays. With `if_digest` (a retention policy's
    /// delete), only while the tag still points there.
    DeleteTag {
        repo: String,
        tag: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_digest: Option<Digest>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    /// Removes a blob from a repository. No longer proposed (a blob manifests reference
    /// cannot be deleted on its own); applied as before when found in an older log.
    UnlinkBlob {
        repo: String,
        digest: Digest,
        #[serde(default)]
        at_unix: u64,
    },
    /// Garbage collection's decision: forget these blobs in every region. Applying it
    /// re-checks each one — still referenced by nothing, and so since `grace_secs` before
    /// `at_unix` (the proposer's clock) — so a push or mount ordered before it keeps the
    /// blob. Each region then removes its copy (`lifecycle::sweep`).
    CollectBlobs { digests: Vec<Digest>, at_unix: u64, grace_secs: u64 },
    /// Sets a namespace's storage quota (creating it counts what the namespace holds).
    SetQuota { pattern: String, limit_bytes: u64 },
    RemoveQuota { pattern: String },
    /// Manifests a region served since its last batch (at most one entry per region per
    /// `retention.pull_record_secs`): their last-pulled time becomes `at_unix`.
    RecordPulls { at_unix: u64, pulls: Vec<(String, Digest)> },
    /// A region's traffic since its last batch (at most one entry per region per
    /// `usage.record_secs`), counted into the hour of `at_unix`; buckets from before
    /// `keep_from_unix` are dropped.
    RecordUsage { region: String, at_unix: u64, keep_from_unix: u64, repos: Vec<(String, Traffic)>, replicated: Vec<Replicated> },
    /// Creates or replaces a retention policy.
    PutRetentionPolicy { policy: RetentionPolicy },
    RemoveRetentionPolicy { name: String },
    /// Puts a trashed manifest back (with `tag` on it, when given).
    RestoreTrash {
        repo: String,
        digest: Digest,
        tag: Option<String>,
        at_unix: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
    },
    /// Deletes a trashed manifest for good, giving back its references; with
    /// `expired_only`, only if its time is up at `at_unix`. One per entry: reads in an
    /// apply see the state before the entry, so two manifests releasing a shared blob in
    /// one entry would both count from the same figure.
    PurgeTrash { repo: String, digest: Digest, at_unix: u64, expired_only: bool },
    /// What a region's garbage-collection sweep did (for `meridian admin gc status`).
    RecordGcSweep { report: GcSweepReport },
    /// Verified copies of these blobs have landed in `region` (batched).
    AddReplicas {
        region: String,
        digests: Vec<Digest>,
        /// The proposer's clock (ms), for the `replicated` events it completes.
        #[serde(default)]
        at_ms: u64,
    },
    /// `region`'s copy of a blob turned out corrupt and was quarantined.
    DropReplica { region: String, digest: Digest },
    /// Creates a user, or replaces one unless `create_only`.
    PutUser { user: UserRecord, create_only: bool },
    /// Removes a user; tokens issued to it stop working wherever this is applied.
    RemoveUser { name: String },
    /// Adds a token-signing key (unless one with that kid exists). The newest signs.
    AddSigningKey { key: SigningKey },
    /// Removes a signing key: tokens it signed stop verifying.
    RemoveSigningKey { kid: String },
    /// Creates or replaces a scope map.
    PutScopeMap { map: ScopeMap },
    RemoveScopeMap { name: String },
    /// Creates or replaces a robot token (its secrets included).
    PutRobot { robot: RobotRecord },
    RemoveRobot { name: String },
    /// Creates a webhook (`create_only`) or replaces an existing one.
    PutWebhook { webhook: WebhookRecord, create_only: bool },
    /// Removes a webhook, its progress and its parked deliveries.
    RemoveWebhook { name: String },
    /// The event deliverer's progress in one lane (batched, at most one entry per lane
    /// per `events.ack_interval_ms`); events every webhook is done with are dropped.
    AckEvents { lane: String, updates: Vec<DeliveryUpdate> },
    /// A webhook gave up on `from..=through` of a lane after its attempts: the events stay,
    /// parked, until re-sent; the webhook moves on.
    ParkEvents { name: String, lane: String, from: Seq, range: ParkedRange },
    /// Send a webhook's parked events again: all, or the range starting at `from`.
    ResendParked { name: String, only: Option<(String, Seq)> },
    /// A re-send of a parked range ended; delivered, the range goes.
    ParkedDone { name: String, lane: String, from: Seq, delivered: bool, status: DeliveryStatus },
    /// Parked ranges parked before `before_unix` (the proposer's clock) are dropped, with
    /// their events (`events.parked_keep_secs`).
    ExpireParked { before_unix: u64 },
    /// Several commands proposed at once at the leader (see `meta::batching`), applied in
    /// order as if each were its own entry: each sees what the ones before it wrote. Never
    /// nested. Only proposed while every member reports `STATE_VERSION` 3 or later.
    Batch(Vec<Command>),
}

/// The proposer's clock (Unix seconds) for entries that carry one: applying must not read
/// a clock of its own, or regions would disagree.
pub fn proposer_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Command {
    /// Changes webhooks or the outbox (the deliverer must look again).
    pub fn is_events(&self) -> bool {
        if let Command::Batch(cmds) = self {
            return cmds.iter().any(Command::is_events);
        }
        matches!(
            self,
            Command::PutWebhook { .. }
                | Command::RemoveWebhook { .. }
                | Command::ResendParked { .. }
                | Command::ParkEvents { .. }
                | Command::ParkedDone { .. }
                | Command::ExpireParked { .. }
        )
    }

    /// Changes identities or keys (verified-credential caches must look again).
    pub fn is_auth(&self) -> bool {
        if let Command::Batch(cmds) = self {
            return cmds.iter().any(Command::is_auth);
        }
        matches!(
            self,
            Command::PutUser { .. }
                | Command::RemoveUser { .. }
                | Command::AddSigningKey { .. }
                | Command::RemoveSigningKey { .. }
                | Command::PutScopeMap { .. }
                | Command::RemoveScopeMap { .. }
                | Command::PutRobot { .. }
                | Command::RemoveRobot { .. }
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutManifest {
    pub repo: String,
    pub digest: Digest,
    pub media_type: String,
    /// The exact bytes the client sent (manifests are JSON, hence UTF-8).
    pub body: String,
    pub tags: Vec<String>,
    /// Blobs (config, layers) the manifest references, with their sizes.
    pub blobs: Vec<BlobRef>,
    /// Manifests an index references; they must exist in the repository when applied.
    pub children: Vec<Digest>,
    /// The referrers API view of this manifest, when it has a `subject`.
    pub referrer: Option<Referrer>,
    /// Region whose blob store holds the referenced blobs.
    pub region: String,
    /// The proposer's clock: when the manifest and its tags were pushed (0 in entries
    /// from before it was sent).
    #[serde(default)]
    pub at_unix: u64,
    /// Who pushed (for the `push` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// An image or index (not an artifact, not a referrer): what finding its base needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageShape>,
}

/// What `meta::bases` needs to know of a pushed image to find what it was built on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageShape {
    /// Its layers in order, foreign layers included (empty for an index).
    #[serde(default)]
    pub layers: Vec<Digest>,
    /// `org.opencontainers.image.base.digest`, as annotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_digest: Option<String>,
    /// `org.opencontainers.image.base.name`, as annotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    /// The pushing region holds a verified copy (false for a blob mounted by digest
    /// from another region's copy).
    #[serde(default = "held_here_default")]
    pub held_here: bool,
}

fn held_here_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Referrer {
    pub subject: Digest,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// What applying a command did. Refusals are decided by the state at apply time, so every
/// node reaches the same answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum CommandResult {
    Applied,
    /// An index named a child manifest the repository does not have.
    ManifestBlobUnknown(Digest),
    ManifestUnknown,
    BlobUnknown,
    /// `create_only` met an existing user or key.
    AlreadyExists,
    /// The user (or robot, scope map, key) to change or remove does not exist.
    UserUnknown,
    /// A manifest PUT would take a namespace past its quota; nothing was written.
    QuotaExceeded(QuotaExceeded),
    /// `RemoveQuota` named a namespace without a quota.
    QuotaUnknown,
    /// A conditional delete found the manifest tagged, or the tag moved: nothing changed.
    StillNeeded,
    /// No such retention policy, or no such manifest in the trash.
    NotFound,
    /// `CollectBlobs` forgot this many blobs of this many bytes.
    Collected { blobs: u64, bytes: u64 },
    /// A `Batch`'s results, one per command in order.
    Batch(Vec<CommandResult>),
}
