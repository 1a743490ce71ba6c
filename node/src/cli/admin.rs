//! `meridian admin …`: the operator's client of the cluster's admin gRPC service
//! (`meridian.admin.AdminService`).
//!
//! Every call carries `authorization: Bearer <token>`. Output is a human-readable table by
//! default and one JSON document with `--json`. Exit codes: 0 on success, 1 when the service
//! cannot be reached or refuses/fails a call, 2 for usage errors (bad flags, no token, bad
//! address, malformed image reference, unknown role, no password on stdin, malformed grant
//! or duration).
//!
//! Regions, leadership, snapshots, status and replication live in [`cluster`]; users in
//! [`users`]; scope maps, robot tokens and signing keys in [`identities`]; garbage
//! collection in [`lifecycle`]; public URLs and nearest-region routing in [`endpoints`];
//! webhooks in [`webhooks`]; base-image dependents in [`images`].

mod cluster;
mod endpoints;
mod identities;
mod images;
mod lifecycle;
mod quotas;
mod retention;
mod units;
mod usage;
mod users;
mod webhooks;
pub use cluster::{
    check_image_reference, render_add, render_image, render_regions, render_remove, render_replication_status,
    render_status, LeaderCommand, RegionCommand, ReplicationCommand,
};
pub use identities::{KeyCommand, ScopeMapCommand, TokenCommand};
pub use images::ImageCommand;
pub use lifecycle::GcCommand;
pub use quotas::QuotaCommand;
pub use retention::{RetentionCommand, TrashCommand};
pub use users::{render_user_saved, render_users, UserChange, UserCommand};
pub use webhooks::WebhookCommand;

use clap::{Args, Subcommand};
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// The admin service's address when neither `--addr` nor `MERIDIAN_ADMIN_ADDR` is given.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:6000";
/// How long to wait for the connection to the admin service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for quick calls (init, list, snapshot, status).
const SHORT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for membership calls; adding a region waits for it to catch up.
const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for calls whose work grows with the store: a collection over a million
/// manifests, a snapshot of their metadata, take minutes.
const STORE_WIDE_CALL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Operate a cluster through its admin gRPC service.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Admin gRPC address of any node (http://host:port or host:port).
    #[arg(long, env = "MERIDIAN_ADMIN_ADDR", default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// Admin token, sent as `authorization: Bearer <token>`.
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The cluster CA (PEM), when the gRPC links use mutual TLS (`grpc_tls_ca_file`).
    #[arg(long, env = "MERIDIAN_ADMIN_TLS_CA", global = true, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), signed by the cluster CA.
    #[arg(long, env = "MERIDIAN_ADMIN_TLS_CERT", global = true, requires = "tls_ca")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "MERIDIAN_ADMIN_TLS_KEY", global = true, requires = "tls_ca")]
    pub tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What to ask the admin service.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Initialise a new cluster with the contacted node as its first region.
    Init,
    /// Add, remove or list regions.
    #[command(subcommand)]
    Region(RegionCommand),
    /// Move Raft leadership.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Take a Raft snapshot on the contacted node now.
    Snapshot,
    /// Show the cluster as the contacted node sees it.
    Status,
    /// Every region's public registry URL, whether it is up, and the routing table.
    Endpoints,
    /// Show how far blob replication has got.
    #[command(subcommand)]
    Replication(ReplicationCommand),
    /// Which images are built on an image (base-image updates).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Create, change, remove or list the registry's users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, update, remove or list scope maps (what robot tokens may do).
    #[command(subcommand)]
    ScopeMap(ScopeMapCommand),
    /// Create, revoke or list robot tokens (they log in as robot$NAME).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Rotate, retire or list the token-signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Garbage collection: run it now, or see each region's last sweep.
    #[command(subcommand)]
    Gc(GcCommand),
    /// Storage quotas per namespace: set, list, remove.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Retention policies: which tags and manifests are kept, and running them.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Soft delete's trash: list, restore, purge.
    #[command(subcommand)]
    Trash(TrashCommand),
    /// Stored, pushed, pulled and replicated bytes per repository, region or day.
    Usage(usage::UsageArgs),
    /// Webhooks: events (push, delete, …) POSTed to your endpoints, durably and in order.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// Why a command failed.
#[derive(Debug)]
enum CliError {
    /// The command line cannot be acted on (exit code 2).
    Usage(String),
    /// The admin service could not be reached.
    Connect { url: String, detail: String },
    /// The call got no answer before its deadline (the server may still finish it).
    Timeout(Duration),
    /// The admin service refused or failed the call.
    Status(tonic::Status),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    fn message(&self) -> String {
        match self {
            CliError::Usage(m) => format!("error: {m}"),
            CliError::Connect { url, detail } => format!("error: cannot reach the admin service at {url}: {detail}"),
            CliError::Timeout(d) => format!(
                "error: the admin service did not answer within {} s; the operation may still complete \
                 (check with `meridian admin status`)",
                d.as_secs()
            ),
            CliError::Status(status) => {
                let code = status.code();
                let text = if status.message().is_empty() { code.description() } else { status.message() };
                let mut out = format!("error: {text} (code: {code:?})");
                if code == tonic::Code::Unauthenticated || code == tonic::Code::PermissionDenied {
                    out.push_str("\nhint: check --token / MERIDIAN_ADMIN_TOKEN");
                }
                out
            }
        }
    }
}

/// Runs `meridian admin …` and returns the process exit code. Results go to stdout, errors
/// to stderr.
pub async fn run(args: AdminArgs) -> ExitCode {
    match execute(args).await {
        Ok(text) => {
            emit(&text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", e.message());
            e.exit_code()
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (e.g. `| head`).
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Turns what the operator typed into a URL for the gRPC client: `host:port` gets
/// `http://` in front, a trailing `/` is dropped, and only http URLs with a host are
/// accepted. `https://` is refused: the gRPC client is built without TLS and would send the
/// token in clear text to an address the operator believes is encrypted.
pub fn normalize_addr(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("the admin address is empty (use --addr or MERIDIAN_ADMIN_ADDR)".to_string());
    }
    let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("http://{trimmed}") };
    let url = with_scheme.trim_end_matches('/').to_string();
    let uri: Uri = url.parse().map_err(|e| format!("invalid admin address '{trimmed}': {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "invalid admin address '{trimmed}': https is not supported (this build has no TLS client); \
                 use http:// over a trusted network or a tunnel"
            ));
        }
        Some(other) => {
            return Err(format!("invalid admin address '{trimmed}': scheme '{other}' is not http"));
        }
        None => return Err(format!("invalid admin address '{trimmed}'")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => {}
        _ => return Err(format!("invalid admin address '{trimmed}': no host")),
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(format!("invalid admin address '{trimmed}': a path is not allowed"));
    }
    Ok(url)
}

/// The `authorization` metadata value, marked sensitive so it is never logged.
fn bearer(token: Option<&str>) -> Result<MetadataValue<Ascii>, CliError> {
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
        CliError::Usage("no admin token: pass --token or set MERIDIAN_ADMIN_TOKEN".to_string())
    })?;
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        CliError::Usage("the admin token contains characters that cannot be sent in a gRPC header".to_string())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An error and its sources as one line, without repeated messages.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// A connected admin client that signs every request.
struct Admin {
    client: AdminServiceClient<Channel>,
    auth: MetadataValue<Ascii>,
}

impl Admin {
    async fn connect(url: &str, auth: MetadataValue<Ascii>, tls: Option<ClientTlsConfig>) -> Result<Self, CliError> {
        let url = match (&tls, url.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => url.to_string(),
        };
        let url = url.as_str();
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| CliError::Usage(format!("invalid admin address '{url}': {}", error_chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| CliError::Usage(format!("TLS settings for '{url}': {}", error_chain(&e))))?;
        }
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(CliError::Connect { url: url.to_string(), detail: error_chain(&e) }),
            Err(_) => {
                return Err(CliError::Connect {
                    url: url.to_string(),
                    detail: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        };
        Ok(Admin { client: AdminServiceClient::new(channel), auth })
    }

    /// A request carrying the token. No `grpc-timeout` is sent: the deadline is the
    /// client's alone (see [`call`]), so a slow membership change is not cancelled
    /// half-way on the server when the operator stops waiting.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert("authorization", self.auth.clone());
        req
    }
}

/// Awaits a call for at most `timeout`.
async fn call<R>(
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
) -> Result<R, CliError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(CliError::Status(status)),
        Err(_) => Err(CliError::Timeout(timeout)),
    }
}

/// Performs the command and returns what to print.
async fn execute(args: AdminArgs) -> Result<String, CliError> {
    let auth = bearer(args.token.as_deref())?;
    // With the mutual-TLS flags the connection is TLS whichever scheme was typed, so
    // `https://` is accepted then (and only then: without them it would be a promise of
    // encryption the client cannot keep).
    let addr = match (&args.tls_ca, args.addr.trim().strip_prefix("https://")) {
        (Some(_), Some(rest)) => format!("http://{rest}"),
        _ => args.addr.clone(),
    };
    let url = normalize_addr(&addr).map_err(CliError::Usage)?;
    // A malformed image reference is a usage error whether or not the service is up.
    let mut args = args;
    if let AdminCommand::Replication(ReplicationCommand::Image { reference })
    | AdminCommand::Image(ImageCommand::Dependents { reference }) = &mut args.command
    {
        *reference = check_image_reference(reference).map_err(CliError::Usage)?;
    }
    // A user command checks its role and reads its password before connecting.
    let mut user_call = match &args.command {
        AdminCommand::User(cmd) => Some(users::prepare_user(cmd)?),
        _ => None,
    };
    // So does a scope map, token or key command its grants and durations.
    let mut identity_call = match &args.command {
        AdminCommand::ScopeMap(cmd) => Some(identities::prepare_scope_map(cmd)?),
        AdminCommand::Token(cmd) => Some(identities::prepare_token(cmd)?),
        AdminCommand::Key(cmd) => Some(identities::prepare_key(cmd)),
        _ => None,
    };
    // And a webhook change its URL, actions and durations (taken out of `args`: the
    // prepared call is what runs).
    let webhook_call = match matches!(args.command, AdminCommand::Webhook(_)) {
        true => match std::mem::replace(&mut args.command, AdminCommand::Status) {
            AdminCommand::Webhook(cmd) => Some(webhooks::prepare_webhook(cmd)?),
            _ => None,
        },
        false => None,
    };
    let tls = client_tls(&args)?;
    let admin = Admin::connect(&url, auth, tls).await?;
    let json = args.json;
    if let Some(prepared) = webhook_call {
        return webhooks::run_webhook(&admin, prepared, json).await;
    }
    match args.command {
        AdminCommand::Init => cluster::run_init(&admin, json).await,
        AdminCommand::Region(cmd) => cluster::run_region(&admin, cmd, json).await,
        AdminCommand::Leader(cmd) => cluster::run_leader(&admin, cmd, json).await,
        AdminCommand::Snapshot => cluster::run_snapshot(&admin, json).await,
        AdminCommand::Status => cluster::run_status(&admin, json).await,
        AdminCommand::Endpoints => endpoints::run_endpoints(&admin, json).await,
        AdminCommand::Replication(cmd) => cluster::run_replication(&admin, cmd, json).await,
        AdminCommand::Image(cmd) => images::run_image(&admin, cmd, json).await,
        AdminCommand::User(_) => {
            let prepared = user_call.take().ok_or_else(|| CliError::Usage("no user command".to_string()))?;
            users::run_user(&admin, prepared, json).await
        }
        AdminCommand::ScopeMap(_) | AdminCommand::Token(_) | AdminCommand::Key(_) => {
            let prepared = identity_call.take().ok_or_else(|| CliError::Usage("no identity command".to_string()))?;
            identities::run_identity(&admin, prepared, json).await
        }
        AdminCommand::Gc(cmd) => lifecycle::run_gc(&admin, cmd, json).await,
        AdminCommand::Quota(cmd) => quotas::run_quota(&admin, cmd, json).await,
        AdminCommand::Retention(cmd) => retention::run_retention(&admin, cmd, json).await,
        AdminCommand::Trash(cmd) => retention::run_trash(&admin, cmd, json).await,
        AdminCommand::Usage(args) => usage::run_usage(&admin, args, json).await,
        AdminCommand::Webhook(_) => Err(CliError::Usage("no webhook command".to_string())),
    }
}

/// The mutual-TLS client settings from `--tls-ca/--tls-cert/--tls-key`, if given.
fn client_tls(args: &AdminArgs) -> Result<Option<ClientTlsConfig>, CliError> {
    let (Some(ca), Some(cert), Some(key)) = (&args.tls_ca, &args.tls_cert, &args.tls_key) else { return Ok(None) };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))
    };
    Ok(Some(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .identity(Identity::from_pem(read(cert)?, read(key)?)),
    ))
}

// ------------------------------------------------------------------ JSON output

fn pretty(value: &Value) -> String {
    format!("{value:#}\n")
}

// ------------------------------------------------------------------ human output

/// A rate the server reported, with NaN, infinities and negatives shown as 0.
fn finite_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        0.0
    }
}

/// Bytes in binary units: `0 B`, `512 B`, `1.5 KiB`, `24.0 MiB`, `3.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    // Round first, so 1023.96 KiB becomes 1.0 MiB rather than "1024.0 KiB".
    while (value * 10.0).round() / 10.0 >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A byte rate in binary units per second (`0 B/s`, `1.2 MiB/s`).
pub fn human_rate(bytes_per_sec: f64) -> String {
    format!("{}/s", human_bytes(finite_rate(bytes_per_sec).round() as u64))
}

/// A cell for a text field the server may leave empty.
fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time (`2024-05-01T12:00:00Z`); `-` for 0,
/// the plain number past year 9999.
pub fn rfc3339_utc(unix: u64) -> String {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if unix == 0 {
        return "-".to_string();
    }
    if unix > MAX {
        return unix.to_string();
    }
    crate::auth::rfc3339(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_http_scheme() {
        assert_eq!(normalize_addr("127.0.0.1:6000").unwrap(), "http://127.0.0.1:6000");
        assert_eq!(normalize_addr("  node-1.internal:7000 ").unwrap(), "http://node-1.internal:7000");
        assert_eq!(normalize_addr("[::1]:6000").unwrap(), "http://[::1]:6000");
    }

    #[test]
    fn urls_are_kept_without_trailing_slash() {
        assert_eq!(normalize_addr("http://127.0.0.1:6000").unwrap(), "http://127.0.0.1:6000");
        assert_eq!(normalize_addr("http://127.0.0.1:6000/").unwrap(), "http://127.0.0.1:6000");
        assert_eq!(normalize_addr(DEFAULT_ADDR).unwrap(), DEFAULT_ADDR);
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(normalize_addr("").is_err());
        assert!(normalize_addr("   ").is_err());
        assert!(normalize_addr("ftp://host:6000").unwrap_err().contains("scheme"));
        assert!(normalize_addr("https://admin.example.com").unwrap_err().contains("https is not supported"));
        assert!(normalize_addr("http://").is_err());
        assert!(normalize_addr("host with spaces:6000").is_err());
        assert!(normalize_addr("http://host:6000/admin").unwrap_err().contains("path"));
    }

    #[test]
    fn missing_or_blank_token_is_a_usage_error() {
        for token in [None, Some(""), Some("   ")] {
            let err = bearer(token).unwrap_err();
            assert!(matches!(err, CliError::Usage(_)));
            assert!(err.message().contains("token"));
            assert_eq!(err.exit_code(), ExitCode::from(2));
        }
    }

    #[test]
    fn token_is_sent_as_bearer_and_never_shown() {
        let value = bearer(Some("s3cret")).unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer s3cret");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cret"));
        let err = bearer(Some("bad\ntoken")).unwrap_err();
        assert!(!err.message().contains("bad"));
    }

    #[test]
    fn status_errors_show_message_and_code() {
        let err = CliError::Status(tonic::Status::failed_precondition("region eu is not a member"));
        assert_eq!(err.message(), "error: region eu is not a member (code: FailedPrecondition)");
        assert_eq!(err.exit_code(), ExitCode::from(1));
        let err = CliError::Status(tonic::Status::unauthenticated("bad token"));
        assert!(err.message().starts_with("error: bad token (code: Unauthenticated)"));
        assert!(err.message().contains("MERIDIAN_ADMIN_TOKEN"));
    }

    #[test]
    fn connect_error_names_the_url() {
        let err = CliError::Connect { url: "http://127.0.0.1:1".into(), detail: "connection refused".into() };
        assert_eq!(err.message(), "error: cannot reach the admin service at http://127.0.0.1:1: connection refused");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(24 << 20), "24.0 MiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(human_bytes(3 * (1 << 30) + (1 << 29)), "3.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(human_rate(0.0), "0 B/s");
        assert_eq!(human_rate(2.5 * 1048576.0), "2.5 MiB/s");
        assert_eq!(human_rate(f64::NAN), "0 B/s");
        assert_eq!(human_rate(-5.0), "0 B/s");
        assert_eq!(human_rate(f64::INFINITY), "0 B/s");
    }

    #[test]
    fn created_times() {
        assert_eq!(rfc3339_utc(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339_utc(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(u64::MAX), u64::MAX.to_string());
    }
}
