//! `meridian admin …`: the operator's client of the cluster's admin gRPC service
//! (`meridian.admin.AdminService`).
//!
//! Every call carries `authorization: Bearer <token>`. Output is a human-readable table by
//! default and one JSON document with `--json`. Exit codes: 0 on success, 1 when the service
//! cannot be reached or refuses/fails a call, 2 for usage errors (bad flags, no token, bad
//! address, malformed image reference, unknown role, no password on stdin, malformed grant
//! or duration).
//!
//! Scope maps, robot tokens and signing keys live in [`identities`]; garbage collection in
//! [`lifecycle`].

mod identities;
mod lifecycle;
mod quotas;
mod retention;
mod units;
mod usage;
pub use identities::{KeyCommand, ScopeMapCommand, TokenCommand};
pub use lifecycle::GcCommand;
pub use quotas::QuotaCommand;
pub use retention::{RetentionCommand, TrashCommand};

use crate::auth::password::random_secret;
use crate::cli::table::{key_values, Align, Table};
use crate::meta::records::Role;
use clap::{Args, Subcommand};
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use meridian_proto::admin::{
    AddRegionReply, AddRegionRequest, Empty, ImageReplicationReply, ImageRequest, InitReply, ListRegionsReply,
    DrainRegionRequest, PutUserRequest, RegionInfo, RegionReplication, RemoveRegionReply, RemoveRegionRequest,
    ReplicationStatusReply, SnapshotReply, StatusReply, TransferLeaderReply, TransferLeaderRequest, UserInfo, UserName,
};
use serde_json::{json, Value};
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
/// Length of a password generated for `user add` / `user passwd`.
const GENERATED_PASSWORD_LEN: usize = 24;
/// Role names accepted on the command line.
const ROLE_NAMES: [&str; 3] = ["reader", "writer", "admin"];

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
    /// Show how far blob replication has got.
    #[command(subcommand)]
    Replication(ReplicationCommand),
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
}

/// `meridian admin user …`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a password is generated and shown once.
    Add {
        /// The user's name: 1-64 characters of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// What the user may do on every repository.
        #[arg(long, default_value = "reader", value_parser = ROLE_NAMES)]
        role: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password. Without --password-stdin a password is generated and shown once.
    Passwd {
        /// The user's name.
        name: String,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role.
    Role {
        /// The user's name.
        name: String,
        /// The new role.
        #[arg(value_parser = ROLE_NAMES)]
        role: String,
    },
    /// Remove a user (refused for the last user with role admin).
    Remove {
        /// The user's name.
        name: String,
    },
    /// List the users.
    List,
}

/// `meridian admin replication …`
#[derive(Subcommand, Debug)]
pub enum ReplicationCommand {
    /// Per region: Raft apply lag, blobs still to fetch, bytes received, failures.
    Status,
    /// Which regions hold every blob of an image.
    Image {
        /// The image: `repo:tag` or `repo@sha256:…`.
        reference: String,
    },
}

/// `meridian admin region …`
#[derive(Subcommand, Debug)]
pub enum RegionCommand {
    /// Add the node listening at GRPC_ADDR as a region (joins as learner, catches up, is promoted).
    Add {
        /// The new node's gRPC address (host:port).
        grpc_addr: String,
        /// Keep the region a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a region from the cluster (refused while it holds a blob's only copy).
    Remove {
        /// The region's name.
        name: String,
    },
    /// Copy every blob the region alone holds to the leader's region, so it can be removed.
    Drain {
        /// The region's name.
        name: String,
    },
    /// List the cluster's regions.
    List,
}

/// `meridian admin leader …`
#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand Raft leadership to REGION.
    Transfer {
        /// The region to become leader.
        region: String,
    },
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
    let url = normalize_addr(&args.addr).map_err(CliError::Usage)?;
    // A malformed image reference is a usage error whether or not the service is up.
    let mut args = args;
    if let AdminCommand::Replication(ReplicationCommand::Image { reference }) = &mut args.command {
        *reference = check_image_reference(reference).map_err(CliError::Usage)?;
    }
    // A user command checks its role and reads its password before connecting.
    let mut user_call = match &args.command {
        AdminCommand::User(cmd) => Some(prepare_user(cmd)?),
        _ => None,
    };
    // So does a scope map, token or key command its grants and durations.
    let mut identity_call = match &args.command {
        AdminCommand::ScopeMap(cmd) => Some(identities::prepare_scope_map(cmd)?),
        AdminCommand::Token(cmd) => Some(identities::prepare_token(cmd)?),
        AdminCommand::Key(cmd) => Some(identities::prepare_key(cmd)),
        _ => None,
    };
    let tls = client_tls(&args)?;
    let admin = Admin::connect(&url, auth, tls).await?;
    let mut client = admin.client.clone();
    let json = args.json;
    match args.command {
        AdminCommand::Init => {
            let reply = call(SHORT_CALL_TIMEOUT, client.init(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&init_json(&reply)) } else { render_init(&reply) })
        }
        AdminCommand::Region(RegionCommand::Add { grpc_addr, learner }) => {
            let req = admin.request(AddRegionRequest { grpc_addr, learner });
            let reply = call(LONG_CALL_TIMEOUT, client.add_region(req)).await?;
            Ok(if json { pretty(&add_json(&reply)) } else { render_add(&reply) })
        }
        AdminCommand::Region(RegionCommand::Drain { name }) => {
            let req = admin.request(DrainRegionRequest { name: name.clone() });
            let reply = call(LONG_CALL_TIMEOUT, client.drain_region(req)).await?;
            Ok(if json {
                pretty(&json!({
                    "drained": name,
                    "blobs_copied": reply.blobs_copied,
                    "bytes_copied": reply.bytes_copied,
                    "steps": reply.steps,
                }))
            } else {
                steps_text(&reply.steps)
            })
        }
        AdminCommand::Region(RegionCommand::Remove { name }) => {
            let req = admin.request(RemoveRegionRequest { name: name.clone() });
            let reply = call(LONG_CALL_TIMEOUT, client.remove_region(req)).await?;
            Ok(if json { pretty(&remove_json(&name, &reply)) } else { render_remove(&name, &reply) })
        }
        AdminCommand::Region(RegionCommand::List) => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.list_regions(req)).await?;
            Ok(if json { pretty(&list_json(&reply)) } else { render_regions(&reply.regions) })
        }
        AdminCommand::Leader(LeaderCommand::Transfer { region }) => {
            let req = admin.request(TransferLeaderRequest { name: region });
            let reply = call(LONG_CALL_TIMEOUT, client.transfer_leader(req)).await?;
            Ok(if json { pretty(&transfer_json(&reply)) } else { render_transfer(&reply) })
        }
        AdminCommand::Snapshot => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.snapshot(req)).await?;
            Ok(if json { pretty(&snapshot_json(&reply)) } else { render_snapshot(&reply) })
        }
        AdminCommand::Status => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.status(req)).await?;
            Ok(if json { pretty(&status_json(&reply)) } else { render_status(&reply) })
        }
        AdminCommand::Replication(ReplicationCommand::Status) => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.replication_status(req)).await?;
            Ok(if json { pretty(&replication_status_json(&reply)) } else { render_replication_status(&reply) })
        }
        AdminCommand::Replication(ReplicationCommand::Image { reference }) => {
            let req = admin.request(ImageRequest { reference });
            let reply = call(SHORT_CALL_TIMEOUT, client.replication_image(req)).await?;
            Ok(if json { pretty(&image_json(&reply)) } else { render_image(&reply) })
        }
        AdminCommand::User(_) => {
            let prepared = user_call.take().ok_or_else(|| CliError::Usage("no user command".to_string()))?;
            run_user(&admin, prepared, json).await
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
    }
}

/// Which change a `PutUser` call makes, for the confirmation line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange {
    Created,
    Password,
    Role,
}

/// A user command, checked and with its password in hand, ready to send.
enum UserCall {
    /// `generated` is a password made here, shown once in the output.
    Put { request: PutUserRequest, change: UserChange, generated: Option<String> },
    Remove(String),
    List,
}

/// A role typed on the command line (clap already restricts the values).
fn cli_role(role: &str) -> Result<Role, CliError> {
    Role::parse(role).ok_or_else(|| {
        CliError::Usage(format!("invalid role '{role}' (expected one of: {})", ROLE_NAMES.join(", ")))
    })
}

/// The password for `add`/`passwd`: the first line of stdin, or a generated one (returned
/// as the second value too, to be shown).
fn user_password(from_stdin: bool) -> Result<(String, Option<String>), CliError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let password = password_from_line(&line);
        if password.is_empty() {
            return Err(CliError::Usage("--password-stdin: stdin has no password on its first line".to_string()));
        }
        Ok((password.to_string(), None))
    } else {
        let generated = random_secret(GENERATED_PASSWORD_LEN);
        Ok((generated.clone(), Some(generated)))
    }
}

/// A line read from stdin without its line ending (`\n` or `\r\n`); other whitespace is
/// part of the password.
fn password_from_line(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

fn prepare_user(cmd: &UserCommand) -> Result<UserCall, CliError> {
    Ok(match cmd {
        UserCommand::Add { name, role, password_stdin } => {
            let role = cli_role(role)?;
            let (password, generated) = user_password(*password_stdin)?;
            let request = PutUserRequest { name: name.clone(), role: role.as_str().to_string(), password, replace: false };
            UserCall::Put { request, change: UserChange::Created, generated }
        }
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = user_password(*password_stdin)?;
            let request = PutUserRequest { name: name.clone(), role: String::new(), password, replace: true };
            UserCall::Put { request, change: UserChange::Password, generated }
        }
        UserCommand::Role { name, role } => {
            let role = cli_role(role)?;
            let request =
                PutUserRequest { name: name.clone(), role: role.as_str().to_string(), password: String::new(), replace: true };
            UserCall::Put { request, change: UserChange::Role, generated: None }
        }
        UserCommand::Remove { name } => UserCall::Remove(name.clone()),
        UserCommand::List => UserCall::List,
    })
}

async fn run_user(admin: &Admin, prepared: UserCall, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match prepared {
        UserCall::Put { request, change, generated } => {
            let reply = call(SHORT_CALL_TIMEOUT, client.put_user(admin.request(request))).await?;
            let generated = generated.as_deref();
            Ok(if json {
                pretty(&user_saved_json(&reply, generated))
            } else {
                render_user_saved(change, &reply, generated)
            })
        }
        UserCall::Remove(name) => {
            let req = admin.request(UserName { name: name.clone() });
            call(SHORT_CALL_TIMEOUT, client.remove_user(req)).await?;
            Ok(if json { pretty(&json!({ "removed": name })) } else { format!("user {name} removed\n") })
        }
        UserCall::List => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_users(admin.request(Empty {}))).await?;
            Ok(if json { pretty(&users_json(&reply.users)) } else { render_users(&reply.users) })
        }
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

/// Checks the shape of an image reference (`repo:tag` or `repo@algorithm:hex`) and
/// returns it trimmed. The server resolves it; this only catches what cannot be one.
pub fn check_image_reference(raw: &str) -> Result<String, String> {
    let reference = raw.trim();
    let bad = |why: &str| format!("invalid image reference '{reference}': {why} (expected repo:tag or repo@sha256:…)");
    if reference.is_empty() {
        return Err("the image reference is empty (expected repo:tag or repo@sha256:…)".to_string());
    }
    if reference.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace"));
    }
    let (repo, rest_ok) = match reference.split_once('@') {
        Some((repo, digest)) => {
            let ok = match digest.split_once(':') {
                Some((alg, hex)) => !alg.is_empty() && !hex.is_empty() && !hex.contains(':'),
                None => false,
            };
            if !ok {
                return Err(bad("the digest must be algorithm:hex"));
            }
            (repo, true)
        }
        None => {
            // The tag follows the last ':' after the last '/' (a registry host may have a port).
            let last = reference.rsplit('/').next().unwrap_or(reference);
            match last.rsplit_once(':') {
                Some((_, tag)) if !tag.is_empty() => (&reference[..reference.len() - tag.len() - 1], true),
                Some(_) => return Err(bad("the tag is empty")),
                None => (reference, false),
            }
        }
    };
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') {
        return Err(bad("no repository name"));
    }
    if !rest_ok {
        return Err(bad("no tag or digest"));
    }
    Ok(reference.to_string())
}


// ------------------------------------------------------------------ JSON output

fn pretty(value: &Value) -> String {
    format!("{value:#}\n")
}

fn region_json(r: &RegionInfo) -> Value {
    json!({
        "name": r.name,
        "node_id": r.node_id,
        "role": r.role,
        "http_addr": r.http_addr,
        "grpc_addr": r.grpc_addr,
        "last_applied": r.last_applied,
        "lag": r.lag,
        "reachable": r.reachable,
    })
}

fn regions_json(regions: &[RegionInfo]) -> Value {
    Value::Array(regions.iter().map(region_json).collect())
}

fn init_json(reply: &InitReply) -> Value {
    json!({ "message": reply.message })
}

fn add_json(reply: &AddRegionReply) -> Value {
    json!({
        "steps": reply.steps,
        "region": reply.region.as_ref().map(region_json),
    })
}

fn remove_json(name: &str, reply: &RemoveRegionReply) -> Value {
    json!({ "removed": name, "steps": reply.steps })
}

fn list_json(reply: &ListRegionsReply) -> Value {
    json!({ "regions": regions_json(&reply.regions) })
}

fn transfer_json(reply: &TransferLeaderReply) -> Value {
    json!({ "leader": reply.leader })
}

fn snapshot_json(reply: &SnapshotReply) -> Value {
    json!({ "last_included_index": reply.last_included_index })
}

fn status_json(reply: &StatusReply) -> Value {
    json!({
        "cluster": reply.cluster,
        "node_id": reply.node_id,
        "region": reply.region,
        "leader": reply.leader,
        "term": reply.term,
        "last_log_index": reply.last_log_index,
        "last_applied": reply.last_applied,
        "snapshot_index": reply.snapshot_index,
        "regions": regions_json(&reply.regions),
    })
}

fn region_replication_json(r: &RegionReplication) -> Value {
    json!({
        "name": r.name,
        "reachable": r.reachable,
        "apply_lag": r.apply_lag,
        "pending_blobs": r.pending_blobs,
        "pending_bytes": r.pending_bytes,
        "bytes_received": r.bytes_received,
        "throughput_bytes_per_sec": finite_rate(r.throughput_bytes_per_sec),
        "transfers_failed": r.transfers_failed,
        "digest_mismatches": r.digest_mismatches,
    })
}

fn replication_status_json(reply: &ReplicationStatusReply) -> Value {
    json!({ "regions": reply.regions.iter().map(region_replication_json).collect::<Vec<_>>() })
}

fn image_json(reply: &ImageReplicationReply) -> Value {
    json!({
        "repository": reply.repository,
        "digest": reply.digest,
        "blobs": reply.blobs,
        "bytes": reply.bytes,
        "regions": reply.regions.iter().map(|r| json!({
            "name": r.name,
            "present": r.present,
            "missing": r.missing,
            "complete": r.complete,
        })).collect::<Vec<_>>(),
    })
}

fn user_json(u: &UserInfo) -> Value {
    json!({ "name": u.name, "role": u.role, "created_unix": u.created_unix })
}

/// `{"users": [{"name", "role", "created_unix"}]}`
fn users_json(users: &[UserInfo]) -> Value {
    json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })
}

/// The saved user, with `"password"`: the generated one, or null when it came from stdin
/// or was not changed.
fn user_saved_json(u: &UserInfo, generated: Option<&str>) -> Value {
    let mut doc = user_json(u);
    doc["password"] = json!(generated);
    doc
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

/// The replication table: REGION, REACHABLE, APPLY LAG, PENDING BLOBS, PENDING BYTES,
/// RECEIVED, RATE, FAILED, MISMATCHES.
pub fn render_replication_status(reply: &ReplicationStatusReply) -> String {
    let mut table = Table::new(&[
        ("REGION", Align::Left),
        ("REACHABLE", Align::Left),
        ("APPLY LAG", Align::Right),
        ("PENDING BLOBS", Align::Right),
        ("PENDING BYTES", Align::Right),
        ("RECEIVED", Align::Right),
        ("RATE", Align::Right),
        ("FAILED", Align::Right),
        ("MISMATCHES", Align::Right),
    ]);
    for r in &reply.regions {
        table.row(vec![
            or_dash(&r.name),
            if r.reachable { "yes" } else { "no" }.to_string(),
            r.apply_lag.to_string(),
            r.pending_blobs.to_string(),
            human_bytes(r.pending_bytes),
            human_bytes(r.bytes_received),
            human_rate(r.throughput_bytes_per_sec),
            r.transfers_failed.to_string(),
            r.digest_mismatches.to_string(),
        ]);
    }
    table.render()
}

/// `repo@digest: N blobs, X bytes (human)`, a blank line, then REGION, PRESENT, MISSING, COMPLETE.
pub fn render_image(reply: &ImageReplicationReply) -> String {
    let blobs = if reply.blobs == 1 { "1 blob".to_string() } else { format!("{} blobs", reply.blobs) };
    let bytes = if reply.bytes == 1 { "1 byte".to_string() } else { format!("{} bytes", reply.bytes) };
    let size = if reply.bytes >= 1024 { format!(" ({})", human_bytes(reply.bytes)) } else { String::new() };
    let mut out = format!("{}@{}: {blobs}, {bytes}{size}

", or_dash(&reply.repository), or_dash(&reply.digest));
    let mut table = Table::new(&[
        ("REGION", Align::Left),
        ("PRESENT", Align::Right),
        ("MISSING", Align::Right),
        ("COMPLETE", Align::Left),
    ]);
    for r in &reply.regions {
        table.row(vec![
            or_dash(&r.name),
            r.present.to_string(),
            r.missing.to_string(),
            if r.complete { "yes" } else { "no" }.to_string(),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// A cell for a text field the server may leave empty.
fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// The regions table: NAME, NODE, ROLE, HTTP, GRPC, APPLIED, LAG, REACHABLE.
pub fn render_regions(regions: &[RegionInfo]) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("NODE", Align::Right),
        ("ROLE", Align::Left),
        ("HTTP", Align::Left),
        ("GRPC", Align::Left),
        ("APPLIED", Align::Right),
        ("LAG", Align::Right),
        ("REACHABLE", Align::Left),
    ]);
    for r in regions {
        table.row(vec![
            or_dash(&r.name),
            r.node_id.to_string(),
            or_dash(&r.role),
            or_dash(&r.http_addr),
            or_dash(&r.grpc_addr),
            r.last_applied.to_string(),
            r.lag.to_string(),
            if r.reachable { "yes" } else { "no" }.to_string(),
        ]);
    }
    table.render()
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

/// The users table: NAME, ROLE, CREATED (RFC 3339, UTC).
pub fn render_users(users: &[UserInfo]) -> String {
    let mut table = Table::new(&[("NAME", Align::Left), ("ROLE", Align::Left), ("CREATED", Align::Left)]);
    for u in users {
        table.row(vec![or_dash(&u.name), or_dash(&u.role), rfc3339_utc(u.created_unix)]);
    }
    table.render()
}

/// One line saying what changed, then a generated password, once.
pub fn render_user_saved(change: UserChange, u: &UserInfo, generated: Option<&str>) -> String {
    let name = or_dash(&u.name);
    let role = or_dash(&u.role);
    let mut out = match change {
        UserChange::Created => format!("user {name} created with role {role}\n"),
        UserChange::Password => format!("password of user {name} changed\n"),
        UserChange::Role => format!("user {name} now has role {role}\n"),
    };
    if let Some(password) = generated {
        out.push_str(&format!("password: {password}  (shown only now)\n"));
    }
    out
}

fn steps_text(steps: &[String]) -> String {
    steps.iter().map(|s| format!("{s}\n")).collect()
}

fn render_init(reply: &InitReply) -> String {
    if reply.message.is_empty() {
        "cluster initialised\n".to_string()
    } else {
        format!("{}\n", reply.message)
    }
}

/// The steps taken, a blank line, then the new region's row.
pub fn render_add(reply: &AddRegionReply) -> String {
    let mut out = steps_text(&reply.steps);
    if let Some(region) = &reply.region {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&render_regions(std::slice::from_ref(region)));
    } else if out.is_empty() {
        out.push_str("region added\n");
    }
    out
}

/// The steps taken (the reply carries no region row for a removed region).
pub fn render_remove(name: &str, reply: &RemoveRegionReply) -> String {
    if reply.steps.is_empty() {
        format!("region {name} removed\n")
    } else {
        steps_text(&reply.steps)
    }
}

fn render_transfer(reply: &TransferLeaderReply) -> String {
    format!("leader: {}\n", or_dash(&reply.leader))
}

fn render_snapshot(reply: &SnapshotReply) -> String {
    format!("snapshot taken up to log index {}\n", reply.last_included_index)
}

/// Key/value lines about the contacted node, a blank line, then the regions table.
pub fn render_status(reply: &StatusReply) -> String {
    let mut out = key_values(&[
        ("cluster", or_dash(&reply.cluster)),
        ("node id", reply.node_id.to_string()),
        ("region", or_dash(&reply.region)),
        ("leader", or_dash(&reply.leader)),
        ("term", reply.term.to_string()),
        ("last log index", reply.last_log_index.to_string()),
        ("last applied", reply.last_applied.to_string()),
        ("snapshot index", reply.snapshot_index.to_string()),
    ]);
    out.push('\n');
    out.push_str(&render_regions(&reply.regions));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::admin::ImageRegion;

    fn region(name: &str, id: u64, role: &str, lag: u64, reachable: bool) -> RegionInfo {
        RegionInfo {
            node_id: id,
            name: name.to_string(),
            http_addr: format!("{name}.example:5000"),
            grpc_addr: format!("{name}.example:6000"),
            role: role.to_string(),
            last_applied: 1000 - lag,
            lag,
            reachable,
        }
    }

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
    fn regions_table() {
        let out = render_regions(&[region("eu-west", 1, "leader", 0, true), region("us", 12, "learner", 57, false)]);
        assert_eq!(
            out,
            "NAME     NODE  ROLE     HTTP                  GRPC                  APPLIED  LAG  REACHABLE\n\
             eu-west     1  leader   eu-west.example:5000  eu-west.example:6000     1000    0  yes\n\
             us         12  learner  us.example:5000       us.example:6000           943   57  no\n"
        );
    }

    #[test]
    fn empty_fields_show_a_dash() {
        let mut r = region("ap", 3, "voter", 0, true);
        r.http_addr.clear();
        let out = render_regions(&[r]);
        let row = out.lines().nth(1).unwrap();
        assert!(row.split_whitespace().nth(3) == Some("-"), "{row}");
    }

    #[test]
    fn add_shows_steps_then_the_row() {
        let reply = AddRegionReply {
            region: Some(region("us", 2, "voter", 0, true)),
            steps: vec!["joined as learner".into(), "caught up".into(), "promoted to voter".into()],
        };
        let out = render_add(&reply);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..4], &["joined as learner", "caught up", "promoted to voter", ""]);
        assert!(lines[4].starts_with("NAME"));
        assert!(lines[5].starts_with("us"));
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn remove_shows_steps() {
        let reply = RemoveRegionReply { steps: vec!["demoted to learner".into(), "removed".into()] };
        assert_eq!(render_remove("us", &reply), "demoted to learner\nremoved\n");
        assert_eq!(render_remove("us", &RemoveRegionReply { steps: vec![] }), "region us removed\n");
    }

    #[test]
    fn status_is_key_values_then_regions() {
        let reply = StatusReply {
            cluster: "prod".into(),
            node_id: 1,
            region: "eu-west".into(),
            leader: "eu-west".into(),
            term: 4,
            last_log_index: 1000,
            last_applied: 1000,
            snapshot_index: 900,
            regions: vec![region("eu-west", 1, "leader", 0, true)],
        };
        let out = render_status(&reply);
        assert!(out.starts_with(
            "cluster:         prod\n\
             node id:         1\n\
             region:          eu-west\n\
             leader:          eu-west\n\
             term:            4\n\
             last log index:  1000\n\
             last applied:    1000\n\
             snapshot index:  900\n\
             \n\
             NAME "
        ));
        assert_eq!(out.lines().count(), 11);
    }

    #[test]
    fn json_documents() {
        let r = region("us", 2, "voter", 3, true);
        assert_eq!(
            region_json(&r),
            json!({"name": "us", "node_id": 2, "role": "voter", "http_addr": "us.example:5000",
                   "grpc_addr": "us.example:6000", "last_applied": 997, "lag": 3, "reachable": true})
        );
        let add = add_json(&AddRegionReply { region: None, steps: vec!["a".into()] });
        assert_eq!(add, json!({"steps": ["a"], "region": null}));
        let list = list_json(&ListRegionsReply { regions: vec![r] });
        assert_eq!(list["regions"][0]["name"], "us");
        let doc = pretty(&snapshot_json(&SnapshotReply { last_included_index: 7 }));
        let parsed: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(parsed, json!({"last_included_index": 7}));
    }

    fn replication(name: &str, reachable: bool, lag: u64, blobs: u64, bytes: u64, received: u64, rate: f64) -> RegionReplication {
        RegionReplication {
            name: name.to_string(),
            reachable,
            apply_lag: lag,
            pending_blobs: blobs,
            pending_bytes: bytes,
            bytes_received: received,
            throughput_bytes_per_sec: rate,
            transfers_failed: 2,
            digest_mismatches: 1,
        }
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
    fn replication_status_table() {
        let reply = ReplicationStatusReply {
            regions: vec![
                replication("eu-west", true, 0, 0, 0, 0, 0.0),
                replication("us", false, 12, 3, 12 << 20, 1536, 2.5 * 1048576.0),
            ],
        };
        assert_eq!(
            render_replication_status(&reply),
            "REGION   REACHABLE  APPLY LAG  PENDING BLOBS  PENDING BYTES  RECEIVED       RATE  FAILED  MISMATCHES\n\
             eu-west  yes                0              0            0 B       0 B      0 B/s       2           1\n\
             us       no                12              3       12.0 MiB   1.5 KiB  2.5 MiB/s       2           1\n"
        );
        assert_eq!(
            render_replication_status(&ReplicationStatusReply { regions: vec![] }),
            "REGION  REACHABLE  APPLY LAG  PENDING BLOBS  PENDING BYTES  RECEIVED  RATE  FAILED  MISMATCHES\n"
        );
    }

    #[test]
    fn replication_status_json_document() {
        let reply = ReplicationStatusReply { regions: vec![replication("us", true, 4, 3, 300, 9000, f64::NAN)] };
        let parsed: Value = serde_json::from_str(&pretty(&replication_status_json(&reply))).unwrap();
        assert_eq!(
            parsed,
            json!({"regions": [{"name": "us", "reachable": true, "apply_lag": 4, "pending_blobs": 3,
                                "pending_bytes": 300, "bytes_received": 9000, "throughput_bytes_per_sec": 0.0,
                                "transfers_failed": 2, "digest_mismatches": 1}]})
        );
    }

    fn image_reply() -> ImageReplicationReply {
        ImageReplicationReply {
            repository: "geo/app".into(),
            digest: "sha256:abcd".into(),
            blobs: 3,
            bytes: 12_583_000,
            regions: vec![
                ImageRegion { name: "eu-west".into(), present: 3, missing: 0, complete: true },
                ImageRegion { name: "us".into(), present: 1, missing: 2, complete: false },
            ],
        }
    }

    #[test]
    fn image_header_then_table() {
        assert_eq!(
            render_image(&image_reply()),
            "geo/app@sha256:abcd: 3 blobs, 12583000 bytes (12.0 MiB)\n\
             \n\
             REGION   PRESENT  MISSING  COMPLETE\n\
             eu-west        3        0  yes\n\
             us             1        2  no\n"
        );
        let mut small = image_reply();
        small.blobs = 1;
        small.bytes = 1;
        small.regions.clear();
        assert_eq!(render_image(&small), "geo/app@sha256:abcd: 1 blob, 1 byte\n\nREGION  PRESENT  MISSING  COMPLETE\n");
    }

    #[test]
    fn image_json_document() {
        let parsed: Value = serde_json::from_str(&pretty(&image_json(&image_reply()))).unwrap();
        assert_eq!(
            parsed,
            json!({"repository": "geo/app", "digest": "sha256:abcd", "blobs": 3, "bytes": 12_583_000u64,
                   "regions": [{"name": "eu-west", "present": 3, "missing": 0, "complete": true},
                               {"name": "us", "present": 1, "missing": 2, "complete": false}]})
        );
    }

    fn user(name: &str, role: &str, created_unix: u64) -> UserInfo {
        UserInfo { name: name.to_string(), role: role.to_string(), created_unix }
    }

    #[test]
    fn users_table() {
        let out = render_users(&[user("admin", "admin", 1_714_564_800), user("ci-bot", "writer", 951_782_400), user("old", "reader", 0)]);
        assert_eq!(
            out,
            "NAME    ROLE    CREATED\n\
             admin   admin   2024-05-01T12:00:00Z\n\
             ci-bot  writer  2000-02-29T00:00:00Z\n\
             old     reader  -\n"
        );
        assert_eq!(render_users(&[]), "NAME  ROLE  CREATED\n");
    }

    #[test]
    fn created_times() {
        assert_eq!(rfc3339_utc(1), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339_utc(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn user_saved_lines() {
        let u = user("alice", "writer", 1_714_564_800);
        assert_eq!(
            render_user_saved(UserChange::Created, &u, Some("Abc123")),
            "user alice created with role writer\npassword: Abc123  (shown only now)\n"
        );
        assert_eq!(render_user_saved(UserChange::Created, &u, None), "user alice created with role writer\n");
        assert_eq!(
            render_user_saved(UserChange::Password, &u, Some("Xyz789")),
            "password of user alice changed\npassword: Xyz789  (shown only now)\n"
        );
        assert_eq!(render_user_saved(UserChange::Role, &u, None), "user alice now has role writer\n");
    }

    #[test]
    fn user_json_documents() {
        let u = user("alice", "reader", 7);
        let parsed: Value = serde_json::from_str(&pretty(&users_json(std::slice::from_ref(&u)))).unwrap();
        assert_eq!(parsed, json!({"users": [{"name": "alice", "role": "reader", "created_unix": 7}]}));
        assert_eq!(
            user_saved_json(&u, Some("pw")),
            json!({"name": "alice", "role": "reader", "created_unix": 7, "password": "pw"})
        );
        assert_eq!(user_saved_json(&u, None)["password"], Value::Null);
    }

    #[test]
    fn image_references() {
        assert_eq!(check_image_reference(" geo/app:v1 ").unwrap(), "geo/app:v1");
        assert_eq!(check_image_reference("geo/app@sha256:abcd").unwrap(), "geo/app@sha256:abcd");
        assert_eq!(check_image_reference("host:5000/app:v1").unwrap(), "host:5000/app:v1");
        for bad in ["", "  ", "geo/app", "geo/app:", ":v1", "geo/app@", "geo/app@sha256", "geo/app@:abcd",
                    "@sha256:abcd", "host:5000/app", "geo app:v1", "geo/app/:v1"] {
            let err = check_image_reference(bad).unwrap_err();
            assert!(err.contains("repo:tag or repo@sha256"), "{bad:?}: {err}");
        }
    }
}
