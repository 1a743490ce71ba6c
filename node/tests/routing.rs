//! Nearest-region routing of layer bytes, tested for real: three regions (us, eu, ap) with
//! auth on and `[routing]` mapping the client network 127.0.0.2/32 to `eu`.
//!
//! A client on that network is a connection from source address 127.0.0.2: skopeo talks
//! to a relay in this test that dials `us` from 127.0.0.2 (127.0.0.0/8 is all loopback,
//! so the relay can bind any of it; skopeo itself cannot pick a source address).
//!
//! * The image pushed in us (skopeo) and replicated to eu: a pull through the relay gets
//!   manifests from us and every blob from eu (`307` to eu's public URL, followed by
//!   skopeo), byte-identical. Which node served the bytes is
//!   read from their metrics: eu's blob response bytes grow by the image's blob bytes, us
//!   answered redirects only.
//! * The redirect carries a grant for that one blob (clients do not send credentials to
//!   another host): it gets the bytes from eu, and nothing else. The client's own token
//!   works at the target too; without either, 401.
//! * A blob eu does not hold is served by us (no redirect to a region that cannot serve).
//! * A client with no mapping (127.0.0.1) is never redirected.
//! * `meridian admin endpoints` lists every region's public URL, up, and the routing
//!   table; with eu stopped it says eu is down and the same pull through the relay is
//!   served by us.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use common::skopeo::{build_layout, ensure_skopeo, read_layout_blobs, run_skopeo};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const REPO: &str = "team/app";
const MAPPED_CLIENT: &str = "127.0.0.2";

/// A TCP relay on 127.0.0.1 that opens every connection to `upstream` from `source`: the
/// network path of a client on `source`'s network.
async fn source_relay(source: &str, upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let source: std::net::IpAddr = source.parse().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                let Ok(mut outbound) = socket.connect(upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// An HTTP client whose connections leave from `source`, that does not follow redirects.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn admin_password(c: &Cluster) -> String {
    let path = c[0].data_dir.join("admin-password");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pw) = std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|p| !p.is_empty()) {
            return pw;
        }
        assert!(Instant::now() < deadline, "no generated password in {}", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pull_token(base: &str, pw: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{base}/token?service=meridian&scope=repository:{REPO}:pull"))
        .basic_auth("admin", Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["token"].as_str().expect("token").to_string()
}

async fn pull_push_token(base: &str, pw: &str, repo: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{base}/token?service=meridian&scope=repository:{repo}:pull,push"))
        .basic_auth("admin", Some(pw))
        .send()
        .await
        .unwrap();
    resp.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// Waits until `check` holds for `admin endpoints --json` asked at node `i`.
async fn endpoints_until(c: &Cluster, i: usize, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.admin_json_at(i, &["endpoints"]).await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn region_up(v: &serde_json::Value, region: &str) -> Option<bool> {
    v["endpoints"].as_array()?.iter().find(|e| e["region"] == region).and_then(|e| e["up"].as_bool())
}

/// Pulls `REPO:v1` (every platform, digests kept) from `registry` with skopeo into an OCI
/// layout at `dst`; every original blob must be there, byte-identical.
async fn pull_and_compare(
    skopeo: &std::path::Path,
    creds: &str,
    registry: &str,
    dst: &std::path::Path,
    original: &std::collections::BTreeMap<String, Vec<u8>>,
    when: &str,
) {
    let remote = format!("docker://{registry}/{REPO}:v1");
    let dst_ref = format!("oci:{}:v1", dst.display());
    run_skopeo(skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--src-creds", creds, &remote, &dst_ref]).await;
    let got = read_layout_blobs(dst);
    for (digest, bytes) in original {
        assert_eq!(got.get(digest), Some(bytes), "{digest} differs or is missing {when}");
    }
}

/// Bytes of blob bodies a node has answered, and redirects it has sent to `eu`.
async fn served(c: &Cluster, i: usize) -> (f64, f64) {
    (
        metric(&c[i], "meridian_http_response_bytes_total", &["route=\"blob\""]).await,
        metric(&c[i], "meridian_routing_redirects_total", &["region=\"eu\""]).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_pulls_go_to_the_clients_nearest_region() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(3)
            .names(&["us", "eu", "ap"])
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ROUTING", &format!("{MAPPED_CLIENT}/32=eu,10.99.0.0/16=mars")),
    )
    .await;
    let (us, eu) = (0, 1);
    let pw = admin_password(&c).await;
    let creds = format!("admin:{pw}");

    // Push an image (index of two platforms, ~1 MiB layers) to us.
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let layout = build_layout(&src, 1 << 20);
    let dest = format!("docker://{}/{REPO}:v1", c[us].http_addr());
    let src_ref = format!("oci:{}:v1", src.display());
    run_skopeo(
        &skopeo,
        &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &creds, &src_ref, &dest],
    )
    .await;

    // The endpoints as us sees them: every region's URL, all up (once probed), the table.
    let v = endpoints_until(&c, us, "every region up", |v| ["us", "eu", "ap"].iter().all(|r| region_up(v, r) == Some(true))).await;
    assert_eq!(v["answered_by"], "us");
    for i in 0..3 {
        let e = v["endpoints"].as_array().unwrap().iter().find(|e| e["region"] == c[i].name.as_str()).unwrap().clone();
        assert_eq!(e["public_url"], format!("http://{}", c[i].http_addr()), "{v:#}");
    }
    let routes = v["routing"].as_array().unwrap();
    assert!(routes.iter().any(|r| r["network"] == "127.0.0.2/32" && r["region"] == "eu" && r["unknown_region"] == false), "{v:#}");
    assert!(routes.iter().any(|r| r["network"] == "10.99.0.0/16" && r["unknown_region"] == true), "{v:#}");
    let table = c.admin_at(us, &["endpoints"]).await;
    assert_eq!(table.code, 0, "{table}");
    assert!(table.stdout.contains(&format!("http://{}", c[eu].http_addr())) && table.stdout.contains("127.0.0.2/32"), "{table}");
    assert!(table.stdout.contains("mars (no such region)"), "{table}");

    // Wait until eu holds every blob of the image (the cluster records it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let image = c.admin_json_at(us, &["replication", "image", &format!("{REPO}:v1")]).await;
        let eu_complete = image["regions"].as_array().unwrap().iter().any(|r| r["name"] == "eu" && r["complete"] == true);
        if eu_complete {
            break;
        }
        assert!(Instant::now() < deadline, "eu never completed the image: {image:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A client mapped to eu pulls through us: blobs come from eu, byte-identical.
    let relay = source_relay(MAPPED_CLIENT, c[us].http_addr().parse().unwrap()).await;
    let (us_bytes0, us_redirects0) = served(&c, us).await;
    let (eu_bytes0, _) = served(&c, eu).await;
    pull_and_compare(&skopeo, &creds, &relay.to_string(), &work.path().join("pulled-via-eu"), &layout.blobs, "after the routed pull").await;
    // Blob GETs: two layers and two configs (manifests are not blobs).
    let blob_bytes: usize = layout.children.iter().map(|(_, _, config, layer)| config.len() + layer.len()).sum();
    let (us_bytes1, us_redirects1) = served(&c, us).await;
    let (eu_bytes1, _) = served(&c, eu).await;
    assert!(eu_bytes1 - eu_bytes0 >= blob_bytes as f64, "eu served {} of {blob_bytes} blob bytes", eu_bytes1 - eu_bytes0);
    assert_eq!(us_bytes1, us_bytes0, "us served blob bytes to a client mapped to eu");
    assert!(us_redirects1 - us_redirects0 >= 4.0, "us redirected {} blob GETs", us_redirects1 - us_redirects0);

    // By hand: the redirect names eu's URL for the same blob with a grant for it (the
    // client's credentials do not follow it to another host); the grant alone gets the
    // bytes there, for that blob only, and the token from us works at eu as well.
    let token = pull_token(&c[us].base, &pw).await;
    let (_, _, config, layer) = &layout.children[0];
    let digest = common::oci::sha256_digest(layer);
    let mapped = client_from(MAPPED_CLIENT);
    let resp = mapped.get(format!("{}/v2/{REPO}/blobs/{digest}", c[us].base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 307);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let at_eu = format!("http://{}/v2/{REPO}/blobs/{digest}", c[eu].http_addr());
    assert!(location.starts_with(&format!("{at_eu}?grant=")), "{location}");
    assert_eq!(resp.headers()["docker-content-digest"].to_str().unwrap(), digest);
    let granted = mapped.get(&location).send().await.unwrap();
    assert_eq!(granted.status(), 200, "the grant in the redirect is accepted in eu");
    assert_eq!(granted.bytes().await.unwrap().as_ref(), layer.as_slice());
    let with_token = mapped.get(&at_eu).bearer_auth(&token).send().await.unwrap();
    assert_eq!(with_token.status(), 200, "the token from us is accepted in eu");
    assert_eq!(with_token.bytes().await.unwrap().as_ref(), layer.as_slice());
    assert_eq!(mapped.get(&at_eu).send().await.unwrap().status(), 401, "eu asks a client with neither");
    let grant = location.split_once("?grant=").unwrap().1;
    let config_digest = common::oci::sha256_digest(config);
    let other = mapped.get(format!("http://{}/v2/{REPO}/blobs/{config_digest}?grant={grant}", c[eu].http_addr())).send().await.unwrap();
    assert_eq!(other.status(), 401, "a grant is for its one blob");
    let as_bearer = mapped.get(format!("http://{}/v2/{REPO}/manifests/v1", c[eu].http_addr())).bearer_auth(grant).send().await.unwrap();
    assert_eq!(as_bearer.status(), 401, "a grant is no bearer token");
    // A blob the repository does not have is not redirected: the error comes from us.
    let missing = format!("sha256:{}", "0".repeat(64));
    let resp = mapped.get(format!("{}/v2/{REPO}/blobs/{missing}", c[us].base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // A blob only us holds (uploaded, in no manifest, so never replicated): served by us.
    let lone = b"a blob that stays in us".to_vec();
    let lone_digest = common::oci::sha256_digest(&lone);
    let push_token = pull_push_token(&c[us].base, &pw, REPO).await;
    let start = reqwest::Client::new()
        .post(format!("{}/v2/{REPO}/blobs/uploads/?digest={lone_digest}", c[us].base))
        .bearer_auth(&push_token)
        .body(lone.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 201);
    let resp = mapped.get(format!("{}/v2/{REPO}/blobs/{lone_digest}", c[us].base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a blob eu does not hold is served where the client connected");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), lone.as_slice());

    // The same bytes uploaded to another repository in us, in no manifest yet: eu holds
    // the blob, but only us knows this repository has it, so us serves it.
    let other_repo = "team/other";
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/{other_repo}/blobs/uploads/?digest={digest}", c[us].base))
        .bearer_auth(pull_push_token(&c[us].base, &pw, other_repo).await)
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let other_token = pull_push_token(&c[us].base, &pw, other_repo).await;
    let resp = mapped.get(format!("{}/v2/{other_repo}/blobs/{digest}", c[us].base)).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a blob known only to this region's repository is served here");

    // A client with no mapping is never redirected.
    let unmapped = client_from("127.0.0.1");
    let resp = unmapped.get(format!("{}/v2/{REPO}/blobs/{digest}", c[us].base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), layer.as_slice());
    let (_, redirects_before) = served(&c, us).await;
    pull_and_compare(&skopeo, &creds, &c[us].http_addr(), &work.path().join("pulled-direct"), &layout.blobs, "pulled directly").await;
    assert_eq!(served(&c, us).await.1, redirects_before, "an unmapped client was redirected");

    // eu down: us sees it within a probe, says so, and serves the mapped client itself.
    let mut c = c;
    c[eu].stop();
    endpoints_until(&c, us, "eu down", |v| region_up(v, "eu") == Some(false)).await;
    let (us_bytes2, us_redirects2) = served(&c, us).await;
    pull_and_compare(&skopeo, &creds, &relay.to_string(), &work.path().join("pulled-eu-down"), &layout.blobs, "with eu down").await;
    let (us_bytes3, us_redirects3) = served(&c, us).await;
    assert_eq!(us_redirects3, us_redirects2, "us redirected to a region that is down");
    assert!(us_bytes3 - us_bytes2 >= blob_bytes as f64, "us served {} of {blob_bytes} blob bytes with eu down", us_bytes3 - us_bytes2);
}
