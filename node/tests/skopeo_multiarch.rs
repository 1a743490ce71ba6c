//! Interoperability with a real client: skopeo copies a multi-arch OCI image index
//! (linux/amd64 + linux/arm64) from an OCI layout directory into the registry and
//! back, preserving digests.
//!
//! Asserts that the index digest, both child manifest digests and every blob survive
//! the round trip byte-identical (checked through skopeo's output layout, through
//! `skopeo inspect --raw`, and through direct registry GETs).
//!
//! skopeo must be present; when it is missing the test installs it with
//! `apt-get install -y skopeo` (as root) and otherwise fails with a clear message.

mod common;

use common::oci::{self, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use common::skopeo::{build_layout, check_skopeo_capabilities, command_path, ensure_skopeo, read_layout_blobs, run_skopeo};
use common::Node;
use std::process::Command;

/// GET a manifest accepting every manifest type: (Content-Type, Docker-Content-Digest, body).
async fn get_manifest(
    client: &reqwest::Client,
    node: &Node,
    repo: &str,
    reference: &str,
) -> (String, Option<String>, Vec<u8>) {
    let resp = client
        .get(node.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", "))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET manifest {repo}:{reference}: {e}"));
    let resp = oci::expect_status(resp, 200).await;
    let ctype = oci::header(&resp, "content-type").unwrap_or_default();
    let dcd = oci::header(&resp, "docker-content-digest");
    (ctype, dcd, resp.bytes().await.expect("manifest body").to_vec())
}

async fn get_blob(client: &reqwest::Client, node: &Node, repo: &str, digest: &str) -> Vec<u8> {
    let resp = client
        .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET blob {repo}@{digest}: {e}"));
    let resp = oci::expect_status(resp, 200).await;
    resp.bytes().await.expect("blob body").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_multiarch_index_in_and_out_preserving_digests() {
    let skopeo = ensure_skopeo();
    check_skopeo_capabilities(&skopeo);

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let dst = work.path().join("dst");
    let layout = build_layout(&src, 20_000);
    let index_digest = oci::sha256_digest(&layout.index);
    println!("index {index_digest}");
    for (arch, m, c, l) in &layout.children {
        println!(
            "  linux/{arch}: manifest {} config {} layer {} ({} bytes)",
            oci::sha256_digest(m),
            oci::sha256_digest(c),
            oci::sha256_digest(l),
            l.len()
        );
    }
    // Fixture self-check: the layer really is a tar.gz (if tar is available).
    if command_path("tar").is_some() {
        let f = work.path().join("layer-check.tar.gz");
        std::fs::write(&f, &layout.children[0].3).unwrap();
        let o = Command::new("tar").arg("-tzf").arg(&f).output().unwrap();
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("etc/arch-amd64.bin"),
            "test fixture bug: generated layer is not a valid tar.gz: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    let node = Node::start().await;
    let host = format!("127.0.0.1:{}", node.port);
    let remote = format!("docker://{host}/test/multi:v1");
    let src_ref = format!("oci:{}:v1", src.display());
    let dst_ref = format!("oci:{}:v1", dst.display());

    // 1. Push: OCI layout → registry.
    run_skopeo(
        &skopeo,
        &[
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &src_ref,
            &remote,
        ],
    )
    .await;

    // 2. The registry serves exactly the bytes skopeo pushed.
    let client = reqwest::Client::new();
    let (ctype, dcd, body) = get_manifest(&client, &node, "test/multi", "v1").await;
    assert_eq!(oci::sha256_digest(&body), index_digest, "index by tag: digest changed");
    assert!(body == layout.index, "index by tag: bytes differ");
    assert_eq!(ctype, OCI_INDEX, "index by tag: Content-Type");
    if let Some(d) = dcd {
        assert_eq!(d, index_digest, "index by tag: Docker-Content-Digest");
    }
    let (_, _, body) = get_manifest(&client, &node, "test/multi", &index_digest).await;
    assert!(body == layout.index, "index by digest: bytes differ");
    for (arch, m, c, l) in &layout.children {
        let md = oci::sha256_digest(m);
        let (ctype, _, body) = get_manifest(&client, &node, "test/multi", &md).await;
        assert!(body == *m, "linux/{arch} manifest {md}: bytes differ");
        assert_eq!(ctype, OCI_MANIFEST, "linux/{arch} manifest Content-Type");
        for b in [c, l] {
            let d = oci::sha256_digest(b);
            let got = get_blob(&client, &node, "test/multi", &d).await;
            assert!(got == *b, "linux/{arch} blob {d}: bytes differ");
        }
    }

    // 3. skopeo inspect --raw returns the exact index bytes (and child manifests).
    let raw = run_skopeo(&skopeo, &["inspect", "--raw", "--tls-verify=false", &remote]).await;
    assert!(
        raw == layout.index,
        "skopeo inspect --raw returned different bytes ({} bytes, digest {}) than the pushed index ({} bytes, {index_digest})",
        raw.len(),
        oci::sha256_digest(&raw),
        layout.index.len()
    );
    for (arch, m, _, _) in &layout.children {
        let r = format!("docker://{host}/test/multi@{}", oci::sha256_digest(m));
        let raw = run_skopeo(&skopeo, &["inspect", "--raw", "--tls-verify=false", &r]).await;
        assert!(raw == *m, "skopeo inspect --raw of linux/{arch} manifest: bytes differ");
    }

    // 4. Pull back: registry → fresh OCI layout, digests preserved.
    run_skopeo(
        &skopeo,
        &[
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            &remote,
            &dst_ref,
        ],
    )
    .await;

    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).expect("dst index.json")).unwrap();
    let top = idx["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .expect("dst index.json has no v1 entry");
    assert_eq!(top["digest"], index_digest.as_str(), "pulled index digest");
    assert_eq!(top["mediaType"], OCI_INDEX, "pulled top-level mediaType");
    assert_eq!(top["size"].as_u64(), Some(layout.index.len() as u64), "pulled index size");

    let pulled = read_layout_blobs(&dst);
    for (d, b) in &layout.blobs {
        let got = pulled
            .get(d)
            .unwrap_or_else(|| panic!("blob {d} missing from the pulled layout"));
        assert!(got == b, "pulled blob {d} differs from the original");
    }
    let extra: Vec<&String> = pulled.keys().filter(|d| !layout.blobs.contains_key(*d)).collect();
    assert!(extra.is_empty(), "pulled layout has unexpected blobs: {extra:?}");
    for (d, b) in &pulled {
        assert_eq!(&oci::sha256_digest(b), d, "pulled layout blob file {d} does not match its name");
    }
    // The source layout is unchanged too (sanity: nothing rewritten in place).
    assert_eq!(read_layout_blobs(&src), layout.blobs);
    println!(
        "round trip OK: index {index_digest}, {} children, {} blobs byte-identical",
        layout.children.len(),
        layout.blobs.len()
    );
}
