//! Mutual TLS on the gRPC links: three regions whose nodes present certificates from the
//! cluster CA form a cluster, forward writes and stream blobs to each other over TLS;
//! the admin CLI works with a client certificate from the CA (and still needs the admin
//! token), and is refused without TLS or with a certificate from another CA.

mod common;

use common::certs::{make_ca, make_cert};
use common::cluster::{Cluster, ClusterOptions, ADMIN_TOKEN};
use common::oci;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_talk_only_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = make_ca(d, "cluster-ca");
    let (node_crt, node_key) = make_cert(d, "cluster-ca", "node");
    let (op_crt, op_key) = make_cert(d, "cluster-ca", "operator");
    make_ca(d, "other-ca");
    let (bad_crt, bad_key) = make_cert(d, "other-ca", "intruder");
    let p = |x: &std::path::Path| x.to_string_lossy().to_string();
    let (ca_s, op_crt_s, op_key_s) = (p(&ca), p(&op_crt), p(&op_key));

    let c = Cluster::start_with(
        ClusterOptions::new(3)
            .env("MERIDIAN_GRPC_TLS_CERT_FILE", &p(&node_crt))
            .env("MERIDIAN_GRPC_TLS_KEY_FILE", &p(&node_key))
            .env("MERIDIAN_GRPC_TLS_CA_FILE", &ca_s)
            .admin_args(&["--tls-ca", &ca_s, "--tls-cert", &op_crt_s, "--tls-key", &op_key_s]),
    )
    .await;
    // (start_with waited for three voters through the admin CLI over mutual TLS.)

    // A write in one region, forwarded to the leader; its blob streamed to another region.
    let image = oci::push_image(&c[1], "secure/app", "v1", "mtls").await;
    oci::assert_manifest_content(&c[2], "secure/app", "v1", oci::OCI_MANIFEST, &image.manifest).await;
    let layer = &image.layers[0];
    let resp = oci::client().get(c[2].url(&format!("/v2/secure/app/blobs/{}", layer.digest))).send().await.unwrap();
    let body = oci::expect_status(resp, 200).await.bytes().await.unwrap();
    assert_eq!(oci::sha256_digest(&body), layer.digest, "blob fetched over TLS");

    let addr = c[0].grpc_url();
    // Plain h2c: refused.
    let out = Cluster::admin_raw(&addr, ADMIN_TOKEN, &["region", "list"]).await;
    assert_ne!(out.code, 0, "plain gRPC was accepted: {out}");
    // A client certificate from another CA: refused.
    let out = Cluster::admin_raw(&addr, ADMIN_TOKEN, &["--tls-ca", &ca_s, "--tls-cert", &p(&bad_crt), "--tls-key", &p(&bad_key), "region", "list"]).await;
    assert_ne!(out.code, 0, "a foreign client certificate was accepted: {out}");
    // The right certificate without the admin token: refused.
    let out = Cluster::admin_raw(&addr, "wrong-token", &["--tls-ca", &ca_s, "--tls-cert", &op_crt_s, "--tls-key", &op_key_s, "region", "list"]).await;
    assert_ne!(out.code, 0, "mTLS alone was enough for the admin service: {out}");
    // Right certificate and token.
    let out = c.admin_at(0, &["region", "list"]).await;
    assert_eq!(out.code, 0, "{out}");
    // `https://` is what an operator types for a TLS endpoint: accepted with the TLS flags,
    // refused without them (the client would not encrypt).
    let https = addr.replace("http://", "https://");
    let out = Cluster::admin_raw(&https, ADMIN_TOKEN, &["--tls-ca", &ca_s, "--tls-cert", &op_crt_s, "--tls-key", &op_key_s, "region", "list"]).await;
    assert_eq!(out.code, 0, "{out}");
    let out = Cluster::admin_raw(&https, ADMIN_TOKEN, &["region", "list"]).await;
    assert_eq!(out.code, 2, "{out}");
}
