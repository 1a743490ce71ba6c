//! Push in one region, pull everywhere: three `meridian` processes (regions A = the
//! leader, B and C = followers).
//!
//! * An image pushed in follower region B (blobs + manifest by tag) is readable by tag
//!   in B right after the 201, without polling (read-your-writes: B answers a forwarded
//!   write only once it applied it itself).
//! * A and C serve the same digest and bytes by tag within a few seconds (polled), and
//!   list the tag.
//! * A tag moved in B is returned at once by C with `Meridian-Consistency: linearizable`
//!   (no polling), and likewise a push in A read linearizably in B.
//! * A manifest DELETE in C (a Raft entry too) is visible in C at once and in B with a
//!   linearizable read.

mod common;

use common::cluster::{self, http_client, try_get_manifest, Cluster};
use common::oci::{self, OCI_MANIFEST};
use std::time::Duration;

const REPO: &str = "team/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_in_follower_region_pull_everywhere() {
    let mut c = Cluster::start(3).await;
    let a = c.leader().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != a).collect();
    let (b, cc) = (followers[0], followers[1]);
    eprintln!("A (leader) = {}, B = {}, C = {}", c[a].name, c[b].name, c[cc].name);
    let client = http_client(Duration::from_secs(10));

    // 1. Push blobs and manifest by tag in B.
    let img = oci::push_image(&c[b], REPO, "v1", "push-pull-v1").await;
    eprintln!("pushed {REPO}:v1 = {} in {}", img.digest, c[b].name);

    // 2. Read-your-writes in B: no polling.
    let r = try_get_manifest(&client, &c[b], REPO, "v1", false).await.expect("GET in B");
    assert_eq!(r.status, 200, "B must serve its own acknowledged write at once; got {} {}", r.status, r.text());
    assert_eq!(r.header("docker-content-digest").as_deref(), Some(img.digest.as_str()), "B: tag v1 digest");
    assert_eq!(r.body, img.manifest, "B: manifest bytes");
    oci::assert_manifest_content(&c[b], REPO, &img.digest, OCI_MANIFEST, &img.manifest).await;

    // 3. A and C converge (polled).
    for i in [a, cc] {
        let took = cluster::wait_manifest(&c[i], REPO, "v1", &img.manifest, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c[i].name));
        eprintln!("{} serves {REPO}:v1 after {took:?}", c[i].name);
        oci::assert_manifest_content(&c[i], REPO, "v1", OCI_MANIFEST, &img.manifest).await;
        oci::assert_manifest_content(&c[i], REPO, &img.digest, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(oci::manifest_status(&c[i], REPO, "v1").await, 200, "{}: HEAD by tag", c[i].name);
        let tags = oci::list_tags(&c[i], REPO).await.unwrap_or_default();
        assert!(tags.contains(&"v1".to_string()), "{}: tags list {tags:?} lacks v1", c[i].name);
    }

    // 4. Move a tag in B; a linearizable read in C returns it at once.
    let (config, layer) = cluster::seed_blobs(&[&c[b]], REPO, "push-pull-latest").await;
    for round in 0..3 {
        let body = cluster::numbered_manifest(&config, &layer, &format!("latest-{round}"));
        let digest = oci::push_manifest(&c[b], REPO, "latest", OCI_MANIFEST, &body).await;
        let r = try_get_manifest(&client, &c[cc], REPO, "latest", true).await.expect("linearizable GET in C");
        assert_eq!(
            r.status, 200,
            "C with Meridian-Consistency: linearizable right after B's 201 (round {round}): {} {}",
            r.status,
            r.text()
        );
        assert_eq!(
            r.header("docker-content-digest").as_deref(),
            Some(digest.as_str()),
            "C linearizable read of latest (round {round}) must return B's acknowledged write"
        );
        assert_eq!(r.body, body, "C: linearizable read bytes (round {round})");
        // And B itself, without the header.
        let r = try_get_manifest(&client, &c[b], REPO, "latest", false).await.expect("GET in B");
        assert_eq!(r.header("docker-content-digest").as_deref(), Some(digest.as_str()), "B: read-your-writes (round {round})");
    }

    // 5. A push in the leader region, read linearizably in B.
    let (config, layer) = cluster::seed_blobs(&[&c[a]], REPO, "push-pull-a").await;
    let body = cluster::numbered_manifest(&config, &layer, "from-a");
    let digest = oci::push_manifest(&c[a], REPO, "from-a", OCI_MANIFEST, &body).await;
    let r = try_get_manifest(&client, &c[b], REPO, "from-a", true).await.expect("linearizable GET in B");
    assert_eq!(r.status, 200, "B linearizable read of A's push: {} {}", r.status, r.text());
    assert_eq!(r.header("docker-content-digest").as_deref(), Some(digest.as_str()));

    // 6. DELETE by digest in C: C sees it at once, B with a linearizable read.
    let (config, layer) = cluster::seed_blobs(&[&c[cc]], REPO, "push-pull-del").await;
    let body = cluster::numbered_manifest(&config, &layer, "to-delete");
    let digest = oci::push_manifest(&c[cc], REPO, "to-delete", OCI_MANIFEST, &body).await;
    let r = try_get_manifest(&client, &c[b], REPO, "to-delete", true).await.expect("GET in B");
    assert_eq!(r.status, 200, "B linearizable read of C's push: {} {}", r.status, r.text());
    eprintln!("DELETE {REPO}@{digest} in {}", c[cc].name);
    let resp = client
        .delete(c[cc].url(&format!("/v2/{REPO}/manifests/{digest}")))
        .send()
        .await
        .expect("DELETE");
    oci::expect_status(resp, 202).await;
    oci::assert_manifest_absent(&c[cc], REPO, &digest).await;
    let r = try_get_manifest(&client, &c[b], REPO, &digest, true).await.expect("GET in B");
    assert_eq!(r.status, 404, "B linearizable read after C's DELETE: {} {}", r.status, r.text());

    // Everything else is still served everywhere.
    for i in 0..3 {
        cluster::wait_manifest(&c[i], REPO, "v1", &img.manifest, Duration::from_secs(5)).await.unwrap();
    }
}
