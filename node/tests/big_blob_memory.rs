//! Big blobs are streamed, never buffered: a 2 GiB blob is pushed monolithically
//! (POST + PUT) and a 1 GiB blob in four 256 MiB PATCH chunks, both generated on the
//! fly from a cheap deterministic generator and never held in memory by the test.
//! Both are then streamed back with GET and hashed. Finally the server's peak RSS
//! (VmHWM from /proc/<pid>/status) must stay below 200 MiB.

mod common;

use bytes::Bytes;
use common::oci::{self, header};
use common::Node;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const MONO_SIZE: u64 = 2 * GIB;
const CHUNKED_SIZE: u64 = GIB;
const CHUNK: u64 = 256 * MIB;
const RSS_LIMIT_KIB: u64 = 200 * 1024;
const REPO: &str = "big/blob";

/// splitmix64 stream: word `i` of stream `seed` is computable directly, so any
/// byte range can be generated independently (8-byte aligned offsets).
#[derive(Clone)]
struct Gen {
    state: u64,
    remaining: u64,
}

impl Gen {
    fn new(seed: u64, byte_offset: u64, len: u64) -> Gen {
        assert!(byte_offset % 8 == 0 && len % 8 == 0);
        Gen {
            state: seed.wrapping_add((byte_offset / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            remaining: len,
        }
    }
}

impl Iterator for Gen {
    type Item = Bytes;
    fn next(&mut self) -> Option<Bytes> {
        if self.remaining == 0 {
            return None;
        }
        let n = self.remaining.min(MIB) as usize;
        let mut buf = vec![0u8; n];
        for w in buf.chunks_exact_mut(8) {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            w.copy_from_slice(&z.to_le_bytes());
        }
        self.remaining -= n as u64;
        Some(Bytes::from(buf))
    }
}

/// A streaming request body over `gen`, optionally feeding a shared hasher.
fn body(gen: Gen, hasher: Option<Arc<Mutex<Sha256>>>) -> reqwest::Body {
    let s = futures::stream::iter(gen.map(move |b| {
        if let Some(h) = &hasher {
            h.lock().unwrap().update(&b);
        }
        Ok::<Bytes, std::io::Error>(b)
    }));
    reqwest::Body::wrap_stream(s)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}


/// Streams `GET /v2/<repo>/blobs/<digest>` and returns (bytes, digest) of the body.
async fn get_and_hash(client: &reqwest::Client, base: &str, digest: &str) -> (u64, String) {
    let resp = client
        .get(format!("{base}/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET blob {digest}: {e}"));
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "GET blob {digest}");
    let cl = resp.content_length();
    let mut stream = resp.bytes_stream();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("GET blob {digest}: body error after {n} bytes: {e}"));
        n += chunk.len() as u64;
        h.update(&chunk);
    }
    if let Some(cl) = cl {
        assert_eq!(cl, n, "GET blob {digest}: Content-Length vs body length");
    }
    (n, format!("sha256:{}", hex::encode(h.finalize())))
}

async fn head_size(client: &reqwest::Client, base: &str, digest: &str) -> Option<u64> {
    let resp = client
        .head(format!("{base}/v2/{REPO}/blobs/{digest}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD blob {digest}: {e}"));
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "HEAD blob {digest}");
    header(&resp, "content-length").and_then(|v| v.parse().ok())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / d.as_secs_f64().max(1e-9))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_blobs_stream_through_with_bounded_server_memory() {
    tokio::time::timeout(Duration::from_secs(600), run())
        .await
        .expect("big blob test did not finish within 10 minutes");
}

async fn run() {
    let test_start = Instant::now();
    let node = Node::start().await;
    let pid = node.pid();
    let base = node.base.clone();
    println!(
        "server pid {pid}: VmHWM at start {} KiB",
        proc_status_kib(pid, "VmHWM:").unwrap_or(0)
    );

    // Sample RSS while transferring, for the report (VmHWM is the authoritative peak).
    let done = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, max_rss) = (done.clone(), max_rss.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                if let Some(r) = proc_status_kib(pid, "VmRSS:") {
                    max_rss.fetch_max(r, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();

    // --- 1. 2 GiB monolithic: the digest must be known up front for PUT ?digest=,
    //        so hash one generation pass first (nothing is kept in memory).
    let t = Instant::now();
    let mono_digest = tokio::task::spawn_blocking(|| {
        let mut h = Sha256::new();
        for b in Gen::new(1, 0, MONO_SIZE) {
            h.update(&b);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    })
    .await
    .unwrap();
    println!("2 GiB digest precomputed in {:?}: {mono_digest}", t.elapsed());

    let t = Instant::now();
    let (loc, _) = oci::start_upload(&node, REPO).await;
    let resp = client
        .put(oci::with_query(&loc, &format!("digest={mono_digest}")))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, MONO_SIZE.to_string())
        .body(body(Gen::new(1, 0, MONO_SIZE), None))
        .send()
        .await
        .expect("PUT 2 GiB monolithic upload");
    let status = resp.status();
    let dcd = header(&resp, "docker-content-digest");
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, reqwest::StatusCode::CREATED, "PUT 2 GiB monolithic: {text}");
    if let Some(d) = dcd {
        assert_eq!(d, mono_digest, "Docker-Content-Digest of monolithic upload");
    }
    let el = t.elapsed();
    println!(
        "2 GiB monolithic PUT: {el:?} ({}), server VmHWM {} KiB",
        rate(MONO_SIZE, el),
        proc_status_kib(pid, "VmHWM:").unwrap_or(0)
    );

    // --- 2. 1 GiB in four 256 MiB PATCH chunks, hashed while generating.
    let t = Instant::now();
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let (mut loc, _) = oci::start_upload(&node, REPO).await;
    let mut off = 0u64;
    while off < CHUNKED_SIZE {
        let len = CHUNK.min(CHUNKED_SIZE - off);
        let resp = client
            .patch(&loc)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len.to_string())
            .header("Content-Range", format!("{}-{}", off, off + len - 1))
            .body(body(Gen::new(2, off, len), Some(hasher.clone())))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PATCH chunk at {off}: {e}"));
        let status = resp.status();
        let range = header(&resp, "range");
        let new_loc = header(&resp, "location");
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "PATCH chunk at {off}: {text}");
        if let Some(r) = range {
            assert_eq!(r, format!("0-{}", off + len - 1), "Range after PATCH chunk at {off}");
        }
        loc = oci::abs_url(&node, &new_loc.expect("PATCH response has no Location"));
        off += len;
        println!(
            "  PATCH {} MiB done, server VmRSS {} KiB",
            off / MIB,
            proc_status_kib(pid, "VmRSS:").unwrap_or(0)
        );
    }
    let chunked_digest = format!(
        "sha256:{}",
        hex::encode(std::mem::take(&mut *hasher.lock().unwrap()).finalize())
    );
    let resp = client
        .put(oci::with_query(&loc, &format!("digest={chunked_digest}")))
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .expect("PUT close chunked upload");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, reqwest::StatusCode::CREATED, "PUT close chunked upload: {text}");
    let el = t.elapsed();
    println!(
        "1 GiB chunked upload: {el:?} ({}), digest {chunked_digest}",
        rate(CHUNKED_SIZE, el)
    );

    // --- 3. Stream both back and hash.
    for (digest, size) in [(&mono_digest, MONO_SIZE), (&chunked_digest, CHUNKED_SIZE)] {
        if let Some(n) = head_size(&client, &base, digest).await {
            assert_eq!(n, size, "HEAD {digest}: Content-Length");
        }
        let t = Instant::now();
        let (n, got) = get_and_hash(&client, &base, digest).await;
        let el = t.elapsed();
        println!("GET {} MiB: {el:?} ({})", n / MIB, rate(n, el));
        assert_eq!(n, size, "GET {digest}: length");
        assert_eq!(&got, digest, "GET {digest}: content digest");
    }

    done.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let hwm = proc_status_kib(pid, "VmHWM:").expect("read VmHWM of the server process");
    println!(
        "server peak RSS (VmHWM) = {hwm} KiB = {:.1} MiB (max sampled VmRSS {} KiB); limit {} MiB; total test time {:?}",
        hwm as f64 / 1024.0,
        max_rss.load(Ordering::SeqCst),
        RSS_LIMIT_KIB / 1024,
        test_start.elapsed()
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "server peak RSS {hwm} KiB >= {RSS_LIMIT_KIB} KiB: blobs are buffered in memory instead of streamed"
    );
    drop(node);
}
