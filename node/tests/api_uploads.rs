//! Blob upload sessions: monolithic, chunked, streamed, status, cancel, mount.

mod common;

use common::oci::*;
use common::Node;

async fn patch_chunk(url: &str, data: &[u8], range: Option<(u64, u64)>) -> reqwest::Response {
    let mut req = client().patch(url).header("content-type", "application/octet-stream");
    if let Some((start, end)) = range {
        req = req.header("content-range", format!("{start}-{end}"));
    }
    req.body(data.to_vec()).send().await.unwrap()
}

/// The location to use next: the response's Location, made absolute.
fn next_location(node: &Node, resp: &reqwest::Response) -> String {
    abs_url(node, &require_header(resp, "location"))
}

fn looks_like_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[tokio::test]
async fn post_starts_session_with_uuid_location() {
    let node = Node::start().await;
    let (url, resp) = start_upload(&node, "up").await;
    let uuid = require_header(&resp, "docker-upload-uuid");
    assert!(looks_like_uuid(&uuid), "Docker-Upload-UUID {uuid:?} is not a UUID");
    let loc = require_header(&resp, "location");
    assert!(loc.contains(&uuid), "Location {loc} does not contain the session UUID {uuid}");
    assert!(loc.contains("/v2/up/blobs/uploads/"), "Location {loc}");
    let (status, _) = upload_status(&url).await;
    assert_eq!(status, 204, "GET on a fresh session");

    let (url2, resp2) = start_upload(&node, "up").await;
    assert_ne!(url, url2, "two sessions share a location");
    assert_ne!(uuid, require_header(&resp2, "docker-upload-uuid"));
}

#[tokio::test]
async fn post_then_put_monolithic() {
    let node = Node::start().await;
    let data = test_bytes("mono", 4096);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "mono").await;
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 201).await;
    assert_location_path(&resp, &format!("/v2/mono/blobs/{digest}"));
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_blob_content(&node, "mono", &digest, &data).await;
    assert_upload_gone(&url).await;
}

#[tokio::test]
async fn single_post_with_digest() {
    let node = Node::start().await;
    let data = test_bytes("single-post", 2048);
    let digest = sha256_digest(&data);
    let resp = expect_status(post_blob(&node, "single", &data, &digest).await, 201).await;
    assert_location_path(&resp, &format!("/v2/single/blobs/{digest}"));
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_blob_content(&node, "single", &digest, &data).await;
    assert_no_upload_files(&node);
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let node = Node::start().await;
    let data = test_bytes("chunked", 3000);
    let digest = sha256_digest(&data);
    let (mut url, _) = start_upload(&node, "chunky").await;

    for (start, end) in [(0u64, 999u64), (1000, 1999), (2000, 2999)] {
        let resp = patch_chunk(&url, &data[start as usize..=end as usize], Some((start, end))).await;
        let resp = expect_status(resp, 202).await;
        assert_eq!(require_header(&resp, "range"), format!("0-{end}"));
        url = next_location(&node, &resp);

        let status = client().get(&url).send().await.unwrap();
        let status = expect_status(status, 204).await;
        assert_eq!(require_header(&status, "range"), format!("0-{end}"));
        require_header(&status, "location");
    }

    let resp = client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap();
    let resp = expect_status(resp, 201).await;
    assert_location_path(&resp, &format!("/v2/chunky/blobs/{digest}"));
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_blob_content(&node, "chunky", &digest, &data).await;
    assert_upload_gone(&url).await;
}

#[tokio::test]
async fn chunked_upload_with_final_chunk_in_put() {
    let node = Node::start().await;
    let data = test_bytes("final-in-put", 1500);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "chunky").await;
    let resp = expect_status(patch_chunk(&url, &data[..1000], Some((0, 999))).await, 202).await;
    let url = next_location(&node, &resp);
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .header("content-range", "1000-1499")
        .body(data[1000..].to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_blob_content(&node, "chunky", &digest, &data).await;
}

#[tokio::test]
async fn patch_without_content_range_appends() {
    let node = Node::start().await;
    let data = test_bytes("stream", 2500);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "stream").await;
    let resp = expect_status(patch_chunk(&url, &data[..1200], None).await, 202).await;
    assert_eq!(require_header(&resp, "range"), "0-1199");
    let url = next_location(&node, &resp);
    let resp = expect_status(patch_chunk(&url, &data[1200..], None).await, 202).await;
    assert_eq!(require_header(&resp, "range"), "0-2499");
    let url = next_location(&node, &resp);
    let resp = client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap();
    expect_status(resp, 201).await;
    assert_blob_content(&node, "stream", &digest, &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_session_unchanged() {
    let node = Node::start().await;
    let data = test_bytes("skip", 3000);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "ooo").await;
    let resp = expect_status(patch_chunk(&url, &data[..1000], Some((0, 999))).await, 202).await;
    let url = next_location(&node, &resp);

    // Skips bytes 1000..1999.
    let resp = patch_chunk(&url, &data[2000..], Some((2000, 2999))).await;
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let (status, range) = upload_status(&url).await;
    assert_eq!(status, 204);
    assert_eq!(range.as_deref(), Some("0-999"), "a refused chunk changed the session");

    // The session is still usable from the right offset.
    let resp = expect_status(patch_chunk(&url, &data[1000..], Some((1000, 2999))).await, 202).await;
    let url = next_location(&node, &resp);
    let resp = client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap();
    expect_status(resp, 201).await;
    assert_blob_content(&node, "ooo", &digest, &data).await;
}

#[tokio::test]
async fn overlapping_chunk_is_416_and_session_unchanged() {
    let node = Node::start().await;
    let data = test_bytes("overlap", 2000);
    let (url, _) = start_upload(&node, "ooo").await;
    let resp = expect_status(patch_chunk(&url, &data[..1000], Some((0, 999))).await, 202).await;
    let url = next_location(&node, &resp);

    let resp = patch_chunk(&url, &data[500..1500], Some((500, 1499))).await;
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let (status, range) = upload_status(&url).await;
    assert_eq!(status, 204);
    assert_eq!(range.as_deref(), Some("0-999"));

    // Re-sending the very first chunk is an overlap too.
    let resp = patch_chunk(&url, &data[..1000], Some((0, 999))).await;
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let (_, range) = upload_status(&url).await;
    assert_eq!(range.as_deref(), Some("0-999"));
}

#[tokio::test]
async fn first_chunk_not_at_zero_is_416() {
    let node = Node::start().await;
    let data = test_bytes("nonzero", 100);
    let (url, _) = start_upload(&node, "ooo").await;
    let resp = patch_chunk(&url, &data, Some((10, 109))).await;
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let (status, range) = upload_status(&url).await;
    assert_eq!(status, 204);
    assert!(range.is_none() || range.as_deref() == Some("0-0"), "refused first chunk stored something: {range:?}");
}

#[tokio::test]
async fn content_range_disagreeing_with_length_is_refused() {
    let node = Node::start().await;
    let data = test_bytes("len-mismatch", 1000);
    let (url, _) = start_upload(&node, "lm").await;
    let resp = expect_status(patch_chunk(&url, &data[..500], Some((0, 499))).await, 202).await;
    let url = next_location(&node, &resp);
    // Claims 500 bytes, sends 100.
    let resp = patch_chunk(&url, &data[500..600], Some((500, 999))).await;
    assert_oci_error_any(resp, &[400, 416], &["BLOB_UPLOAD_INVALID", "SIZE_INVALID", "DIGEST_INVALID"]).await;
    let (status, range) = upload_status(&url).await;
    assert_eq!(status, 204);
    assert_eq!(range.as_deref(), Some("0-499"), "refused chunk was appended");
}

#[tokio::test]
async fn get_status_reports_location_and_range() {
    let node = Node::start().await;
    let (url, _) = start_upload(&node, "st").await;
    let resp = expect_status(client().get(&url).send().await.unwrap(), 204).await;
    require_header(&resp, "location");
    let resp = expect_status(patch_chunk(&url, b"0123456789", None).await, 202).await;
    let url = next_location(&node, &resp);
    let resp = expect_status(client().get(&url).send().await.unwrap(), 204).await;
    assert_eq!(require_header(&resp, "range"), "0-9");
    let loc = abs_url(&node, &require_header(&resp, "location"));
    // The status location must work for the next chunk.
    let resp = expect_status(patch_chunk(&loc, b"abc", Some((10, 12))).await, 202).await;
    assert_eq!(require_header(&resp, "range"), "0-12");
}

#[tokio::test]
async fn put_with_wrong_digest_is_refused_and_leaves_nothing() {
    let node = Node::start().await;
    let data = test_bytes("wrong-digest", 4000);
    let actual = sha256_digest(&data);
    let claimed = sha256_digest(b"something else entirely");
    let (url, _) = start_upload(&node, "wd").await;
    let resp = expect_status(patch_chunk(&url, &data[..2000], Some((0, 1999))).await, 202).await;
    let url = next_location(&node, &resp);
    let resp = client()
        .put(with_query(&url, &format!("digest={claimed}")))
        .header("content-type", "application/octet-stream")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;

    assert_eq!(blob_status(&node, "wd", &claimed).await, 404);
    assert_eq!(blob_status(&node, "wd", &actual).await, 404);
    assert_upload_gone(&url).await;
    assert_no_upload_files(&node);
    assert_no_blob_file(&node, &claimed);
    assert_no_blob_file(&node, &actual);
}

#[tokio::test]
async fn single_post_with_wrong_digest_is_refused_and_leaves_nothing() {
    let node = Node::start().await;
    let data = test_bytes("post-wrong", 1000);
    let claimed = sha256_digest(b"not this");
    let resp = post_blob(&node, "wd", &data, &claimed).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(blob_status(&node, "wd", &claimed).await, 404);
    assert_eq!(blob_status(&node, "wd", &sha256_digest(&data)).await, 404);
    assert_no_upload_files(&node);
    assert_no_blob_files(&node);
}

#[tokio::test]
async fn put_without_digest_is_digest_invalid() {
    let node = Node::start().await;
    let data = test_bytes("no-digest", 100);
    let (url, _) = start_upload(&node, "nd").await;
    let resp = client()
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    assert_eq!(blob_status(&node, "nd", &sha256_digest(&data)).await, 404);
    assert_no_blob_files(&node);
}

#[tokio::test]
async fn cancel_upload_then_404() {
    let node = Node::start().await;
    let (url, _) = start_upload(&node, "cancel").await;
    let resp = expect_status(patch_chunk(&url, &test_bytes("cancel", 5000), Some((0, 4999))).await, 202).await;
    let url = next_location(&node, &resp);
    // Guards the layout assumption behind every "no upload files" check.
    assert!(
        !files_under(&node.data_dir.join("uploads")).is_empty(),
        "an in-progress upload keeps no bytes under <data_dir>/uploads/"
    );
    let resp = client().delete(&url).send().await.unwrap();
    expect_status(resp, 204).await;
    assert_upload_gone(&url).await;
    assert_no_upload_files(&node);

    let resp = patch_chunk(&url, b"more", Some((5000, 5003))).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = client().put(with_query(&url, &format!("digest={}", sha256_digest(b"x")))).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = client().delete(&url).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_upload_files(&node);
}

#[tokio::test]
async fn unknown_upload_uuid_is_404() {
    let node = Node::start().await;
    let (url, resp) = start_upload(&node, "uu").await;
    let uuid = require_header(&resp, "docker-upload-uuid");
    let unknown = url.replace(&uuid, "00000000-0000-4000-8000-000000000000");
    assert_ne!(unknown, url);

    assert_upload_gone(&unknown).await;
    let resp = patch_chunk(&unknown, b"data", Some((0, 3))).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = client().put(with_query(&unknown, &format!("digest={}", sha256_digest(b"data")))).body("data").send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = client().delete(&unknown).send().await.unwrap();
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(blob_status(&node, "uu", &sha256_digest(b"data")).await, 404);

    // The real session is untouched.
    let (status, _) = upload_status(&url).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn upload_session_belongs_to_its_repository() {
    let node = Node::start().await;
    let (url, resp) = start_upload(&node, "owner").await;
    let uuid = require_header(&resp, "docker-upload-uuid");
    // The same UUID addressed through another repository is not a session there.
    let loc = require_header(&resp, "location");
    if loc.contains("/v2/owner/blobs/uploads/") {
        let foreign = abs_url(&node, &loc.replace("/v2/owner/", "/v2/intruder/"));
        assert!(foreign.contains(&uuid));
        assert_upload_gone(&foreign).await;
    }
    let (status, _) = upload_status(&url).await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn sha512_chunked_upload() {
    let node = Node::start().await;
    let data = test_bytes("sha512-chunked", 3000);
    let digest = sha512_digest(&data);
    let (url, _) = start_upload_query(&node, "s512", "digest-algorithm=sha512").await;
    let resp = expect_status(patch_chunk(&url, &data[..1000], Some((0, 999))).await, 202).await;
    let url = next_location(&node, &resp);
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data[1000..].to_vec())
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 201).await;
    assert_eq!(require_header(&resp, "docker-content-digest"), digest);
    assert_location_path(&resp, &format!("/v2/s512/blobs/{digest}"));
    assert_blob_content(&node, "s512", &digest, &data).await;
}

#[tokio::test]
async fn sha512_monolithic_post_then_put() {
    let node = Node::start().await;
    let data = test_bytes("sha512-mono", 100);
    let digest = sha512_digest(&data);
    push_blob_with_digest(&node, "s512", &data, &digest).await;
    assert_blob_content(&node, "s512", &digest, &data).await;
}

#[tokio::test]
async fn zero_length_blob_upload() {
    let node = Node::start().await;
    let digest = sha256_digest(b"");
    let (url, _) = start_upload(&node, "zero").await;
    let resp = client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap();
    expect_status(resp, 201).await;
    assert_blob_content(&node, "zero", &digest, b"").await;
}

#[tokio::test]
async fn completed_upload_leaves_no_upload_files() {
    let node = Node::start().await;
    let data = test_bytes("complete", 10_000);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "clean").await;
    let resp = expect_status(patch_chunk(&url, &data, Some((0, 9999))).await, 202).await;
    let url = next_location(&node, &resp);
    expect_status(client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap(), 201).await;
    assert_no_upload_files(&node);
    // Guards the layout assumption behind every "no blob file" check.
    let hex = encoded(&digest).to_string();
    assert!(
        node.stored_blob_names().iter().any(|p| p.contains(&hex)),
        "committed blob not found in the node's store"
    );
}

#[tokio::test]
async fn mount_from_another_repository() {
    let node = Node::start().await;
    let data = test_bytes("mount", 800);
    let digest = push_blob(&node, "source/app", &data).await;
    assert_eq!(blob_status(&node, "target/app", &digest).await, 404);

    let resp = client()
        .post(node.url(&format!("/v2/target/app/blobs/uploads/?mount={digest}&from=source/app")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 201).await;
    assert_location_path(&resp, &format!("/v2/target/app/blobs/{digest}"));
    assert_blob_content(&node, "target/app", &digest, &data).await;
    assert_blob_content(&node, "source/app", &digest, &data).await;
}

#[tokio::test]
async fn mount_without_from_finds_blob_anywhere() {
    let node = Node::start().await;
    let data = test_bytes("mount-anywhere", 100);
    let digest = push_blob(&node, "somewhere", &data).await;
    let resp = client()
        .post(node.url(&format!("/v2/elsewhere/blobs/uploads/?mount={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 201).await;
    assert_location_path(&resp, &format!("/v2/elsewhere/blobs/{digest}"));
    assert_blob_content(&node, "elsewhere", &digest, &data).await;
}

#[tokio::test]
async fn mount_of_unknown_blob_starts_an_upload() {
    let node = Node::start().await;
    push_blob(&node, "src", b"unrelated").await;
    let data = test_bytes("mount-miss", 300);
    let digest = sha256_digest(&data);
    let resp = client()
        .post(node.url(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=src")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    let resp = expect_status(resp, 202).await;
    let url = next_location(&node, &resp);
    assert_eq!(blob_status(&node, "dst", &digest).await, 404);
    // The session is an ordinary upload.
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_status(resp, 201).await;
    assert_blob_content(&node, "dst", &digest, &data).await;
}

#[tokio::test]
async fn mount_from_repository_without_the_blob_starts_an_upload() {
    let node = Node::start().await;
    let data = test_bytes("mount-wrong-from", 300);
    let digest = push_blob(&node, "has-it", &data).await;
    push_blob(&node, "lacks-it", b"other").await;
    let resp = client()
        .post(node.url(&format!("/v2/dst/blobs/uploads/?mount={digest}&from=lacks-it")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    // `from` names a repository that does not hold the blob: either the registry
    // treats `from` as a hint and mounts (201), or it starts an upload (202).
    let status = resp.status().as_u16();
    assert!(status == 201 || status == 202, "unexpected status {status}");
    if status == 202 {
        assert_eq!(blob_status(&node, "dst", &digest).await, 404);
    }
}

#[tokio::test]
async fn out_of_order_final_chunk_in_put_is_416() {
    let node = Node::start().await;
    let data = test_bytes("final-ooo", 2000);
    let digest = sha256_digest(&data);
    let (url, _) = start_upload(&node, "fo").await;
    let resp = expect_status(patch_chunk(&url, &data[..1000], Some((0, 999))).await, 202).await;
    let url = next_location(&node, &resp);
    // The closing chunk skips bytes 1000..1499.
    let resp = client()
        .put(with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .header("content-range", "1500-1999")
        .body(data[1500..].to_vec())
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(blob_status(&node, "fo", &digest).await, 404);
    assert_no_blob_file(&node, &digest);
}

/// `max_blob_bytes`: an upload that would make a blob larger gets `413 SIZE_INVALID`,
/// whether announced up front (Content-Length) or only found while streaming; what was
/// refused leaves nothing behind, and a session keeps what it had before the chunk.
#[tokio::test]
async fn blobs_over_max_blob_bytes_are_refused_and_leave_nothing() {
    let node = Node::start_with_env(&[("MERIDIAN_MAX_BLOB_BYTES", "1000")]).await;
    let too_big = test_bytes("over-cap", 1001);
    let just_fits = test_bytes("at-cap", 1000);

    // Single request, announced length over the cap: refused before the body is read.
    let resp = post_blob(&node, "capped", &too_big, &sha256_digest(&too_big)).await;
    let err = assert_oci_error(resp, 413, "SIZE_INVALID").await;
    assert!(err.to_string().contains("1000"), "the error should name the cap: {err}");
    assert_eq!(blob_status(&node, "capped", &sha256_digest(&too_big)).await, 404);
    // Exactly at the cap: accepted.
    expect_status(post_blob(&node, "capped", &just_fits, &sha256_digest(&just_fits)).await, 201).await;
    assert_blob_content(&node, "capped", &sha256_digest(&just_fits), &just_fits).await;

    // A session: 600 bytes, then a 500-byte chunk that would pass the cap.
    let data = test_bytes("session-cap", 1000);
    let (url, _) = start_upload(&node, "capped").await;
    let resp = expect_status(patch_chunk(&url, &data[..600], Some((0, 599))).await, 202).await;
    let url = next_location(&node, &resp);
    let over = test_bytes("session-over", 500);
    assert_oci_error(patch_chunk(&url, &over, Some((600, 1099))).await, 413, "SIZE_INVALID").await;
    // Streamed without a length, so only counting can catch it.
    let streamed = futures::stream::iter(over.chunks(100).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let resp = client()
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(streamed))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 413, "SIZE_INVALID").await;
    // The session is where it was, and finishes within the cap.
    let (status, range) = upload_status(&url).await;
    assert_eq!((status, range.as_deref()), (204, Some("0-599")), "the refused chunks must leave the session as it was");
    let resp = expect_status(patch_chunk(&url, &data[600..], Some((600, 999))).await, 202).await;
    let url = next_location(&node, &resp);
    let digest = sha256_digest(&data);
    let resp = client().put(with_query(&url, &format!("digest={digest}"))).send().await.unwrap();
    expect_status(resp, 201).await;
    assert_blob_content(&node, "capped", &digest, &data).await;
    assert_no_upload_files(&node);
}
