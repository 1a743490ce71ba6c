//! `meridian admin quota …`: storage quotas per namespace.

use super::{call, human_bytes, pretty, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use super::units::parse_size;
use clap::Subcommand;
use meridian_proto::admin::{Empty, Name, QuotaInfo, SetQuotaRequest};
use serde_json::{json, Value};

/// `meridian admin quota …`
#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Create or change a namespace's quota. A manifest push that would take the
    /// namespace past it is refused (403 DENIED); so is an upload into a full one.
    Set {
        /// `team-a/*` (everything below team-a/), `*`, or one repository.
        pattern: String,
        /// Bytes, or with a unit: 50GiB, 500MiB, 2TB (KB/MB/GB/TB are powers of 1000,
        /// KiB/MiB/GiB/TiB of 1024).
        #[arg(value_parser = parse_size)]
        limit: u64,
    },
    /// Every quota with what its namespace uses.
    List,
    /// Remove a quota (nothing is deleted).
    Remove { pattern: String },
}

pub async fn run_quota(admin: &Admin, cmd: QuotaCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        QuotaCommand::Set { pattern, limit } => {
            let q = call(SHORT_CALL_TIMEOUT, client.set_quota(admin.request(SetQuotaRequest { pattern, limit_bytes: limit }))).await?;
            Ok(if json {
                pretty(&quota_json(&q))
            } else {
                format!("quota {}: {} used of {}", q.pattern, human_bytes(q.used_bytes), human_bytes(q.limit_bytes))
            })
        }
        QuotaCommand::List => {
            let reply = call(SHORT_CALL_TIMEOUT, client.list_quotas(admin.request(Empty {}))).await?;
            Ok(if json {
                pretty(&json!({ "quotas": reply.quotas.iter().map(quota_json).collect::<Vec<_>>() }))
            } else {
                render_quotas(&reply.quotas)
            })
        }
        QuotaCommand::Remove { pattern } => {
            call(SHORT_CALL_TIMEOUT, client.remove_quota(admin.request(Name { name: pattern.clone() }))).await?;
            Ok(if json { pretty(&json!({ "removed": pattern })) } else { format!("quota {pattern} removed") })
        }
    }
}

fn quota_json(q: &QuotaInfo) -> Value {
    json!({ "pattern": q.pattern, "used_bytes": q.used_bytes, "limit_bytes": q.limit_bytes })
}

fn render_quotas(quotas: &[QuotaInfo]) -> String {
    if quotas.is_empty() {
        return "no quotas".to_string();
    }
    let mut table = Table::new(&[("NAMESPACE", Align::Left), ("USED", Align::Right), ("LIMIT", Align::Right), ("USE", Align::Right)]);
    for q in quotas {
        let share = if q.limit_bytes == 0 { 100.0 } else { q.used_bytes as f64 * 100.0 / q.limit_bytes as f64 };
        table.row(vec![q.pattern.clone(), human_bytes(q.used_bytes), human_bytes(q.limit_bytes), format!("{share:.0}%")]);
    }
    table.render()
}
