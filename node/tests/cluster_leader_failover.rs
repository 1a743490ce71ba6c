//! Leader failover under writes: three `meridian` processes.
//!
//! Five writer tasks, one per tag, move their tag again and again, each write a new
//! manifest, sending the writes round-robin to all three regions. Every acknowledged
//! write (201) is recorded with its tag, digest and time; a write that fails is not
//! acknowledged. A few seconds in, the leader is `kill -9`ed. After ~10 s the writers
//! stop (each ends with one more acknowledged write), the old leader is restarted on its
//! data dir, and the cluster converges. Asserted:
//!
//! * writes resume within a few seconds of the kill (a new leader takes over);
//! * failed writes are 503 (with an OCI error body) or transport errors, never another status;
//! * read-your-writes: right after a 201, the same region serves the tag at that digest;
//! * for every tag, the final value in every region is the last acknowledged write of
//!   that tag (one client per tag, so "last" is well defined);
//! * no acknowledged manifest is missing (by digest, byte-identical) in any region.

mod common;

use common::cluster::{self, http_client, Cluster};
use common::oci::{self, OCI_MANIFEST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "failover/app";
const TAGS: usize = 5;
const RUN_FOR: Duration = Duration::from_secs(10);
const KILL_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
struct WriteRec {
    tag: String,
    seq: usize,
    region: String,
    digest: String,
    body: Vec<u8>,
    sent: Instant,
    acked: Option<Instant>,
    outcome: String,
}

#[derive(Clone)]
struct Target {
    name: String,
    base: String,
}

async fn put(client: &reqwest::Client, t: &Target, tag: &str, body: &[u8]) -> Result<cluster::Reply, String> {
    cluster::send(
        client
            .put(format!("{}/v2/{REPO}/manifests/{tag}", t.base))
            .header("content-type", OCI_MANIFEST)
            .body(body.to_vec()),
    )
    .await
}

async fn get_tag(client: &reqwest::Client, t: &Target, tag: &str) -> Result<cluster::Reply, String> {
    cluster::send(
        client
            .get(format!("{}/v2/{REPO}/manifests/{tag}", t.base))
            .header("accept", OCI_MANIFEST),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failover_keeps_acknowledged_writes() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    eprintln!("leader: {}", c[leader].name);
    let nodes: Vec<&common::Node> = c.members.iter().map(|m| &m.node).collect();
    let (config, layer) = cluster::seed_blobs(&nodes, REPO, "failover").await;
    let targets: Vec<Target> =
        c.members.iter().map(|m| Target { name: m.name.clone(), base: m.base.clone() }).collect();

    let log: Arc<Mutex<Vec<WriteRec>>> = Arc::new(Mutex::new(Vec::new()));
    let violations: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let mut writers = Vec::new();
    for k in 0..TAGS {
        let (log, violations, stop, targets) = (log.clone(), violations.clone(), stop.clone(), targets.clone());
        let (config, layer) = (config.clone(), layer.clone());
        writers.push(tokio::spawn(async move {
            let tag = format!("t{k}");
            let client = http_client(Duration::from_secs(8));
            let mut seq = 0usize;
            // After `stop`, keep going until one write is acknowledged, so every tag's
            // history ends with an acknowledged write.
            let mut final_deadline: Option<Instant> = None;
            loop {
                if stop.load(Ordering::SeqCst) && final_deadline.is_none() {
                    final_deadline = Some(Instant::now() + Duration::from_secs(20));
                }
                if let Some(d) = final_deadline {
                    if Instant::now() > d {
                        violations.lock().unwrap().push(format!("{tag}: no final write acknowledged within 20 s of stop"));
                        return;
                    }
                }
                let t = &targets[(k + seq) % targets.len()];
                let body = cluster::numbered_manifest(&config, &layer, &format!("{tag}-{seq}"));
                let digest = oci::sha256_digest(&body);
                let sent = Instant::now();
                let res = put(&client, t, &tag, &body).await;
                let mut rec = WriteRec {
                    tag: tag.clone(),
                    seq,
                    region: t.name.clone(),
                    digest: digest.clone(),
                    body,
                    sent,
                    acked: None,
                    outcome: String::new(),
                };
                seq += 1;
                match res {
                    Ok(r) if r.status == 201 => {
                        rec.acked = Some(Instant::now());
                        rec.outcome = "201".into();
                        if r.header("docker-content-digest").as_deref() != Some(digest.as_str()) {
                            violations.lock().unwrap().push(format!(
                                "{tag}#{} in {}: 201 with Docker-Content-Digest {:?}, expected {digest}",
                                rec.seq,
                                t.name,
                                r.header("docker-content-digest")
                            ));
                        }
                        // Read-your-writes in the same region, no polling.
                        match get_tag(&client, t, &tag).await {
                            Ok(g) if g.status == 200 && g.header("docker-content-digest").as_deref() == Some(digest.as_str()) => {}
                            Ok(g) => violations.lock().unwrap().push(format!(
                                "read-your-writes: {tag}#{} acknowledged by {} but its GET right after returned {} {:?}",
                                rec.seq,
                                t.name,
                                g.status,
                                g.header("docker-content-digest")
                            )),
                            Err(e) => eprintln!("{tag}: read-your-writes GET in {} failed: {e}", t.name),
                        }
                        log.lock().unwrap().push(rec);
                        if final_deadline.is_some() {
                            return;
                        }
                    }
                    Ok(r) => {
                        rec.outcome = format!("{} {}", r.status, r.text().chars().take(200).collect::<String>());
                        if r.status == 503 {
                            if !cluster::is_unavailable_error(&r) {
                                violations.lock().unwrap().push(format!("{tag}#{} in {}: malformed 503: {}", rec.seq, t.name, rec.outcome));
                            }
                        } else {
                            violations.lock().unwrap().push(format!(
                                "{tag}#{} in {}: write failed with unexpected status: {}",
                                rec.seq, t.name, rec.outcome
                            ));
                        }
                        log.lock().unwrap().push(rec);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        rec.outcome = e;
                        log.lock().unwrap().push(rec);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }

    tokio::time::sleep(KILL_AFTER).await;
    let acked_before = log.lock().unwrap().iter().filter(|w| w.acked.is_some()).count();
    eprintln!("{acked_before} writes acknowledged before the kill");
    let kill_at = Instant::now();
    c.kill9(leader);
    tokio::time::sleep(RUN_FOR.saturating_sub(t0.elapsed())).await;
    eprintln!("stopping writers at {:.1}s", t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer task");
    }

    let writes = log.lock().unwrap().clone();
    let acked: Vec<&WriteRec> = writes.iter().filter(|w| w.acked.is_some()).collect();
    let failed: Vec<&WriteRec> = writes.iter().filter(|w| w.acked.is_none()).collect();
    eprintln!("{} writes: {} acknowledged, {} failed", writes.len(), acked.len(), failed.len());
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for w in &failed {
        let key = format!("{}: {}", w.region, w.outcome.chars().take(90).collect::<String>());
        *reasons.entry(key).or_default() += 1;
    }
    for (r, n) in &reasons {
        eprintln!("  failed x{n}: {r}");
    }
    assert!(acked_before > 0, "no write was acknowledged before the leader was killed");

    // A new leader took over: acknowledged writes after the kill, soon.
    // Writes already in flight at the kill may be acknowledged at once; count from the
    // first write sent after it.
    let first_after = acked.iter().filter(|w| w.sent > kill_at).filter_map(|w| w.acked).min();
    let first_after = first_after.expect("no write sent after the leader was killed was acknowledged");
    let gap = first_after - kill_at;
    // Writes to the dead region fail until the end; the surviving regions must recover.
    let dead = c[leader].name.clone();
    let last_failure = failed
        .iter()
        .filter(|w| w.region != dead)
        .map(|w| w.sent.saturating_duration_since(kill_at))
        .max();
    eprintln!(
        "first write sent after the kill acknowledged {gap:?} after it; last failed write to a \
         surviving region sent {last_failure:?} after it"
    );
    assert!(gap < Duration::from_secs(6), "writes resumed only {gap:?} after the leader was killed");
    if let Some(last) = last_failure {
        assert!(last < Duration::from_secs(6), "surviving regions still failed writes {last:?} after the kill");
    }
    let after: Vec<_> = acked.iter().filter(|w| w.sent > kill_at).collect();
    for (i, m) in c.members.iter().enumerate() {
        if i != leader {
            assert!(
                after.iter().any(|w| w.region == m.name),
                "no write sent to surviving region {} after the kill was acknowledged",
                m.name
            );
        }
    }

    // Restart the old leader and let it catch up.
    c.restart(leader).await;
    let new_leader = c.leader().await;
    eprintln!("leader after restart: {}", c[new_leader].name);

    let client = http_client(Duration::from_secs(5));
    for k in 0..TAGS {
        let tag = format!("t{k}");
        let history: Vec<&WriteRec> = writes.iter().filter(|w| w.tag == tag).collect();
        let last_ack = history
            .iter()
            .rev()
            .find(|w| w.acked.is_some())
            .unwrap_or_else(|| panic!("{tag}: no acknowledged write"));
        for m in &c.members {
            let mut got = None;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                got = cluster::tag_digest(&client, m, REPO, &tag).await;
                if got.as_deref() == Some(last_ack.digest.as_str()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if got.as_deref() != Some(last_ack.digest.as_str()) {
                let which = history.iter().find(|w| Some(w.digest.as_str()) == got.as_deref());
                panic!(
                    "{}: tag {tag} is {got:?} ({}), but the last acknowledged write is #{} {} (by {})",
                    m.name,
                    match which {
                        Some(w) => format!("write #{} to {}, outcome {:?}", w.seq, w.region, w.outcome),
                        None => "not a write of this tag".into(),
                    },
                    last_ack.seq,
                    last_ack.digest,
                    last_ack.region
                );
            }
        }
    }
    eprintln!("every region serves the last acknowledged write of every tag");

    // No acknowledged manifest is missing anywhere.
    let mut missing = Vec::new();
    for m in &c.members {
        for w in &acked {
            match cluster::try_get_manifest(&client, m, REPO, &w.digest, false).await {
                Ok(r) if r.status == 200 && r.body == w.body => {}
                Ok(r) => missing.push(format!("{}: {}#{} {} → {}", m.name, w.tag, w.seq, w.digest, r.status)),
                Err(e) => missing.push(format!("{}: {}#{} {} → {e}", m.name, w.tag, w.seq, w.digest)),
            }
        }
    }
    assert!(missing.is_empty(), "{} acknowledged manifests missing:\n{}", missing.len(), missing.join("\n"));
    eprintln!("all {} acknowledged manifests present in all regions", acked.len());

    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "{} violations:\n{}", v.len(), v.join("\n"));
}
