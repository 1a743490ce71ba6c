//! Fault injection points for the chaos tests (`chaos-tests`), compiled in only with the
//! `failpoints` feature; without it every point is an inlined `Ok(())`.
//!
//! Points: `blob-write` (a chunk written to an upload or a replica file), `blob-fsync`
//! (the fsync before a blob counts as stored), `blob-rename` (the rename into the store),
//! `rocksdb-write` (every durable RocksDB batch: Raft log, state machine, local records),
//! `snapshot-write` (writing a Raft snapshot file, built here or installed from the leader),
//! `blob-serve-stall` (a region serving a blob to another stops sending after the first
//! chunk for `return(<ms>)` milliseconds, its connection healthy), `gc-sweep-remove` (each
//! blob file a garbage-collection sweep is about to remove; `sleep(ms)` slows the sweep).
//! Actions use the `fail` crate's syntax (`return`, `return(enospc)`, `50%return`,
//! `sleep(200)`, `off`); `return(enospc)` fails like a full disk.
//!
//! They are switched at run time over HTTP (`PUT /debug/failpoints/<name>` with the
//! actions as body, `DELETE` to clear) when the node runs with
//! `MERIDIAN_FAILPOINTS_API=1` — the route does not exist otherwise, nor in a build
//! without the feature.

/// Fails with an I/O error when failpoint `name` is armed.
#[cfg(feature = "failpoints")]
pub fn io(name: &str) -> std::io::Result<()> {
    fail::fail_point!(name, |arg: Option<String>| Err(match arg.as_deref() {
        Some("enospc") => std::io::Error::from_raw_os_error(libc::ENOSPC),
        _ => std::io::Error::other(format!("failpoint {name}")),
    }));
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn io(_name: &str) -> std::io::Result<()> {
    Ok(())
}

/// Waits `n` milliseconds when failpoint `name` is armed as `return(n)` (an async pause:
/// the runtime keeps serving everything else, as a stuck disk would let it).
#[cfg(feature = "failpoints")]
pub async fn stall(name: &str) {
    let ms: Option<u64> = (|| {
        fail::fail_point!(name, |arg: Option<String>| arg.and_then(|a| a.trim().parse().ok()));
        None
    })();
    if let Some(ms) = ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn stall(_name: &str) {}

/// The `/debug/failpoints/{name}` routes, when the build and the environment allow them.
pub fn routes<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    #[cfg(feature = "failpoints")]
    if std::env::var("MERIDIAN_FAILPOINTS_API").is_ok_and(|v| v == "1") {
        use axum::extract::Path;
        use axum::http::StatusCode;
        tracing::warn!("failpoint API enabled: this node is a test build");
        return router.route(
            "/debug/failpoints/{name}",
            axum::routing::put(|Path(name): Path<String>, actions: String| async move {
                match fail::cfg(name.clone(), actions.trim()) {
                    Ok(()) => {
                        tracing::warn!(failpoint = %name, actions = %actions.trim(), "failpoint armed");
                        (StatusCode::OK, String::new())
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, e),
                }
            })
            .delete(|Path(name): Path<String>| async move {
                fail::remove(&name);
                tracing::warn!(failpoint = %name, "failpoint cleared");
                StatusCode::OK
            }),
        );
    }
    router
}
