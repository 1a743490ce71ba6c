//! The Docker token flow as CNCF Distribution runs it, which the Go clients (docker,
//! containerd, podman/skopeo) are built against: the scope a request needs follows its
//! method, and a token that lacks a scope its identity could obtain gets `401` with
//! `error="insufficient_scope"` and the needed scope in the challenge. Fetching a token
//! for that scope and retrying succeeds. The same token sent again for the same scope gets
//! `403` with the same challenge (what the Python oras client acts on; `auth_oras.rs`
//! runs it). An identity that may never do it gets `403 DENIED` without a challenge.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use reqwest::{Method, StatusCode};
use serde_json::Value;

const ADMIN_PW: &str = "token-flow-admin-password";
const APP: &str = "team/app";

struct Flow {
    c: Cluster,
    http: reqwest::Client,
    writer_pw: String,
}

/// What a refusal looked like.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    challenge: Option<String>,
}

impl Flow {
    fn url(&self, path: &str) -> String {
        self.c[0].url(path)
    }

    /// A bearer token for `user` holding what it may of `scope`.
    async fn token(&self, user: &str, pw: &str, scope: &str) -> String {
        let resp = self
            .http
            .get(self.url("/token"))
            .query(&[("service", "meridian"), ("scope", scope)])
            .basic_auth(user, Some(pw))
            .send()
            .await
            .expect("GET /token");
        assert_eq!(resp.status(), StatusCode::OK, "token for {user} {scope}");
        let body: Value = resp.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_string()
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Vec<u8>>) -> (Answer, reqwest::Response) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/octet-stream").body(b);
        }
        let resp = req.send().await.expect("request");
        let answer = Answer {
            status: resp.status().as_u16(),
            code: None,
            challenge: oci::header(&resp, "www-authenticate"),
        };
        (answer, resp)
    }

    /// Sends and reads the error code of the body.
    async fn answer(&self, method: Method, path: &str, token: &str, body: Option<Vec<u8>>) -> Answer {
        let (mut answer, resp) = self.send(method, path, token, body).await;
        let text = resp.text().await.unwrap_or_default();
        answer.code = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["errors"][0]["code"].as_str().map(String::from));
        answer
    }

    /// Starts an upload as admin (basic credentials); returns its path.
    async fn upload_session(&self) -> String {
        let resp = self
            .http
            .post(self.url(&format!("/v2/{APP}/blobs/uploads/")))
            .basic_auth("admin", Some(ADMIN_PW))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        oci::require_header(&resp, "location")
    }
}

/// 401 UNAUTHORIZED whose challenge says insufficient_scope and names exactly `scope`.
fn assert_insufficient(a: &Answer, scope: &str, what: &str) {
    assert_eq!(a.status, 401, "{what}: {a:?}");
    assert_eq!(a.code.as_deref(), Some("UNAUTHORIZED"), "{what}: {a:?}");
    let c = a.challenge.as_deref().unwrap_or_else(|| panic!("{what}: no challenge"));
    assert!(c.starts_with("Bearer realm=\""), "{what}: {c}");
    assert!(c.contains("error=\"insufficient_scope\""), "{what}: {c}");
    assert!(c.contains(&format!("scope=\"{scope}\"")), "{what}: challenge {c} does not name {scope}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scope_follows_the_method_and_a_missing_one_is_a_401_challenge() {
    let c = Cluster::start_with(
        ClusterOptions::new(1)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("MERIDIAN_AUTH_FAILED_LOGIN_LIMIT", "0"),
    )
    .await;
    let writer_pw = c.add_user(0, "writer", "writer").await;
    let f = Flow { c, http: oci::client(), writer_pw };
    let pull_push = format!("repository:{APP}:pull,push");

    // Reading an upload session's status needs pull only.
    let location = f.upload_session().await;
    let pull = f.token("writer", &f.writer_pw, &format!("repository:{APP}:pull")).await;
    let status = f.answer(Method::GET, &location, &pull, None).await;
    assert_eq!(status.status, 204, "upload status with a pull token: {status:?}");

    // Writing to it needs pull and push: a pull token gets the challenge for both.
    let patch = f.answer(Method::PATCH, &location, &pull, Some(vec![1u8; 10])).await;
    assert_insufficient(&patch, &pull_push, "PATCH with a pull token");
    // So does a push-only token: a push reads back what it wrote.
    let push_only = f.token("writer", &f.writer_pw, &format!("repository:{APP}:push")).await;
    let patch = f.answer(Method::PATCH, &location, &push_only, Some(vec![1u8; 10])).await;
    assert_insufficient(&patch, &pull_push, "PATCH with a push-only token");
    let start = f.answer(Method::POST, &format!("/v2/{APP}/blobs/uploads/"), &pull, None).await;
    assert_insufficient(&start, &pull_push, "POST upload with a pull token");
    let put = f.answer(Method::PUT, &format!("/v2/{APP}/manifests/v1"), &pull, Some(b"{}".to_vec())).await;
    assert_insufficient(&put, &pull_push, "PUT manifest with a pull token");

    // The Go clients' next step: a token for the challenge's scope, then the same request.
    let both = f.token("writer", &f.writer_pw, &pull_push).await;
    let patch = f.answer(Method::PATCH, &location, &both, Some(vec![1u8; 10])).await;
    assert_eq!(patch.status, 202, "PATCH with the token the challenge asked for: {patch:?}");

    // Cancelling an upload needs push only.
    let other = f.upload_session().await;
    let cancel = f.answer(Method::DELETE, &other, &push_only, None).await;
    assert_eq!(cancel.status, 204, "cancel with a push-only token: {cancel:?}");
    let gone = f.answer(Method::GET, &other, &pull, None).await;
    assert_eq!(gone.status, 404, "the cancelled session is gone: {gone:?}");

    // Deleting a manifest needs delete: the admin could get it (401 challenge naming
    // delete); the writer never can (403 DENIED, no challenge: a new token would not help).
    let config = oci::to_bytes(&serde_json::json!({"architecture": "amd64", "os": "linux"}));
    let desc = oci::Descriptor::of(oci::OCI_CONFIG, &config);
    let up = f.answer(Method::POST, &format!("/v2/{APP}/blobs/uploads/?digest={}", desc.digest), &both, Some(config)).await;
    assert_eq!(up.status, 201, "{up:?}");
    let manifest = oci::to_bytes(&oci::image_manifest(&desc, &[]));
    let pushed = f
        .http
        .put(f.url(&format!("/v2/{APP}/manifests/v1")))
        .bearer_auth(&both)
        .header("content-type", oci::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::CREATED);
    let digest = oci::sha256_digest(&manifest);
    let admin_pull = f.token("admin", ADMIN_PW, &format!("repository:{APP}:pull")).await;
    let delete = f.answer(Method::DELETE, &format!("/v2/{APP}/manifests/{digest}"), &admin_pull, None).await;
    assert_insufficient(&delete, &format!("repository:{APP}:delete"), "DELETE manifest with the admin's pull token");
    let delete = f.answer(Method::DELETE, &format!("/v2/{APP}/manifests/{digest}"), &both, None).await;
    assert_eq!(delete.status, 403, "the writer may never delete: {delete:?}");
    assert_eq!(delete.code.as_deref(), Some("DENIED"));
    assert!(delete.challenge.is_none(), "a plain denial carries no challenge: {delete:?}");
    let still = f.answer(Method::GET, &format!("/v2/{APP}/manifests/{digest}"), &both, None).await;
    assert_eq!(still.status, 200, "refused deletes deleted nothing: {still:?}");
}

/// A client that sends the same request with the same token again right after being told
/// the token lacks the scope gets `403` with the challenge (RFC 6750 §3.1): the answer the
/// Python oras client takes as "fetch a new token". Another request (a client sending one
/// stale token on parallel uploads) or another token starts again with a 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_insufficient_token_again_gets_a_403_with_the_challenge() {
    let c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    let writer_pw = c.add_user(0, "writer", "writer").await;
    let f = Flow { c, http: oci::client(), writer_pw };
    let pull_push = format!("repository:{APP}:pull,push");
    let start = format!("/v2/{APP}/blobs/uploads/");

    let pull = f.token("writer", &f.writer_pw, &format!("repository:{APP}:pull")).await;
    let first = f.answer(Method::POST, &start, &pull, None).await;
    assert_insufficient(&first, &pull_push, "first POST with a pull token");
    let again = f.answer(Method::POST, &start, &pull, None).await;
    assert_eq!(again.status, 403, "the same token again: {again:?}");
    assert_eq!(again.code.as_deref(), Some("DENIED"));
    let c = again.challenge.as_deref().expect("the repeat carries the challenge");
    assert!(c.contains("error=\"insufficient_scope\"") && c.contains(&format!("scope=\"{pull_push}\"")), "{c}");

    // The same token on another request needing the same scope: a 401 again.
    let location = f.upload_session().await;
    let patch = f.answer(Method::PATCH, &location, &pull, Some(vec![1u8; 4])).await;
    assert_insufficient(&patch, &pull_push, "the same token on another request");
    // A fresh token lacking the same scope starts with a 401 again.
    let fresh = f.token("writer", &f.writer_pw, &format!("repository:{APP}:pull")).await;
    let first = f.answer(Method::POST, &start, &fresh, None).await;
    assert_insufficient(&first, &pull_push, "a fresh token's first POST");
    // Nothing was created by the refusals (the one session is the admin's).
    let sessions = std::fs::read_dir(f.c[0].data_dir.join("uploads")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(sessions, 1, "a refused POST created an upload session");
}
