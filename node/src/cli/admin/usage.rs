//! `meridian admin usage`: what each repository, region or day costs — stored, pushed,
//! pulled and replicated bytes, from the cluster state.

use super::units::duration_secs;
use super::{call, human_bytes, pretty, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use clap::{Args, ValueEnum};
use meridian_proto::admin::{UsageReply, UsageRequest};
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum By {
    Repo,
    Region,
    Day,
}

/// `meridian admin usage …`
#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Repositories matching this pattern: `team-a/*`, one name, `*`.
    #[arg(long)]
    repo: Option<String>,
    /// Traffic in this region only.
    #[arg(long)]
    region: Option<String>,
    /// Traffic over the last 7d, 24h, …; without it everything kept (`usage.keep_days`).
    #[arg(long, value_parser = duration_secs)]
    since: Option<u64>,
    /// One row per repository (logical stored bytes), region (bytes its disk holds) or day.
    #[arg(long, value_enum, default_value = "repo")]
    by: By,
}

pub async fn run_usage(admin: &Admin, args: UsageArgs, json: bool) -> Result<String, CliError> {
    let by = match args.by {
        By::Repo => "repo",
        By::Region => "region",
        By::Day => "day",
    };
    let req = UsageRequest {
        repo: args.repo.unwrap_or_default(),
        region: args.region.unwrap_or_default(),
        since_secs: args.since.unwrap_or(0),
        by: by.to_string(),
    };
    let reply = call(SHORT_CALL_TIMEOUT, admin.client.clone().usage(admin.request(req))).await?;
    Ok(if json { pretty(&usage_json(&reply, by)) } else { render(&reply, by) })
}

fn usage_json(r: &UsageReply, by: &str) -> Value {
    json!({
        "by": by,
        "rows": r.rows.iter().map(|row| json!({
            by: row.key,
            "stored_bytes": row.has_stored.then_some(row.stored_bytes),
            "stored_items": row.has_stored.then_some(row.stored_items),
            "pushed_bytes": row.pushed_bytes,
            "pushed_count": row.pushed_count,
            "pulled_bytes": row.pulled_bytes,
            "pulled_count": row.pulled_count,
        })).collect::<Vec<_>>(),
        "replication": r.replication.iter().map(|p| json!({
            "from": p.from, "to": p.to, "bytes": p.bytes, "blobs": p.blobs,
        })).collect::<Vec<_>>(),
    })
}

fn render(r: &UsageReply, by: &str) -> String {
    let mut out = String::new();
    if r.rows.is_empty() {
        out.push_str("no usage recorded\n");
    } else {
        let stored = match by {
            "repo" => "STORED",
            "region" => "ON DISK",
            _ => "",
        };
        let mut cols = vec![(by.to_uppercase(), Align::Left)];
        if !stored.is_empty() {
            cols.push((stored.to_string(), Align::Right));
        }
        cols.extend([
            ("PUSHED".to_string(), Align::Right),
            ("PUSHES".to_string(), Align::Right),
            ("PULLED".to_string(), Align::Right),
            ("PULLS".to_string(), Align::Right),
        ]);
        let headers: Vec<(&str, Align)> = cols.iter().map(|(h, a)| (h.as_str(), *a)).collect();
        let mut table = Table::new(&headers);
        for row in &r.rows {
            let mut cells = vec![row.key.clone()];
            if !stored.is_empty() {
                cells.push(if row.has_stored { human_bytes(row.stored_bytes) } else { "-".into() });
            }
            cells.extend([
                human_bytes(row.pushed_bytes),
                row.pushed_count.to_string(),
                human_bytes(row.pulled_bytes),
                row.pulled_count.to_string(),
            ]);
            table.row(cells);
        }
        out.push_str(&table.render());
    }
    if !r.replication.is_empty() {
        out.push_str("\n\n");
        let mut table = Table::new(&[("FROM", Align::Left), ("TO", Align::Left), ("REPLICATED", Align::Right), ("BLOBS", Align::Right)]);
        for p in &r.replication {
            table.row(vec![p.from.clone(), p.to.clone(), human_bytes(p.bytes), p.blobs.to_string()]);
        }
        out.push_str(&table.render());
    }
    out
}
