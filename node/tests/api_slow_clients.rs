//! Slow clients: a request body that stops delivering bytes is cut off after
//! `body_idle_timeout_secs` (1 s here) with `400`, and nothing of it is kept — the upload
//! session stays where it was and is still usable; a stalled manifest PUT creates no tag.
//! A client that never finishes its headers is disconnected after
//! `header_read_timeout_secs`.

mod common;

use common::{oci, Node};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` and the first bytes of a body that claims more, then stalls. Returns the
/// status the server answered with and how long it took after the stall began.
async fn stall(addr: &str, head: &str, partial: &[u8]) -> (u16, Duration) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(partial).await.expect("partial body");
    let stalled = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never gave up on a stalled body");
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, stalled.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_off_and_leave_nothing() {
    let node = Node::start_with_env(&[("MERIDIAN_BODY_IDLE_TIMEOUT_SECS", "1")]).await;
    let addr = format!("127.0.0.1:{}", node.port);
    let (url, _) = oci::start_upload(&node, "slow/app").await;
    let path = url.trim_start_matches(&node.base).to_string();

    // A chunk that promises 100 bytes and sends 10.
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\nContent-Range: 0-99\r\n\r\n"
    );
    let (status, after) = stall(&addr, &head, &[1u8; 10]).await;
    assert_eq!(status, 400, "stalled PATCH");
    assert!(after < Duration::from_secs(10), "cut off only after {after:?}");
    // The session is unchanged and still takes a proper chunk.
    let (code, range) = oci::upload_status(&url).await;
    assert_eq!(code, 204);
    // Offset 0 is reported as `0-0` (the spec's form for an empty session).
    assert_eq!(range.as_deref(), Some("0-0"), "range after the stall");
    let resp = oci::client()
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-9")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "the session still works");

    // A stalled manifest PUT creates nothing.
    let head = format!(
        "PUT /v2/slow/app/manifests/stalled HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {}\r\nContent-Length: 500\r\n\r\n",
        oci::OCI_MANIFEST
    );
    let (status, _) = stall(&addr, &head, b"{\"schemaVersion\": 2,").await;
    assert_eq!(status, 400, "stalled manifest PUT");
    oci::assert_manifest_absent(&node, "slow/app", "stalled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_finish_their_headers_are_disconnected() {
    let node = Node::start_with_env(&[("MERIDIAN_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", node.port)).await.expect("connect");
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("partial headers");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 before closing is fine too
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a slow-header client was still connected after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", started.elapsed());
    // Normal clients are unaffected.
    let resp = oci::client().get(node.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
