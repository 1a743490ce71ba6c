//! A follower too far behind for the log catches up by installing the leader's snapshot.
//! If its disk is full then, the install waits for space like every other Raft storage
//! write, the process stays up (serving what it has), and it catches up once space
//! returns. Before, the install failed, openraft stopped, and the node exited.

use chaos_tests::harness::cluster::{self, Cluster, ClusterOptions};
use chaos_tests::harness::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "snap/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_waits_for_disk_space() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(
        ClusterOptions::new(3)
            .env("MERIDIAN_FAILPOINTS_API", "1")
            .raft("snapshot_every", "20")
            .raft("max_logs_kept", "5"),
    )
    .await;
    let leader = c.leader().await;
    let behind = (0..3).find(|&i| i != leader).unwrap();

    // Its snapshot files cannot be written (a full disk); everything else works.
    c.failpoint(behind, "snapshot-write", "return(enospc)").await;
    c.pause(behind);
    let (config, layer) = cluster::seed_blobs(&[&c[leader]], REPO, "snap").await;
    let mut last = Vec::new();
    for n in 0..60 {
        last = cluster::numbered_manifest(&config, &layer, &format!("write-{n}"));
        oci::push_manifest(&c[leader], REPO, "latest", OCI_MANIFEST, &last).await;
    }
    // Still paused while the leader's appends to it time out: appends pipelined to it
    // would otherwise keep those entries from being purged and hand it the log, not the
    // snapshot, once it resumes (a brief pause costs no snapshot, as it should).
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.resume(behind);

    // The leader's log no longer reaches back far enough: it sends its snapshot, and the
    // install hits the full disk. The node must wait, not exit.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c[behind].log_lines_with(&["disk full"]).is_empty() {
        assert!(c[behind].is_running(), "{} exited on a full disk:\n{}", c[behind].name, c[behind].log_tail(40));
        assert!(Instant::now() < deadline, "{} never hit the full disk installing the snapshot:\n{}", c[behind].name, c[behind].log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c[behind].is_running(), "{} exited while its disk was full:\n{}", c[behind].name, c[behind].log_tail(40));
    let healthz = reqwest::get(c[behind].url("/healthz")).await.expect("healthz while the disk is full");
    assert_eq!(healthz.status(), 200, "the node must keep answering while it waits");

    // Space returns: the install completes and the region serves the latest write.
    c.failpoint(behind, "snapshot-write", "off").await;
    cluster::wait_manifest(&c[behind], REPO, "latest", &last, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{} did not catch up after space returned: {e}", c[behind].name));
    assert!(!c[behind].log_lines_with(&["disk accepts writes again"]).is_empty(), "the recovery was not logged");
    assert!(c[behind].is_running());
}
