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
//! * after SIGCONT, pushes in that region succeed again (within ~15 s), and the value is
//!   then served in every region.

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
