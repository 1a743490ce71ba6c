//! The admin service's storage-lifecycle calls: garbage collection now, and what every
//! region's last sweep did. The work is `crate::lifecycle`'s; this maps it onto the API.

use super::admin_service::{meta_status, AdminServiceImpl};
use crate::lifecycle::LifecycleError;
use crate::meta::records::GcSweepReport;
use meridian_proto::admin::{GcCandidate, GcRunReply, GcStatusReply, GcSweep};
use tonic::Status;

fn lifecycle_status(e: LifecycleError) -> Status {
    match e {
        LifecycleError::Meta(m) => meta_status(m),
        other => Status::internal(other.to_string()),
    }
}

fn sweep_message(r: GcSweepReport) -> GcSweep {
    GcSweep {
        region: r.region,
        finished_unix: r.finished_unix,
        duration_ms: r.duration_ms,
        dry_run: r.dry_run,
        candidates: r.candidates,
        blobs_removed: r.blobs_removed,
        bytes_freed: r.bytes_freed,
        leftovers_removed: r.leftovers_removed,
        errors: r.errors,
    }
}

pub async fn gc_run(svc: &AdminServiceImpl, dry_run: bool) -> Result<GcRunReply, Status> {
    let run = svc.lifecycle.run_gc(dry_run).await.map_err(lifecycle_status)?;
    Ok(GcRunReply {
        candidates: run
            .collection
            .candidates
            .into_iter()
            .map(|(digest, size)| GcCandidate { digest: digest.to_string(), size })
            .collect(),
        collected_blobs: run.collection.blobs,
        collected_bytes: run.collection.bytes,
        sweep: Some(sweep_message(run.sweep)),
        grace_secs: svc.lifecycle.grace().as_secs(),
    })
}

pub fn gc_status(svc: &AdminServiceImpl) -> Result<GcStatusReply, Status> {
    let mut regions: Vec<GcSweep> = svc.lifecycle.status().map_err(lifecycle_status)?.into_iter().map(sweep_message).collect();
    regions.sort_by(|a, b| a.region.cmp(&b.region));
    Ok(GcStatusReply { regions })
}
