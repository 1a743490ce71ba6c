//! `meridian admin gc …`: garbage collection now, and what each region's last sweep did.

use super::{call, human_bytes, pretty, rfc3339_utc, Admin, CliError, SHORT_CALL_TIMEOUT, STORE_WIDE_CALL_TIMEOUT};
use crate::cli::table::{key_values, Align, Table};
use clap::Subcommand;
use meridian_proto::admin::{Empty, GcRunReply, GcRunRequest, GcSweep};
use serde_json::{json, Value};

/// `meridian admin gc …`
#[derive(Subcommand, Debug)]
pub enum GcCommand {
    /// Collect now: forget, in every region, the blobs nothing has referenced for the
    /// grace, then sweep the contacted region (the others sweep as they apply it).
    Run {
        /// Show what would go; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The last sweep of every region.
    Status,
}

pub async fn run_gc(admin: &Admin, cmd: GcCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        GcCommand::Run { dry_run } => {
            let reply = call(STORE_WIDE_CALL_TIMEOUT, client.gc_run(admin.request(GcRunRequest { dry_run }))).await?;
            Ok(if json { pretty(&run_json(&reply, dry_run)) } else { render_run(&reply, dry_run) })
        }
        GcCommand::Status => {
            let reply = call(SHORT_CALL_TIMEOUT, client.gc_status(admin.request(Empty {}))).await?;
            Ok(if json {
                pretty(&json!({ "regions": reply.regions.iter().map(sweep_json).collect::<Vec<_>>() }))
            } else {
                render_sweeps(&reply.regions)
            })
        }
    }
}

fn sweep_json(s: &GcSweep) -> Value {
    json!({
        "region": s.region,
        "finished": rfc3339_utc(s.finished_unix),
        "duration_ms": s.duration_ms,
        "dry_run": s.dry_run,
        "candidates": s.candidates,
        "blobs_removed": s.blobs_removed,
        "bytes_freed": s.bytes_freed,
        "leftovers_removed": s.leftovers_removed,
        "errors": s.errors,
    })
}

fn run_json(r: &GcRunReply, dry_run: bool) -> Value {
    json!({
        "dry_run": dry_run,
        "grace_secs": r.grace_secs,
        "candidates": r.candidates.iter().map(|c| json!({"digest": c.digest, "size": c.size})).collect::<Vec<_>>(),
        "candidate_count": r.candidate_count,
        "candidate_bytes": r.candidate_bytes,
        "collected_blobs": r.collected_blobs,
        "collected_bytes": r.collected_bytes,
        "sweep": r.sweep.as_ref().map(sweep_json),
    })
}

fn render_run(r: &GcRunReply, dry_run: bool) -> String {
    let mut out = String::new();
    if dry_run {
        out.push_str(&format!(
            "dry run: {} blob(s), {}, unreferenced for longer than {} s would be collected in every region\n",
            r.candidate_count,
            human_bytes(r.candidate_bytes),
            r.grace_secs
        ));
        for c in &r.candidates {
            out.push_str(&format!("  {}  {}\n", c.digest, human_bytes(c.size)));
        }
        if (r.candidates.len() as u64) < r.candidate_count {
            out.push_str(&format!("  … and {} more\n", r.candidate_count - r.candidates.len() as u64));
        }
    } else {
        out.push_str(&format!(
            "collected {} blob(s), {}, in every region (other regions remove their copies as they apply it)\n",
            r.collected_blobs,
            human_bytes(r.collected_bytes)
        ));
    }
    if let Some(s) = &r.sweep {
        out.push('\n');
        out.push_str(&key_values(&[
            ("region", s.region.clone()),
            (if dry_run { "would remove" } else { "removed" }, format!("{} blob file(s)", if dry_run { s.candidates } else { s.blobs_removed })),
            ("freed", human_bytes(s.bytes_freed)),
            ("leftovers removed", s.leftovers_removed.to_string()),
            ("errors", if s.errors.is_empty() { "none".into() } else { s.errors.join("; ") }),
        ]));
    }
    out
}

fn render_sweeps(sweeps: &[GcSweep]) -> String {
    if sweeps.is_empty() {
        return "no region has swept yet".to_string();
    }
    let mut table = Table::new(&[
        ("REGION", Align::Left),
        ("FINISHED", Align::Left),
        ("CANDIDATES", Align::Right),
        ("REMOVED", Align::Right),
        ("FREED", Align::Right),
        ("LEFTOVERS", Align::Right),
        ("DURATION", Align::Right),
        ("ERRORS", Align::Right),
    ]);
    for s in sweeps {
        table.row(vec![
            s.region.clone(),
            rfc3339_utc(s.finished_unix),
            s.candidates.to_string(),
            s.blobs_removed.to_string(),
            human_bytes(s.bytes_freed),
            s.leftovers_removed.to_string(),
            format!("{} ms", s.duration_ms),
            s.errors.len().to_string(),
        ]);
    }
    table.render()
}
