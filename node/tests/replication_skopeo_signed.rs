//! A signed multi-arch image pushed with skopeo in one region is pulled, byte-identical,
//! with skopeo from the two other regions right away, before background replication has
//! copied its blobs there; its signature (an OCI referrer) is visible everywhere too.
//!
//! Three regions with `MERIDIAN_REPLICATION_BANDWIDTH_LIMIT=2000000` (2 MB/s per source
//! region), so the ~6 MiB of layers cannot have replicated by the time the pulls start.
//!
//! * `skopeo copy --all --preserve-digests` of an OCI layout (index → linux/amd64 +
//!   linux/arm64, ~3 MiB layer each) into region A.
//! * A cosign-style signature manifest (`artifactType` cosign sig, empty config, one
//!   layer, `subject` = the index) pushed by digest in A with plain HTTP.
//! * Immediately: `skopeo copy --all --preserve-digests` from B and from C into fresh OCI
//!   layouts; every blob and manifest there is byte-identical to the original (same
//!   digests, same bytes, nothing extra).
//! * `GET /v2/<repo>/referrers/<index digest>` in B and C lists the signature with its
//!   artifactType; the signature manifest (by digest) and its layer blob come back exact.
//! * Within 60 s B's and C's data dirs hold a verified file for every blob.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci::{self, Descriptor, OCI_INDEX, OCI_MANIFEST};
use common::skopeo::{build_layout, check_skopeo_capabilities, ensure_skopeo, read_layout_blobs, run_skopeo};
use common::Node;
use std::time::{Duration, Instant};

const REPO: &str = "signed/app";
const SIG_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SIG_LAYER_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Bytes of pseudo-random file content per platform layer (~3 MiB).
const LAYER_CONTENT: usize = 3 << 20;

/// Pulls `docker://<node>/signed/app:v1` with skopeo into `dst` and checks the layout
/// against the original blobs.
async fn pull_and_compare(
    skopeo: &std::path::Path,
    region: &str,
    node: &Node,
    dst: &std::path::Path,
    original: &std::collections::BTreeMap<String, Vec<u8>>,
    index: &[u8],
) {
    let remote = format!("docker://127.0.0.1:{}/{REPO}:v1", node.port);
    let dst_ref = format!("oci:{}:v1", dst.display());
    let t0 = Instant::now();
    run_skopeo(
        skopeo,
        &["--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", &remote, &dst_ref],
    )
    .await;
    println!("region {region}: skopeo pull took {:.1}s", t0.elapsed().as_secs_f64());

    let index_digest = oci::sha256_digest(index);
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).expect("pulled index.json")).unwrap();
    let top = idx["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap_or_else(|| panic!("region {region}: pulled index.json has no v1 entry: {idx}"));
    assert_eq!(top["digest"], index_digest.as_str(), "region {region}: pulled index digest");
    assert_eq!(top["mediaType"], OCI_INDEX, "region {region}: pulled top-level mediaType");
    assert_eq!(top["size"].as_u64(), Some(index.len() as u64), "region {region}: pulled index size");

    let pulled = read_layout_blobs(dst);
    for (d, b) in original {
        let got = pulled
            .get(d)
            .unwrap_or_else(|| panic!("region {region}: blob/manifest {d} missing from the pulled layout"));
        assert!(
            got == b,
            "region {region}: pulled {d} differs from the original ({} vs {} bytes, digest {})",
            got.len(),
            b.len(),
            oci::sha256_digest(got)
        );
    }
    let extra: Vec<&String> = pulled.keys().filter(|d| !original.contains_key(*d)).collect();
    assert!(extra.is_empty(), "region {region}: pulled layout has unexpected blobs: {extra:?}");
    for (d, b) in &pulled {
        assert_eq!(&oci::sha256_digest(b), d, "region {region}: pulled blob file {d} does not match its name");
    }
    println!("region {region}: {} blobs/manifests byte-identical", pulled.len());
}

/// Checks the referrers list, the signature manifest and the signature layer in a region.
async fn check_signature(
    region: &str,
    node: &Node,
    index_digest: &str,
    sig_manifest: &[u8],
    sig_digest: &str,
    sig_layer: &[u8],
) {
    let client = oci::client();
    let resp = client
        .get(node.url(&format!("/v2/{REPO}/referrers/{index_digest}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("region {region}: GET referrers: {e}"));
    let resp = oci::expect_status(resp, 200).await;
    let ct = oci::header(&resp, "content-type").unwrap_or_default();
    assert!(ct.starts_with(OCI_INDEX), "region {region}: referrers Content-Type {ct:?}");
    let list: serde_json::Value = resp.json().await.expect("referrers JSON");
    let entries = list["manifests"].as_array().unwrap_or_else(|| panic!("region {region}: referrers: {list}"));
    let entry = entries
        .iter()
        .find(|m| m["digest"] == sig_digest)
        .unwrap_or_else(|| panic!("region {region}: signature {sig_digest} not in referrers: {list}"));
    assert_eq!(entry["artifactType"], SIG_ARTIFACT_TYPE, "region {region}: referrer artifactType: {entry}");
    assert_eq!(entry["mediaType"], OCI_MANIFEST, "region {region}: referrer mediaType: {entry}");
    assert_eq!(entry["size"].as_u64(), Some(sig_manifest.len() as u64), "region {region}: referrer size: {entry}");
    assert_eq!(entries.len(), 1, "region {region}: exactly one referrer expected: {list}");

    let resp = oci::get_manifest(node, REPO, sig_digest).await;
    let resp = oci::expect_status(resp, 200).await;
    let ct = oci::header(&resp, "content-type").unwrap_or_default();
    assert_eq!(ct, OCI_MANIFEST, "region {region}: signature manifest Content-Type");
    let body = resp.bytes().await.expect("signature manifest body");
    assert!(body.as_ref() == sig_manifest, "region {region}: signature manifest bytes differ");

    let layer_digest = oci::sha256_digest(sig_layer);
    let (status, body) = oci::get_blob(node, REPO, &layer_digest).await.unwrap();
    assert_eq!(status, 200, "region {region}: GET signature layer {layer_digest}");
    assert!(body == sig_layer, "region {region}: signature layer bytes differ");
    println!("region {region}: referrer {sig_digest} ({SIG_ARTIFACT_TYPE}) and its layer served exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_multiarch_image_pushed_with_skopeo_pulls_from_every_region_at_once() {
    let skopeo = ensure_skopeo();
    check_skopeo_capabilities(&skopeo);

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let layout = build_layout(&src, LAYER_CONTENT);
    let index_digest = oci::sha256_digest(&layout.index);
    // Blobs proper (configs, layers) as opposed to manifests, which live in the metadata.
    let mut blob_digests: Vec<String> = Vec::new();
    let mut layer_digests: Vec<String> = Vec::new();
    for (arch, m, cfg, l) in &layout.children {
        println!(
            "linux/{arch}: manifest {} config {} layer {} ({} bytes)",
            oci::sha256_digest(m),
            oci::sha256_digest(cfg),
            oci::sha256_digest(l),
            l.len()
        );
        assert!(l.len() >= 3 << 20, "fixture: layer must be ~3 MiB");
        blob_digests.push(oci::sha256_digest(cfg));
        blob_digests.push(oci::sha256_digest(l));
        layer_digests.push(oci::sha256_digest(l));
    }

    let c = Cluster::start_with(ClusterOptions::new(3).env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "2000000")).await;
    let (a, b, cc) = (0, 1, 2);

    // 1. skopeo pushes the multi-arch layout into region A.
    let dest = format!("docker://127.0.0.1:{}/{REPO}:v1", c[a].port);
    let src_ref = format!("oci:{}:v1", src.display());
    let t_push = Instant::now();
    run_skopeo(
        &skopeo,
        &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src_ref, &dest],
    )
    .await;
    println!("skopeo push to A took {:.1}s", t_push.elapsed().as_secs_f64());

    // 2. The signature: an artifact manifest whose subject is the index, pushed by digest in A.
    let empty = oci::push_empty_config(&c[a], REPO).await;
    assert_eq!(empty.digest, oci::EMPTY_DIGEST);
    let sig_layer = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": format!("127.0.0.1:{}/{REPO}", c[a].port) },
            "image": { "docker-manifest-digest": index_digest },
            "type": "cosign container image signature",
        },
        "optional": { "signature": "MEUCIQD-meridian-test-signature-bytes" },
    }))
    .unwrap();
    let sig_layer_desc = oci::push_blob_desc(&c[a], REPO, SIG_LAYER_TYPE, &sig_layer).await;
    let subject = Descriptor::of(OCI_INDEX, &layout.index);
    let sig_manifest = oci::to_bytes(&oci::artifact_manifest(
        SIG_ARTIFACT_TYPE,
        &sig_layer_desc,
        Some(&subject),
        Some(serde_json::json!({ "dev.cosignproject.cosign/signature": "MEUCIQD-meridian-test" })),
    ));
    let sig_digest = oci::sha256_digest(&sig_manifest);
    let pushed = oci::push_manifest(&c[a], REPO, &sig_digest, OCI_MANIFEST, &sig_manifest).await;
    assert_eq!(pushed, sig_digest, "signature manifest digest");
    blob_digests.push(oci::EMPTY_DIGEST.to_string());
    blob_digests.push(sig_layer_desc.digest.clone());
    println!("signature {sig_digest} pushed in A, {:.1}s after the skopeo push started", t_push.elapsed().as_secs_f64());

    // Informational: how much of the big layers had already landed in B and C (at
    // 2 MB/s per source the answer should be "not all of them").
    for (name, i) in [("B", b), ("C", cc)] {
        let have = layer_digests.iter().filter(|d| oci::blob_file_verified(&c[i], d)).count();
        println!("region {name}: {have}/{} layers already local before the pull", layer_digests.len());
    }

    // 3. No waiting: pull from B and from C with skopeo (concurrently, so neither pull
    //    can profit from the other finishing first), byte-identical layouts.
    let (dst_b, dst_c) = (work.path().join("dst-B"), work.path().join("dst-C"));
    tokio::join!(
        pull_and_compare(&skopeo, "B", &c[b], &dst_b, &layout.blobs, &layout.index),
        pull_and_compare(&skopeo, "C", &c[cc], &dst_c, &layout.blobs, &layout.index),
    );

    // 4. The signature is a referrer of the index in B and C, with exact bytes.
    for (name, i) in [("B", b), ("C", cc)] {
        check_signature(name, &c[i], &index_digest, &sig_manifest, &sig_digest, &sig_layer).await;
    }

    // 5. Background replication completes: every blob file is in B's and C's data dirs.
    for (name, i) in [("B", b), ("C", cc)] {
        match oci::wait_blob_files(&c[i], &blob_digests, Duration::from_secs(60)).await {
            Ok(t) => println!("region {name}: all {} blob files verified after {:.1}s more", blob_digests.len(), t.as_secs_f64()),
            Err(e) => panic!("region {name}: background replication incomplete: {e}"),
        }
    }
    // A (the source) has them too.
    for d in &blob_digests {
        assert!(oci::blob_file_verified(&c[a], d), "region A lost blob {d}");
    }
    println!("OK: index {index_digest}, signature {sig_digest}, {} blobs in every region", blob_digests.len());
}
