//! A region that knows a blob (its manifest applied) but has no copy, and cannot get
//! bytes from any region holding one, answers the GET `503 UNAVAILABLE` — promptly, and
//! without a `200` whose body then hangs (found by the `minority_partitioned` scenario).
//! After the heal the same GET serves the right bytes.

use chaos_tests::harness::cluster::{Cluster, ClusterOptions};
use chaos_tests::harness::oci::{get_blob, push_image, sha256_digest, test_bytes};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_from_unreachable_holders_is_503_not_a_hanging_200() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let c = Cluster::start_with(ClusterOptions::new(3).link_proxies().env("MERIDIAN_FAILPOINTS_API", "1")).await;
    let (origin, cut) = (0, 2);

    // Region 3's replica writes fail, so it learns of the image but holds no copy.
    c.failpoint(cut, "blob-write", "return").await;
    let image = push_image(&c[origin], "team/app", "v1", "unreachable").await;
    let layer = &image.layers[0];
    let layer_bytes = test_bytes("layer-unreachable", 1000);
    assert_eq!(sha256_digest(&layer_bytes), layer.digest);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.head(c[cut].url(&format!("/v2/team/app/manifests/{}", image.digest))).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "region 3 never applied the push");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Holders reachable, but the transfer fails before its first byte: 503 at once.
    let t = Instant::now();
    let (status, body) = get_blob(&c[cut], "team/app", &layer.digest).await.unwrap();
    assert_eq!(status, 503, "a fetch-through that failed must answer 503: {}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("UNAVAILABLE"), "{}", String::from_utf8_lossy(&body));
    eprintln!("failed transfer answered 503 in {:?}", t.elapsed());

    // Cut region 3 off from both holders, then let its disk work again.
    for other in [0, 1] {
        c.link(cut, other).partition(true, true);
        c.link(other, cut).partition(true, true);
    }
    c.failpoint(cut, "blob-write", "off").await;
    let t = Instant::now();
    let (status, body) = get_blob(&c[cut], "team/app", &layer.digest).await.expect("a complete answer, not a hung body");
    let waited = t.elapsed();
    assert_eq!(status, 503, "no holder reachable must answer 503: {}", String::from_utf8_lossy(&body));
    assert!(waited < Duration::from_secs(20), "503 took {waited:?}");
    eprintln!("unreachable holders answered 503 in {waited:?}");

    // Healed: the same GET serves the bytes.
    for other in [0, 1] {
        c.link(cut, other).heal();
        c.link(other, cut).heal();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get_blob(&c[cut], "team/app", &layer.digest).await {
            Ok((200, body)) => {
                assert_eq!(body, layer_bytes, "region 3 served wrong bytes after the heal");
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "after the heal region 3 still answers {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
