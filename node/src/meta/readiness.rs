//! When a node may say it is ready to serve (`/readyz`).
//!
//! Being a member that knows its leader is not enough on the first start: the leader
//! creates the cluster's signing key and `admin` user just after the first election, and
//! a node that joins has the cluster's history still to apply. A script that starts the
//! registry and logs in at once, or a load balancer that sends traffic to a new node,
//! must not see a 401 for a correct password or a 404 for an image the cluster holds. So
//! a node becomes ready once, after it has caught up with the leader's commit index and
//! holds the identities; from then on `/readyz` follows only whether it has a leader.

use super::{Meta, Store};
use std::time::Duration;
use tokio::sync::watch;

/// How long one catch-up attempt may wait for the leader's commit index to be applied.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(100);

/// What keeps a node from being ready, if anything.
pub fn not_ready_reason(meta: &Meta, started: bool) -> Option<&'static str> {
    if !meta.is_ready() {
        Some(if started { "no raft leader" } else { "starting: not a member with a leader yet" })
    } else if !started {
        Some("starting: catching up with the cluster's state")
    } else {
        None
    }
}

/// Named background task: sets `started` once this node is a member with a leader, has
/// applied everything the leader had committed when it asked, and holds the signing key
/// and a user. Returns then, or on shutdown.
pub async fn track_startup(meta: Meta, store: Store, started: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if meta.is_ready() && meta.catch_up(CATCH_UP).await.is_ok() && store.has_identities().unwrap_or(false) {
            let _ = started.send(true);
            tracing::info!(applied = meta.applied_index(), "caught up with the cluster: ready");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
