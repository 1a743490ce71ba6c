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

use common::oci::{self, Descriptor, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use common::Node;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------
// skopeo discovery / installation
// ---------------------------------------------------------------------------

fn command_path(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

fn ensure_skopeo() -> PathBuf {
    if let Some(p) = command_path("skopeo") {
        return p;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "skopeo is not installed and this test runs as uid {euid}, so it cannot \
             `apt-get install -y skopeo` itself. Install skopeo (Debian: apt-get install -y skopeo) \
             and rerun; this test is required and is not skipped."
        );
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "skopeo"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let mut log = String::new();
    let mut ok = false;
    match install() {
        Ok(o) => {
            log.push_str(&String::from_utf8_lossy(&o.stderr));
            ok = o.status.success();
        }
        Err(e) => log.push_str(&format!("apt-get not runnable: {e}\n")),
    }
    if !ok {
        // The package index may be missing or stale.
        if let Ok(o) = Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
        {
            log.push_str(&String::from_utf8_lossy(&o.stderr));
        }
        match install() {
            Ok(o) => log.push_str(&String::from_utf8_lossy(&o.stderr)),
            Err(e) => log.push_str(&format!("apt-get not runnable: {e}\n")),
        }
    }
    command_path("skopeo").unwrap_or_else(|| {
        panic!(
            "skopeo is not installed and `apt-get install -y skopeo` failed; this test needs skopeo \
             (Debian bookworm: skopeo >= 1.9) and is not skipped. apt-get output:\n{log}"
        )
    })
}

fn check_skopeo_capabilities(skopeo: &Path) {
    let v = Command::new(skopeo).arg("--version").output().expect("run skopeo --version");
    let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
    println!("using {} ({version})", skopeo.display());
    assert!(v.status.success(), "`skopeo --version` failed: {version}");
    let help = Command::new(skopeo).args(["copy", "--help"]).output().expect("skopeo copy --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string() + &String::from_utf8_lossy(&help.stderr);
    for flag in ["--all", "--preserve-digests", "--dest-tls-verify", "--src-tls-verify"] {
        assert!(
            help.contains(flag),
            "{version} does not support `skopeo copy {flag}` (need skopeo >= 1.6)"
        );
    }
}

async fn run_skopeo(skopeo: &Path, args: &[&str]) -> Vec<u8> {
    println!("$ skopeo {}", args.join(" "));
    let fut = tokio::process::Command::new(skopeo)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), fut)
        .await
        .unwrap_or_else(|_| panic!("skopeo {} timed out after 180s", args.join(" ")))
        .expect("spawn skopeo");
    if !out.status.success() {
        panic!(
            "skopeo {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

// ---------------------------------------------------------------------------
// Building valid image bytes by hand: tar, gzip (stored deflate), JSON documents
// ---------------------------------------------------------------------------

/// A ustar archive with a single regular file.
fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid gzip member using stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(65535).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(if chunks.peek().is_none() { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

struct Layout {
    /// digest → bytes of every blob (layers, configs, manifests, index).
    blobs: BTreeMap<String, Vec<u8>>,
    index: Vec<u8>,
    /// (arch, manifest bytes, config bytes, layer bytes)
    children: Vec<(String, Vec<u8>, Vec<u8>, Vec<u8>)>,
}

fn build_layout(dir: &Path) -> Layout {
    let mut blobs = BTreeMap::new();
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        // Some incompressible-looking but deterministic content per arch.
        let mut content = format!("hello from linux/{arch}\n").into_bytes();
        let mut x: u64 = 0x1234_5678 + i as u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            content.push((x >> 24) as u8);
        }
        let tar = tar_one_file(&format!("etc/arch-{arch}.bin"), &content);
        let layer = gzip_stored(&tar);
        let config = serde_json::to_vec_pretty(&serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": { "Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"], "Labels": { "arch": arch } },
            "rootfs": { "type": "layers", "diff_ids": [oci::sha256_digest(&tar)] },
            "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "meridian test" }],
        }))
        .unwrap();
        // Pretty-printed with a trailing newline: the registry must store bytes, not JSON.
        let mut manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": Descriptor::of(OCI_CONFIG, &config).json(),
            "layers": [Descriptor::of(OCI_LAYER, &layer).json()],
            "annotations": { "org.opencontainers.image.title": format!("multi-{arch}") },
        }))
        .unwrap();
        manifest.push(b'\n');
        let mut d = Descriptor::of(OCI_MANIFEST, &manifest).json();
        d["platform"] = serde_json::json!({ "architecture": arch, "os": "linux" });
        if *arch == "arm64" {
            d["platform"]["variant"] = serde_json::json!("v8");
        }
        descs.push(d);
        for b in [&layer, &config, &manifest] {
            blobs.insert(oci::sha256_digest(b), b.clone());
        }
        children.push((arch.to_string(), manifest, config, layer));
    }
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descs,
        "annotations": { "org.opencontainers.image.description": "meridian multi-arch test" },
    }))
    .unwrap();
    blobs.insert(oci::sha256_digest(&index), index.clone());

    let bdir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&bdir).unwrap();
    for (d, b) in &blobs {
        std::fs::write(bdir.join(d.trim_start_matches("sha256:")), b).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut top = Descriptor::of(OCI_INDEX, &index).json();
    top["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "v1" });
    let index_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [top],
    }))
    .unwrap();
    std::fs::write(dir.join("index.json"), index_json).unwrap();
    Layout { blobs, index, children }
}

/// Reads every blob of an OCI layout directory: digest → bytes.
fn read_layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let bdir = dir.join("blobs").join("sha256");
    for e in std::fs::read_dir(&bdir).unwrap_or_else(|e| panic!("read {}: {e}", bdir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        out.insert(format!("sha256:{name}"), std::fs::read(e.path()).unwrap());
    }
    out
}

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
    let layout = build_layout(&src);
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
