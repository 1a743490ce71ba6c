//! The node's configuration: one typed struct with a default for every field.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config`), `MERIDIAN_*`
//! environment variables, command-line flags. The README's configuration table lists
//! exactly these fields; `config_keys_match_readme` keeps the two in step.

mod console;
pub use console::{ConsoleConfig, MAX_PAGE_SIZE};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the OCI Distribution API (HTTP/1.1 and h2c, or HTTPS with `tls_cert_file`) listens on.
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS on `listen` (with `tls_key_file`; reloaded on SIGHUP).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS on `listen`.
    pub tls_key_file: Option<PathBuf>,
    /// Directory holding RocksDB (`db/`), blobs (`blobs/`) and upload sessions (`uploads/`).
    pub data_dir: PathBuf,
    /// Name of this node's region.
    pub region: String,
    /// Raft node id of this node; unique in the cluster.
    pub node_id: u64,
    /// Address the node's gRPC services (Raft, forwarding, admin) listen on.
    pub grpc_listen: SocketAddr,
    /// Registry address other regions and clients are told about (default: `listen`).
    pub advertise_http_addr: Option<String>,
    /// gRPC address other regions use to reach this node (default: `grpc_listen`).
    pub advertise_grpc_addr: Option<String>,
    /// The registry URL clients use to reach this region (`https://eu.registry.example.com`),
    /// where blob pulls routed here are redirected (default: `http://` or, with
    /// `tls_cert_file`, `https://` + the advertised registry address).
    pub public_url: Option<String>,
    /// Nearest-region routing of blob pulls: client network (CIDR) → region name. A blob
    /// `GET` from a network mapped to another region that is up and holds the blob is
    /// redirected (307) to that region's `public_url`.
    pub routing: BTreeMap<String, String>,
    /// Mutual TLS on the gRPC links: this node's certificate chain (PEM), with
    /// `grpc_tls_key_file` and `grpc_tls_ca_file`; all three or none.
    pub grpc_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) for `grpc_tls_cert_file`.
    pub grpc_tls_key_file: Option<PathBuf>,
    /// The cluster CA (PEM): peers and admin clients must present a certificate it signed.
    pub grpc_tls_ca_file: Option<PathBuf>,
    /// gRPC addresses of existing members. Empty: a node without Raft state starts a
    /// new cluster. Otherwise it asks these members to add it as a region.
    pub join: Vec<String>,
    /// Peers reached at another address than the one they advertise, e.g. through a
    /// tunnel or a per-link proxy: advertised gRPC address → address dialled instead.
    pub dial_via: BTreeMap<String, String>,
    /// Bearer token the admin service requires; the admin service refuses every call when unset.
    pub admin_token: Option<String>,
    /// Accept admin calls from non-loopback peers (off: loopback only).
    pub admin_allow_remote: bool,
    /// Bandwidth cap for blob transfers from each source region, bytes per second (0: none).
    pub replication_bandwidth_limit: u64,
    /// Blob bytes this node lets each other node have in flight to it for background
    /// replication (the bulk lane's HTTP/2 window, shared by its streams), MiB: background
    /// copies from a peer run at most this much per round trip (16 MiB: ~93 MB/s at 180 ms), so raise it for fatter links.
    pub replication_window_mib: u32,
    /// `text` (human-readable) or `json` (one object per line).
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC endpoint for traces (e.g. `http://127.0.0.1:4317`); tracing export is off when empty.
    pub otlp_endpoint: Option<String>,
    /// Largest manifest body accepted, in bytes (larger ones get 413).
    pub max_manifest_bytes: usize,
    /// Largest blob a client may upload, in bytes (0: no cap). An upload that would pass
    /// it gets `413 SIZE_INVALID` and keeps nothing of the refused bytes. Copies from
    /// other regions are not capped: they are blobs the cluster already acknowledged.
    pub max_blob_bytes: u64,
    /// Upload sessions untouched for this many seconds are removed with their bytes.
    pub upload_timeout_secs: u64,
    /// Upload sessions one identity (user, robot, or client address without auth) may have
    /// open at once; more get `429 TOOMANYREQUESTS` (0: no cap).
    pub max_upload_sessions_per_identity: usize,
    /// A client must send a request's headers within this many seconds, or it is
    /// disconnected (slow-header clients).
    pub header_read_timeout_secs: u64,
    /// A request body (blob chunk, manifest) that delivers no bytes for this many seconds is
    /// cut off and nothing of it kept, so slow clients cannot hold sessions and tasks.
    pub body_idle_timeout_secs: u64,
    /// Raft timing and log retention.
    pub raft: RaftConfig,
    /// Authentication and authorization of the registry API.
    pub auth: AuthConfig,
    /// Garbage collection of blobs nothing references.
    pub gc: GcConfig,
    /// Soft delete and the pull times retention policies read.
    pub retention: RetentionConfig,
    /// Usage metering.
    pub usage: UsageConfig,
    /// Delivering webhook events.
    pub events: EventsConfig,
    /// Where this node keeps its region's blobs.
    pub storage: StorageConfig,
    /// The web console under `/ui/`.
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Blobs under `data_dir/blobs`.
    Fs,
    /// Blobs in an S3-compatible object store.
    S3,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `fs` (blobs in the data directory) or `s3` (an S3-compatible object store).
    pub kind: StorageKind,
    /// The bucket (required for `s3`).
    pub bucket: String,
    /// Key prefix inside the bucket, so regions or clusters can share one bucket.
    pub prefix: String,
    /// The store's URL (`http://127.0.0.1:3900` for a local Garage or MinIO); unset: AWS S3.
    pub endpoint: Option<String>,
    /// The store's region name (`garage` for Garage's default, `us-east-1` for MinIO).
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), which Garage and MinIO expect; off:
    /// virtual-hosted style (`bucket.endpoint/key`), which AWS S3 expects.
    pub path_style: bool,
    /// Access key id; unset: `credentials_file`, then `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Secret access key (with `access_key_id`).
    pub secret_access_key: Option<Secret>,
    /// An AWS shared credentials file (its `[default]` profile, or `AWS_PROFILE`'s).
    pub credentials_file: Option<PathBuf>,
    /// Answer blob GETs with `307` to a short-lived presigned URL of the object, so the
    /// bytes bypass the node (`s3` only).
    pub redirect: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Fs,
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: "us-east-1".to_string(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            credentials_file: None,
            redirect: false,
        }
    }
}

/// A secret setting: kept out of `Debug` output (and so out of logs).
#[derive(Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Hourly traffic buckets older than this many days are dropped.
    pub keep_days: u64,
    /// Each region sends its traffic figures at most this often (one Raft entry).
    pub record_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig { keep_days: 90, record_secs: 60 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// The wait after a webhook's first failed attempt; it doubles with each failure.
    pub backoff_initial_ms: u64,
    /// The longest wait between two attempts.
    pub backoff_max_ms: u64,
    /// The deliverer reports progress (one Raft entry) at most this often; after a leader
    /// change, at most this much is sent again.
    pub ack_interval_ms: u64,
    /// Parked events not re-sent within this long are dropped (0 keeps them for ever).
    pub parked_keep_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { backoff_initial_ms: 1000, backoff_max_ms: 300_000, ack_interval_ms: 500, parked_keep_secs: 7 * 86_400 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Above 0, a deleted manifest (by a client, an admin or a policy) goes to the trash
    /// for this many days (fractions allowed), restorable, its blobs kept; 0 deletes at once.
    pub soft_delete_days: f64,
    /// Each region sends the manifests pulled since its last batch at most this often
    /// (one Raft entry per region per interval, never one per pull).
    pub pull_record_secs: u64,
}

impl RetentionConfig {
    /// How long a deleted manifest stays in the trash; `None` without soft delete.
    pub fn trash_for(&self) -> Option<std::time::Duration> {
        (self.soft_delete_days.is_finite() && self.soft_delete_days > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.soft_delete_days * 86_400.0))
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { soft_delete_days: 0.0, pull_record_secs: 60 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between scheduled collections (the leader decides, every region sweeps);
    /// 0 turns the schedule off (`meridian admin gc run` still works).
    pub interval_secs: u64,
    /// A blob uploaded, mounted or left unreferenced within this many seconds is never
    /// collected, so a push that reuses it cannot race the collector.
    pub upload_grace_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { interval_secs: 3600, upload_grace_secs: 3600 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require credentials (off: anyone may pull and push — only for trusted networks).
    pub enabled: bool,
    /// The token service name: `service` in challenges, `iss` and `aud` of tokens.
    pub service: String,
    /// Token endpoint URL put in challenges (default: `http://<Host>/token` of the request).
    pub realm: Option<String>,
    /// Lifetime of issued bearer tokens, seconds (under 60 breaks older docker clients).
    pub token_ttl_secs: u64,
    /// Repository patterns anyone may pull without credentials (`public/*`, `*`).
    pub anonymous_pull: Vec<String>,
    /// Failed logins allowed per user name and per client address within a minute;
    /// beyond it logins get `429 TOOMANYREQUESTS` until the minute is over (0: no limit).
    pub failed_login_limit: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            service: "meridian".to_string(),
            realm: None,
            token_ttl_secs: 300,
            anonymous_pull: Vec::new(),
            failed_login_limit: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Leader heartbeat interval in milliseconds.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout in milliseconds.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and allow purging the log before it) every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, so lagging peers can catch up without one.
    pub max_logs_kept: u64,
    /// A write that cannot commit within this many milliseconds is answered 503.
    pub write_timeout_ms: u64,
    /// The leader batches concurrent writes into one entry (`meta::batching`); off, every
    /// write is its own entry (for comparison, or while in doubt).
    pub batch_writes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            tls_cert_file: None,
            tls_key_file: None,
            data_dir: PathBuf::from("./data"),
            region: "local".to_string(),
            node_id: 1,
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 6000)),
            advertise_http_addr: None,
            advertise_grpc_addr: None,
            public_url: None,
            routing: BTreeMap::new(),
            grpc_tls_cert_file: None,
            grpc_tls_key_file: None,
            grpc_tls_ca_file: None,
            join: Vec::new(),
            dial_via: BTreeMap::new(),
            admin_token: None,
            admin_allow_remote: false,
            replication_bandwidth_limit: 0,
            replication_window_mib: 16,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            otlp_endpoint: None,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 0,
            upload_timeout_secs: 24 * 3600,
            max_upload_sessions_per_identity: 256,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            raft: RaftConfig::default(),
            auth: AuthConfig::default(),
            gc: GcConfig::default(),
            retention: RetentionConfig::default(),
            usage: UsageConfig::default(),
            events: EventsConfig::default(),
            storage: StorageConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        // Sized for inter-region round trips of 20–200 ms: a heartbeat well under the
        // smallest election timeout, which is several worst-case round trips.
        RaftConfig {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1500,
            election_timeout_max_ms: 3000,
            snapshot_every: 10_000,
            max_logs_kept: 5_000,
            write_timeout_ms: 5_000,
            batch_writes: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid value {value:?} for environment variable {var}: {reason}")]
    Env { var: String, value: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub grpc_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// The certificate and key for HTTPS, when both are set; an error when only one is.
    pub fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => Err(ConfigError::Invalid("set both tls_cert_file and tls_key_file (HTTPS) or neither (plain HTTP)".into())),
        }
    }

    /// The gRPC mutual-TLS files, when all three are set; an error when only some are.
    pub fn grpc_tls_files(&self) -> Result<Option<(PathBuf, PathBuf, PathBuf)>, ConfigError> {
        match (&self.grpc_tls_cert_file, &self.grpc_tls_key_file, &self.grpc_tls_ca_file) {
            (Some(c), Some(k), Some(a)) => Ok(Some((c.clone(), k.clone(), a.clone()))),
            (None, None, None) => Ok(None),
            _ => Err(ConfigError::Invalid(
                "set all of grpc_tls_cert_file, grpc_tls_key_file and grpc_tls_ca_file (mutual TLS) or none".into(),
            )),
        }
    }

    /// `replication_window_mib` in bytes; between 1 MiB and 1 GiB (HTTP/2 windows stop below 2 GiB).
    pub fn replication_window_bytes(&self) -> Result<u32, ConfigError> {
        match self.replication_window_mib {
            1..=1024 => Ok(self.replication_window_mib << 20),
            other => Err(ConfigError::Invalid(format!("replication_window_mib = {other}: expected 1 to 1024"))),
        }
    }

    /// The registry address advertised to the cluster.
    pub fn http_addr(&self) -> String {
        self.advertise_http_addr.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The gRPC address advertised to the cluster.
    pub fn grpc_addr(&self) -> String {
        self.advertise_grpc_addr.clone().unwrap_or_else(|| self.grpc_listen.to_string())
    }

    /// The URL this region's clients reach it at: `public_url`, or one made of the
    /// advertised registry address. Checked: an `http(s)://` URL with a host and no query.
    pub fn public_url(&self) -> Result<String, ConfigError> {
        let url = match &self.public_url {
            Some(url) => url.trim().trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.tls_cert_file.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.http_addr())
            }
        };
        let invalid = |why: &str| ConfigError::Invalid(format!("public_url {url:?}: {why}"));
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(|| invalid("must start with http:// or https://"))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || rest.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("expected scheme://host[:port][/path] without a query"));
        }
        Ok(url)
    }

    /// The `[routing]` table, checked: each key a CIDR (`10.20.0.0/16`, `2001:db8::/32`) or
    /// a single address, each value a region name.
    pub fn routing_table(&self) -> Result<Vec<(ipnet::IpNet, String)>, ConfigError> {
        let mut table = Vec::with_capacity(self.routing.len());
        for (network, region) in &self.routing {
            let net = network
                .trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| network.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid(format!("[routing] key {network:?} is not a CIDR (e.g. \"10.20.0.0/16\")")))?;
            if region.trim().is_empty() {
                return Err(ConfigError::Invalid(format!("[routing] {network:?}: empty region name")));
            }
            table.push((net.trunc(), region.trim().to_string()));
        }
        Ok(table)
    }

    /// The blob store as other nodes would name it, when they can share it: an S3 bucket
    /// and prefix at an endpoint (`s3://bucket/prefix at http://…`, or `at AWS <region>`).
    /// `None` for blobs on this node's own disk. Nodes of one region must report the same
    /// (a region's nodes all read and write one store).
    pub fn shared_store(&self) -> Option<String> {
        match self.storage.kind {
            StorageKind::Fs => None,
            StorageKind::S3 => {
                let prefix = self.storage.prefix.trim_matches('/');
                let at = match &self.storage.endpoint {
                    Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
                    None => format!("AWS {}", self.storage.region),
                };
                Some(format!("s3://{}/{} at {}", self.storage.bucket, prefix, at))
            }
        }
    }

    /// Builds the effective configuration from all layers.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match &overrides.config_file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply_env(std::env::vars())?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(grpc) = overrides.grpc_listen {
            config.grpc_listen = grpc;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })
    }

    /// `MERIDIAN_<KEY>` for top-level keys, `MERIDIAN_<TABLE>_<KEY>` for the keys of
    /// `[raft]`, `[auth]`, `[gc]`, `[retention]`, `[usage]`, `[events]`, `[storage]` and `[console]`.
    pub fn apply_env(&mut self, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
        for (var, value) in vars {
            let Some(key) = var.strip_prefix("MERIDIAN_") else { continue };
            let bad = |reason: String| ConfigError::Env { var: var.clone(), value: value.clone(), reason };
            fn num<T: std::str::FromStr>(v: &str) -> Result<T, String>
            where
                T::Err: std::fmt::Display,
            {
                v.parse::<T>().map_err(|e| e.to_string())
            }
            match key {
                "LISTEN" => self.listen = num(&value).map_err(bad)?,
                "DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "TLS_CERT_FILE" => self.tls_cert_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty()),
                "TLS_KEY_FILE" => self.tls_key_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty()),
                "REGION" => self.region = value.clone(),
                "NODE_ID" => self.node_id = num(&value).map_err(bad)?,
                "GRPC_LISTEN" => self.grpc_listen = num(&value).map_err(bad)?,
                "ADVERTISE_HTTP_ADDR" => self.advertise_http_addr = Some(value.clone()).filter(|v| !v.is_empty()),
                "ADVERTISE_GRPC_ADDR" => self.advertise_grpc_addr = Some(value.clone()).filter(|v| !v.is_empty()),
                "GRPC_TLS_CERT_FILE" => self.grpc_tls_cert_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty()),
                "GRPC_TLS_KEY_FILE" => self.grpc_tls_key_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty()),
                "GRPC_TLS_CA_FILE" => self.grpc_tls_ca_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty()),
                "JOIN" => {
                    self.join = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                }
                "DIAL_VIA" => {
                    let mut map = BTreeMap::new();
                    for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (from, to) = pair.split_once('=').ok_or_else(|| bad("expected ADVERTISED=DIALED,…".into()))?;
                        map.insert(from.trim().to_string(), to.trim().to_string());
                    }
                    self.dial_via = map;
                }
                "PUBLIC_URL" => self.public_url = Some(value.clone()).filter(|v| !v.is_empty()),
                "ROUTING" => {
                    let mut map = BTreeMap::new();
                    for pair in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        let (network, region) = pair.split_once('=').ok_or_else(|| bad("expected CIDR=REGION,…".into()))?;
                        map.insert(network.trim().to_string(), region.trim().to_string());
                    }
                    self.routing = map;
                }
                "ADMIN_TOKEN" => self.admin_token = Some(value.clone()).filter(|v| !v.is_empty()),
                "ADMIN_ALLOW_REMOTE" => self.admin_allow_remote = num(&value).map_err(bad)?,
                "REPLICATION_BANDWIDTH_LIMIT" => self.replication_bandwidth_limit = num(&value).map_err(bad)?,
                "REPLICATION_WINDOW_MIB" => self.replication_window_mib = num(&value).map_err(bad)?,
                "LOG_FORMAT" => {
                    self.log_format = match value.as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => return Err(bad("expected text or json".into())),
                    }
                }
                "LOG_LEVEL" => self.log_level = value.clone(),
                "OTLP_ENDPOINT" => {
                    self.otlp_endpoint = if value.is_empty() { None } else { Some(value.clone()) }
                }
                "MAX_MANIFEST_BYTES" => self.max_manifest_bytes = num(&value).map_err(bad)?,
                "MAX_BLOB_BYTES" => self.max_blob_bytes = num(&value).map_err(bad)?,
                "UPLOAD_TIMEOUT_SECS" => self.upload_timeout_secs = num(&value).map_err(bad)?,
                "MAX_UPLOAD_SESSIONS_PER_IDENTITY" => self.max_upload_sessions_per_identity = num(&value).map_err(bad)?,
                "HEADER_READ_TIMEOUT_SECS" => self.header_read_timeout_secs = num(&value).map_err(bad)?,
                "BODY_IDLE_TIMEOUT_SECS" => self.body_idle_timeout_secs = num(&value).map_err(bad)?,
                "RAFT_HEARTBEAT_MS" => self.raft.heartbeat_ms = num(&value).map_err(bad)?,
                "RAFT_ELECTION_TIMEOUT_MIN_MS" => self.raft.election_timeout_min_ms = num(&value).map_err(bad)?,
                "RAFT_ELECTION_TIMEOUT_MAX_MS" => self.raft.election_timeout_max_ms = num(&value).map_err(bad)?,
                "RAFT_SNAPSHOT_EVERY" => self.raft.snapshot_every = num(&value).map_err(bad)?,
                "RAFT_MAX_LOGS_KEPT" => self.raft.max_logs_kept = num(&value).map_err(bad)?,
                "GC_INTERVAL_SECS" => self.gc.interval_secs = num(&value).map_err(bad)?,
                "GC_UPLOAD_GRACE_SECS" => self.gc.upload_grace_secs = num(&value).map_err(bad)?,
                "RETENTION_SOFT_DELETE_DAYS" => self.retention.soft_delete_days = num(&value).map_err(bad)?,
                "RETENTION_PULL_RECORD_SECS" => self.retention.pull_record_secs = num(&value).map_err(bad)?,
                "USAGE_KEEP_DAYS" => self.usage.keep_days = num(&value).map_err(bad)?,
                "USAGE_RECORD_SECS" => self.usage.record_secs = num(&value).map_err(bad)?,
                "EVENTS_BACKOFF_INITIAL_MS" => self.events.backoff_initial_ms = num(&value).map_err(bad)?,
                "EVENTS_BACKOFF_MAX_MS" => self.events.backoff_max_ms = num(&value).map_err(bad)?,
                "EVENTS_ACK_INTERVAL_MS" => self.events.ack_interval_ms = num(&value).map_err(bad)?,
                "EVENTS_PARKED_KEEP_SECS" => self.events.parked_keep_secs = num(&value).map_err(bad)?,
                "CONSOLE_ENABLED" => self.console.enabled = num(&value).map_err(bad)?,
                "CONSOLE_SESSION_TTL_SECS" => self.console.session_ttl_secs = num(&value).map_err(bad)?,
                "CONSOLE_IDLE_TIMEOUT_SECS" => self.console.idle_timeout_secs = num(&value).map_err(bad)?,
                "CONSOLE_PAGE_SIZE" => self.console.page_size = num(&value).map_err(bad)?,
                "CONSOLE_MANAGE_IDENTITIES" => self.console.manage_identities = num(&value).map_err(bad)?,
                "AUTH_ENABLED" => self.auth.enabled = num(&value).map_err(bad)?,
                "AUTH_SERVICE" => self.auth.service = value.clone(),
                "AUTH_REALM" => self.auth.realm = Some(value.clone()).filter(|v| !v.is_empty()),
                "AUTH_TOKEN_TTL_SECS" => self.auth.token_ttl_secs = num(&value).map_err(bad)?,
                "AUTH_FAILED_LOGIN_LIMIT" => self.auth.failed_login_limit = num(&value).map_err(bad)?,
                "AUTH_ANONYMOUS_PULL" => {
                    self.auth.anonymous_pull =
                        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                }
                "RAFT_WRITE_TIMEOUT_MS" => self.raft.write_timeout_ms = num(&value).map_err(bad)?,
                "RAFT_BATCH_WRITES" => self.raft.batch_writes = num(&value).map_err(bad)?,
                "STORAGE_KIND" => {
                    self.storage.kind = match value.as_str() {
                        "fs" => StorageKind::Fs,
                        "s3" => StorageKind::S3,
                        _ => return Err(bad("expected fs or s3".into())),
                    }
                }
                "STORAGE_BUCKET" => self.storage.bucket = value.clone(),
                "STORAGE_PREFIX" => self.storage.prefix = value.clone(),
                "STORAGE_ENDPOINT" => self.storage.endpoint = Some(value.clone()).filter(|v| !v.is_empty()),
                "STORAGE_REGION" => self.storage.region = value.clone(),
                "STORAGE_PATH_STYLE" => self.storage.path_style = num(&value).map_err(bad)?,
                "STORAGE_ACCESS_KEY_ID" => self.storage.access_key_id = Some(value.clone()).filter(|v| !v.is_empty()),
                "STORAGE_SECRET_ACCESS_KEY" => {
                    self.storage.secret_access_key = Some(Secret::new(value.clone())).filter(|v| !v.expose().is_empty())
                }
                "STORAGE_REDIRECT" => self.storage.redirect = num(&value).map_err(bad)?,
                "STORAGE_CREDENTIALS_FILE" => {
                    self.storage.credentials_file = Some(PathBuf::from(&value)).filter(|p| !p.as_os_str().is_empty())
                }
                // Other MERIDIAN_* variables (e.g. test knobs) are not configuration.
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("meridian-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:7000\"\nregion = \"eu\"\n[raft]\nheartbeat_ms = 100\n").unwrap();
        let mut c = Config::from_file(&file).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.region, "eu");
        assert_eq!(c.raft.heartbeat_ms, 100);
        assert_eq!(c.raft.election_timeout_min_ms, RaftConfig::default().election_timeout_min_ms);
        c.apply_env(vec![("MERIDIAN_REGION".to_string(), "us".to_string())].into_iter()).unwrap();
        assert_eq!(c.region, "us");
        let err = c.apply_env(vec![("MERIDIAN_NODE_ID".to_string(), "x".to_string())].into_iter());
        assert!(err.is_err());
        c.apply_env(vec![("MERIDIAN_DIAL_VIA".to_string(), "127.0.0.1:6002=127.0.0.1:7102".to_string())].into_iter()).unwrap();
        assert_eq!(c.dial_via.get("127.0.0.1:6002").map(String::as_str), Some("127.0.0.1:7102"));
        std::fs::write(&file, "bogus_key = 1\n").unwrap();
        assert!(Config::from_file(&file).is_err());
    }

    #[test]
    fn replication_window_is_bounded() {
        let mut c = Config::default();
        assert_eq!(c.replication_window_bytes().unwrap(), crate::peers::DEFAULT_REPLICATION_WINDOW);
        c.apply_env(vec![("MERIDIAN_REPLICATION_WINDOW_MIB".to_string(), "64".to_string())].into_iter()).unwrap();
        assert_eq!(c.replication_window_bytes().unwrap(), 64 << 20);
        // 0 would stall every background transfer; 2 GiB and beyond is past HTTP/2's window.
        for bad in [0, 1025, 4096] {
            c.replication_window_mib = bad;
            assert!(c.replication_window_bytes().is_err(), "{bad} MiB accepted");
        }
    }

    #[test]
    fn storage_settings_layer_and_the_secret_stays_out_of_debug_output() {
        let mut c: Config = toml::from_str(
            "[storage]\nkind = \"s3\"\nbucket = \"blobs\"\nendpoint = \"http://127.0.0.1:3900\"\npath_style = true\nsecret_access_key = \"s3cr3t-value\"\naccess_key_id = \"GK1\"\n",
        )
        .unwrap();
        assert_eq!(c.storage.kind, StorageKind::S3);
        assert!(c.storage.path_style);
        assert_eq!(c.storage.secret_access_key.as_ref().map(Secret::expose), Some("s3cr3t-value"));
        let vars = [("MERIDIAN_STORAGE_PREFIX", "eu/"), ("MERIDIAN_STORAGE_SECRET_ACCESS_KEY", "other-s3cr3t")];
        c.apply_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(c.storage.prefix, "eu/");
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cr3t"), "the secret leaked into {printed}");
        assert!(printed.contains("<redacted>"));
        let bad = c.apply_env(std::iter::once(("MERIDIAN_STORAGE_KIND".to_string(), "tape".to_string())));
        assert!(bad.is_err());
    }

    #[test]
    fn public_url_and_routing_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.public_url().unwrap(), "http://127.0.0.1:5000");
        c.advertise_http_addr = Some("eu.internal:5000".into());
        c.tls_cert_file = Some("cert.pem".into());
        assert_eq!(c.public_url().unwrap(), "https://eu.internal:5000");
        c.public_url = Some("https://eu.registry.example.com/".into());
        assert_eq!(c.public_url().unwrap(), "https://eu.registry.example.com");
        for bad in ["eu.registry.example.com", "ftp://x", "https://", "https://x?y=1", "https://a b"] {
            c.public_url = Some(bad.into());
            assert!(c.public_url().is_err(), "{bad}");
        }
        c.apply_env(vec![("MERIDIAN_ROUTING".to_string(), "10.20.0.0/16=eu, 2001:db8::1=ap".to_string())].into_iter()).unwrap();
        let table = c.routing_table().unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.iter().any(|(n, r)| n.to_string() == "2001:db8::1/128" && r == "ap"));
        c.routing.insert("10.1.2.3/8".into(), "us".into());
        assert_eq!(c.routing_table().unwrap().iter().find(|(_, r)| r == "us").unwrap().0.to_string(), "10.0.0.0/8");
        c.routing.insert("not-a-network".into(), "us".into());
        assert!(c.routing_table().is_err());
        assert!(c.apply_env(vec![("MERIDIAN_ROUTING".to_string(), "10.0.0.0/8".to_string())].into_iter()).is_err());
    }

    /// Every configuration key appears in the README's configuration table.
    #[test]
    fn config_keys_match_readme() {
        let readme = include_str!("../../../README.md");
        let keys = [
            "listen", "tls_cert_file", "tls_key_file", "data_dir", "region", "node_id", "grpc_listen", "advertise_http_addr",
            "advertise_grpc_addr", "public_url", "routing", "grpc_tls_cert_file", "grpc_tls_key_file", "grpc_tls_ca_file", "join", "dial_via", "admin_token", "admin_allow_remote", "replication_bandwidth_limit", "replication_window_mib", "log_format", "log_level", "otlp_endpoint",
            "max_manifest_bytes", "max_blob_bytes", "upload_timeout_secs", "max_upload_sessions_per_identity", "header_read_timeout_secs", "body_idle_timeout_secs", "raft.heartbeat_ms",
            "raft.election_timeout_min_ms", "raft.election_timeout_max_ms", "raft.snapshot_every",
            "raft.max_logs_kept", "raft.write_timeout_ms", "raft.batch_writes", "auth.enabled", "auth.service", "auth.realm",
            "auth.token_ttl_secs", "auth.anonymous_pull", "auth.failed_login_limit", "gc.interval_secs",
            "gc.upload_grace_secs", "retention.soft_delete_days", "retention.pull_record_secs",
            "usage.keep_days", "usage.record_secs", "events.backoff_initial_ms", "events.backoff_max_ms",
            "events.ack_interval_ms", "events.parked_keep_secs", "storage.kind", "storage.bucket", "storage.prefix",
            "storage.endpoint", "storage.region", "storage.path_style", "storage.access_key_id",
            "storage.secret_access_key", "storage.credentials_file", "storage.redirect",
            "console.enabled", "console.session_ttl_secs", "console.idle_timeout_secs", "console.page_size",
            "console.manage_identities",
        ];
        for key in keys {
            assert!(readme.contains(&format!("`{key}`")), "README lacks config key {key}");
        }
        // The list above must itself be complete: serialize defaults and count fields.
        let defaults = format!("{:?}", Config::default());
        // + 8: the `raft`, `auth`, `gc`, `retention`, `usage`, `events`, `storage` and `console` tables.
        assert_eq!(defaults.matches(": ").count(), keys.len() + 8, "a config field is missing from the README check");
    }
}
