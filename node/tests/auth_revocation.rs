//! Identities are cluster state: three regions with auth on. A user created through
//! region A logs in at region C; a token issued in A works in C (the signing key is
//! shared state). Removing the user through A refuses its tokens and password in C as
//! soon as C has applied the removal — checked the moment C's applied index reaches the
//! index A had after the removal, with no grace period.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "revocation-admin-password";

async fn get(base: &str, path: &str, authorization: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("authorization", authorization)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn token(base: &str, user: &str, pw: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{base}/token?service=meridian&scope=repository:team/app:pull"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), 200, "token for {user} at {base}");
    let body: serde_json::Value = resp.json().await.expect("json");
    format!("Bearer {}", body["token"].as_str().expect("token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_removed_in_one_region_is_refused_in_another_once_applied() {
    let c = Cluster::start_with(
        ClusterOptions::new(3).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    let (a, cc) = (0, 2);
    c.wait_for_user(a, "admin").await;
    let pw = c.add_user(a, "dev", "reader").await;

    // The user exists in C; a token from A works in C and vice versa.
    c.wait_for_user(cc, "dev").await;
    let from_a = token(&c[a].base, "dev", &pw).await;
    let from_c = token(&c[cc].base, "dev", &pw).await;
    let path = "/v2/";
    assert_eq!(get(&c[cc].base, path, &from_a).await, 200, "A's token in C");
    assert_eq!(get(&c[a].base, path, &from_c).await, 200, "C's token in A");

    // Remove through A; the moment C has applied what A had, C refuses.
    let out = c.admin_at(a, &["user", "remove", "dev"]).await;
    assert_eq!(out.code, 0, "user remove: {out}");
    let removal_applied_at_a = metric(&c[a], "meridian_raft_applied_index", &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c[cc], "meridian_raft_applied_index", &[]).await < removal_applied_at_a {
        assert!(Instant::now() < deadline, "C never applied the removal");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("dev:{pw}"))
    );
    for (what, auth) in [("A's token", &from_a), ("C's token", &from_c), ("password", &basic)] {
        assert_eq!(get(&c[cc].base, path, auth).await, 401, "{what} still accepted in C after the removal applied");
        assert_eq!(get(&c[a].base, path, auth).await, 401, "{what} still accepted in A");
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/token?service=meridian", c[cc].base))
        .basic_auth("dev", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a removed user still gets tokens in C");
}
