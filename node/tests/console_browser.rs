//! The web console in a real browser: Debian's headless chromium, driven over WebDriver
//! (`chaos_tests::harness::browser`), against real nodes. Screenshots of every page land
//! in `target/test-output/console/<test>/`.

mod common;

use common::browser::Browser;
use common::console::{login_status, manifest_status};
use common::cluster::{Cluster, ClusterOptions};
use common::skopeo::{build_layout, ensure_skopeo, run_skopeo};
use serde_json::json;
use std::time::Duration;

const ADMIN_PW: &str = "browser-admin-password";
const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_sees_the_repositories_and_logs_out() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let work = tempfile::tempdir().unwrap();
    build_layout(&work.path().join("src"), 20_000);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let creds = format!("admin:{ADMIN_PW}");
    for target in ["team/alpha:v1", "team/alpha:v2", "tools/gamma:v1"] {
        let dst = format!("docker://{}/{target}", c[0].http_addr());
        run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dst]).await;
    }
    let base = c[0].base.clone();
    let b = Browser::start("a_user_logs_in_sees_the_repositories_and_logs_out").await;

    // The console's address leads to the login page.
    b.goto(&format!("{base}/ui/")).await;
    b.wait_for("#password", WAIT).await;
    assert!(b.url().await.contains("/ui/login"), "not on the login page: {}", b.url().await);
    b.shot("login").await;

    // A wrong password: told so, still on the login page.
    b.type_into("#user", "admin").await;
    b.type_into("#password", "not-the-password").await;
    b.click("#login").await;
    assert_eq!(b.text("#error").await, "Invalid user name or password.");
    b.shot("login-refused").await;

    // The real one: the repositories, with their tag counts.
    b.type_into("#user", "admin").await;
    b.type_into("#password", ADMIN_PW).await;
    b.click("#login").await;
    b.wait_for("#repos", WAIT).await;
    b.shot("repositories").await;
    let rows = b
        .js(
            "return Array.from(document.querySelectorAll('#repos tbody tr')).map(r => [r.cells[0].textContent, r.cells[1].textContent]);",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!([["team/alpha", "2"], ["tools/gamma", "1"]]));
    assert_eq!(b.text("#user").await, "admin");

    // The session cookie is out of the page's reach and never sent cross-site.
    assert_eq!(b.js("return document.cookie;", json!([])).await, json!(""));
    let cookies = b.cookies().await;
    let session = cookies.iter().find(|c| c["name"] == "meridian_session").expect("a session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    // No script of the page ran but the console's own file.
    assert_eq!(b.js("return Array.from(document.scripts).map(s => new URL(s.src).pathname.replace(/[0-9a-f]{8}/, 'H'));", json!([])).await, json!(["/ui/static/H/console.js"]));

    // The filter.
    b.type_into("#filter", "gam").await;
    // Through to the filtered page: read at once, the unfiltered one could still answer.
    b.js_through("document.querySelector('form.filter').submit();").await;
    b.wait_for("#repos", WAIT).await;
    assert_eq!(b.js("return document.querySelectorAll('#repos tbody tr').length;", json!([])).await, json!(1));
    b.shot("repositories-filtered").await;

    // A tag deleted through its confirmation page.
    b.goto(&format!("{base}/ui/r/team/alpha/-/tags")).await;
    b.wait_for("#tags", WAIT).await;
    b.click("#tags a.delete[href$='ref=v1']").await;
    b.wait_for("#confirm", WAIT).await;
    assert!(b.text("#what").await.starts_with("The tag v1 will be removed."));
    b.shot("delete-confirm").await;
    b.click("#confirm").await;
    b.wait_for("#tags", WAIT).await;
    assert_eq!(b.js("return Array.from(document.querySelectorAll('#tags td.tag')).map(td => td.textContent);", json!([])).await, json!(["v2"]));
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/alpha", "v1").await, 404);
    b.shot("deleted").await;

    // A page elsewhere that posts a delete form on its own. From another site
    // (127.0.0.2): the browser sends no session with it, the console asks for a login.
    // From another port of the same host — the same *site*, so the SameSite=Strict
    // cookie does go along — the form's origin and missing CSRF token refuse it. Either
    // way the tag stays.
    let form = format!(
        "<!doctype html><form id=f method=post action=\"{base}/ui/r/team/alpha/-/delete\">\
         <input type=hidden name=ref value=v2></form><script>document.getElementById('f').submit()</script>"
    );
    let cross_site = serve_page("127.0.0.2", form.clone()).await;
    b.goto(&cross_site).await;
    b.wait_for("#password", WAIT).await;
    b.shot("cross-site-form-gets-the-login-page").await;
    let same_site = serve_page("127.0.0.1", form).await;
    b.goto(&same_site).await;
    assert_eq!(b.text("#message").await, "This form has expired or was sent from another site. Reload the page and try again.");
    b.shot("cross-origin-form-refused").await;
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/alpha", "v2").await, 200, "a form from elsewhere deleted a tag");
    b.goto(&format!("{base}/ui/repos")).await;
    b.wait_for("#repos", WAIT).await;

    // Logging out ends the session: the console asks for a login again.
    b.click("#logout").await;
    b.wait_for("#password", WAIT).await;
    b.goto(&format!("{base}/ui/repos")).await;
    b.wait_for("#password", WAIT).await;
    assert!(b.url().await.contains("/ui/login?next="), "{}", b.url().await);
    assert!(b.cookies().await.iter().all(|c| c["name"] != "meridian_session"), "the session cookie survived logout");
    b.shot("logged-out").await;
}

/// Serves `html` to every request on a port of its own at loopback address `ip`
/// (another origin than the console's); returns its URL.
async fn serve_page(ip: &str, html: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", html.len());
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(html.as_bytes()).await;
            });
        }
    });
    url
}

const SIG_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const XSS: [&str; 3] = ["<script>window.__pwned=1</script>", "\"><img src=x onerror=window.__pwned=2>", "javascript:window.__pwned=3"];

/// The repository, tag and manifest pages of images pushed by skopeo (a two-platform
/// index), a cosign-style signature referring to it, and an image whose labels and
/// annotations are attacks: shown as text, nothing injected, nothing run. Auth is off
/// here (the console is then as open as the API), so the pushes need no credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pages_show_platforms_layers_config_and_referrers_and_never_run_what_owners_wrote() {
    use common::oci::{self, Descriptor, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
    let skopeo = ensure_skopeo();
    let c = Cluster::start(1).await;
    let node = &c[0];
    let work = tempfile::tempdir().unwrap();
    let layout = build_layout(&work.path().join("src"), 20_000);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let dst = format!("docker://{}/team/multi:v1", node.http_addr());
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", &src, &dst]).await;
    let index_digest = oci::sha256_digest(&layout.index);

    // A signature of the index.
    oci::push_empty_config(node, "team/multi").await;
    let sig_layer = oci::push_blob_desc(node, "team/multi", "application/vnd.dev.cosign.simplesigning.v1+json", b"{\"critical\":{}}").await;
    let subject = Descriptor::of(OCI_INDEX, &layout.index);
    let sig = oci::to_bytes(&oci::artifact_manifest(SIG_ARTIFACT_TYPE, &sig_layer, Some(&subject), None));
    let sig_digest = oci::push_manifest(node, "team/multi", &oci::sha256_digest(&sig), OCI_MANIFEST, &sig).await;

    // An image whose owner wrote attacks into its labels and annotations.
    let labels: serde_json::Map<String, serde_json::Value> =
        XSS.iter().enumerate().map(|(i, x)| (format!("evil{i}"), json!(x))).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": XSS[0],
        "config": { "Labels": labels, "Env": [XSS[1]] },
        "rootfs": { "type": "layers", "diff_ids": [] },
        "history": [{ "created_by": XSS[2] }],
    }))
    .unwrap();
    let config = oci::push_blob_desc(node, "team/xss", OCI_CONFIG, &config).await;
    let layer = oci::push_blob_desc(node, "team/xss", OCI_LAYER, b"not really a tarball").await;
    let mut manifest = oci::image_manifest(&config, &[layer]);
    manifest["annotations"] = json!({ "org.opencontainers.image.url": XSS[2], "evil.script": XSS[0], "evil.img": XSS[1] });
    let xss_digest = oci::push_manifest(node, "team/xss", "v1", OCI_MANIFEST, &oci::to_bytes(&manifest)).await;

    let base = node.base.clone();
    let b = Browser::start("image_pages_show_platforms_layers_config_and_referrers_and_never_run_what_owners_wrote").await;

    // Repositories → the repository's tags, with both platforms and pull commands.
    b.goto(&format!("{base}/ui/repos")).await;
    b.wait_for("#repos", WAIT).await;
    b.click("#repos a[href='/ui/r/team/multi/-/tags']").await;
    b.wait_for("#tags", WAIT).await;
    assert_eq!(b.text("#tags td.tag").await, "v1");
    assert_eq!(b.text("#tags td.platforms").await, "linux/amd64, linux/arm64/v8");
    let podman = b.js("return document.querySelector('#pull input[data-client=podman]').value;", json!([])).await;
    assert_eq!(podman, json!(format!("podman pull --tls-verify=false {}/team/multi:v1", node.http_addr())));
    b.shot("tags").await;

    // The index: its platforms and its signature.
    b.click("#tags td.tag a").await;
    b.wait_for("#platforms", WAIT).await;
    assert_eq!(b.text("#kind").await, "index");
    assert!(b.url().await.ends_with(&index_digest), "{}", b.url().await);
    assert_eq!(b.count("#platforms tbody tr").await, 2);
    assert_eq!(b.text("#referrers td.artifact-type").await, SIG_ARTIFACT_TYPE);
    assert!(b.js("return document.querySelector('#referrers a').getAttribute('href');", json!([])).await.as_str().unwrap_or_default().ends_with(&sig_digest));
    b.shot("index").await;

    // One platform: layers with media type and size, the config's platform and history.
    b.click("#platforms tbody tr:first-child a").await;
    b.wait_for("#layers", WAIT).await;
    assert_eq!(b.text("#kind").await, "image");
    assert_eq!(b.text("#layers td.media-type").await, OCI_LAYER);
    assert_eq!(b.text("#platform").await, "linux/amd64");
    assert_eq!(b.text("#labels td.value").await, "amd64");
    assert!(b.text("#history").await.contains("meridian test"));
    b.shot("image").await;

    // The attacks: every string back as text, no element injected, no script run.
    b.goto(&format!("{base}/ui/r/team/xss/-/m/{xss_digest}")).await;
    b.wait_for("#labels", WAIT).await;
    let labels_shown = b.js("return Array.from(document.querySelectorAll('#labels td.value')).map(td => td.textContent);", json!([])).await;
    assert_eq!(labels_shown, json!(XSS));
    let annotations = b.js("return Array.from(document.querySelectorAll('#annotations td.value')).map(td => td.textContent).sort();", json!([])).await;
    let mut want: Vec<&str> = XSS.to_vec();
    want.sort();
    assert_eq!(annotations, json!(want));
    assert_eq!(b.text("#created").await, XSS[0]);
    assert_eq!(b.text("#env li").await, XSS[1]);
    let verdict = b
        .js(
            "return { pwned: window.__pwned === undefined ? null : window.__pwned, imgs: document.querySelectorAll('main img').length, \
             jsLinks: document.querySelectorAll('a[href^=\"javascript\"]').length, scripts: document.scripts.length };",
            json!([]),
        )
        .await;
    assert_eq!(verdict, json!({ "pwned": null, "imgs": 0, "jsLinks": 0, "scripts": 1 }));
    b.shot("attacks-shown-as-text").await;
}

/// Logs `user` in through the login form at `base`.
async fn log_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/ui/login")).await;
    b.type_into("#user", user).await;
    b.type_into("#password", password).await;
    b.click("#login").await;
    b.wait_for("header span#user", WAIT).await;
}

/// Three regions with slow replication: an image pushed in the first, watched in the
/// second. Its matrix shows the regions still missing blobs, then — without a reload —
/// every region complete, with the same counts as `meridian admin replication image`.
/// The regions page lists the three and charts them live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_matrix_turns_complete_live_and_the_regions_page_charts_the_cluster() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(3)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("MERIDIAN_REPLICATION_BANDWIDTH_LIMIT", "1000000"),
    )
    .await;
    for i in 0..3 {
        c.wait_for_user(i, "admin").await;
    }
    let b = Browser::start("the_replication_matrix_turns_complete_live_and_the_regions_page_charts_the_cluster").await;
    let watcher = c[1].base.clone();
    log_in(&b, &watcher, "admin", ADMIN_PW).await;

    // About 8 MB in the first region; the others fetch it at about 1 MB/s.
    let work = tempfile::tempdir().unwrap();
    let layout = build_layout(&work.path().join("src"), 4 << 20);
    let index = common::oci::sha256_digest(&layout.index);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let dst = format!("docker://{}/team/big:v1", c[0].http_addr());
    let creds = format!("admin:{ADMIN_PW}");
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dst]).await;

    b.goto(&format!("{watcher}/ui/r/team/big/-/m/{index}/replication")).await;
    b.wait_for("#matrix", WAIT).await;
    assert_eq!(b.js("return document.getElementById('matrix').getAttribute('data-complete');", json!([])).await, json!("false"));
    let columns = b.js("return Array.from(document.querySelectorAll('#matrix thead th[data-region]')).map(th => th.textContent);", json!([])).await;
    assert_eq!(columns, json!(["r1", "r2", "r3"]));
    b.shot("matrix-incomplete").await;
    b.wait_for("#matrix[data-complete='true']", Duration::from_secs(90)).await;
    assert_eq!(b.count("#matrix td.missing").await, 0);
    b.shot("matrix-complete").await;

    // The same answer as the CLI's.
    let cli = c.admin_json_at(1, &["replication", "image", "team/big:v1"]).await;
    let blobs = cli["blobs"].as_u64().expect("blobs");
    let shown = b.js("return Array.from(document.querySelectorAll('#matrix td.total')).map(td => td.textContent);", json!([])).await;
    let want: Vec<String> = cli["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| format!("{} / {blobs}", r["present"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(shown, json!(want));
    assert_eq!(b.count("#matrix tbody tr").await as u64, blobs);

    // The regions page: three regions, one leader, a chart fed every 2 s.
    b.click("#nav-regions").await;
    b.wait_for("#regions", WAIT).await;
    assert_eq!(b.count("#regions tbody tr").await, 3);
    let roles = b.js("return Array.from(document.querySelectorAll('#regions td.role')).map(td => td.textContent).sort();", json!([])).await;
    assert_eq!(roles, json!(["leader", "voter", "voter"]));
    b.wait_for("#chart[data-samples='2'] svg.chart polyline", Duration::from_secs(15)).await;
    assert_eq!(b.count("#chart svg.chart").await, 2);
    b.shot("regions").await;
}

/// An administrator manages access in the console: adds a user, resets its password
/// (shown once), creates a robot token whose shown secret skopeo then pushes with in
/// another region, cannot demote the last admin, removes the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_and_tokens_and_the_shown_secrets_work() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(3).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let base = c[0].base.clone();
    let b = Browser::start("an_admin_manages_users_and_tokens_and_the_shown_secrets_work").await;
    log_in(&b, &base, "admin", ADMIN_PW).await;
    b.click("#nav-access").await;
    b.wait_for("#users", WAIT).await;

    // A user with a typed password, then a reset: the new password shown once.
    b.type_into("#new-user", "dev").await;
    b.js("document.getElementById('new-user-role').value = 'writer';", json!([])).await;
    b.type_into("#new-user-password", "typed-password-1").await;
    b.click_through("#add-user").await;
    assert_eq!(b.text("#notice").await, "User dev added with role writer.");
    assert_eq!(login_status(&base, "dev", "typed-password-1").await, 303);
    b.click("#users tr[data-user='dev'] button.reset").await;
    b.wait_for("#secret-value", WAIT).await;
    let password = b.js("return document.getElementById('secret-value').value;", json!([])).await.as_str().unwrap_or_default().to_string();
    assert_eq!(password.len(), 24);
    b.shot("password-shown-once").await;
    assert_eq!(login_status(&base, "dev", &password).await, 303, "the shown password does not log in");
    assert_eq!(login_status(&base, "dev", "typed-password-1").await, 401, "the old password still works");
    b.goto(&format!("{base}/ui/access")).await;
    b.wait_for("#users", WAIT).await;
    assert_eq!(b.count("#secret").await, 0, "the password was shown again");

    // A robot token: its secret shown once, and skopeo pushes with it in another region.
    b.type_into("#new-token", "ci").await;
    b.js("document.getElementById('new-token-map').value = 'writer';", json!([])).await;
    b.click("#create-token").await;
    b.wait_for("#secret-value", WAIT).await;
    let login = b.text("#secret-login").await;
    let secret = b.js("return document.getElementById('secret-value').value;", json!([])).await.as_str().unwrap_or_default().to_string();
    assert_eq!(login, "robot$ci");
    b.shot("token-shown-once").await;
    let work = tempfile::tempdir().unwrap();
    build_layout(&work.path().join("src"), 10_000);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let dst = format!("docker://{}/team/robot:v1", c[2].http_addr());
    let creds = format!("{login}:{secret}");
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dst]).await;
    assert_eq!(manifest_status(&c[2].base, ADMIN_PW, "team/robot", "v1").await, 200);

    // The last admin cannot be demoted; refused with the reason.
    b.goto(&format!("{base}/ui/access")).await;
    b.js("document.querySelector(\"#users tr[data-user='admin'] select\").value = 'reader';", json!([])).await;
    b.click_through("#users tr[data-user='admin'] button.set-role").await;
    assert!(b.text("#notice").await.contains("last user with role admin"), "{}", b.text("#notice").await);
    b.shot("last-admin-kept").await;

    // Removing the user ends its logins.
    b.click_through("#users tr[data-user='dev'] button.remove").await;
    assert_eq!(b.text("#notice").await, "User dev removed.");
    assert_eq!(b.count("#users tr[data-user='dev']").await, 0);
    assert_eq!(login_status(&base, "dev", &password).await, 401);
}
