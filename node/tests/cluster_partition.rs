//! A region cut off from the quorum: three `meridian` processes; the other two are
//! frozen with SIGSTOP (they keep their sockets but answer nothing), then resumed.
//!
//! Done twice: once isolating the leader's region (its peers frozen), once isolating a
//! follower's region (the leader and the other follower frozen). Each time, asserted:
//!
//! * the isolated region keeps serving pulls from its state: manifest GET by tag and by
//!   digest, HEAD, tags list;
//! * a manifest PUT there answers 503 with an OCI error body `UNAVAILABLE` whose message
//!   says no quorum is reachable, and a `Retry-After` header, within ~10 s;
//! * `region list` there answers within seconds and shows the frozen regions unreachable;
//! * a pull of a digest the region never heard of answers 503 `UNAVAILABLE`, not 404:
//!   cut off, it cannot tell "absent" from "pushed elsewhere meanwhile";
//! * after SIGCONT, pushes in that region succeed again (within ~15 s), and the value is
//!   then served in every region.
//!
//! And a leader cut off by a two-way partition while the others elect a new leader and
//! take a push: the deposed leader still believes it leads, yet never answers 404 for
//! that acknowledged image; after the heal it serves it.

mod common;

use common::cluster::{self, http_client, Cluster};
use common::oci::{self, OCI_MANIFEST};
use std::time::{Duration, Instant};

const REPO: &str = "part/app";

async fn isolated_region_serves_reads_refuses_writes(c: &mut Cluster, alone: usize, round: &str) {
    let others: Vec<usize> = (0..3).filter(|&i| i != alone).collect();
    let client = http_client(Duration::from_secs(15));

    // Data the isolated region already has.
    let (config, layer) = cluster::seed_blobs(&[&c[alone]], REPO, round).await;
    let body = cluster::numbered_manifest(&config, &layer, &format!("{round}-before"));
    let digest = oci::push_manifest(&c[alone], REPO, round, OCI_MANIFEST, &body).await;
    for &i in &others {
        cluster::wait_manifest(&c[i], REPO, round, &body, Duration::from_secs(5)).await.unwrap();
    }

    for &i in &others {
        c.pause(i);
    }
    eprintln!("{}: {} is alone", round, c[alone].name);

    // The operator can still ask the region what it sees, promptly: the frozen regions
    // are unreachable (a follower does not wait on its frozen leader).
    let t0 = Instant::now();
    let regions = c.regions_at(alone).await.unwrap_or_else(|e| panic!("{round}: region list while isolated: {e}"));
    assert!(t0.elapsed() < Duration::from_secs(10), "{round}: region list took {:?}", t0.elapsed());
    for &i in &others {
        let entry = regions.iter().find(|r| r.name == c[i].name).unwrap_or_else(|| panic!("{round}: {} not listed", c[i].name));
        assert!(!entry.reachable, "{round}: frozen {} listed as reachable: {regions:?}", c[i].name);
    }

    // Pulls keep working from local state.
    let t0 = Instant::now();
    oci::assert_manifest_content(&c[alone], REPO, round, OCI_MANIFEST, &body).await;
    oci::assert_manifest_content(&c[alone], REPO, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(oci::manifest_status(&c[alone], REPO, round).await, 200, "HEAD by tag while isolated");
    let tags = oci::list_tags(&c[alone], REPO).await.expect("tags list while isolated");
    assert!(tags.contains(&round.to_string()), "tags list while isolated: {tags:?}");
    oci::assert_blob_content(&c[alone], REPO, &layer.digest, &oci::test_bytes(&format!("layer-{round}"), 512)).await;
    eprintln!("{round}: reads served while isolated ({:?})", t0.elapsed());

    // A push is refused with 503 UNAVAILABLE + Retry-After.
    let new_body = cluster::numbered_manifest(&config, &layer, &format!("{round}-during"));
    let t0 = Instant::now();
    let r = cluster::try_put_manifest(&client, &c[alone], REPO, round, OCI_MANIFEST, &new_body)
        .await
        .unwrap_or_else(|e| panic!("{round}: PUT while isolated got no answer: {e}"));
    let took = t0.elapsed();
    eprintln!("{round}: PUT while isolated → {} after {took:?}: {} (Retry-After {:?})", r.status, r.text(), r.header("retry-after"));
    assert_eq!(r.status, 503, "{round}: PUT while isolated: {} {}", r.status, r.text());
    assert!(cluster::is_unavailable_error(&r), "{round}: 503 body is not an OCI UNAVAILABLE error: {}", r.text());
    assert!(r.text().to_ascii_lowercase().contains("quorum"), "{round}: 503 message should say no quorum is reachable: {}", r.text());
    let retry_after = r.header("retry-after").unwrap_or_else(|| panic!("{round}: 503 without Retry-After"));
    assert!(retry_after.trim().parse::<u64>().is_ok(), "{round}: Retry-After {retry_after:?} is not delay-seconds");
    assert!(took < Duration::from_secs(10), "{round}: the 503 took {took:?}");
    // Pulls still work after the refused write; the tag is unchanged.
    oci::assert_manifest_content(&c[alone], REPO, round, OCI_MANIFEST, &body).await;

    // Something the region never heard of: it cannot tell "absent" from "pushed elsewhere
    // while I was cut off", so it says 503 UNAVAILABLE rather than a 404 it cannot stand behind.
    let unheard = oci::sha256_digest(format!("{round}: pushed nowhere").as_bytes());
    let r = cluster::try_get_manifest(&client, &c[alone], REPO, &unheard, false).await.expect("GET while isolated");
    assert_eq!(r.status, 503, "{round}: GET of an unknown digest while isolated: {} {}", r.status, r.text());
    assert!(cluster::is_unavailable_error(&r), "{round}: not an OCI UNAVAILABLE error: {}", r.text());
    assert!(r.header("retry-after").is_some(), "{round}: 503 without Retry-After");
    let r = client.get(c[alone].url(&format!("/v2/{REPO}/blobs/{unheard}"))).send().await.expect("blob GET while isolated");
    assert_eq!(r.status().as_u16(), 503, "{round}: blob GET of an unknown digest while isolated");

    for &i in &others {
        c.resume(i);
    }

    // Pushes succeed again.
    let after_body = cluster::numbered_manifest(&config, &layer, &format!("{round}-after"));
    let t0 = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let r = cluster::try_put_manifest(&client, &c[alone], REPO, round, OCI_MANIFEST, &after_body).await;
        match &r {
            Ok(r) if r.status == 201 => break,
            Ok(r) => attempts.push(format!("{} {}", r.status, r.text())),
            Err(e) => attempts.push(e.clone()),
        }
        if t0.elapsed() > Duration::from_secs(15) {
            panic!("{round}: pushes in {} still fail 15 s after the peers resumed: {attempts:?}", c[alone].name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{round}: push accepted {:?} after resume ({} failed attempts before)", t0.elapsed(), attempts.len());
    oci::assert_manifest_content(&c[alone], REPO, round, OCI_MANIFEST, &after_body).await;
    for i in 0..3 {
        cluster::wait_manifest(&c[i], REPO, round, &after_body, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c[i].name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn region_without_quorum_serves_pulls_and_refuses_pushes() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    isolated_region_serves_reads_refuses_writes(&mut c, leader, "leader-alone").await;
    let leader = c.leader().await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    isolated_region_serves_reads_refuses_writes(&mut c, follower, "follower-alone").await;
}

/// The first of `candidates` that reports itself leader (polled until one does).
async fn leader_among(c: &Cluster, candidates: &[usize], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for &i in candidates {
            match c.regions_at(i).await {
                Ok(regions) if regions.iter().any(|r| r.role == "leader" && r.name == c[i].name) => return i,
                Ok(regions) => eprintln!("{}: {regions:?}", c[i].name),
                Err(e) => eprintln!("{}: {e}", c[i].name),
            }
        }
        assert!(Instant::now() < deadline, "no leader among {candidates:?} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_never_reports_acknowledged_content_missing() {
    let mut c = Cluster::start_with(cluster::ClusterOptions::new(3).link_proxies()).await;
    let old = c.leader().await;
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let client = http_client(Duration::from_secs(15));

    for &j in &others {
        c.link(old, j).partition(true, true);
        c.link(j, old).partition(true, true);
    }
    let new = leader_among(&c, &others, Duration::from_secs(15)).await;
    // The old leader hears nothing: it still believes it leads, at a stale commit index.
    let regions = c.regions_at(old).await.expect("old leader's region list");
    assert!(
        regions.iter().any(|r| r.role == "leader" && r.name == c[old].name),
        "{} was expected to still believe it leads: {regions:?}",
        c[old].name
    );

    let (config, layer) = cluster::seed_blobs(&[&c[new]], REPO, "deposed").await;
    let body = cluster::numbered_manifest(&config, &layer, "pushed-while-the-old-leader-was-cut-off");
    let digest = oci::push_manifest(&c[new], REPO, "deposed", OCI_MANIFEST, &body).await;

    // Acknowledged by the cluster; the deposed leader has not heard of it and cannot
    // confirm with anyone: "cannot tell" (503), never MANIFEST_UNKNOWN / BLOB_UNKNOWN.
    for reference in [digest.as_str(), "deposed"] {
        let r = cluster::try_get_manifest(&client, &c[old], REPO, reference, false).await.expect("GET at the deposed leader");
        assert_eq!(r.status, 503, "deposed leader, manifest {reference}: {} {}", r.status, r.text());
        assert!(cluster::is_unavailable_error(&r), "not an OCI UNAVAILABLE error: {}", r.text());
    }
    let r = client.get(c[old].url(&format!("/v2/{REPO}/blobs/{}", layer.digest))).send().await.expect("blob GET");
    assert_eq!(r.status().as_u16(), 503, "deposed leader, blob {}", layer.digest);

    for &j in &others {
        c.link(old, j).heal();
        c.link(j, old).heal();
    }
    // After the heal: never a 404 on the way, and the image is served.
    let t0 = Instant::now();
    let mut answers = Vec::new();
    loop {
        let r = cluster::try_get_manifest(&client, &c[old], REPO, &digest, false).await;
        match &r {
            Ok(r) if r.status == 200 => {
                assert_eq!(r.body, body, "served bytes differ from what was pushed");
                break;
            }
            Ok(r) => {
                assert_ne!(r.status, 404, "{} answered 404 for an acknowledged manifest after the heal: {}", c[old].name, r.text());
                answers.push(r.status.to_string());
            }
            Err(e) => answers.push(e.clone()),
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "not served 15 s after the heal: {answers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("served {:?} after the heal (answers before: {answers:?})", t0.elapsed());
    oci::assert_blob_content(&c[old], REPO, &layer.digest, &oci::test_bytes("layer-deposed", 512)).await;
}
