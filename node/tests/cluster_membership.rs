//! Membership changes under load: three `meridian` processes, writers pushing manifests
//! the whole time.
//!
//! * A fourth region started with `join = [<r1's gRPC>]` shows up in `region list`
//!   (as learner, then voter) and ends a voter; it serves the data written before and
//!   during its join, and its own writes (read-your-writes).
//! * `meridian admin region remove <follower>` exits 0 and prints its steps; afterwards
//!   `region list` (asked of any remaining region) shows exactly the three remaining
//!   regions, all voters, one leader.
//! * The writers (to regions that stay) see no failed write during either change.

mod common;

use common::cluster::{self, http_client, Cluster};
use common::oci::{self, OCI_MANIFEST};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "members/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_regions_under_load() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    // Remove a follower other than r1 (r1 is the join target of r4).
    let removed = (1..3).find(|&i| i != leader).unwrap();
    let stays = (1..3).find(|&i| i != removed).unwrap();
    eprintln!("leader {}, will remove {}, load on r1 and {}", c[leader].name, c[removed].name, c[stays].name);

    let (config, layer) = cluster::seed_blobs(&[&c[0], &c[stays]], REPO, "members").await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::new(Mutex::new(Vec::new()));
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for (w, i) in [0usize, stays].into_iter().enumerate() {
        let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
        let (base, name) = (c[i].base.clone(), c[i].name.clone());
        let (config, layer) = (config.clone(), layer.clone());
        writers.push(tokio::spawn(async move {
            let client = http_client(Duration::from_secs(10));
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = format!("w{w}-{}", n % 4);
                let body = cluster::numbered_manifest(&config, &layer, &format!("{tag}-{n}"));
                n += 1;
                let res = cluster::send(
                    client
                        .put(format!("{base}/v2/{REPO}/manifests/{tag}"))
                        .header("content-type", OCI_MANIFEST)
                        .body(body.clone()),
                )
                .await;
                match res {
                    Ok(r) if r.status == 201 => acked.lock().unwrap().push((tag, body)),
                    Ok(r) => failures.lock().unwrap().push(format!("{name} {tag}: {} {}", r.status, r.text())),
                    Err(e) => failures.lock().unwrap().push(format!("{name} {tag}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // ---- add r4 by starting it with join
    let r4 = c.add_member("r4", vec![c[0].grpc_url()]);
    eprintln!("INJECT: start r4 (node_id {}) with join = [{}]", c[r4].node_id, c[0].grpc_url());
    c[r4].spawn();
    let t0 = Instant::now();
    let mut roles_seen: Vec<String> = Vec::new();
    loop {
        if let Ok(regions) = c.regions_at(0).await {
            if let Some(e) = regions.iter().find(|e| e.name == "r4") {
                if roles_seen.last() != Some(&e.role) {
                    eprintln!("{:>6.2}s r4 is {} (lag {}, reachable {})", t0.elapsed().as_secs_f64(), e.role, e.lag, e.reachable);
                    roles_seen.push(e.role.clone());
                }
                if e.is_voter() && regions.len() == 4 {
                    break;
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            panic!("r4 did not become a voter within 30 s; roles seen: {roles_seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait_ready(r4).await;
    eprintln!("r4 roles seen: {roles_seen:?}");
    for role in &roles_seen {
        assert!(["learner", "voter", "leader"].contains(&role.as_str()), "unexpected role {role:?} for r4");
    }
    let names4: Vec<String> = ["r1", "r2", "r3", "r4"].iter().map(|s| s.to_string()).collect();
    let regions = c.wait_voters(&names4, Duration::from_secs(10)).await;
    eprintln!("after join: {regions:?}");
    let expected_r4 = regions.iter().find(|e| e.name == "r4").unwrap();
    assert_eq!(expected_r4.node_id, c[r4].node_id);
    assert!(expected_r4.grpc_addr.contains(&c[r4].grpc_port.to_string()), "r4 grpc_addr {}", expected_r4.grpc_addr);
    assert!(expected_r4.http_addr.contains(&c[r4].node.port.to_string()), "r4 http_addr {}", expected_r4.http_addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // ---- remove a follower with the CLI
    let removed_name = c[removed].name.clone();
    eprintln!("INJECT: meridian admin region remove {removed_name}");
    let out = c.admin(&["region", "remove", &removed_name]).await;
    assert_eq!(out.code, 0, "region remove failed:\n{out}");
    assert!(!out.stdout.trim().is_empty(), "region remove printed no steps:\n{out}");
    assert!(out.stdout.contains(&removed_name), "region remove output does not name {removed_name}:\n{out}");
    let out_json = c.admin_at(0, &["--json", "region", "list"]).await;
    eprintln!("{out_json}");

    let mut want: Vec<String> = ["r1", "r2", "r3", "r4"].iter().filter(|n| **n != removed_name).map(|s| s.to_string()).collect();
    want.sort();
    for i in [0, stays, r4] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let regions = c.regions_at(i).await;
            let ok = match &regions {
                Ok(r) => {
                    let names: Vec<String> = r.iter().map(|e| e.name.clone()).collect::<BTreeSet<_>>().into_iter().collect();
                    names == want && r.len() == 3 && r.iter().all(|e| e.is_voter()) && r.iter().filter(|e| e.role == "leader").count() == 1
                }
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                panic!("{}: region list after removing {removed_name} is {regions:?}, want {want:?} (all voters)", c[i].name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("region list after the removal: {want:?}");

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    c.stop(removed);

    let acked = acked.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    eprintln!("load: {} writes acknowledged, {} failed", acked.len(), failures.len());
    assert!(acked.len() > 20, "too few writes acknowledged under load: {}", acked.len());
    assert!(failures.is_empty(), "writes failed during membership changes:\n{}", failures.join("\n"));

    // r4 has everything; the last write of every tag is served in every remaining region.
    let mut last: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for (tag, body) in &acked {
        last.insert(tag.clone(), body.clone());
    }
    for i in [0, stays, r4] {
        for (tag, body) in &last {
            cluster::wait_manifest(&c[i], REPO, tag, body, Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c[i].name));
        }
    }
    // The new region takes writes itself and reads them back at once.
    let (config, layer) = cluster::seed_blobs(&[&c[r4]], REPO, "r4").await;
    let body = cluster::numbered_manifest(&config, &layer, "from-r4");
    let digest = oci::push_manifest(&c[r4], REPO, "from-r4", OCI_MANIFEST, &body).await;
    oci::assert_manifest_content(&c[r4], REPO, "from-r4", OCI_MANIFEST, &body).await;
    cluster::wait_manifest(&c[0], REPO, &digest, &body, Duration::from_secs(5)).await.unwrap();
}
