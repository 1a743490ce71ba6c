//! skopeo helpers shared by the interoperability tests: finding (or installing) skopeo,
//! running it, and building / reading OCI image layout directories by hand.

use super::oci::{self, Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------
// skopeo discovery / installation
// ---------------------------------------------------------------------------

pub fn command_path(name: &str) -> Option<PathBuf> {
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

pub fn ensure_skopeo() -> PathBuf {
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

pub fn check_skopeo_capabilities(skopeo: &Path) {
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

pub async fn run_skopeo(skopeo: &Path, args: &[&str]) -> Vec<u8> {
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
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
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

pub fn crc32(data: &[u8]) -> u32 {
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
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
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

pub struct Layout {
    /// digest → bytes of every blob (layers, configs, manifests, index).
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub index: Vec<u8>,
    /// (arch, manifest bytes, config bytes, layer bytes)
    pub children: Vec<(String, Vec<u8>, Vec<u8>, Vec<u8>)>,
}

/// Writes an OCI image layout into `dir`: tag `v1` → an OCI index of two platform
/// manifests (linux/amd64, linux/arm64/v8), each with a config and one tar+gzip layer whose
/// single file holds `content_len` deterministic pseudo-random bytes.
pub fn build_layout(dir: &Path, content_len: usize) -> Layout {
    let mut blobs = BTreeMap::new();
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        // Some incompressible-looking but deterministic content per arch.
        let mut content = format!("hello from linux/{arch}\n").into_bytes();
        let mut x: u64 = 0x1234_5678 + i as u64;
        for _ in 0..content_len {
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
pub fn read_layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let bdir = dir.join("blobs").join("sha256");
    for e in std::fs::read_dir(&bdir).unwrap_or_else(|e| panic!("read {}: {e}", bdir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        out.insert(format!("sha256:{name}"), std::fs::read(e.path()).unwrap());
    }
    out
}
