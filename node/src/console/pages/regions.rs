//! The regions page (admins: what `meridian admin region list` and `replication status`
//! show, with a live chart of apply lag and transfer rate) and an image's replication
//! matrix (anyone who may pull it: which region holds which of its blobs — the same
//! answer as `meridian admin replication image` — updating live while transfers run).
//! The live parts poll JSON under `/ui/live/` (`console.js` draws them).

use super::super::html::{self, Section};
use super::super::{Console, Visitor};
use super::repo::{manifest_url, short_digest};
use crate::auth::Need;
use crate::cluster::views::ImageMatrix;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use meridian_replication::Digest;
use serde_json::json;
use std::sync::Arc;

/// Whether the visitor may see the cluster's regions (node addresses, roles, queues —
/// what the admin API shows behind its token): an administrator, with auth on (with it
/// off anyone could, so nobody does).
pub fn may_see_regions(console: &Console, visitor: &Visitor) -> bool {
    console.auth.enabled() && console.auth.allows(&visitor.caller, Need::Catalog)
}

/// `GET /ui/regions`.
pub async fn show(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return super::log_in_first("/ui/regions", None) };
    if !may_see_regions(&console, &visitor) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "Only administrators see the cluster's regions.");
    }
    let snapshot = cluster_snapshot(&console).await;
    let (regions, queues) = (&snapshot.0, &snapshot.1);
    let body = html! {
        h1 { "Regions" }
        table #regions {
            thead { tr { th { "Region" } th.num { "Node" } th { "Role" } th { "Reachable" } th.num { "Applied" } th.num { "Lag" } th { "Registry" } } }
            tbody {
                @for r in regions {
                    tr data-region=(r.name) data-node=(r.node_id) {
                        td.region { (r.name) }
                        td.num { (r.node_id) }
                        td.role { (r.role) }
                        td.reachable { @if r.reachable { "yes" } @else { span.bad { "no" } } }
                        td.num.applied { (r.last_applied) }
                        td.num.lag { (r.lag) }
                        td.mono { (r.http_addr) }
                    }
                }
            }
        }
        h2 { "Replication" }
        table #queues {
            thead { tr { th { "Region" } th.num { "Pending blobs" } th.num { "Pending bytes" } th.num { "Rate" } th.num { "Failed transfers" } th.num { "Digest mismatches" } } }
            tbody {
                @for q in queues {
                    tr data-region=(q.name) {
                        td.region { (q.name) }
                        td.num.pending-blobs { (q.pending_blobs) }
                        td.num.pending-bytes { (html::bytes(q.pending_bytes)) }
                        td.num.rate { (html::bytes(q.throughput_bytes_per_sec as u64)) "/s" }
                        td.num.failed { (q.transfers_failed) }
                        td.num.mismatches { (q.digest_mismatches) }
                    }
                }
            }
        }
        h2 { "Lag and transfer rate" }
        div #chart data-live="/ui/live/regions" data-every="2000" {
            p.muted { "Samples every 2 s while this page is open." }
        }
    };
    super::render(&console, &visitor, "Regions", Section::Regions, body)
}

/// The regions and their replication queues, probed at most once a second whatever the
/// number of open consoles: callers within a second of the last probe share its answer,
/// and concurrent callers wait for the one probe in flight.
async fn cluster_snapshot(console: &Console) -> Arc<Snapshot> {
    let mut cached = console.regions_cache.lock().await;
    if let Some((at, snapshot)) = cached.as_ref() {
        if at.elapsed() < SNAPSHOT_FRESH {
            return snapshot.clone();
        }
    }
    let (regions, queues) = tokio::join!(console.views.regions(), console.views.replication_status());
    let snapshot = Arc::new((regions, queues));
    *cached = Some((std::time::Instant::now(), snapshot.clone()));
    snapshot
}

/// What `cluster_snapshot` answers.
pub type Snapshot = (Vec<meridian_proto::admin::RegionInfo>, Vec<meridian_proto::admin::RegionReplication>);
/// How long a probe of the regions is reused.
const SNAPSHOT_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /ui/live/regions`: the figures the chart plots.
pub async fn live(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    if !may_see_regions(&console, &visitor) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let snapshot = cluster_snapshot(&console).await;
    let (regions, queues) = (&snapshot.0, &snapshot.1);
    let body = json!({
        "regions": regions.iter().map(|r| json!({
            "name": r.name, "node": r.node_id, "role": r.role, "reachable": r.reachable,
            "applied": r.last_applied, "lag": r.lag,
        })).collect::<Vec<_>>(),
        "replication": queues.iter().map(|q| json!({
            "name": q.name, "reachable": q.reachable, "pendingBlobs": q.pending_blobs, "pendingBytes": q.pending_bytes,
            "rate": q.throughput_bytes_per_sec, "failed": q.transfers_failed,
        })).collect::<Vec<_>>(),
    });
    axum::Json(body).into_response()
}

/// The matrix page of `name@digest`; the caller checked the visitor may pull.
pub fn matrix_page(console: &Console, name: &str, digest: &Digest) -> super::repo::Page {
    let Ok(m) = console.views.image_matrix(name, digest) else { return Ok(None) };
    let digest_s = digest.to_string();
    let body = html! {
        p.crumbs { a href=(manifest_url(name, &digest_s)) { (name) "@" (short_digest(&digest_s)) } }
        h1 { "Where " (name) "@" span.mono { (short_digest(&digest_s)) } " is" }
        p.muted { "A blob counts in a region once a verified copy is recorded there. This table follows transfers as they land." }
        @let complete = m.regions.iter().all(|r| m.present_in(r) == m.blobs.len() as u64);
        table #matrix data-live={ "/ui/live" (replication_url(name, &digest_s).trim_start_matches("/ui")) } data-every="1000" data-complete=(complete) {
            thead {
                tr { th { "Blob" } th.num { "Size" } @for r in &m.regions { th data-region=(r) { (r) } } }
            }
            tbody {
                @for (blob, size, holders) in &m.blobs {
                    tr {
                        td.mono title=(blob.to_string()) { (short_digest(&blob.to_string())) }
                        td.num { (html::bytes(*size)) }
                        @for r in &m.regions {
                            @let held = holders.contains(r);
                            td.cell.have[held].missing[!held] data-blob=(blob.to_string()) data-region=(r) { @if held { "✓" } @else { "…" } }
                        }
                    }
                }
            }
            tfoot {
                tr {
                    th { "Complete" } th {}
                    @for r in &m.regions {
                        @let present = m.present_in(r);
                        td.total data-region=(r) data-complete=(present == m.blobs.len() as u64) {
                            (present) " / " (m.blobs.len())
                        }
                    }
                }
            }
        }
    };
    Ok(Some((format!("Replication of {name}"), body)))
}

/// `…/-/m/<digest>/replication` of `name`.
pub fn replication_url(name: &str, digest: &str) -> String {
    format!("{}/replication", manifest_url(name, digest))
}

/// The matrix as JSON, for the live updates.
pub fn matrix_json(m: &ImageMatrix) -> Response {
    let reply = m.reply();
    axum::Json(json!({
        "complete": reply.regions.iter().all(|r| r.complete),
        "regions": reply.regions.iter().map(|r| json!({ "name": r.name, "present": r.present, "missing": r.missing, "complete": r.complete })).collect::<Vec<_>>(),
        "blobs": m.blobs.iter().map(|(d, _, holders)| json!({ "digest": d.to_string(), "holders": holders })).collect::<Vec<_>>(),
        "total": m.blobs.len(),
    }))
    .into_response()
}
