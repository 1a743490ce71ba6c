//! Webhooks, end to end: real nodes, `meridian admin webhook …`, pushes through the
//! registry API, and a real HTTP receiver on loopback (`common::receiver`) that records
//! what arrives.
//!
//! - one push gives exactly one `push` event in Distribution's format, signed, with the
//!   custom header; deletes give `delete` events; a webhook for other repositories gets
//!   nothing; bad webhook settings are usage errors;
//! - a receiver failing five times still gets every event, first receipts in push order;
//! - the delivering node (the leader) killed mid-backlog: another delivers, every event
//!   arrives, in order;
//! - a receiver answering 500 forever is parked after its attempts, visible in
//!   `deliveries`, while another webhook gets everything; re-sent once it heals; `ping`;
//!   parked events not re-sent within `events.parked_keep_secs` are dropped;
//! - a hanging receiver and an unreachable one do not slow pushes.

mod common;

use common::cluster::{metric, Cluster, ClusterOptions};
use common::oci;
use common::receiver::{Behaviour, Receiver};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Fast retries, frequent progress records: the tests wait less.
fn options(n: usize) -> ClusterOptions {
    ClusterOptions::new(n)
        .env("MERIDIAN_EVENTS_BACKOFF_INITIAL_MS", "50")
        .env("MERIDIAN_EVENTS_BACKOFF_MAX_MS", "200")
        .env("MERIDIAN_EVENTS_ACK_INTERVAL_MS", "100")
}

/// The tags of events, in order.
fn tags(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["target"]["tag"].as_str().unwrap_or("-").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_gives_one_signed_distribution_event_and_deletes_give_delete_events() {
    let c = Cluster::start_with(options(1)).await;
    let rx = Receiver::start(Some("s3cret")).await;
    let other = Receiver::start(None).await;
    let url = rx.url();
    let added = c
        .admin_json_at(0, &["webhook", "add", "ci", "--url", &url, "--secret", "s3cret", "--header", "X-Team=platform", "--actions", "push,delete"])
        .await;
    assert_eq!(added["signed"], true, "{added}");
    assert_eq!(added["headers"], serde_json::json!(["X-Team"]), "header values are never shown: {added}");
    c.admin_json_at(0, &["webhook", "add", "elsewhere", "--url", &other.url(), "--repos", "other/*"]).await;

    let image = oci::push_image(&c[0], "team/app", "v1", "one").await;
    let events = rx.wait_distinct(1, Duration::from_secs(20)).await;
    let e = &events[0];
    assert_eq!(e["action"], "push");
    assert_eq!(e["target"]["repository"], "team/app");
    assert_eq!(e["target"]["digest"], image.digest.as_str());
    assert_eq!(e["target"]["tag"], "v1");
    assert_eq!(e["target"]["mediaType"], oci::OCI_MANIFEST);
    assert_eq!(e["target"]["size"], image.manifest.len());
    assert_eq!(e["target"]["length"], image.manifest.len());
    assert_eq!(e["target"]["url"], c[0].url(&format!("/v2/team/app/manifests/{}", image.digest)).as_str());
    assert_eq!(e["request"]["method"], "PUT");
    assert!(e["request"]["id"].as_str().is_some_and(|id| id.len() == 36), "{e}");
    assert!(e["request"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{e}");
    assert_eq!(e["source"]["addr"], c[0].http_addr().as_str());
    assert!(e["id"].as_str().is_some_and(|id| id.len() == 36), "{e}");
    assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    assert_eq!(e["region"], c[0].name.as_str());

    let first = &rx.received()[0];
    assert!(first.signature_ok, "the Meridian-Signature header is the body's HMAC-SHA256 under the secret");
    assert_eq!(first.headers["content-type"], "application/vnd.docker.distribution.events.v2+json");
    assert_eq!(first.headers["x-team"], "platform");
    assert!(first.headers.contains_key("meridian-delivery"));

    // A tag deleted, then the manifest: two delete events; a delete's target names only
    // what went.
    let client = oci::client();
    let resp = client.delete(c[0].url("/v2/team/app/manifests/v1")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let resp = client.delete(c[0].url(&format!("/v2/team/app/manifests/{}", image.digest))).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let events = rx.wait_distinct(3, Duration::from_secs(20)).await;
    assert_eq!(events[1]["action"], "delete");
    assert_eq!(events[1]["target"]["tag"], "v1");
    assert_eq!(events[1]["target"]["digest"], image.digest.as_str());
    assert_eq!(events[2]["action"], "delete");
    assert_eq!(events[2]["target"]["digest"], image.digest.as_str());
    assert!(events[2]["target"].get("mediaType").is_none(), "{}", events[2]);
    // Exactly those: nothing twice, nothing for the other repositories' webhook.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.accepted().len(), 3, "{:#?}", rx.accepted());
    assert!(rx.received().iter().all(|r| r.signature_ok));
    assert!(other.received().is_empty(), "a webhook for other/* got events of team/app");

    let listed = c.admin_json_at(0, &["webhook", "list"]).await;
    let ci = listed["webhooks"].as_array().unwrap().iter().find(|w| w["name"] == "ci").cloned().unwrap();
    assert_eq!(ci["pending"], 0, "{listed}");
    assert_eq!(ci["parked"], 0, "{listed}");
    assert!(metric(&c[0], "meridian_events_delivered_total", &["webhook=\"ci\""]).await >= 3.0);
    assert!(metric(&c[0], "meridian_events_produced_total", &["action=\"push\""]).await >= 1.0);

    // Bad settings are usage errors (exit 2) and change nothing; names are unique.
    for args in [
        vec!["webhook", "add", "x", "--url", "ftp://127.0.0.1/hook"],
        vec!["webhook", "add", "x", "--url", "http://"],
        vec!["webhook", "add", "x", "--url", "127.0.0.1:9/hook"],
        vec!["webhook", "add", "x", "--url", "http://u:p@127.0.0.1:9/hook"],
        vec!["webhook", "add", "x", "--url", &url, "--actions", "pull"],
        vec!["webhook", "add", "x", "--url", &url, "--timeout", "soon"],
        vec!["webhook", "add", "x"],
        vec!["webhook", "add", "x", "--url", &url, "--max-attempts", "0"],
        vec!["webhook", "add", "x", "--url", &url, "--timeout", "10ms"],
        vec!["webhook", "update", "ci"],
    ] {
        let out = c.admin_at(0, &args).await;
        assert_eq!(out.code, 2, "{args:?}: {out}");
    }
    let out = c.admin_at(0, &["webhook", "add", "Bad Name", "--url", &url]).await;
    assert_eq!(out.code, 1, "{out}");
    let out = c.admin_at(0, &["webhook", "add", "ci", "--url", &url]).await;
    assert!(out.code == 1 && out.stderr.contains("exists"), "{out}");
    let out = c.admin_at(0, &["webhook", "remove", "nope"]).await;
    assert!(out.code == 1 && out.stderr.contains("no webhook"), "{out}");
    let listed = c.admin_json_at(0, &["webhook", "list"]).await;
    assert_eq!(listed["webhooks"].as_array().map(Vec::len), Some(2), "{listed}");

    // Removed: no more events.
    c.admin_json_at(0, &["webhook", "remove", "ci"]).await;
    oci::push_image(&c[0], "team/app", "v2", "two").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.accepted().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_five_times_still_gets_every_event_in_order() {
    let c = Cluster::start_with(options(1)).await;
    let rx = Receiver::start(None).await;
    rx.set(Behaviour::FailFirst(5));
    c.admin_json_at(0, &["webhook", "add", "ci", "--url", &rx.url()]).await;
    let pushed: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for tag in &pushed {
        oci::push_image(&c[0], "team/app", tag, tag).await;
    }
    let events = rx.wait_distinct(20, Duration::from_secs(30)).await;
    assert_eq!(tags(&events), pushed, "first receipts in push order");
    let failed = rx.received().iter().filter(|r| r.answered == 500).count();
    assert_eq!(failed, 5);
    assert!(metric(&c[0], "meridian_events_retried_total", &["webhook=\"ci\""]).await >= 5.0);
    assert!(metric(&c[0], "meridian_events_delivery_attempts_total", &["outcome=\"http_error\""]).await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivering_node_killed_mid_backlog_loses_nothing() {
    let mut c = Cluster::start_with(options(3)).await;
    let rx = Receiver::start(None).await;
    // Failing for now: a backlog builds up at the leader.
    rx.set(Behaviour::Always(503));
    c.admin_json_at(0, &["webhook", "add", "ci", "--url", &rx.url(), "--max-attempts", "100"]).await;
    let pushed: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    for (i, tag) in pushed.iter().enumerate() {
        oci::push_image(&c[i % 3], "team/app", tag, tag).await;
    }
    let leader = c.leader().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.received().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!rx.received().is_empty(), "the leader tried to deliver");
    c.kill9(leader);
    rx.set(Behaviour::Ok);
    let events = rx.wait_distinct(12, Duration::from_secs(60)).await;
    assert_eq!(tags(&events), pushed, "every event, first receipts in push order");
    // The killed node comes back: nothing is sent a second time after things settle.
    c.restart(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = rx.accepted().len();
    oci::push_image(&c[leader], "team/app", "after", "after").await;
    let events = rx.wait_distinct(13, Duration::from_secs(30)).await;
    assert_eq!(events[12]["target"]["tag"], "after");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.accepted().len(), settled + 1, "only the new event arrived: {:#?}", &rx.accepted()[settled..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_not_sent_again_within_their_keep_are_dropped() {
    let c = Cluster::start_with(options(1).env("MERIDIAN_EVENTS_PARKED_KEEP_SECS", "3")).await;
    let dead = Receiver::start(None).await;
    dead.set(Behaviour::Always(503));
    c.admin_json_at(0, &["webhook", "add", "dead", "--url", &dead.url(), "--max-attempts", "1"]).await;
    oci::push_image(&c[0], "team/app", "v1", "expiring").await;
    let parked_count = |v: &Value| v["webhooks"].as_array().and_then(|w| w.first()).map(|w| w["parked"].clone()).unwrap_or(Value::Null);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = c.admin_json_at(0, &["webhook", "list"]).await;
        if parked_count(&listed) == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never parked: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kept for three seconds, then dropped with its event: nothing parked or pending.
    let parked_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = c.admin_json_at(0, &["webhook", "list"]).await;
        if parked_count(&listed) == 0 {
            break listed;
        }
        assert!(Instant::now() < deadline, "still parked: {listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(parked_at.elapsed() >= Duration::from_secs(1), "dropped before its keep was up");
    assert_eq!(listed["webhooks"][0]["pending"], 0, "{listed}");
    let d = c.admin_json_at(0, &["webhook", "deliveries", "dead", "--parked"]).await;
    assert!(d["deliveries"].as_array().is_some_and(Vec::is_empty), "{d}");
    assert!(metric(&c[0], "meridian_events_parked_expired_total", &[]).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_forever_is_parked_and_can_be_sent_again() {
    let c = Cluster::start_with(options(1)).await;
    let broken = Receiver::start(Some("k")).await;
    broken.set(Behaviour::Always(500));
    let healthy = Receiver::start(None).await;
    c.admin_json_at(0, &["webhook", "add", "broken", "--url", &broken.url(), "--max-attempts", "3", "--secret", "k"]).await;
    c.admin_json_at(0, &["webhook", "add", "healthy", "--url", &healthy.url()]).await;
    let pushed: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    for tag in &pushed {
        oci::push_image(&c[0], "team/app", tag, tag).await;
    }
    assert_eq!(tags(&healthy.wait_distinct(3, Duration::from_secs(20)).await), pushed, "the other webhook is unaffected");

    // Parked after three attempts, and shown so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let d = c.admin_json_at(0, &["webhook", "deliveries", "broken", "--parked"]).await;
        let list = d["deliveries"].as_array().cloned().unwrap_or_default();
        if list.len() == 3 {
            break list;
        }
        assert!(Instant::now() < deadline, "never parked: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for d in &parked {
        assert_eq!(d["state"], "parked", "{d}");
        assert_eq!(d["lastStatus"], 500, "{d}");
        assert_eq!(d["attempts"], 3, "{d}");
    }
    let text = c.admin_at(0, &["webhook", "deliveries", "broken"]).await;
    assert!(text.code == 0 && text.stdout.contains("parked") && text.stdout.contains("500"), "{text}");
    assert!(metric(&c[0], "meridian_events_parked_total", &["webhook=\"broken\""]).await >= 1.0);
    let listed = c.admin_json_at(0, &["webhook", "list"]).await;
    let b = listed["webhooks"].as_array().unwrap().iter().find(|w| w["name"] == "broken").cloned().unwrap();
    assert_eq!(b["parked"], 3, "{listed}");

    // Healed: ping answers, and the parked events are sent again on request.
    broken.set(Behaviour::Ok);
    let ping = c.admin_json_at(0, &["webhook", "ping", "broken"]).await;
    assert_eq!(ping["status"], 200, "{ping}");
    let pinged = broken.received().last().cloned().unwrap();
    assert!(pinged.signature_ok);
    let body: Value = serde_json::from_slice(&pinged.body).unwrap();
    assert_eq!(body["events"][0]["action"], "ping");
    let resent = c.admin_json_at(0, &["webhook", "deliveries", "broken", "--resend", "all"]).await;
    assert_eq!(resent["resending"], 3, "{resent}");
    let got: Vec<Value> = broken.wait_distinct(4, Duration::from_secs(20)).await.into_iter().filter(|e| e["action"] == "push").collect();
    assert_eq!(tags(&got), pushed);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = c.admin_json_at(0, &["webhook", "deliveries", "broken", "--parked"]).await;
        if d["deliveries"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "still parked after the re-send: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New events flow again.
    oci::push_image(&c[0], "team/app", "t3", "t3").await;
    let got = broken.wait_distinct(5, Duration::from_secs(20)).await;
    assert_eq!(got.last().unwrap()["target"]["tag"], "t3");
}

/// Median of a run of pushes (each a config, a layer and a manifest).
async fn median_push(c: &Cluster, prefix: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let tag = format!("{prefix}{i}");
        let started = Instant::now();
        oci::push_image(&c[0], "team/app", &tag, &tag).await;
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_hang_or_cannot_be_reached_do_not_slow_pushes() {
    let c = Cluster::start_with(options(1)).await;
    oci::push_image(&c[0], "team/app", "warm", "warm").await;
    let without = median_push(&c, "a", 30).await;

    let hanging = Receiver::start(None).await;
    hanging.set(Behaviour::Hang);
    let healthy = Receiver::start(None).await;
    c.admin_json_at(0, &["webhook", "add", "hangs", "--url", &hanging.url(), "--timeout", "5s"]).await;
    c.admin_json_at(0, &["webhook", "add", "nobody", "--url", "http://127.0.0.1:1/hook"]).await;
    c.admin_json_at(0, &["webhook", "add", "healthy", "--url", &healthy.url()]).await;
    let with = median_push(&c, "b", 30).await;
    eprintln!("median push: {without:?} without webhooks, {with:?} with a hanging, an unreachable and a healthy one");
    // A push that waited for a receiver would take the receiver's timeout (seconds).
    assert!(with <= without * 2 + Duration::from_millis(50), "pushes slowed: {without:?} → {with:?}");
    let got = healthy.wait_distinct(30, Duration::from_secs(30)).await;
    assert_eq!(tags(&got), (0..30).map(|i| format!("b{i}")).collect::<Vec<_>>());
    assert!(!hanging.received().is_empty(), "the hanging receiver was tried");
    let d = c.admin_json_at(0, &["webhook", "deliveries", "nobody", "--limit", "1"]).await;
    let status = &d["webhook"];
    assert!(status["lastError"].as_str().is_some_and(|e| e.contains("connect")), "{d}");
}
