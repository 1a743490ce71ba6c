//! The admin CLI refuses bad membership requests against a live cluster: each refusal
//! exits non-zero with a clear message, and `region list` is identical before and after
//! (ids, names, addresses, voter/learner).
//!
//! Cases (three `meridian` processes r1..r3, plus helpers):
//! * wrong admin token (list and remove);
//! * `region remove` / `leader transfer` of an unknown region name;
//! * `region add` of an address that is already a member;
//! * `region add` of a node whose region name is already taken (a fresh node named r2
//!   whose `join` points at a dead address, so it has no cluster of its own);
//! * removing the only voter of a one-region cluster;
//! * removing a live voter while another voter is down, which would leave a
//!   configuration without a reachable quorum; afterwards writes must still commit
//!   (the two live voters of the unchanged three-voter configuration are a quorum).

mod common;

use common::cluster::{self, Cluster, ClusterOptions, CliOutput, RegionEntry};
use common::oci;
use std::time::Duration;

type Key = Vec<(u64, String, String, String, bool)>;

fn key(regions: &[RegionEntry]) -> Key {
    let mut k: Key = regions.iter().map(|r| r.membership_key()).collect();
    k.sort();
    k
}

/// Checks one refusal; returns what is wrong with it (the test goes on to the next case
/// and fails at the end with every problem found).
fn refused(what: &str, out: &CliOutput, any_of: &[&str]) -> Option<String> {
    eprintln!("--- {what}\n{out}");
    let text = out.text().to_ascii_lowercase();
    let problem = if out.code == 0 {
        Some("expected a refusal (non-zero exit), got exit 0".to_string())
    } else if out.code == -1 {
        Some("the CLI did not finish within 30 s".to_string())
    } else if out.stderr.trim().is_empty() {
        Some("no message on stderr".to_string())
    } else if !any_of.iter().any(|w| text.contains(&w.to_ascii_lowercase())) {
        Some(format!("the message should mention one of {any_of:?}"))
    } else {
        None
    };
    problem.map(|p| format!("{what}: {p}:\n{out}"))
}

async fn unchanged(c: &Cluster, before: &Key, what: &str, via: usize) -> Option<String> {
    match c.regions_at(via).await {
        Ok(regions) if &key(&regions) == before => None,
        Ok(regions) => Some(format!("membership changed after {what}: before {before:?}, after {:?}", key(&regions))),
        Err(e) => Some(format!("region list after {what} failed: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_refuses_bad_membership_requests() {
    let mut c = Cluster::start(3).await;
    let mut problems: Vec<String> = Vec::new();
    let before = key(&c.regions_at(0).await.expect("region list"));
    eprintln!("membership: {before:?}");
    let addr = c[0].grpc_url();

    // Wrong token.
    let out = Cluster::admin_raw(&addr, "wrong-token", &["region", "list"]).await;
    problems.extend(refused("region list with a wrong token", &out, &["token", "unauthenticated", "permission"]));
    let out = Cluster::admin_raw(&addr, "wrong-token", &["region", "remove", "r3"]).await;
    problems.extend(refused("region remove with a wrong token", &out, &["token", "unauthenticated", "permission"]));
    problems.extend(unchanged(&c, &before, "wrong-token remove", 0).await);

    // Unknown names.
    let out = c.admin(&["region", "remove", "atlantis"]).await;
    problems.extend(refused("region remove atlantis", &out, &["atlantis"]));
    problems.extend(unchanged(&c, &before, "remove of an unknown region", 0).await);
    let out = c.admin(&["leader", "transfer", "atlantis"]).await;
    problems.extend(refused("leader transfer atlantis", &out, &["atlantis"]));
    problems.extend(unchanged(&c, &before, "transfer to an unknown region", 0).await);

    // Duplicate address: r2 is already a member.
    let r2_addr = c[1].grpc_addr();
    let out = c.admin(&["region", "add", &r2_addr]).await;
    problems.extend(refused(&format!("region add {r2_addr} (already r2)"), &out, &["already", "r2", &r2_addr]));
    problems.extend(unchanged(&c, &before, "add of a member's address", 0).await);
    let out = c.admin(&["region", "add", &c[0].grpc_url()]).await;
    problems.extend(refused("region add <r1's own URL>", &out, &["already", "r1"]));
    problems.extend(unchanged(&c, &before, "add of r1's own address", 0).await);

    // A node whose region name is taken. Its join target is a dead port, so it neither
    // bootstraps a cluster of its own nor joins this one by itself.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let dup = c.add_member_with("r2", 42, vec![dead.clone()]);
    eprintln!("INJECT: start a second node named r2 (node_id 42, grpc {}) with join = [{dead}]", c[dup].grpc_addr());
    c[dup].spawn();
    // Give it time to open its gRPC port.
    let dup_addr = c[dup].grpc_addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(&dup_addr).await.is_err() {
        assert!(c[dup].is_running(), "the duplicate-name node exited:\n{}", c[dup].log_tail(40));
        assert!(std::time::Instant::now() < deadline, "the duplicate-name node never opened its gRPC port:\n{}", c[dup].log_tail(40));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = c.admin(&["region", "add", &dup_addr]).await;
    problems.extend(refused("region add of a node named r2", &out, &["r2", "name", "already"]));
    problems.extend(unchanged(&c, &before, "add of a node with a taken name", 0).await);
    c[dup].kill9();

    // Removing the last voter of a one-region cluster.
    {
        let mut solo = Cluster::start_with(ClusterOptions::new(1).names(&["solo"])).await;
        let solo_before = key(&solo.regions_at(0).await.unwrap());
        let out = solo.admin(&["region", "remove", "solo"]).await;
        problems.extend(refused("region remove solo (the only voter)", &out, &["quorum", "last", "only", "leader"]));
        problems.extend(unchanged(&solo, &solo_before, "removing the only voter", 0).await);
    }

    // Removing a live voter while another is down: {r1, r3} with r3 down has no quorum.
    let leader = c.leader().await;
    let down = (0..3).rev().find(|&i| i != leader).unwrap();
    let victim = (0..3).find(|&i| i != leader && i != down).unwrap();
    c.kill9(down);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim_name = c[victim].name.clone();
    let out = c.admin(&["region", "remove", &victim_name]).await;
    problems.extend(refused(
        &format!("region remove {victim_name} while {} is down", c[down].name),
        &out,
        &["quorum", "unreachable", "reachable"],
    ));
    problems.extend(unchanged(&c, &before, "a remove that would leave no quorum", leader).await);
    // Unchanged in effect too: the two live voters of {r1, r2, r3} are a quorum, so
    // writes still commit (a half-done change to a joint configuration would block them).
    let (config, layer) = cluster::seed_blobs(&[&c[leader]], "bad/input", "after-remove").await;
    let body = cluster::numbered_manifest(&config, &layer, "after-refused-remove");
    let client = cluster::http_client(Duration::from_secs(15));
    match cluster::try_put_manifest(&client, &c[leader], "bad/input", "after", oci::OCI_MANIFEST, &body).await {
        Ok(r) if r.status == 201 => eprintln!("a write with {} down still commits", c[down].name),
        Ok(r) => problems.push(format!(
            "after the refused remove of {victim_name} (with {} down), a manifest PUT at the leader {} \
             answers {} {}: the cluster lost its quorum of live voters",
            c[down].name, c[leader].name, r.status, r.text()
        )),
        Err(e) => problems.push(format!("after the refused remove, a manifest PUT at the leader failed: {e}")),
    }

    assert!(problems.is_empty(), "{} bad-input case(s) not refused properly:\n\n{}", problems.len(), problems.join("\n\n"));
}
