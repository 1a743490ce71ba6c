//! A region whose blobs live in an S3-compatible object store (a real Garage on loopback):
//! skopeo pushes an image through it and pulls it back byte for byte, bad storage
//! settings stop `meridian serve` with a message naming the setting, and a store that
//! starts refusing writes mid-run makes pushes answer `503 UNAVAILABLE` (nothing kept)
//! while pulls of what it holds keep working, pulls can be redirected to presigned URLs,
//! and a multipart upload a crash cut short leaves no parts once the node is back.

mod common;

use common::garage::Garage;
use common::oci::*;
use common::skopeo::{build_layout, check_skopeo_capabilities, ensure_skopeo, read_layout_blobs, run_skopeo};
use common::{free_port, meridian_bin, Node, NODE_STORE_PREFIX};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts a node on `garage` (under the usual test prefix) with `extra` settings on top.
async fn node_on(garage: &Garage, extra: &[(&str, &str)]) -> Node {
    let mut env = garage.node_env(NODE_STORE_PREFIX);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start_with_env(&env).await
}

/// Runs `meridian serve` with `env`, expecting it to stop on its own within a minute;
/// returns its exit code and everything it printed.
fn serve_expecting_exit(env: &[(String, String)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(meridian_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("MERIDIAN_AUTH_ENABLED", "false")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meridian serve kept running with bad storage settings {env:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    (status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn with(env: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env.iter().filter(|(k, _)| k != key).cloned().collect();
    out.push((key.to_string(), value.to_string()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_pulls_through_a_region_on_s3() {
    let skopeo = ensure_skopeo();
    check_skopeo_capabilities(&skopeo);
    let garage = Garage::start().await;
    let node = node_on(&garage, &[]).await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    // A layer past the single-PUT size, so the push commits a multipart upload.
    let layout = build_layout(&src, 20 * 1024 * 1024);
    let remote = format!("docker://127.0.0.1:{}/s3/app:v1", node.port);
    let src_ref = format!("oci:{}:v1", src.display());
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src_ref, &remote])
        .await;

    // Every blob of the image is an object under the node's prefix, none on local disk.
    let keys = garage.list_keys(&format!("{NODE_STORE_PREFIX}/blobs"));
    let blob_digests = layout.children.iter().flat_map(|(_, _, config, layer)| [sha256_digest(config), sha256_digest(layer)]);
    for digest in blob_digests {
        assert!(keys.iter().any(|k| k.ends_with(encoded(&digest))), "{digest} not in the bucket: {keys:?}");
    }
    assert!(files_under(&node.data_dir.join("blobs")).is_empty(), "blobs written to local disk on an S3 region");
    assert_no_upload_files(&node);

    let dst = work.path().join("dst");
    let dst_ref = format!("oci:{}:v1", dst.display());
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", &remote, &dst_ref]).await;
    assert_eq!(read_layout_blobs(&dst), read_layout_blobs(&src), "pulled image differs from the pushed one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_storage_settings_stop_the_node_naming_the_setting() {
    let garage = Garage::start().await;
    let good = garage.node_env("bad-settings");

    let (code, out) = serve_expecting_exit(&with(&good, "MERIDIAN_STORAGE_SECRET_ACCESS_KEY", &"0".repeat(64)));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("storage.access_key_id and storage.secret_access_key"), "wrong secret: {out}");
    assert!(!out.contains(&garage.secret_access_key), "the secret was printed: {out}");

    let (code, out) = serve_expecting_exit(&with(&good, "MERIDIAN_STORAGE_BUCKET", "no-such-bucket"));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("storage.bucket"), "missing bucket: {out}");

    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, out) = serve_expecting_exit(&with(&good, "MERIDIAN_STORAGE_ENDPOINT", &closed));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("storage.endpoint"), "unreachable endpoint: {out}");

    let (code, out) = serve_expecting_exit(&with(&good, "MERIDIAN_STORAGE_BUCKET", ""));
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("storage.bucket is required"), "no bucket: {out}");

    let no_secret: Vec<_> = good.iter().filter(|(k, _)| k != "MERIDIAN_STORAGE_SECRET_ACCESS_KEY").cloned().collect();
    let (code, out) = serve_expecting_exit(&no_secret);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("storage.secret_access_key"), "half the credentials: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_shared_credentials_file() {
    let garage = Garage::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[other]\naws_access_key_id = GK000000000000000000000000\naws_secret_access_key = nope\n\n[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            garage.access_key_id, garage.secret_access_key
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = garage
        .node_env(NODE_STORE_PREFIX)
        .into_iter()
        .filter(|(k, _)| !k.contains("ACCESS_KEY"))
        .chain([("MERIDIAN_STORAGE_CREDENTIALS_FILE".to_string(), file.display().to_string())])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with_env(&env).await;
    let data = test_bytes("from-file", 4000);
    let digest = push_blob(&node, "creds/app", &data).await;
    assert_blob_content(&node, "creds/app", &digest, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_writes_fails_pushes_with_503_and_keeps_serving_pulls() {
    let garage = Garage::start().await;
    let node = node_on(&garage, &[]).await;
    let held = test_bytes("held", 300_000);
    let held_digest = push_blob(&node, "r/app", &held).await;

    // The node's key may now only read the bucket.
    assert!(garage.cli(&["bucket", "deny", "--write", &garage.bucket, "--key", &garage.access_key_id]));
    let refused = test_bytes("refused", 200_000);
    let refused_digest = sha256_digest(&refused);
    let resp = post_blob(&node, "r/app", &refused, &refused_digest).await;
    let body = assert_oci_error(resp, 503, "UNAVAILABLE").await;
    println!("refused push: {body}");
    assert_blob_absent(&node, "r/app", &refused_digest).await;
    assert_no_blob_file(&node, &refused_digest);
    assert_no_upload_files(&node);
    assert_blob_content(&node, "r/app", &held_digest, &held).await;

    // Writable again: the same push goes through.
    assert!(garage.cli(&["bucket", "allow", "--write", &garage.bucket, "--key", &garage.access_key_id]));
    let resp = post_blob(&node, "r/app", &refused, &refused_digest).await;
    expect_status(resp, 201).await;
    assert_blob_content(&node, "r/app", &refused_digest, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_gone_mid_run_fails_pushes_with_503() {
    let mut garage = Garage::start().await;
    let node = node_on(&garage, &[]).await;
    garage.kill();
    let data = test_bytes("store-gone", 100_000);
    let digest = sha256_digest(&data);
    let started = Instant::now();
    let resp = post_blob(&node, "gone/app", &data, &digest).await;
    assert_oci_error(resp, 503, "UNAVAILABLE").await;
    println!("503 after {:?}", started.elapsed());
    assert_no_upload_files(&node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirect_pulls_go_to_a_presigned_url_of_the_store() {
    let garage = Garage::start().await;
    let node = node_on(&garage, &[("MERIDIAN_STORAGE_REDIRECT", "true")]).await;
    let data = test_bytes("redirected", 3 * 1024 * 1024 + 5);
    let digest = push_blob(&node, "redir/app", &data).await;
    let url = node.url(&format!("/v2/redir/app/blobs/{digest}"));

    let direct = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = direct.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 307);
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    let location = require_header(&resp, "location");
    assert!(location.starts_with(&garage.endpoint), "redirected to {location}, not the store");
    assert!(location.contains("X-Amz-Signature="), "not a presigned URL: {location}");

    // Followed (as every client does), the bytes come from the store, whole or by range.
    let resp = expect_status(client().get(&url).send().await.unwrap(), 200).await;
    assert!(resp.bytes().await.unwrap().as_ref() == data.as_slice());
    let resp = client().get(&url).header("range", "bytes=1000-1999").send().await.unwrap();
    let resp = expect_status(resp, 206).await;
    assert!(resp.bytes().await.unwrap().as_ref() == &data[1000..2000]);

    // HEAD and unknown blobs are still answered by the node.
    expect_status(direct.head(&url).send().await.unwrap(), 200).await;
    let unknown = sha256_digest(b"never pushed");
    let resp = direct.get(node.url(&format!("/v2/redir/app/blobs/{unknown}"))).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_cut_short_by_a_crash_is_aborted_at_the_next_start() {
    let garage = Garage::start().await;
    let env = garage.node_env(NODE_STORE_PREFIX);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut node = Node::start_with_env(&env).await;
    let dir = node.data_dir.parent().unwrap().to_path_buf();

    // 400 MiB pushed in one request: received into staging, then sent to the bucket as
    // fifty 8 MiB parts, which takes long enough to kill the node in the middle.
    let chunk = bytes::Bytes::from(test_bytes("crash-mid-upload", 1 << 20));
    let chunks = 400;
    let digest = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for _ in 0..chunks {
            h.update(&chunk);
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    };
    let body = reqwest::Body::wrap_stream(futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))));
    let push = client()
        .post(node.url(&format!("/v2/crash/app/blobs/uploads/?digest={digest}")))
        .header("content-length", (chunks << 20).to_string())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send();
    let push = tokio::spawn(push);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !garage.bucket_info().contains("Unfinished uploads") {
        assert!(Instant::now() < deadline, "no multipart upload ever appeared:\n{}", garage.bucket_info());
        assert!(!push.is_finished(), "the push completed before the node could be killed mid-upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.kill9();
    let _ = push.await;
    let ledger = files_under(&dir.join("data/s3-uploads"));
    assert_eq!(ledger.len(), 1, "the open upload is in the ledger: {ledger:?}");
    assert!(garage.bucket_info().contains("Unfinished uploads"));
    // A damaged entry and a temporary file a crash left mid-write do not stop the start.
    std::fs::write(dir.join("data/s3-uploads/damaged"), [0xff, 0xfe, 0x00]).unwrap();
    std::fs::write(dir.join("data/s3-uploads/.tmp-torn"), b"node/blobs/sha256/ab").unwrap();

    let restarted = Node::start_in_with_env(&dir, free_port(), &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while garage.bucket_info().contains("Unfinished uploads") {
        assert!(Instant::now() < deadline, "the cut-short upload was not aborted:\n{}", garage.bucket_info());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(files_under(&dir.join("data/s3-uploads")).is_empty(), "the ledger keeps an aborted upload");
    assert!(garage.list_keys(&format!("{NODE_STORE_PREFIX}/blobs")).is_empty(), "a partial blob became visible");
    assert_blob_absent(&restarted, "crash/app", &digest).await;
    // `restarted` goes before `node`, whose temporary directory both ran in.
}
