//! The web console over plain HTTP, as a browser's requests would reach it (the browser
//! itself drives it in `console_browser.rs`): login and its cookies, the checks every
//! form passes (CSRF token, origin), robot tokens refused, the repositories page and its
//! pages, logout; a session works in every region until its user's password changes or
//! the user is removed there.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use common::skopeo::{build_layout, ensure_skopeo, run_skopeo};
use common::console::{get, login, manifest_status, post, Reply};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "console-admin-password";

/// Repository names in the page's table, in order.
fn listed(body: &str) -> Vec<String> {
    body.split("<td class=\"name\"><a href=\"").skip(1).map(|s| s.split('>').nth(1).and_then(|t| t.split('<').next()).unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cookies_forms_and_the_repositories_page() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(1)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("MERIDIAN_CONSOLE_PAGE_SIZE", "2"),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let robot = c.admin_json_at(0, &["token", "create", "ci", "--scope-map", "reader"]).await;
    let base = c[0].base.clone();
    let origin = base.clone();

    // Three repositories pushed by skopeo, one with two tags.
    let work = tempfile::tempdir().unwrap();
    build_layout(&work.path().join("src"), 20_000);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let creds = format!("admin:{ADMIN_PW}");
    for target in ["team/alpha:v1", "team/alpha:v2", "team/beta:v1", "tools/gamma:v1"] {
        let dst = format!("docker://{}/{target}", c[0].http_addr());
        run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dst]).await;
    }

    // Not logged in: to the login page, which comes back afterwards.
    let r = get(&format!("{base}/ui/repos?q=team"), None).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/ui/login?next=%2Fui%2Frepos%3Fq%3Dteam");
    let page = get(&format!("{base}/ui/login"), None).await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("cache-control"), "no-store");
    let pre_line = page.set_cookie("meridian_login").expect("pre-session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(pre_line.contains(attr), "{pre_line} lacks {attr}");
    }
    let pre = page.cookie("meridian_login");
    let csrf = page.csrf();
    let login_url = format!("{base}/ui/login");
    let admin_form = [("_csrf", csrf.as_str()), ("user", "admin"), ("password", ADMIN_PW)];

    // Forms that fail either CSRF check: refused, no session.
    let no_token = [("user", "admin"), ("password", ADMIN_PW)];
    for (why, headers, form) in [
        ("no CSRF token", vec![("origin", origin.as_str())], &no_token[..]),
        ("another origin", vec![("origin", "http://evil.example")], &admin_form[..]),
        ("a cross-site fetch", vec![("sec-fetch-site", "cross-site")], &admin_form[..]),
        ("neither Origin nor Sec-Fetch-Site", vec![], &admin_form[..]),
    ] {
        let r = post(&login_url, &pre, &headers, form).await;
        assert_eq!(r.status, 403, "a login form with {why} was accepted");
        assert!(r.set_cookie("meridian_session").is_none(), "{why}: a session was set");
    }
    let r = post(&login_url, "meridian_login=someone-elses-nonce00", &[("origin", &origin)], &admin_form).await;
    assert_eq!(r.status, 403, "a token bound to another nonce was accepted");

    // A robot token's real secret gets the very answer a wrong password gets.
    let secret = robot["secret"].as_str().expect("secret");
    let as_robot = post(&login_url, &pre, &[("origin", &origin)], &[("_csrf", &csrf), ("user", "robot$ci"), ("password", secret)]).await;
    let wrong = post(&login_url, &pre, &[("origin", &origin)], &[("_csrf", &csrf), ("user", "admin"), ("password", "nope")]).await;
    assert_eq!((as_robot.status, wrong.status), (401, 401));
    let error = |r: &Reply| r.body.split("id=\"error\">").nth(1).and_then(|s| s.split('<').next()).unwrap_or_default().to_string();
    assert_eq!(error(&as_robot), "Invalid user name or password.");
    assert_eq!(error(&as_robot), error(&wrong));
    assert!(as_robot.set_cookie("meridian_session").is_none());

    // The real login, through `Sec-Fetch-Site` alone this time.
    let r = post(&login_url, &pre, &[("sec-fetch-site", "same-origin")], &[("next", "/ui/repos?q=team"), admin_form[0], admin_form[1], admin_form[2]]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/ui/repos?q=team");
    let line = r.set_cookie("meridian_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(line.contains(attr), "{line} lacks {attr}");
    }
    assert!(!line.contains("Secure"), "a Secure cookie over plain HTTP is never sent back: {line}");
    let session = r.cookie("meridian_session");

    // The repositories, two a page.
    let first = get(&format!("{base}/ui/repos"), Some(&session)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(listed(&first.body), ["team/alpha", "team/beta"]);
    assert!(first.body.contains("<td class=\"num tags\">2</td>"), "team/alpha's two tags: {}", first.body);
    assert!(first.body.contains("id=\"user\">admin<"), "the header names the user");
    let next = first.body.split("id=\"next\" href=\"").nth(1).and_then(|s| s.split('"').next()).expect("a next page").replace("&amp;", "&");
    assert_eq!(next, "/ui/repos?after=team%2Fbeta");
    let second = get(&format!("{base}{next}"), Some(&session)).await;
    assert_eq!(listed(&second.body), ["tools/gamma"]);
    assert!(!second.body.contains("id=\"next\""), "no page after the last");
    let filtered = get(&format!("{base}/ui/repos?q=GAMMA"), Some(&session)).await;
    assert_eq!(listed(&filtered.body), ["tools/gamma"]);

    // Assets: versioned, cacheable for ever; any other version is unknown.
    let css = first.body.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|s| s.split('"').next()).expect("stylesheet");
    let r = get(&format!("{base}{css}"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/css"));
    assert!(r.header("cache-control").contains("immutable"));
    assert_eq!(get(&format!("{base}/ui/static/00000000/console.css"), None).await.status, 404);

    // A tampered cookie is no session.
    let tampered = format!("{}x", session);
    assert_eq!(get(&format!("{base}/ui/repos"), Some(&tampered)).await.status, 303);

    // Logout: refused without its token; with it the cookie is deleted.
    let logout_url = format!("{base}/ui/logout");
    let r = post(&logout_url, &session, &[("origin", &origin)], &[]).await;
    assert_eq!(r.status, 403, "logout without its CSRF token");
    let token = first.csrf();
    let r = post(&logout_url, &session, &[("origin", &origin)], &[("_csrf", &token)]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/ui/login");
    let gone = r.set_cookie("meridian_session").expect("the session cookie deleted");
    assert!(gone.starts_with("meridian_session=;") && gone.contains("Max-Age=0"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_cookies_are_secure_host_cookies() {
    let public = "https://registry.example.test";
    let c = Cluster::start_with(
        ClusterOptions::new(1)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("MERIDIAN_PUBLIC_URL", public),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let base = c[0].base.clone();
    let page = get(&format!("{base}/ui/login"), None).await;
    let pre = page.set_cookie("__Host-meridian_login").expect("a __Host- pre-session cookie");
    assert!(pre.contains("Secure") && pre.contains("Path=/;"), "{pre}");
    // The form comes from the public origin (a TLS-terminating proxy in front).
    let session = login(&base, public, "admin", ADMIN_PW, "__Host-meridian_session").await;
    let r = get(&format!("{base}/ui/repos"), Some(&session)).await;
    assert_eq!(r.status, 200);
    let r = post(
        &format!("{base}/ui/login"),
        &page.cookie("__Host-meridian_login"),
        &[("origin", "https://registry.example.test.evil.example")],
        &[("_csrf", &page.csrf()), ("user", "admin"), ("password", ADMIN_PW)],
    )
    .await;
    assert_eq!(r.status, 403, "an origin that merely starts like the public one");
}

/// Waits until region `i` has applied everything region `from` had applied.
async fn caught_up(c: &Cluster, i: usize, from: usize) {
    let target = metric(&c[from], "meridian_raft_applied_index", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c[i], "meridian_raft_applied_index", &[]).await < target {
        assert!(Instant::now() < deadline, "region {i} never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_in_every_region_until_its_password_changes_or_its_user_goes() {
    let c = Cluster::start_with(
        ClusterOptions::new(3).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let pw = c.add_user(0, "dev", "writer").await;
    let repos = |i: usize| format!("{}/ui/repos", c[i].base);
    let session = login(&c[0].base, &c[0].base, "dev", &pw, "meridian_session").await;
    for i in 0..3 {
        caught_up(&c, i, 0).await;
        assert_eq!(get(&repos(i), Some(&session)).await.status, 200, "region {i} refused a session made in region 0");
    }

    // A new password (set in region 1) ends the session in every region that applied it.
    let changed = c.admin_json_at(1, &["user", "passwd", "dev"]).await;
    let new_pw = changed["password"].as_str().expect("new password").to_string();
    for i in 0..3 {
        caught_up(&c, i, 1).await;
        assert_eq!(get(&repos(i), Some(&session)).await.status, 303, "region {i} kept a session after a password change");
    }

    // Removing the user (in region 2) ends a new session everywhere too.
    let session = login(&c[1].base, &c[1].base, "dev", &new_pw, "meridian_session").await;
    assert_eq!(get(&repos(2), Some(&session)).await.status, 200);
    let out = c.admin_at(2, &["user", "remove", "dev"]).await;
    assert_eq!(out.code, 0, "{out}");
    for i in 0..3 {
        caught_up(&c, i, 2).await;
        assert_eq!(get(&repos(i), Some(&session)).await.status, 303, "region {i} kept a removed user's session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_need_the_delete_permission_a_genuine_form_and_say_what_goes() {
    let skopeo = ensure_skopeo();
    let c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let base = c[0].base.clone();
    let work = tempfile::tempdir().unwrap();
    let layout = build_layout(&work.path().join("src"), 20_000);
    let index = common::oci::sha256_digest(&layout.index);
    let src = format!("oci:{}:v1", work.path().join("src").display());
    let creds = format!("admin:{ADMIN_PW}");
    for tag in ["v1", "v2", "v3"] {
        let dst = format!("docker://{}/team/app:{tag}", c[0].http_addr());
        run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", &creds, &src, &dst]).await;
    }
    let tags_page = format!("{base}/ui/r/team/app/-/tags");
    let delete = format!("{base}/ui/r/team/app/-/delete");

    // A reader: no delete controls; the confirmation page and the POST are refused, even
    // with its own valid session and CSRF token.
    let reader_pw = c.add_user(0, "viewer", "reader").await;
    let reader = login(&base, &base, "viewer", &reader_pw, "meridian_session").await;
    let page = get(&tags_page, Some(&reader)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<td class=\"tag\">"), "{}", page.body);
    assert!(!page.body.contains("class=\"delete\""), "a reader sees delete controls");
    assert_eq!(get(&format!("{delete}?ref=v1"), Some(&reader)).await.status, 403);
    let reader_token = page.csrf();
    let r = post(&delete, &reader, &[("origin", &base)], &[("_csrf", &reader_token), ("ref", "v1")]).await;
    assert_eq!(r.status, 403, "a reader's delete went through: {}", r.body);
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/app", "v1").await, 200);
    // Nor may it see the cluster's regions.
    assert!(!page.body.contains("id=\"nav-regions\""), "a reader sees the Regions link");
    assert_eq!(get(&format!("{base}/ui/regions"), Some(&reader)).await.status, 403);
    assert_eq!(get(&format!("{base}/ui/live/regions"), Some(&reader)).await.status, 403);
    assert_eq!(get(&format!("{base}/ui/live/regions"), None).await.status, 401);
    // Nor manage access: no link, no page, and its forms refused.
    assert!(!page.body.contains("id=\"nav-access\""), "a reader sees the Access link");
    assert_eq!(get(&format!("{base}/ui/access"), Some(&reader)).await.status, 403);
    let r = post(&format!("{base}/ui/access/user-add"), &reader, &[("origin", &base)], &[("_csrf", &reader_token), ("name", "mallory"), ("role", "admin"), ("password", "mallory-password")]).await;
    assert_eq!(r.status, 403, "a reader added a user");
    assert!(c.admin_json_at(0, &["user", "list"]).await["users"].as_array().expect("users").iter().all(|u| u["name"] != "mallory"));

    // An admin sees them; the confirmation says what goes.
    let admin = login(&base, &base, "admin", ADMIN_PW, "meridian_session").await;
    let page = get(&tags_page, Some(&admin)).await;
    assert!(page.body.contains("href=\"/ui/r/team/app/-/delete?ref=v1\""), "{}", page.body);
    assert!(page.body.contains("id=\"nav-regions\""), "an admin sees the Regions link");
    let live = get(&format!("{base}/ui/live/regions"), Some(&admin)).await;
    assert_eq!(live.status, 200);
    let live: serde_json::Value = serde_json::from_str(&live.body).expect("JSON");
    assert_eq!(live["regions"][0]["role"], "leader");
    let matrix = get(&format!("{base}/ui/live/r/team/app/-/m/{index}/replication"), Some(&admin)).await;
    let matrix: serde_json::Value = serde_json::from_str(&matrix.body).expect("matrix JSON");
    assert_eq!((matrix["complete"].as_bool(), matrix["total"].as_u64()), (Some(true), Some(4)), "{matrix}");
    let confirm = get(&format!("{delete}?ref=v1"), Some(&admin)).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("The tag <strong>v1</strong> will be removed."), "{}", confirm.body);
    let confirm_digest = get(&format!("{delete}?ref={index}"), Some(&admin)).await;
    assert!(confirm_digest.body.contains("with its tags: <strong>v1, v2, v3</strong>"), "{}", confirm_digest.body);
    let token = confirm.csrf();

    // Forged forms change nothing.
    for (why, headers, form) in [
        ("no CSRF token", vec![("origin", base.as_str())], vec![("ref", "v1")]),
        ("another origin", vec![("origin", "http://evil.example")], vec![("_csrf", token.as_str()), ("ref", "v1")]),
        ("a reader's token", vec![("origin", base.as_str())], vec![("_csrf", reader_token.as_str()), ("ref", "v1")]),
    ] {
        let r = post(&delete, &admin, &headers, &form).await;
        assert_eq!(r.status, 403, "a delete with {why} was accepted");
    }
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/app", "v1").await, 200, "a forged form deleted the tag");

    // The genuine one: the tag goes, the manifest and the other tags stay.
    let r = post(&delete, &admin, &[("origin", &base)], &[("_csrf", &token), ("ref", "v1")]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), "/ui/r/team/app/-/tags");
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/app", "v1").await, 404);
    assert_eq!(manifest_status(&base, ADMIN_PW, "team/app", "v2").await, 200);
    // Then the manifest itself, with its remaining tags.
    let r = post(&delete, &admin, &[("origin", &base)], &[("_csrf", &token), ("ref", &index)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    for reference in ["v2", "v3", index.as_str()] {
        assert_eq!(manifest_status(&base, ADMIN_PW, "team/app", reference).await, 404, "{reference} survived");
    }
    let r = post(&delete, &admin, &[("origin", &base)], &[("_csrf", &token), ("ref", "v2")]).await;
    assert_eq!(r.status, 404, "deleting what is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_forms_take_grants_and_expiries_as_written_and_can_be_switched_off() {
    let c = Cluster::start_with(
        ClusterOptions::new(1).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let base = c[0].base.clone();
    let admin = login(&base, &base, "admin", ADMIN_PW, "meridian_session").await;
    let page = get(&format!("{base}/ui/access"), Some(&admin)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = page.csrf();
    let access = |action: &str| format!("{base}/ui/access/{action}");

    // Grants are separated by spaces; a grant's actions by commas.
    let r = post(&access("scope-map-add"), &admin, &[("origin", &base)], &[("_csrf", &token), ("name", "ci-team"), ("grants", "team/*:pull,push other/app:pull")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let maps = c.admin_json_at(0, &["scope-map", "list"]).await;
    let map = maps["scope_maps"].as_array().expect("scope maps").iter().find(|m| m["name"] == "ci-team").cloned().expect("ci-team");
    assert_eq!(map["grants"], serde_json::json!(["team/*:pull,push", "other/app:pull"]), "{map}");

    // An expiry that is not a whole number of days is refused, not taken as "never".
    let r = post(&access("token-create"), &admin, &[("origin", &base)], &[("_csrf", &token), ("name", "ci"), ("scope_map", "ci-team"), ("expires_days", "30d")]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("is not a whole number of days"));
    let tokens = c.admin_json_at(0, &["token", "list"]).await;
    assert!(tokens["tokens"].as_array().expect("tokens").is_empty(), "a token was created: {tokens}");
    let r = post(&access("token-create"), &admin, &[("origin", &base)], &[("_csrf", &token), ("name", "ci"), ("scope_map", "ci-team"), ("expires_days", "2")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store", "a page showing a secret may be stored");
    let tokens = c.admin_json_at(0, &["token", "list"]).await;
    let expires = tokens["tokens"][0]["secrets"][0]["expires_unix"].as_u64().unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 2 * 86_400 - 60..=now + 2 * 86_400 + 60).contains(&expires), "expires {expires}, now {now}: {tokens}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_management_in_the_console_can_be_switched_off() {
    let c = Cluster::start_with(
        ClusterOptions::new(1)
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
            .env("MERIDIAN_CONSOLE_MANAGE_IDENTITIES", "false"),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let base = c[0].base.clone();
    let admin = login(&base, &base, "admin", ADMIN_PW, "meridian_session").await;
    let page = get(&format!("{base}/ui/repos"), Some(&admin)).await;
    assert!(page.body.contains("id=\"nav-regions\"") && !page.body.contains("id=\"nav-access\""));
    assert_eq!(get(&format!("{base}/ui/access"), Some(&admin)).await.status, 403);
    let r = post(&format!("{base}/ui/access/user-add"), &admin, &[("origin", &base)], &[("_csrf", &page.csrf()), ("name", "dev"), ("role", "reader"), ("password", "dev-password-1")]).await;
    assert_eq!(r.status, 403);
}
