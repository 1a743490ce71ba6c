//! The chaos scenarios: each starts a three-region cluster of real processes with a
//! fault proxy on every link, runs the workload in every region, injects its faults,
//! heals, and checks the six properties (see `chaos_tests::check`). Each prints its
//! seed and fault schedule; `CHAOS_SEED` / `CHAOS_DURATION` replay or soak it.

use chaos_tests::harness::cluster::ClusterOptions;
use chaos_tests::scenario::Scenario;
use rand::Rng;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meridian-chaos-node");

async fn start(name: &str, seed: u64, secs: u64) -> Scenario {
    Scenario::start(name, seed, Duration::from_secs(secs), BIN, ClusterOptions::new(3)).await
}

/// The leader is killed (SIGKILL) every few seconds under load; it comes back on its data
/// either at once or after the others elected a new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_repeatedly() {
    let mut s = start("leader_killed_repeatedly", 1001, 20).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(1500, 3500).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let name = s.cluster[leader].name.clone();
        s.fault(format!("kill -9 leader {name}"));
        s.cluster.kill9(leader);
        if s.rng.random_bool(0.5) {
            let others: Vec<usize> = s.live.iter().copied().filter(|&i| i != leader).collect();
            match s.leader_among(&others, Duration::from_secs(10)).await {
                Some(l) => s.fault(format!("{} elected", s.cluster[l].name)),
                None => s.fault("no new leader within 10 s"),
            }
        } else {
            s.pause_ms(100, 1000).await;
        }
        s.cluster.restart(leader).await;
        s.fault(format!("{name} restarted"));
    }
    s.finish().await;
}

/// The leader's region is cut off from the others (both directions) for a few seconds,
/// repeatedly: the majority elects a new leader; the old one must not acknowledge anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_partitioned() {
    let mut s = start("leader_partitioned", 1002, 20).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(1000, 2500).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let name = s.cluster[leader].name.clone();
        s.fault(format!("partition leader {name} from the rest"));
        s.isolate(leader, true);
        s.pause_ms(3000, 6000).await;
        s.isolate(leader, false);
        s.fault(format!("{name} reconnected"));
    }
    s.finish().await;
}

/// A follower region is cut off: it keeps serving pulls of what it has, refuses pushes
/// with 503 UNAVAILABLE, and loses nothing after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partitioned() {
    let mut s = start("minority_partitioned", 1003, 20).await;
    s.start_workload();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let mut probes = 0;
    while s.running() {
        s.pause_ms(1500, 3000).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let minority = *s.live.iter().find(|&&i| i != leader).unwrap();
        let name = s.cluster[minority].name.clone();
        // An image acknowledged before the cut, whose manifest the region has applied and
        // whose blobs it holds by then: the region must keep serving what it has. (Blobs
        // can land before the manifest's entry is applied: an acknowledgement needs only
        // a majority, which this region may not be part of.)
        let before = s.workload.as_ref().unwrap().acknowledged();
        if let Some(image) = before.last() {
            let digests: Vec<String> = image.blobs.iter().map(|b| b.digest.clone()).collect();
            chaos_tests::harness::oci::wait_blob_files(&s.cluster[minority], &digests, Duration::from_secs(15))
                .await
                .expect("the region never got the blobs of an image acknowledged before the cut");
            chaos_tests::harness::cluster::wait_manifest(&s.cluster[minority], &image.repo, &image.digest, &image.manifest, Duration::from_secs(15))
                .await
                .expect("the region never applied an image acknowledged before the cut");
        }
        s.fault(format!("partition follower {name} from the rest"));
        s.isolate(minority, true);
        s.pause_ms(2000, 3000).await;
        if let Some(image) = before.last() {
            let base = &s.cluster[minority].base;
            let pull = http
                .get(format!("{base}/v2/{}/manifests/{}", image.repo, image.digest))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            assert_eq!(pull.status(), 200, "{name} (partitioned) must still serve {}", image.digest);
            assert_eq!(pull.bytes().await.unwrap().as_ref(), image.manifest.as_slice());
            for blob in &image.blobs {
                let r = http.get(format!("{base}/v2/{}/blobs/{}", image.repo, blob.digest)).send().await.unwrap();
                assert_eq!(r.status(), 200, "{name} (partitioned) must serve blob {}", blob.digest);
                assert_eq!(r.bytes().await.unwrap().as_ref(), blob.bytes.as_slice());
            }
            let push = http
                .put(format!("{base}/v2/{}/manifests/minority-probe-{probes}", image.repo))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(image.manifest.to_vec())
                .send()
                .await
                .unwrap();
            let status = push.status().as_u16();
            let body = push.text().await.unwrap_or_default();
            assert_eq!(status, 503, "a push in the partitioned region must get 503, got {status} {body}");
            assert!(body.contains("UNAVAILABLE"), "503 body must carry UNAVAILABLE: {body}");
            probes += 1;
            s.fault(format!("{name}: pull of an earlier image 200, push 503 UNAVAILABLE"));
        }
        s.pause_ms(500, 2000).await;
        s.isolate(minority, false);
        s.fault(format!("{name} reconnected"));
    }
    assert!(probes > 0, "the scenario never probed the partitioned region");
    s.finish().await;
}

/// The link between the leader and one follower flaps (cut and restored every
/// 100–800 ms, sometimes one way only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link() {
    let mut s = start("flapping_link", 1004, 20).await;
    s.start_workload();
    let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
    let other = *s.live.iter().find(|&&i| i != leader).unwrap();
    let (a, b) = (s.cluster[leader].name.clone(), s.cluster[other].name.clone());
    s.fault(format!("link {a} <-> {b} starts flapping"));
    let mut flaps = 0;
    while s.running() {
        let (fwd, back) = match s.rng.random_range(0..3) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        for (x, y) in [(leader, other), (other, leader)] {
            s.cluster.link(x, y).partition(fwd, back);
        }
        s.pause_ms(100, 800).await;
        for (x, y) in [(leader, other), (other, leader)] {
            s.cluster.link(x, y).partition(false, false);
        }
        s.pause_ms(100, 800).await;
        flaps += 1;
    }
    s.fault(format!("{flaps} flaps"));
    s.finish().await;
}

/// A member is frozen (SIGSTOP) for longer than the election timeout, then resumes: a
/// frozen leader must step down cleanly, a frozen follower catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_node_resumes() {
    let mut s = start("frozen_node_resumes", 1005, 20).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(1000, 2500).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let victim = if s.rng.random_bool(0.5) { leader } else { *s.live.iter().find(|&&i| i != leader).unwrap() };
        let name = s.cluster[victim].name.clone();
        let role = if victim == leader { "leader" } else { "follower" };
        s.fault(format!("SIGSTOP {role} {name}"));
        s.cluster.pause(victim);
        s.pause_ms(2000, 5000).await;
        s.cluster.resume(victim);
        s.fault(format!("SIGCONT {name}"));
    }
    s.finish().await;
}

/// Every region is killed at once and restarted, twice, under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_regions_restarted() {
    let mut s = start("all_regions_restarted", 1006, 15).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(2000, 4000).await;
        s.fault("kill -9 every region");
        for i in s.live.clone() {
            s.cluster.kill9(i);
        }
        s.pause_ms(200, 1000).await;
        for i in s.live.clone() {
            s.cluster[i].spawn();
        }
        for i in s.live.clone() {
            s.cluster.wait_ready(i).await;
        }
        s.fault("every region restarted");
    }
    s.finish().await;
}

/// One region's links drop to 1 MB/s with 100 ms of delay each way: it lags, catches up
/// on misses, and ends complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_region() {
    let mut s = start("slow_region", 1007, 15).await;
    let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
    let slow = *s.live.iter().find(|&&i| i != leader).unwrap();
    let name = s.cluster[slow].name.clone();
    for &j in s.live.iter().filter(|&&j| j != slow) {
        for (a, b) in [(slow, j), (j, slow)] {
            s.cluster.link(a, b).set_bandwidth(1_000_000);
            s.cluster.link(a, b).set_delay(Duration::from_millis(100));
            s.cluster.link(a, b).set_jitter(Duration::from_millis(50));
        }
    }
    s.fault(format!("{name}: links at 1 MB/s, 100–150 ms each way (jitter)"));
    s.start_workload();
    while s.running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.finish().await;
}

/// Inter-region connections (Raft and blob streams) are reset at random moments while
/// larger layers replicate over a 4 MB/s link, cutting transfers at random offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_cut_at_random_offsets() {
    let mut s = start("transfers_cut_at_random_offsets", 1008, 15).await;
    for a in s.live.clone() {
        for b in s.live.clone() {
            if a != b {
                s.cluster.link(a, b).set_bandwidth(4_000_000);
            }
        }
    }
    let mut cfg = chaos_tests::workload::WorkloadConfig::new(s.seed);
    cfg.layer_bytes = 64 * 1024..1024 * 1024;
    s.start_workload_with(cfg);
    let mut cuts = 0;
    while s.running() {
        s.pause_ms(100, 700).await;
        let a = s.live[s.rng.random_range(0..s.live.len())];
        let b = s.live[s.rng.random_range(0..s.live.len())];
        if a != b {
            s.cluster.link(a, b).reset_connections();
            cuts += 1;
        }
    }
    s.fault(format!("{cuts} connection resets on random links"));
    s.finish().await;
}

/// Wide-area links (round trips 80, 150 and 180 ms, ±10 ms jitter each way) under the
/// README's wide-area Raft timings, while the connections of a random link are reset every
/// 0.3–1.5 s: log entries and heartbeats travel side by side (openraft's patched heartbeat
/// lane, `node/vendor/openraft/MERIDIAN.md`), and either may be lost mid-flight or
/// overtake the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_area_links_reset() {
    let opts = ClusterOptions::new(3).wide_area_raft();
    let mut s = Scenario::start("wide_area_links_reset", 1015, Duration::from_secs(20), BIN, opts).await;
    // One-way delays between the three members, as us, eu and ap in benches/replication.sh.
    let one_way_ms = [[0, 40, 90], [40, 0, 75], [90, 75, 0]];
    let members = s.live.clone();
    for (i, &a) in members.iter().enumerate() {
        for (j, &b) in members.iter().enumerate() {
            if a != b {
                s.cluster.link(a, b).set_delay(Duration::from_millis(one_way_ms[i][j]));
                s.cluster.link(a, b).set_jitter(Duration::from_millis(10));
            }
        }
    }
    s.fault("wide-area links: 40/75/90 ms each way, 10 ms jitter");
    s.start_workload();
    let mut resets = 0;
    while s.running() {
        s.pause_ms(300, 1500).await;
        let a = members[s.rng.random_range(0..members.len())];
        let b = members[s.rng.random_range(0..members.len())];
        if a != b {
            s.cluster.link(a, b).reset_connections();
            resets += 1;
        }
    }
    s.fault(format!("{resets} connection resets on random links"));
    s.finish().await;
}

/// A follower's fsyncs fail (half of them, then all) while replicas land there and
/// clients push to it: nothing counts as stored without its fsync, and the follower
/// ends with every blob once its disk behaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_on_follower() {
    let mut s = start("failed_fsync_on_follower", 1009, 15).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(1000, 2000).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let follower = *s.live.iter().find(|&&i| i != leader).unwrap();
        let actions = if s.rng.random_bool(0.5) { "50%return" } else { "return" };
        s.failpoint(follower, "blob-fsync", actions).await;
        s.pause_ms(2000, 4000).await;
        s.failpoint(follower, "blob-fsync", "off").await;
    }
    s.finish().await;
}

/// A region's disk is full (ENOSPC on blob writes, renames and RocksDB writes — the Raft
/// log and state machine included): its pushes fail with an error, it stays up and keeps
/// serving, and it recovers when space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_refuses_writes() {
    let mut s = start("disk_refuses_writes", 1010, 15).await;
    s.start_workload();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    while s.running() {
        s.pause_ms(1000, 2000).await;
        let victim = s.live[s.rng.random_range(0..s.live.len())];
        let name = s.cluster[victim].name.clone();
        s.failpoint(victim, "blob-write", "return(enospc)").await;
        s.failpoint(victim, "blob-rename", "return(enospc)").await;
        s.failpoint(victim, "rocksdb-write", "return(enospc)").await;
        // A push there is refused with an error (not a crash, not a 2xx).
        let base = s.cluster[victim].base.clone();
        let r = http
            .post(format!("{base}/v2/chaos/full/blobs/uploads/?digest=sha256:{}", "0".repeat(64)))
            .body(vec![7u8; 4096])
            .send()
            .await
            .expect("the node must still answer while its disk is full");
        assert!(r.status().is_client_error() || r.status().is_server_error(), "push to a full disk answered {}", r.status());
        let health = http.get(format!("{base}/healthz")).send().await.expect("healthz while full");
        assert_eq!(health.status(), 200, "{name} must stay up while its disk refuses writes");
        s.fault(format!("{name}: push refused with {}, /healthz 200", r.status()));
        s.pause_ms(2000, 4000).await;
        assert!(s.cluster[victim].is_running(), "{name} exited while its disk was full");
        assert!(
            s.cluster[victim].log_since_start().contains("disk full: Raft storage waits for space"),
            "{name}'s Raft storage never met the full disk (no write reached it?)"
        );
        s.failpoint(victim, "blob-write", "off").await;
        s.failpoint(victim, "blob-rename", "off").await;
        s.failpoint(victim, "rocksdb-write", "off").await;
    }
    s.finish().await;
}

/// Under load, a fourth region joins (learner, catch-up, voter) and takes clients, then
/// a founding follower region is drained (`meridian admin region drain`: what only it
/// holds is copied elsewhere) and removed with `meridian admin region remove`, then stopped. The checkers judge the three that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_added_and_removed_under_load() {
    let mut s = start("region_added_and_removed_under_load", 1011, 10).await;
    s.start_workload();
    s.pause_ms(2000, 3000).await;
    s.fault("join region r4");
    let added = s.cluster.join_new_member("r4").await;
    s.live.push(added);
    let base = s.cluster[added].base.clone();
    s.workload.as_mut().unwrap().add_clients("r4", &base);
    s.fault("r4 is a voter and has clients");
    s.pause_ms(2000, 3000).await;
    let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
    let removed = *s.live.iter().find(|&&i| i != leader && i != added).unwrap();
    let name = s.cluster[removed].name.clone();
    s.workload.as_mut().unwrap().stop_region(&name).await;
    s.fault(format!("remove region {name}"));
    // Removal refuses while the region holds the only copy of a referenced blob (promise
    // 6): copy those elsewhere first, as an operator would.
    let out = s.cluster.admin(&["region", "drain", &name]).await;
    assert_eq!(out.code, 0, "region drain {name} failed:\n{out}");
    let out = s.cluster.admin(&["region", "remove", &name]).await;
    assert_eq!(out.code, 0, "region remove {name} failed:\n{out}");
    s.live.retain(|&i| i != removed);
    s.cluster.stop(removed);
    s.fault(format!("{name} removed and stopped"));
    while s.running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.finish().await;
}

/// A region's RocksDB writes fail (Raft log, state machine): Raft cannot go on with a
/// log it could not write, so the node must exit (crash-only) rather than linger as a
/// zombie member; restarted on its data it catches up and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_storage_write_fails() {
    let mut s = start("raft_storage_write_fails", 1012, 15).await;
    s.start_workload();
    while s.running() {
        s.pause_ms(1500, 3000).await;
        let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
        let victim = if s.rng.random_bool(0.3) { leader } else { *s.live.iter().find(|&&i| i != leader).unwrap() };
        let name = s.cluster[victim].name.clone();
        s.failpoint(victim, "rocksdb-write", "return").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while s.cluster[victim].is_running() {
            assert!(std::time::Instant::now() < deadline, "{name} kept running for 15 s with its Raft storage failing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.fault(format!("{name} exited after its RocksDB write failed"));
        assert!(s.cluster[victim].log_since_start().contains("Raft stopped"), "{name} exited without saying why");
        s.pause_ms(200, 1000).await;
        s.cluster.restart(victim).await;
        s.fault(format!("{name} restarted on its data"));
    }
    s.finish().await;
}

/// Under load, a follower region is removed, its disk wiped, and the region joins again
/// as a new member with an empty data directory: it must catch up from a snapshot and
/// the log and backfill every blob, while the others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_wiped_and_rejoined() {
    let mut s = start("region_wiped_and_rejoined", 1013, 10).await;
    s.start_workload();
    s.pause_ms(2000, 4000).await;
    let leader = s.cluster.leader_within(Duration::from_secs(15)).await;
    let victim = *s.live.iter().find(|&&i| i != leader).unwrap();
    let name = s.cluster[victim].name.clone();
    s.workload.as_mut().unwrap().stop_region(&name).await;
    // Removal refuses while the region holds the only copy of a referenced blob (promise
    // 6): copy those elsewhere first, as an operator would.
    let out = s.cluster.admin(&["region", "drain", &name]).await;
    assert_eq!(out.code, 0, "region drain {name} failed:\n{out}");
    let out = s.cluster.admin(&["region", "remove", &name]).await;
    assert_eq!(out.code, 0, "region remove {name} failed:\n{out}");
    s.live.retain(|&i| i != victim);
    s.cluster.wipe(victim);
    s.fault(format!("{name} removed, stopped, data directory wiped"));
    s.pause_ms(1000, 2000).await;
    let mut voters: Vec<String> = s.live.iter().map(|&i| s.cluster[i].name.clone()).collect();
    voters.push(name.clone());
    let via = s.live.clone();
    let fresh = s.cluster.rejoin_as_new_member(&name, 100 + victim as u64, &via, &voters).await;
    s.live.push(fresh);
    let base = s.cluster[fresh].base.clone();
    s.workload.as_mut().unwrap().add_clients(&name, &base);
    s.fault(format!("{name} rejoined empty as a new member and has clients again"));
    while s.running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.finish().await;
}

/// A region of two nodes on one object store (`eu`, its blobs in a Garage bucket), with
/// workload clients on both: one of its nodes is killed (SIGKILL) every few seconds and
/// restarted on its data. The region keeps serving through the other node; nothing
/// acknowledged is lost and every region converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_node_killed_repeatedly() {
    let opts = ClusterOptions::new(3).names(&["us", "eu", "ap"]).s3_regions(&["eu"]);
    let mut s = Scenario::start("region_node_killed_repeatedly", 1014, Duration::from_secs(16), BIN, opts).await;
    let second = s.cluster.spawn_region_node("eu", "eu");
    s.cluster.wait_ready(second).await;
    s.live.push(second);
    s.fault(format!("second node of eu up (node {})", s.cluster[second].node_id));
    s.start_workload();
    let eu_nodes = [s.cluster.index_of("eu"), second];
    while s.running() {
        s.pause_ms(1500, 3000).await;
        let victim = eu_nodes[s.rng.random_range(0..2)];
        let id = s.cluster[victim].node_id;
        s.fault(format!("kill -9 eu node {id}"));
        s.cluster.kill9(victim);
        s.pause_ms(1000, 3000).await;
        s.cluster.restart(victim).await;
        s.fault(format!("eu node {id} restarted"));
    }
    s.finish().await;
}
