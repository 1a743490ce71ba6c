//! `meridian admin init|region|leader|snapshot|status|replication …`: the cluster's regions,
//! Raft leadership and snapshots, its status, and how far blob replication has got.
//!
//! An image reference is checked before connecting (usage error, exit code 2).

use super::{
    call, finite_rate, human_bytes, human_rate, or_dash, pretty, Admin, CliError, LONG_CALL_TIMEOUT, SHORT_CALL_TIMEOUT,
    STORE_WIDE_CALL_TIMEOUT,
};
use crate::cli::table::{key_values, Align, Table};
use clap::Subcommand;
use meridian_proto::admin::{
    AddRegionReply, AddRegionRequest, DrainRegionRequest, Empty, ImageReplicationReply, ImageRequest, InitReply,
    ListRegionsReply, RegionInfo, RegionReplication, RemoveRegionReply, RemoveRegionRequest, ReplicationStatusReply,
    SnapshotReply, StatusReply, TransferLeaderReply, TransferLeaderRequest,
};
use serde_json::{json, Value};

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
    /// Remove a region's node from the cluster; the last node of a region takes the region
    /// with it and is refused while the region holds a blob's only copy.
    Remove {
        /// The region's name.
        name: String,
        /// Which node, when the region has several (`region list` shows their ids).
        #[arg(long)]
        node: Option<u64>,
    },
    /// Copy every blob the region alone holds to the leader's region, so it can be removed.
    Drain {
        /// The region's name.
        name: String,
    },
    /// List the cluster's regions, each with its nodes.
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

/// `meridian admin init`
pub async fn run_init(admin: &Admin, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    let reply = call(SHORT_CALL_TIMEOUT, client.init(admin.request(Empty {}))).await?;
    Ok(if json { pretty(&init_json(&reply)) } else { render_init(&reply) })
}

/// `meridian admin region …`
pub async fn run_region(admin: &Admin, cmd: RegionCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        RegionCommand::Add { grpc_addr, learner } => {
            let req = admin.request(AddRegionRequest { grpc_addr, learner });
            let reply = call(LONG_CALL_TIMEOUT, client.add_region(req)).await?;
            Ok(if json { pretty(&add_json(&reply)) } else { render_add(&reply) })
        }
        RegionCommand::Drain { name } => {
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
        RegionCommand::Remove { name, node } => {
            let req = admin.request(RemoveRegionRequest { name: name.clone(), node_id: node.unwrap_or(0) });
            let reply = call(LONG_CALL_TIMEOUT, client.remove_region(req)).await?;
            Ok(if json { pretty(&remove_json(&name, &reply)) } else { render_remove(&name, &reply) })
        }
        RegionCommand::List => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.list_regions(req)).await?;
            Ok(if json { pretty(&list_json(&reply)) } else { render_regions(&reply.regions) })
        }
    }
}

/// `meridian admin leader …`
pub async fn run_leader(admin: &Admin, cmd: LeaderCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        LeaderCommand::Transfer { region } => {
            let req = admin.request(TransferLeaderRequest { name: region });
            let reply = call(LONG_CALL_TIMEOUT, client.transfer_leader(req)).await?;
            Ok(if json { pretty(&transfer_json(&reply)) } else { render_transfer(&reply) })
        }
    }
}

/// `meridian admin snapshot`
pub async fn run_snapshot(admin: &Admin, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    let req = admin.request(Empty {});
    let reply = call(STORE_WIDE_CALL_TIMEOUT, client.snapshot(req)).await?;
    Ok(if json { pretty(&snapshot_json(&reply)) } else { render_snapshot(&reply) })
}

/// `meridian admin status`
pub async fn run_status(admin: &Admin, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    let req = admin.request(Empty {});
    let reply = call(SHORT_CALL_TIMEOUT, client.status(req)).await?;
    Ok(if json { pretty(&status_json(&reply)) } else { render_status(&reply) })
}

/// `meridian admin replication …`
pub async fn run_replication(admin: &Admin, cmd: ReplicationCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        ReplicationCommand::Status => {
            let req = admin.request(Empty {});
            let reply = call(SHORT_CALL_TIMEOUT, client.replication_status(req)).await?;
            Ok(if json { pretty(&replication_status_json(&reply)) } else { render_replication_status(&reply) })
        }
        ReplicationCommand::Image { reference } => {
            let req = admin.request(ImageRequest { reference });
            let reply = call(SHORT_CALL_TIMEOUT, client.replication_image(req)).await?;
            Ok(if json { pretty(&image_json(&reply)) } else { render_image(&reply) })
        }
    }
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
        "shared_store": r.shared_store,
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

// ------------------------------------------------------------------ human output

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
            shared_store: String::new(),
        }
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
                   "grpc_addr": "us.example:6000", "last_applied": 997, "lag": 3, "reachable": true, "shared_store": ""})
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
