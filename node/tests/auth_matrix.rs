//! Private by default: the authorization matrix, through the real HTTP interface.
//!
//! One region with auth on (the default), users `reader` and `writer` created with the
//! admin CLI next to the bootstrap `admin`, anonymous pull opened for `public/*`. Every
//! route × identity gets the expected status and OCI code, and a refused request leaves
//! nothing behind (no tag, no upload session, no bytes, nothing deleted). Identities:
//! anonymous, reader/writer/admin bearer tokens from `/token`, writer basic credentials,
//! a token for another repository, an expired token, a token signed by another cluster.
//! Then: the token endpoint grants only the intersection of what was asked and what is
//! allowed, a cross-repository mount without read access becomes a plain upload, removing
//! a user revokes its tokens at once, and no password or token reaches the log.

mod common;

use base64::Engine;
use common::cluster::{Cluster, ClusterOptions};
use common::oci;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const ADMIN_PW: &str = "admin-password-for-tests";
const APP: &str = "team/app";
const OTHER: &str = "team/other";
const PUBLIC: &str = "public/app";
/// Tokens live 3 s on the node under test, so the expired case is quick; every other
/// request fetches its token right before use.
const TTL: &str = "3";

fn auth_opts() -> ClusterOptions {
    ClusterOptions::new(1)
        .env("MERIDIAN_AUTH_ENABLED", "true")
        .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
        .env("MERIDIAN_AUTH_ANONYMOUS_PULL", "public/*")
        .env("MERIDIAN_AUTH_TOKEN_TTL_SECS", TTL)
        // The matrix makes failed logins on purpose; the limit has its own test.
        .env("MERIDIAN_AUTH_FAILED_LOGIN_LIMIT", "0")
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

struct World {
    c: Cluster,
    foreign: Cluster,
    http: reqwest::Client,
    reader_pw: String,
    writer_pw: String,
    /// Secrets of the robot tokens `robot$team` and `robot$other`.
    robot_team: String,
    robot_other: String,
    /// Every bearer token handed out, to check none is logged.
    issued: std::sync::Mutex<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    Reader,
    Writer,
    WriterBasic,
    Admin,
    OtherRepoToken,
    /// A robot token whose scope map grants `team/*:pull,push`.
    RobotTeam,
    /// A robot token scoped to another repository (`team/other:*`).
    RobotOther,
    Expired,
    ForeignKey,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    /// 401 UNAUTHORIZED with a Bearer challenge.
    Unauthorized,
    /// 401 UNAUTHORIZED with a challenge carrying `error="insufficient_scope"` and the
    /// scope: the identity could get a token for it (Docker token flow, as CNCF
    /// Distribution answers).
    InsufficientScope,
    /// 403 DENIED without a challenge.
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    Base,
    Catalog,
    ManifestGet,
    ManifestHead,
    BlobGet,
    TagsList,
    Referrers,
    UploadStart,
    UploadPatch,
    ManifestPut,
    ManifestDelete,
    BlobDelete,
}

impl Route {
    fn action(self) -> &'static str {
        match self {
            Route::Base | Route::Catalog => "",
            Route::ManifestGet | Route::ManifestHead | Route::BlobGet | Route::TagsList | Route::Referrers => "pull",
            Route::UploadStart | Route::UploadPatch | Route::ManifestPut => "push",
            Route::ManifestDelete | Route::BlobDelete => "delete",
        }
    }
}

fn expected(route: Route, who: Who) -> Expect {
    let action = route.action();
    match who {
        Who::Anonymous | Who::Expired | Who::ForeignKey => Expect::Unauthorized,
        Who::Admin => Expect::Allowed,
        Who::Reader => match action {
            "" | "pull" => Expect::Allowed,
            _ => Expect::Denied,
        },
        Who::Writer | Who::WriterBasic => match action {
            "delete" => Expect::Denied,
            _ => Expect::Allowed,
        },
        Who::OtherRepoToken => match action {
            "" => Expect::Allowed,
            "delete" => Expect::Denied,
            _ => Expect::InsufficientScope,
        },
        Who::RobotTeam => match action {
            "delete" => Expect::Denied,
            _ => Expect::Allowed,
        },
        Who::RobotOther => match action {
            "" => Expect::Allowed,
            _ => Expect::Denied,
        },
    }
}

impl World {
    fn base(&self) -> String {
        self.c[0].base.clone()
    }

    async fn token_from(&self, base: &str, creds: Option<(&str, &str)>, scopes: &[&str]) -> (StatusCode, Value) {
        let mut url = format!("{base}/token?service=meridian");
        for s in scopes {
            url.push_str(&format!("&scope={}", urlencode(s)));
        }
        let mut req = self.http.get(url);
        if let Some((u, p)) = creds {
            req = req.header("authorization", basic(u, p));
        }
        let resp = req.send().await.expect("GET /token");
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if let Some(t) = body["token"].as_str() {
            self.issued.lock().unwrap().push(t.to_string());
        }
        (status, body)
    }

    async fn bearer(&self, base: &str, creds: (&str, &str), scopes: &[&str]) -> String {
        let (status, body) = self.token_from(base, Some(creds), scopes).await;
        assert_eq!(status, StatusCode::OK, "token for {}: {body}", creds.0);
        assert_eq!(body["token"], body["access_token"]);
        format!("Bearer {}", body["token"].as_str().expect("token"))
    }

    fn all_app_scopes() -> Vec<&'static str> {
        vec!["repository:team/app:pull,push,delete", "registry:catalog:*"]
    }

    /// The Authorization header `who` sends for a request on APP (fresh tokens).
    async fn credentials(&self, who: Who) -> Option<String> {
        let base = self.base();
        let scopes = World::all_app_scopes();
        match who {
            Who::Anonymous => None,
            Who::Reader => Some(self.bearer(&base, ("reader", &self.reader_pw), &scopes).await),
            Who::Writer => Some(self.bearer(&base, ("writer", &self.writer_pw), &scopes).await),
            Who::WriterBasic => Some(basic("writer", &self.writer_pw)),
            Who::Admin => Some(self.bearer(&base, ("admin", ADMIN_PW), &scopes).await),
            Who::RobotTeam => Some(self.bearer(&base, ("robot$team", &self.robot_team), &scopes).await),
            Who::RobotOther => Some(self.bearer(&base, ("robot$other", &self.robot_other), &scopes).await),
            Who::OtherRepoToken => {
                Some(self.bearer(&base, ("writer", &self.writer_pw), &["repository:team/other:pull,push"]).await)
            }
            Who::Expired => {
                let t = self.bearer(&base, ("admin", ADMIN_PW), &scopes).await;
                let ttl: u64 = TTL.parse().unwrap();
                tokio::time::sleep(Duration::from_secs(ttl + 1)).await;
                Some(t)
            }
            Who::ForeignKey => {
                // Same service name and admin password, another cluster's signing key.
                let foreign = self.foreign[0].base.clone();
                Some(self.bearer(&foreign, ("admin", ADMIN_PW), &scopes).await)
            }
        }
    }

    async fn send(&self, method: Method, path: &str, auth: Option<&str>, body: Option<(Vec<u8>, &str)>) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some((bytes, content_type)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        req.send().await.expect("request")
    }

    fn admin_basic(&self) -> String {
        basic("admin", ADMIN_PW)
    }

    /// Uploads a blob to `repo` as admin (monolithic POST + PUT).
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = oci::sha256_digest(data);
        let admin = self.admin_basic();
        let resp = self.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), Some(&admin), None).await;
        assert_eq!(resp.status(), 202, "POST upload as admin");
        let location = oci::require_header(&resp, "location");
        let url = oci::with_query(&location, &format!("digest={digest}"));
        let url = if url.starts_with("http") { url } else { format!("{}{url}", self.base()) };
        let resp = self
            .http
            .put(url)
            .header("authorization", &admin)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT upload");
        assert_eq!(resp.status(), 201, "PUT upload as admin");
        digest
    }

    /// Pushes a one-layer image under `reference` in `repo` as admin; returns (manifest digest, layer digest, manifest bytes).
    async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (String, String, Vec<u8>) {
        let config = oci::to_bytes(&json!({"architecture": "amd64", "os": "linux", "seed": seed}));
        let layer = oci::test_bytes(&format!("layer-{seed}"), 2000);
        let cd = self.push_blob(repo, &config).await;
        let ld = self.push_blob(repo, &layer).await;
        let manifest = oci::to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": cd, "size": config.len()},
            "layers": [{"mediaType": oci::OCI_LAYER, "digest": ld, "size": layer.len()}],
        }));
        let admin = self.admin_basic();
        let resp = self
            .send(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), Some(&admin), Some((manifest.clone(), oci::OCI_MANIFEST)))
            .await;
        assert_eq!(resp.status(), 201, "PUT manifest as admin: {}", resp.text().await.unwrap_or_default());
        (oci::sha256_digest(&manifest), ld, manifest)
    }

    async fn status_as_admin(&self, method: Method, path: &str) -> StatusCode {
        let admin = self.admin_basic();
        self.send(method, path, Some(&admin), None).await.status()
    }

    fn upload_files(&self) -> usize {
        std::fs::read_dir(self.c[0].data_dir.join("uploads")).map(|d| d.count()).unwrap_or(0)
    }
}

/// Sends one request exactly as written (no path normalization) and returns the status.
async fn raw_status(addr: &str, method: &str, path: &str, authorization: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {head}"))
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn check_challenge(challenge: &str, what: &str) {
    assert!(challenge.starts_with("Bearer realm=\""), "{what}: challenge {challenge}");
    assert!(challenge.contains("service=\"meridian\""), "{what}: challenge {challenge}");
    assert!(challenge.contains("/token\""), "{what}: challenge {challenge}");
}

async fn check(resp: reqwest::Response, want: Expect, ok_status: u16, what: &str) {
    let status = resp.status().as_u16();
    let challenge = oci::header(&resp, "www-authenticate");
    let body = resp.text().await.unwrap_or_default();
    let code = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["errors"][0]["code"].as_str().map(String::from));
    match want {
        Expect::Allowed => assert_eq!(status, ok_status, "{what}: expected {ok_status}, got {status}: {body}"),
        Expect::Unauthorized | Expect::InsufficientScope => {
            assert_eq!(status, 401, "{what}: expected 401, got {status}: {body}");
            // (HEAD answers carry no body.)
            if !body.is_empty() {
                assert_eq!(code.as_deref(), Some("UNAUTHORIZED"), "{what}: {body}");
            }
            let challenge = challenge.unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"));
            check_challenge(&challenge, &what);
            let insufficient = challenge.contains("error=\"insufficient_scope\"");
            assert_eq!(insufficient, want == Expect::InsufficientScope, "{what}: challenge {challenge}");
            if insufficient {
                assert!(challenge.contains(&format!("scope=\"repository:{APP}:")), "{what}: no scope in {challenge}");
            }
        }
        Expect::Denied => {
            assert_eq!(status, 403, "{what}: expected 403, got {status}: {body}");
            if !body.is_empty() {
                assert_eq!(code.as_deref(), Some("DENIED"), "{what}: {body}");
            }
            assert!(challenge.is_none(), "{what}: a plain denial carries a challenge: {challenge:?}");
        }
    }
}

/// Runs one route as `who`, with fresh resources, and checks the answer and, on a
/// refusal, that nothing changed.
async fn run_row(w: &World, route: Route, who: Who, row: usize) {
    let want = expected(route, who);
    let what = format!("{route:?} as {who:?}");
    let (md, ld, _) = w.push_image(APP, &format!("v{row}"), &format!("row{row}")).await;
    let auth = w.credentials(who).await;
    let auth = auth.as_deref();
    match route {
        Route::Base => check(w.send(Method::GET, "/v2/", auth, None).await, want, 200, &what).await,
        Route::Catalog => check(w.send(Method::GET, "/v2/_catalog", auth, None).await, want, 200, &what).await,
        Route::ManifestGet => {
            check(w.send(Method::GET, &format!("/v2/{APP}/manifests/v{row}"), auth, None).await, want, 200, &what).await
        }
        Route::ManifestHead => {
            check(w.send(Method::HEAD, &format!("/v2/{APP}/manifests/{md}"), auth, None).await, want, 200, &what).await
        }
        Route::BlobGet => check(w.send(Method::GET, &format!("/v2/{APP}/blobs/{ld}"), auth, None).await, want, 200, &what).await,
        Route::TagsList => check(w.send(Method::GET, &format!("/v2/{APP}/tags/list"), auth, None).await, want, 200, &what).await,
        Route::Referrers => {
            check(w.send(Method::GET, &format!("/v2/{APP}/referrers/{md}"), auth, None).await, want, 200, &what).await
        }
        Route::UploadStart => {
            let before = w.upload_files();
            check(w.send(Method::POST, &format!("/v2/{APP}/blobs/uploads/"), auth, None).await, want, 202, &what).await;
            if want != Expect::Allowed {
                assert_eq!(w.upload_files(), before, "{what}: a refused POST created an upload session");
            }
        }
        Route::UploadPatch => {
            let admin = w.admin_basic();
            let resp = w.send(Method::POST, &format!("/v2/{APP}/blobs/uploads/"), Some(&admin), None).await;
            assert_eq!(resp.status(), 202);
            let location = oci::require_header(&resp, "location");
            let mut patch = w
                .http
                .patch(format!("{}{location}", w.base()))
                .header("content-type", "application/octet-stream")
                .header("content-range", "0-9")
                .body(vec![7u8; 10]);
            if let Some(a) = auth {
                patch = patch.header("authorization", a);
            }
            let resp = patch.send().await.expect("PATCH");
            check(resp, want, 202, &what).await;
            let status = w.http.get(format!("{}{location}", w.base())).header("authorization", &admin).send().await.expect("GET upload");
            let range = oci::header(&status, "range");
            if want == Expect::Allowed {
                assert_eq!(range.as_deref(), Some("0-9"), "{what}");
            } else {
                assert_ne!(range.as_deref(), Some("0-9"), "{what}: a refused PATCH stored bytes");
            }
        }
        Route::ManifestPut => {
            let (_, _, manifest) = w.push_image(APP, &format!("base{row}"), &format!("put{row}")).await;
            let tag = format!("put-{row}");
            let resp = w
                .send(Method::PUT, &format!("/v2/{APP}/manifests/{tag}"), auth, Some((manifest, oci::OCI_MANIFEST)))
                .await;
            check(resp, want, 201, &what).await;
            let now = w.status_as_admin(Method::GET, &format!("/v2/{APP}/manifests/{tag}")).await;
            let want_now = if want == Expect::Allowed { 200 } else { 404 };
            assert_eq!(now, want_now, "{what}: tag afterwards");
        }
        Route::ManifestDelete => {
            let resp = w.send(Method::DELETE, &format!("/v2/{APP}/manifests/{md}"), auth, None).await;
            check(resp, want, 202, &what).await;
            let now = w.status_as_admin(Method::GET, &format!("/v2/{APP}/manifests/{md}")).await;
            assert_eq!(now, if want == Expect::Allowed { 404 } else { 200 }, "{what}: manifest afterwards");
        }
        Route::BlobDelete => {
            let digest = w.push_blob(APP, format!("blob-to-delete-{row}").as_bytes()).await;
            let resp = w.send(Method::DELETE, &format!("/v2/{APP}/blobs/{digest}"), auth, None).await;
            check(resp, want, 202, &what).await;
            let now = w.status_as_admin(Method::HEAD, &format!("/v2/{APP}/blobs/{digest}")).await;
            assert_eq!(now, if want == Expect::Allowed { 404 } else { 200 }, "{what}: blob afterwards");
        }
    }
}

/// The `kid` in a bearer token's header.
fn kid_of(token: &str) -> String {
    let header = token.trim_start_matches("Bearer ").split('.').next().expect("JWT header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("base64url");
    serde_json::from_slice::<Value>(&raw).expect("header")["kid"].as_str().expect("kid").to_string()
}

/// The `access` claim of a bearer token (the payload is not encrypted; clients may read it).
fn access_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice::<Value>(&raw).expect("claims")["access"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_every_identity_as_granted() {
    let c = Cluster::start_with(auth_opts()).await;
    let foreign = Cluster::start_with(auth_opts()).await;
    c.wait_for_user(0, "admin").await;
    foreign.wait_for_user(0, "admin").await;
    let reader_pw = c.add_user(0, "reader", "reader").await;
    let writer_pw = c.add_user(0, "writer", "writer").await;
    c.admin_json_at(0, &["scope-map", "create", "team-rw", "--grant", "team/*:pull,push"]).await;
    c.admin_json_at(0, &["scope-map", "create", "other-only", "--grant", "team/other:*"]).await;
    let robot = c.admin_json_at(0, &["token", "create", "team", "--scope-map", "team-rw"]).await;
    assert_eq!(robot["username"], "robot$team");
    let robot_team = robot["secret"].as_str().expect("secret").to_string();
    let robot = c.admin_json_at(0, &["token", "create", "other", "--scope-map", "other-only"]).await;
    let robot_other = robot["secret"].as_str().expect("secret").to_string();
    let w = World {
        c,
        foreign,
        http: oci::client(),
        reader_pw,
        writer_pw,
        robot_team,
        robot_other,
        issued: Default::default(),
    };

    // The bootstrap admin exists; without credentials even /v2/ is a challenge.
    let resp = w.send(Method::GET, "/v2/", None, None).await;
    check(resp, Expect::Unauthorized, 200, "GET /v2/ anonymous").await;

    let routes = [
        Route::Base,
        Route::Catalog,
        Route::ManifestGet,
        Route::ManifestHead,
        Route::BlobGet,
        Route::TagsList,
        Route::Referrers,
        Route::UploadStart,
        Route::UploadPatch,
        Route::ManifestPut,
        Route::ManifestDelete,
        Route::BlobDelete,
    ];
    let whos = [
        Who::Anonymous,
        Who::Reader,
        Who::Writer,
        Who::WriterBasic,
        Who::Admin,
        Who::OtherRepoToken,
        Who::RobotTeam,
        Who::RobotOther,
        Who::ForeignKey,
    ];
    let mut row = 0;
    for route in routes {
        for who in whos {
            row += 1;
            run_row(&w, route, who, row).await;
        }
    }
    // Expired tokens (each costs a wait, so a few representative routes).
    for route in [Route::Base, Route::ManifestGet, Route::ManifestPut] {
        row += 1;
        run_row(&w, route, Who::Expired, row).await;
    }
    eprintln!("[auth] {row} route × identity checks passed");

    // Anonymous pull where an operator opened it, and only pull.
    w.push_image(PUBLIC, "latest", "public").await;
    let resp = w.send(Method::GET, &format!("/v2/{PUBLIC}/manifests/latest"), None, None).await;
    assert_eq!(resp.status(), 200, "anonymous pull of public/*");
    let resp = w.send(Method::POST, &format!("/v2/{PUBLIC}/blobs/uploads/"), None, None).await;
    check(resp, Expect::Unauthorized, 202, "anonymous push to public/*").await;
    let (status, body) = w.token_from(&w.base(), None, &["repository:public/app:pull,push", "repository:team/app:pull"]).await;
    assert_eq!(status, 200);
    assert_eq!(access_of(body["token"].as_str().unwrap()), json!([{"type": "repository", "name": PUBLIC, "actions": ["pull"]}]));

    // The token endpoint grants the intersection, never more; bad credentials are refused.
    let (_, body) = w.token_from(&w.base(), Some(("reader", &w.reader_pw)), &["repository:team/app:pull,push,delete,*"]).await;
    assert_eq!(access_of(body["token"].as_str().unwrap()), json!([{"type": "repository", "name": APP, "actions": ["pull"]}]));
    let (_, body) = w.token_from(&w.base(), Some(("writer", &w.writer_pw)), &["registry:catalog:*", "repository:team/app:delete"]).await;
    assert_eq!(access_of(body["token"].as_str().unwrap()), json!([]));
    let (status, _) = w.token_from(&w.base(), Some(("writer", "wrong-password")), &["repository:team/app:pull"]).await;
    assert_eq!(status, 401, "wrong password");
    let (status, _) = w.token_from(&w.base(), Some(("nobody", "whatever-pw")), &[]).await;
    assert_eq!(status, 401, "unknown user");
    let resp = w.http.get(format!("{}/token?service=another-registry", w.base())).header("authorization", basic("writer", &w.writer_pw)).send().await.unwrap();
    assert_eq!(resp.status(), 400, "token for another service");
    // OAuth2 password grant.
    let resp = w
        .http
        .post(format!("{}/token", w.base()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&service=meridian&client_id=test&username=writer&password={}&scope={}", urlencode(&w.writer_pw), urlencode("repository:team/app:pull,push")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    w.issued.lock().unwrap().push(body["access_token"].as_str().unwrap().to_string());
    assert_eq!(access_of(body["access_token"].as_str().unwrap())[0]["actions"], json!(["pull", "push"]));

    // A token for team/app cannot mount a blob from team/other: the request becomes a plain upload.
    let other_blob = w.push_blob(OTHER, b"only in team/other").await;
    let app_token = w.bearer(&w.base(), ("writer", &w.writer_pw), &["repository:team/app:pull,push"]).await;
    let resp = w
        .send(Method::POST, &format!("/v2/{APP}/blobs/uploads/?mount={other_blob}&from={OTHER}"), Some(&app_token), None)
        .await;
    assert_eq!(resp.status(), 202, "mount without read access to the source must not link the blob");
    assert_eq!(w.status_as_admin(Method::HEAD, &format!("/v2/{APP}/blobs/{other_blob}")).await, 404);
    // With read access to the source the mount happens.
    let both = w.bearer(&w.base(), ("writer", &w.writer_pw), &["repository:team/app:pull,push", "repository:team/other:pull"]).await;
    let resp = w.send(Method::POST, &format!("/v2/{APP}/blobs/uploads/?mount={other_blob}&from={OTHER}"), Some(&both), None).await;
    assert_eq!(resp.status(), 201, "mount with read access to the source");

    // Path tricks in repository names are refused (sent raw: HTTP clients normalize `..`).
    let writer_app_only = w.bearer(&w.base(), ("writer", &w.writer_pw), &["repository:team/app:pull"]).await;
    for path in ["/v2/team/app/../other/manifests/v1", "/v2/team/app/%2e%2e/other/manifests/v1", "/v2/team//other/manifests/v1"] {
        let status = raw_status(&w.c[0].http_addr(), "GET", path, &writer_app_only).await;
        assert!((400..500).contains(&status) && status != 401, "{path}: {status}");
    }

    // Revocation: removing a user refuses its live token (and its password) at once.
    let token = w.bearer(&w.base(), ("writer", &w.writer_pw), &["repository:team/app:pull"]).await;
    let resp = w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&token), None).await;
    assert_eq!(resp.status(), 200);
    let out = w.c.admin_at(0, &["user", "remove", "writer"]).await;
    assert_eq!(out.code, 0, "user remove: {out}");
    let resp = w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&token), None).await;
    check(resp, Expect::Unauthorized, 200, "token of a removed user").await;
    let resp = w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&basic("writer", &w.writer_pw)), None).await;
    check(resp, Expect::Unauthorized, 200, "password of a removed user").await;

    // Robot tokens: /token grants only what the scope map allows; revoking the secret
    // refuses the robot's live token and its login; an expired secret cannot log in.
    let (_, body) = w.token_from(&w.base(), Some(("robot$other", &w.robot_other)), &["repository:team/app:pull", "repository:team/other:pull,delete"]).await;
    assert_eq!(access_of(body["token"].as_str().unwrap()), json!([{"type": "repository", "name": OTHER, "actions": ["pull", "delete"]}]));
    let robot_token = w.bearer(&w.base(), ("robot$team", &w.robot_team), &["repository:team/app:pull"]).await;
    assert_eq!(w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&robot_token), None).await.status(), 200);
    let listed = w.c.admin_json_at(0, &["token", "list"]).await;
    let secret_id = listed["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "team").expect("robot team listed")["secrets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!listed.to_string().contains(&w.robot_team), "token list shows a secret");
    w.c.admin_json_at(0, &["token", "revoke", "team", "--secret", &secret_id]).await;
    let resp = w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&robot_token), None).await;
    check(resp, Expect::Unauthorized, 200, "token of a revoked robot secret").await;
    let (status, _) = w.token_from(&w.base(), Some(("robot$team", &w.robot_team)), &[]).await;
    assert_eq!(status, 401, "login with a revoked robot secret");
    let short = w.c.admin_json_at(0, &["token", "create", "brief", "--scope-map", "reader", "--expires-in", "2s"]).await;
    let brief = short["secret"].as_str().unwrap().to_string();
    let (status, _) = w.token_from(&w.base(), Some(("robot$brief", &brief)), &[]).await;
    assert_eq!(status, 200, "login with a fresh robot secret");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = w.token_from(&w.base(), Some(("robot$brief", &brief)), &[]).await;
    assert_eq!(status, 401, "login with an expired robot secret");

    // Key rotation with overlap: tokens signed before a rotation stay valid; retiring the
    // old key refuses them.
    let old = w.bearer(&w.base(), ("admin", ADMIN_PW), &["repository:team/app:pull"]).await;
    let rotated = w.c.admin_json_at(0, &["key", "rotate"]).await;
    let new = w.bearer(&w.base(), ("admin", ADMIN_PW), &["repository:team/app:pull"]).await;
    assert_eq!(kid_of(&new), rotated["kid"].as_str().unwrap(), "new tokens are signed with the new key");
    assert_ne!(kid_of(&old), kid_of(&new));
    for t in [&old, &new] {
        assert_eq!(w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(t), None).await.status(), 200);
    }
    w.c.admin_json_at(0, &["key", "retire", &kid_of(&old)]).await;
    let resp = w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&old), None).await;
    check(resp, Expect::Unauthorized, 200, "token signed by a retired key").await;
    assert_eq!(w.send(Method::GET, &format!("/v2/{APP}/tags/list"), Some(&new), None).await.status(), 200);

    // Secrets never reach the log: passwords, tokens, basic credentials.
    let log = w.c[0].log();
    let mut secrets = vec![
        ADMIN_PW.to_string(),
        w.reader_pw.clone(),
        w.writer_pw.clone(),
        w.robot_team.clone(),
        w.robot_other.clone(),
        brief.clone(),
    ];
    secrets.extend(w.issued.lock().unwrap().iter().cloned());
    secrets.push(basic("writer", &w.writer_pw).trim_start_matches("Basic ").to_string());
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret ({}…) appears in the log", &s[..6.min(s.len())]);
    }
    assert!(log.contains("created the admin user"), "bootstrap not logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_name_and_address() {
    let c = Cluster::start_with(auth_opts().env("MERIDIAN_AUTH_FAILED_LOGIN_LIMIT", "3")).await;
    c.wait_for_user(0, "admin").await;
    let http = reqwest::Client::new();
    let token = |user: &str, pw: &str| {
        http.get(format!("{}/token?service=meridian", c[0].base)).basic_auth(user, Some(pw)).send()
    };
    for i in 0..3 {
        assert_eq!(token("admin", "wrong").await.unwrap().status(), 401, "attempt {i}");
    }
    // Over the limit: even the right password is refused for the rest of the minute,
    // on /token and on /v2/ with basic credentials, for this name and this address.
    let resp = token("admin", ADMIN_PW).await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = oci::header(&resp, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    let resp = http.get(format!("{}/v2/", c[0].base)).basic_auth("admin", Some(ADMIN_PW)).send().await.unwrap();
    assert_eq!(resp.status(), 429, "basic credentials on /v2/ while limited");
    assert_eq!(token("someone-else", "x").await.unwrap().status(), 429, "same address, other name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_are_capped_per_identity() {
    let c = Cluster::start_with(auth_opts().env("MERIDIAN_MAX_UPLOAD_SESSIONS_PER_IDENTITY", "3")).await;
    c.wait_for_user(0, "admin").await;
    let one = c.add_user(0, "one", "writer").await;
    let two = c.add_user(0, "two", "writer").await;
    let http = reqwest::Client::new();
    let post = |user: &'static str, pw: String| {
        let url = format!("{}/v2/{APP}/blobs/uploads/", c[0].base);
        let http = http.clone();
        async move { http.post(url).basic_auth(user, Some(pw)).send().await.expect("POST") }
    };
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let resp = post("one", one.clone()).await;
        assert_eq!(resp.status(), 202);
        sessions.push(oci::require_header(&resp, "location"));
    }
    let resp = post("one", one.clone()).await;
    assert_eq!(resp.status(), 429, "a fourth session for the same user");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    assert_eq!(post("two", two.clone()).await.status(), 202, "another user is not affected");
    // Cancelling one frees a place.
    let resp = http.delete(format!("{}{}", c[0].base, sessions[0])).basic_auth("one", Some(&one)).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(post("one", one.clone()).await.status(), 202, "after a cancel");
}

/// With Meridian's own crates and openraft logging at `trace` (the levels where Raft
/// state and messages get debug-printed), over two regions so user and token changes travel
/// through replication: no password, token secret, issued token or stored hash of
/// either appears in any region's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_trace_level_logs() {
    let trace = "info,meridian_node=trace,meridian_replication=trace,openraft=trace";
    let c = Cluster::start_with(
        ClusterOptions::new(2)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("RUST_LOG", trace),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let user_pw = c.add_user(0, "dev", "writer").await;
    // A password change through the other region (forwarded to the leader).
    let out = c.admin_at(1, &["--json", "user", "passwd", "dev"]).await;
    assert_eq!(out.code, 0, "user passwd: {out}");
    let changed: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("user passwd output {e}: {out}"));
    let changed_pw = changed["password"].as_str().unwrap_or_else(|| panic!("no password in {changed}")).to_string();
    let changed_pw = changed_pw.as_str();
    c.admin_json_at(0, &["scope-map", "create", "ci-push", "--grant", "team/*:pull,push"]).await;
    let robot = c.admin_json_at(0, &["token", "create", "ci", "--scope-map", "ci-push"]).await;
    let robot_secret = robot["secret"].as_str().expect("secret").to_string();
    c.wait_for_user(1, "dev").await;

    // Log in with each identity in each region (the token endpoint takes Basic credentials).
    let http = oci::client();
    let mut issued = Vec::new();
    for i in 0..2 {
        for (user, pw) in [("admin", ADMIN_PW), ("dev", changed_pw), ("robot$ci", robot_secret.as_str())] {
            let resp = http
                .get(c[i].url("/token?service=meridian&scope=repository:team/app:pull"))
                .header("authorization", basic(user, pw))
                .send()
                .await
                .expect("GET /token");
            assert_eq!(resp.status(), 200, "{user} logging in at {}", c[i].name);
            let body: Value = resp.json().await.expect("token body");
            issued.push(body["token"].as_str().expect("token").to_string());
        }
    }
    let hex = |s: &str| oci::sha256_digest(s.as_bytes()).trim_start_matches("sha256:").to_string();
    let mut secrets = vec![ADMIN_PW.to_string(), user_pw.clone(), changed_pw.to_string(), robot_secret.clone(), hex(&robot_secret)];
    secrets.push(basic("dev", changed_pw).trim_start_matches("Basic ").to_string());
    secrets.extend(issued);
    for i in 0..2 {
        let log = c[i].log();
        assert!(log.contains("DEBUG"), "{} did not log at the verbose levels asked for", c[i].name);
        for s in &secrets {
            assert!(!log.contains(s.as_str()), "{}: a secret ({}…) appears in the log", c[i].name, &s[..6.min(s.len())]);
        }
        assert!(!log.contains("$argon2"), "{}: a password hash appears in the log", c[i].name);
    }
}
