//! `meridian admin …`: the operator's client of the cluster's admin gRPC service
//! (`meridian.admin.AdminService`).
//!
//! Every call carries `authorization: Bearer <token>`. Output is a human-readable table by
//! default and one JSON document with `--json`. Exit codes: 0 on success, 1 when the service
//! cannot be reached or refuses/fails a call, 2 for usage errors (bad flags, no token, bad
//! address).

use crate::cli::table::{key_values, Align, Table};
use clap::{Args, Subcommand};
use meridian_proto::admin::admin_service_client::AdminServiceClient;
use meridian_proto::admin::{
    AddRegionReply, AddRegionRequest, Empty, InitReply, ListRegionsReply, RegionInfo, RemoveRegionReply,
    RemoveRegionRequest, SnapshotReply, StatusReply, TransferLeaderReply, TransferLeaderRequest,
};
use serde_json::{json, Value};
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};

/// The admin service's address when neither `--addr` nor `MERIDIAN_ADMIN_ADDR` is given.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:6000";
/// How long to wait for the connection to the admin service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for quick calls (init, list, snapshot, status).
const SHORT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline for membership calls; adding a region waits for it to catch up.
const LONG_CALL_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Remove a region from the cluster.
    Remove {
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
    async fn connect(url: &str, auth: MetadataValue<Ascii>) -> Result<Self, CliError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| CliError::Usage(format!("invalid admin address '{url}': {}", error_chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
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
    let admin = Admin::connect(&url, auth).await?;
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
    }
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

// ------------------------------------------------------------------ human output

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
}
