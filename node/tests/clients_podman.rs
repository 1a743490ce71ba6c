//! podman against three regions with auth on, each image pushed in one region and pulled
//! in another, exactly as the README's "Push and pull" section shows: `podman login`,
//! `podman build` (`FROM scratch` + `COPY`), `push`, `rmi`, `pull`; a two-platform index
//! with `podman manifest create/add/push`; and the same with a robot token, which is
//! refused outside its scope map.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use common::podman::Podman;
use serde_json::Value;

const ADMIN_PW: &str = "podman-admin-password";

async fn three_regions() -> Cluster {
    Cluster::start_with(
        ClusterOptions::new(3)
            .names(&["us", "eu", "ap"])
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await
}

/// GET a manifest as admin (basic credentials) from `host`; returns (status, content type, bytes).
async fn manifest_at(host: &str, repo: &str, reference: &str) -> (u16, String, Vec<u8>) {
    let resp = oci::client()
        .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .basic_auth("admin", Some(ADMIN_PW))
        .header(
            "accept",
            [oci::OCI_MANIFEST, oci::OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"]
                .join(", "),
        )
        .send()
        .await
        .expect("GET manifest");
    let status = resp.status().as_u16();
    let ct = oci::header(&resp, "content-type").unwrap_or_default();
    (status, ct, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

fn payload(seed: &str) -> Vec<u8> {
    oci::test_bytes(seed, 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pushes_in_one_region_and_pulls_in_another() {
    let podman = Podman::new();
    let c = three_regions().await;
    let (us, eu, ap) = (c[0].http_addr(), c[1].http_addr(), c[2].http_addr());
    for host in [&us, &eu, &ap] {
        podman.login(host, "admin", ADMIN_PW).await;
    }

    // Build, push to us, forget it locally, pull from eu: the same image.
    let image_id = podman.build_scratch("localhost/app:build", "linux/amd64", &payload("podman-app")).await;
    let pushed = format!("{us}/team/app:v1");
    podman.run(&["tag", "localhost/app:build", &pushed]).await;
    let digest_file = podman.work_dir().join("app.digest");
    let digest_file_s = digest_file.to_string_lossy().to_string();
    podman.run(&["push", "--tls-verify=false", "--digestfile", &digest_file_s, &pushed]).await;
    let digest = std::fs::read_to_string(&digest_file).expect("digest file").trim().to_string();
    podman.run(&["rmi", "-f", &image_id]).await;
    let pulled = format!("{eu}/team/app:v1");
    podman.run(&["pull", "--tls-verify=false", &pulled]).await;
    assert_eq!(podman.inspect(&pulled, "{{.Id}}").await, image_id, "eu served another image");
    assert_eq!(podman.inspect(&pulled, "{{.Digest}}").await, digest, "eu served another manifest");
    let (status, _, body) = manifest_at(&ap, "team/app", "v1").await;
    assert_eq!(status, 200);
    assert_eq!(oci::sha256_digest(&body), digest, "ap's manifest differs from what podman pushed");

    // A two-platform index: built per platform, assembled with `podman manifest`, pushed
    // to eu, pulled per platform from ap.
    let amd = podman.build_scratch("localhost/multi-amd64", "linux/amd64", &payload("multi-amd64")).await;
    let arm = podman.build_scratch("localhost/multi-arm64", "linux/arm64", &payload("multi-arm64")).await;
    podman.run(&["manifest", "create", "localhost/multi:v1"]).await;
    podman.run(&["manifest", "add", "localhost/multi:v1", "containers-storage:localhost/multi-amd64:latest"]).await;
    podman.run(&["manifest", "add", "localhost/multi:v1", "containers-storage:localhost/multi-arm64:latest"]).await;
    let list_digest_file = podman.work_dir().join("multi.digest");
    let list_digest_file_s = list_digest_file.to_string_lossy().to_string();
    let dest = format!("docker://{eu}/team/multi:v1");
    podman
        .run(&["manifest", "push", "--all", "--tls-verify=false", "--digestfile", &list_digest_file_s, "localhost/multi:v1", &dest])
        .await;
    let list_digest = std::fs::read_to_string(&list_digest_file).expect("digest file").trim().to_string();
    let (status, content_type, index) = manifest_at(&ap, "team/multi", "v1").await;
    assert_eq!(status, 200, "the index at ap");
    assert_eq!(oci::sha256_digest(&index), list_digest, "ap's index differs from what podman pushed");
    let parsed: Value = serde_json::from_slice(&index).expect("index JSON");
    let archs: Vec<&str> = parsed["manifests"].as_array().expect("manifests").iter().filter_map(|m| m["platform"]["architecture"].as_str()).collect();
    assert_eq!(archs, ["amd64", "arm64"], "index {content_type}: {parsed}");
    for (arch, id) in [("arm64", &arm), ("amd64", &amd)] {
        podman.run(&["rmi", "-f", id]).await;
        let r = format!("{ap}/team/multi:v1");
        podman.run(&["pull", "--tls-verify=false", "--arch", arch, &r]).await;
        assert_eq!(podman.inspect(&r, "{{.Architecture}}").await, arch);
        assert_eq!(&podman.inspect(&r, "{{.Id}}").await, id, "ap served another {arch} image");
        podman.run(&["rmi", "-f", &r]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_with_a_robot_token_pushes_within_its_scope_only() {
    let podman = Podman::new();
    let c = three_regions().await;
    c.admin_json_at(0, &["scope-map", "create", "ci-team", "--grant", "team/*:pull,push"]).await;
    let robot = c.admin_json_at(0, &["token", "create", "ci", "--scope-map", "ci-team"]).await;
    let user = robot["username"].as_str().expect("username").to_string();
    let secret = robot["secret"].as_str().expect("secret").to_string();
    assert_eq!(user, "robot$ci");
    let (us, eu, ap) = (c[0].http_addr(), c[1].http_addr(), c[2].http_addr());
    // The robot was created through us; eu and ap know it once they applied it.
    for host in [&ap, &us] {
        podman.login(host, &user, &secret).await;
    }

    let id = podman.build_scratch("localhost/robot:build", "linux/amd64", &payload("robot")).await;
    let pushed = format!("{ap}/team/robot:v1");
    podman.run(&["tag", "localhost/robot:build", &pushed]).await;
    podman.run(&["push", "--tls-verify=false", &pushed]).await;
    podman.run(&["rmi", "-f", &id]).await;
    let pulled = format!("{us}/team/robot:v1");
    podman.run(&["pull", "--tls-verify=false", &pulled]).await;
    assert_eq!(podman.inspect(&pulled, "{{.Id}}").await, id);

    // Outside its scope map: refused, nothing stored.
    let outside = format!("{ap}/other/robot:v1");
    podman.run(&["tag", &pulled, &outside]).await;
    let r = podman.try_run(&["push", "--tls-verify=false", &outside], None).await;
    assert!(!r.ok, "the robot pushed outside its scope map:\n{}", r.stdout);
    let (status, _, _) = manifest_at(&eu, "other/robot", "v1").await;
    assert_eq!(status, 404, "a refused push stored a manifest");
}
