//! Credentials created in one region work in every region at once, even one whose copy
//! of the Raft log lags: a robot token created at the leader is used a moment later in a
//! region 300 ms away (each way), before that region has applied it. Found in CI as a
//! `podman login` refused with "invalid username/password" right after `token create`.

use chaos_tests::harness::cluster::{http_client, Cluster, ClusterOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_created_elsewhere_logs_in_at_once_in_a_lagging_region() {
    chaos_tests::harness::use_binary(env!("CARGO_BIN_EXE_meridian-chaos-node"));
    let mut c = Cluster::start_with(
        ClusterOptions::new(3)
            .link_proxies()
            .env("MERIDIAN_AUTH_ENABLED", "true")
            .env("MERIDIAN_ADMIN_PASSWORD", "chaos-admin-password"),
    )
    .await;
    let leader = c.leader().await;
    let lagging = (0..3).find(|&i| i != leader).expect("a follower");
    // The leader and the third member form a quorum on their own; every message to and
    // from the lagging member takes 300 ms, so it applies each write well after the
    // write was acknowledged.
    for other in (0..3).filter(|&i| i != lagging) {
        c.link(lagging, other).set_delay(Duration::from_millis(300));
        c.link(other, lagging).set_delay(Duration::from_millis(300));
    }
    let client = http_client(Duration::from_secs(20));
    let v2 = c[lagging].url("/v2/");
    let token_url = c[lagging].url("/token?service=meridian&scope=repository:team/app:pull");

    // Basic credentials of a robot created a moment ago, at /token and at /v2/.
    let robot = c.admin_json_at(leader, &["token", "create", "ci", "--scope-map", "reader"]).await;
    let (user, secret) = (robot["username"].as_str().expect("username"), robot["secret"].as_str().expect("secret"));
    let r = client.get(&token_url).basic_auth(user, Some(secret)).send().await.expect("token request");
    assert_eq!(r.status().as_u16(), 200, "a robot acknowledged by the cluster was refused: {}", r.text().await.unwrap_or_default());
    let robot = c.admin_json_at(leader, &["token", "create", "ci-basic", "--scope-map", "reader"]).await;
    let (user, secret) = (robot["username"].as_str().expect("username"), robot["secret"].as_str().expect("secret"));
    let r = client.get(&v2).basic_auth(user, Some(secret)).send().await.expect("/v2/ request");
    assert_eq!(r.status().as_u16(), 200, "basic credentials of a new robot refused at /v2/");

    // The OAuth2 password grant (containerd, helm) names the robot in its form.
    let robot = c.admin_json_at(leader, &["token", "create", "ci-oauth", "--scope-map", "reader"]).await;
    let (user, secret) = (robot["username"].as_str().expect("username"), robot["secret"].as_str().expect("secret"));
    let form = [("grant_type", "password"), ("service", "meridian"), ("username", user), ("password", secret)];
    let r = client.post(c[lagging].url("/token")).form(&form).send().await.expect("token form");
    assert_eq!(r.status().as_u16(), 200, "the password grant of a new robot was refused");

    // A token issued at the leader for a robot the lagging region has not applied yet.
    let robot = c.admin_json_at(leader, &["token", "create", "ci-bearer", "--scope-map", "reader"]).await;
    let (user, secret) = (robot["username"].as_str().expect("username"), robot["secret"].as_str().expect("secret"));
    let at_leader = c[leader].url("/token?service=meridian&scope=repository:team/app:pull");
    let r = client.get(&at_leader).basic_auth(user, Some(secret)).send().await.expect("token at the leader");
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.expect("token JSON");
    let token = body["token"].as_str().expect("token").to_string();
    let r = client.get(&v2).bearer_auth(&token).send().await.expect("/v2/ with the token");
    assert_eq!(r.status().as_u16(), 200, "a token issued at the leader was refused in the lagging region");

    // Names nobody created stay refused (after the same catch-up).
    let r = client.get(&token_url).basic_auth("robot$nobody", Some("wrong")).send().await.expect("token request");
    assert_eq!(r.status().as_u16(), 401);
    let r = client.get(&v2).basic_auth("nobody", Some("wrong")).send().await.expect("/v2/ request");
    assert_eq!(r.status().as_u16(), 401);
}
