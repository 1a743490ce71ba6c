//! Checkers, run over a workload's history once the faults have healed.
//!
//! 1. Every acknowledged push is pullable, byte-identical, in every region.
//! 2. Nothing unacknowledged half-exists: a manifest any region serves has all its blobs.
//! 3. Each shared tag's history is linearizable (writes + linearizable reads), and local
//!    reads only ever return values that were written.
//! 4. No region served bytes that do not match their digest (during the run or after).
//! 5. No acknowledged tag write was lost or reordered: each tag ends on a write that no
//!    acknowledged write strictly follows.
//! 6. The cluster converges: every region applied the same log, serves the same tags, and
//!    holds a verified copy of every referenced blob.
//! 7. No region answered 404 for an image acknowledged before the pull began (promise 4:
//!    a region that cannot tell answers 503).

pub mod register;

use crate::harness::cluster::Cluster;
use crate::harness::oci::{blob_file_verified, blob_path, sha256_digest};
use crate::history::{short, History, Image, Op, OpKind, Outcome};
use crate::workload::{read_tag, shared_tag, ACCEPT, REPO};
use register::{RegKind, RegOp};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// One property that did not hold.
#[derive(Clone, Debug)]
pub struct Finding {
    pub check: &'static str,
    pub detail: String,
    /// The smallest part of the history that shows it.
    pub excerpt: Vec<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "[{}] {}", self.check, self.detail)?;
        for l in &self.excerpt {
            writeln!(f, "    {l}")?;
        }
        Ok(())
    }
}

/// What every checker concluded.
#[derive(Default)]
pub struct Report {
    /// One line per checker: its name and what it looked at.
    pub lines: Vec<String>,
    pub findings: Vec<Finding>,
    lap: Option<Instant>,
}

impl Report {
    /// Records a checker's verdict and the time it took since the previous one.
    fn note(&mut self, check: &'static str, what: String) {
        let took = self.lap.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        self.lap = Some(Instant::now());
        let what = format!("{what} ({took:.1}s)");
        eprintln!("[check] {check}: {what}");
        let failed = self.findings.iter().filter(|f| f.check == check).count();
        let verdict = if failed == 0 { "ok".to_string() } else { format!("FAILED ({failed})") };
        self.lines.push(format!("{check:<28} {verdict:<12} {what}"));
    }
}


/// Runs every checker against the members `live` (indices into `cluster`), after waiting
/// for them to converge. Final tag reads are added to `history` before it is judged.
pub async fn run_all(cluster: &Cluster, live: &[usize], history: &History, shared_tags: usize, converge_timeout: Duration) -> Report {
    let mut report = Report { lap: Some(Instant::now()), ..Report::default() };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("http client");

    let converged = converge(cluster, live, converge_timeout).await;
    if let Err(e) = &converged {
        report.findings.push(Finding { check: "6 convergence", detail: e.clone(), excerpt: Vec::new() });
    }
    final_reads(cluster, live, history, &http, shared_tags).await;
    report.note("0 converged, final reads", format!("{} regions", live.len()));
    let ops = history.ops();

    let n = acknowledged_everywhere(cluster, live, &ops, &http, &mut report.findings).await;
    report.note("1 acknowledged everywhere", format!("{n} acknowledged manifests × {} regions", live.len()));

    let (unacked, tagged) = no_half_existence(cluster, live, &ops, &http, &mut report.findings).await;
    report.note("2 nothing half-exists", format!("{unacked} unacknowledged writes, {tagged} tags served"));

    let (regs, checked) = tags_linearizable(&ops, shared_tags, &mut report.findings);
    report.note("3 tags linearizable", format!("{regs} tags, {checked} ops"));

    let bad: Vec<&Op> = ops.iter().filter(|o| matches!(o.outcome, Outcome::BadBytes(_))).collect();
    for op in &bad {
        report.findings.push(Finding { check: "4 served bytes match", detail: "a region served bytes that do not match their digest".into(), excerpt: vec![op.line()] });
    }
    report.note("4 served bytes match", format!("{} reads and pulls", ops.iter().filter(|o| matches!(o.kind, OpKind::ReadTag { .. } | OpKind::PullDigest { .. })).count()));

    no_lost_writes(&ops, shared_tags, &mut report.findings);
    report.note("5 no lost tag writes", format!("{shared_tags} shared tags"));

    if converged.is_ok() {
        let blobs = same_state(cluster, live, &ops, &http, &mut report.findings).await;
        report.note("6 convergence", format!("{} regions, {blobs} referenced blobs", live.len()));
    } else {
        report.note("6 convergence", "did not converge".into());
    }

    // Promise 4: a pull picks only images acknowledged before it started, so a 404 for
    // one is a region claiming acknowledged content does not exist. A region that cannot
    // tell (cut off, mid-election) must say 503, which the history counts as unknown.
    let pulls = ops.iter().filter(|o| matches!(o.kind, OpKind::PullDigest { .. })).count();
    for op in ops.iter().filter(|o| matches!(o.outcome, Outcome::NotFound(_))) {
        report.findings.push(Finding {
            check: "7 no 404 for acknowledged",
            detail: format!("region {} answered 404 for content acknowledged before the pull began", op.region),
            excerpt: vec![op.line()],
        });
    }
    report.note("7 no 404 for acknowledged", format!("{pulls} pulls by digest"));
    report
}

// ---------------------------------------------------------------- convergence

/// Waits until every live member reports the same applied index twice in a row.
async fn converge(cluster: &Cluster, live: &[usize], timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    let mut last = Vec::new();
    let number = |v: &serde_json::Value, key: &str| v[key].as_u64().or_else(|| v[key].as_str().and_then(|s| s.parse().ok()));
    loop {
        let mut applied = Vec::new();
        // What each member says of itself, for the finding: whom it follows, in which
        // term, how far its log reaches — enough to tell a stuck leader from a lagging
        // follower without the run.
        let mut said = Vec::new();
        for &i in live {
            match cluster.status_at(i).await {
                Ok(v) => {
                    applied.push(number(&v, "last_applied"));
                    said.push(format!(
                        "{}: term {:?}, leader {}, last log {:?}, applied {:?}, snapshot {:?}",
                        cluster[i].name,
                        number(&v, "term"),
                        v["leader"].as_str().unwrap_or("?"),
                        number(&v, "last_log_index"),
                        number(&v, "last_applied"),
                        number(&v, "snapshot_index")
                    ));
                }
                Err(e) => {
                    applied.push(None);
                    said.push(format!("{}: no status ({e})", cluster[i].name));
                }
            }
        }
        let all_same = applied.iter().all(|a| a.is_some() && *a == applied[0]);
        if all_same && applied == last {
            return Ok(());
        }
        if t0.elapsed() > timeout {
            return Err(format!("applied indexes after {timeout:?}: {applied:?} (members {live:?}); {}", said.join("; ")));
        }
        last = applied;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A linearizable and a local read of every shared tag in every live region, recorded
/// as clients `1000 + member`, so checkers 3 and 5 see how each tag ended.
async fn final_reads(cluster: &Cluster, live: &[usize], history: &History, http: &reqwest::Client, shared_tags: usize) {
    for &i in live {
        for t in 0..shared_tags {
            let tag = shared_tag(t);
            for linearizable in [true, false] {
                let invoke = history.now();
                let outcome = read_tag(http, &cluster[i].base, &tag, linearizable).await;
                let kind = OpKind::ReadTag { repo: REPO.into(), tag: tag.clone(), linearizable };
                history.record(1000 + i, &cluster[i].name, invoke, kind, outcome);
            }
        }
    }
}

// ---------------------------------------------------------------- 1 and 2

/// The images whose manifest PUT was acknowledged.
fn acknowledged(ops: &[Op]) -> Vec<(&Op, &Image)> {
    ops.iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Push { image, .. } | OpKind::MoveTag { image, .. }, Outcome::Ok(_)) => Some((op, image)),
            _ => None,
        })
        .collect()
}

/// What a region answers for an image by digest: `Ok(true)` served byte-identical with all
/// blobs, `Ok(false)` manifest unknown, `Err` anything else.
async fn probe_image(http: &reqwest::Client, base: &str, image: &Image) -> Result<bool, String> {
    let r = http
        .get(format!("{base}/v2/{}/manifests/{}", image.repo, image.digest))
        .header("accept", ACCEPT)
        .send()
        .await
        .map_err(|e| format!("manifest: {e}"))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| format!("manifest body: {e}"))?;
    match status {
        404 => return Ok(false),
        200 if *body == **image.manifest => {}
        200 => return Err(format!("manifest served {} bytes hashing to {}", body.len(), sha256_digest(&body))),
        s => return Err(format!("manifest answered {s}")),
    }
    for blob in &image.blobs {
        let r = http
            .get(format!("{base}/v2/{}/blobs/{}", image.repo, blob.digest))
            .send()
            .await
            .map_err(|e| format!("blob {}: {e}", short(&blob.digest)))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| format!("blob {} body: {e}", short(&blob.digest)))?;
        if status != 200 {
            return Err(format!("blob {} answered {status}", short(&blob.digest)));
        }
        if *body != **blob.bytes {
            return Err(format!("blob {} served {} bytes hashing to {}", short(&blob.digest), body.len(), sha256_digest(&body)));
        }
    }
    Ok(true)
}

/// Probes every (image, member) pair, a few at a time; returns each pair's answer.
async fn probe_all<'a>(
    cluster: &Cluster,
    live: &[usize],
    images: &[(&'a Op, &'a Image)],
    http: &reqwest::Client,
) -> Vec<(&'a Op, &'a Image, usize, Result<bool, String>)> {
    use futures::StreamExt;
    let jobs = images.iter().flat_map(|&(op, image)| live.iter().map(move |&i| (op, image, i)));
    futures::stream::iter(jobs)
        .map(|(op, image, i)| {
            let base = cluster[i].base.clone();
            async move { (op, image, i, probe_image(http, &base, image).await) }
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await
}

/// Requests the checkers keep in flight at once.
const PROBE_CONCURRENCY: usize = 16;

async fn acknowledged_everywhere(cluster: &Cluster, live: &[usize], ops: &[Op], http: &reqwest::Client, findings: &mut Vec<Finding>) -> usize {
    let acked = acknowledged(ops);
    for (op, image, i, result) in probe_all(cluster, live, &acked, http).await {
        let problem = match result {
            Ok(true) => continue,
            Ok(false) => "MANIFEST_UNKNOWN".to_string(),
            Err(e) => e,
        };
        findings.push(Finding {
            check: "1 acknowledged everywhere",
            detail: format!("{} does not serve acknowledged {}@{}: {problem}", cluster[i].name, image.repo, short(&image.digest)),
            excerpt: vec![op.line()],
        });
    }
    acked.len()
}

async fn no_half_existence(cluster: &Cluster, live: &[usize], ops: &[Op], http: &reqwest::Client, findings: &mut Vec<Finding>) -> (usize, usize) {
    // Writes without an acknowledgement: either absent everywhere or whole.
    let unacked: Vec<(&Op, &Image)> = ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Push { image, .. } | OpKind::MoveTag { image, .. }, Outcome::Unknown(_) | Outcome::Failed(_)) if !image.digest.is_empty() => {
                Some((op, image))
            }
            _ => None,
        })
        .collect();
    for (op, image, i, result) in probe_all(cluster, live, &unacked, http).await {
        if let Err(e) = result {
            findings.push(Finding {
                check: "2 nothing half-exists",
                detail: format!("{} half-serves unacknowledged {}@{}: {e}", cluster[i].name, image.repo, short(&image.digest)),
                excerpt: vec![op.line()],
            });
        }
    }
    // Every tag any region lists resolves to a manifest whose blobs it serves.
    let by_digest: HashMap<&str, &Image> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Push { image, .. } | OpKind::MoveTag { image, .. } => Some((image.digest.as_str(), image)),
            _ => None,
        })
        .collect();
    let mut served = Vec::new();
    for &i in live {
        for tag in list_tags(http, &cluster[i].base).await.unwrap_or_default() {
            served.push((i, tag));
        }
    }
    let tagged = served.len();
    use futures::StreamExt;
    let problems: Vec<String> = futures::stream::iter(served)
        .map(|(i, tag)| {
            let (base, name, by_digest) = (cluster[i].base.clone(), cluster[i].name.clone(), &by_digest);
            async move {
                let digest = match tag_digest(http, &base, &tag).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return None, // untagged between the listing and the read
                    Err(e) => return Some(format!("{name} lists {tag} but: {e}")),
                };
                match by_digest.get(digest.as_str()) {
                    Some(image) => match probe_image(http, &base, image).await {
                        Ok(true) => None,
                        Ok(false) => Some(format!("{name} serves {tag} → {} but not the manifest by digest", short(&digest))),
                        Err(e) => Some(format!("{name} serves {tag} → {} without: {e}", short(&digest))),
                    },
                    None => Some(format!("{name} serves {tag} → {digest}, which no client wrote")),
                }
            }
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    for detail in problems {
        findings.push(Finding { check: "2 nothing half-exists", detail, excerpt: Vec::new() });
    }
    (unacked.len(), tagged)
}

async fn list_tags(http: &reqwest::Client, base: &str) -> Result<Vec<String>, String> {
    let r = http.get(format!("{base}/v2/{REPO}/tags/list?n=100000")).send().await.map_err(|e| e.to_string())?;
    if r.status() == 404 {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    let mut tags: Vec<String> = v["tags"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default();
    tags.sort();
    Ok(tags)
}

/// The digest a region serves for a tag from its local state (`None`: no such tag).
async fn tag_digest(http: &reqwest::Client, base: &str, tag: &str) -> Result<Option<String>, String> {
    let r = http.head(format!("{base}/v2/{REPO}/manifests/{tag}")).header("accept", ACCEPT).send().await.map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        200 => Ok(r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(String::from)),
        404 => Ok(None),
        s => Err(format!("HEAD answered {s}")),
    }
}

// ---------------------------------------------------------------- 3 and 5

/// The register view of one shared tag: writes (acknowledged or unknown) and
/// linearizable reads with an answer.
fn register_ops(ops: &[Op], tag: &str) -> Vec<RegOp> {
    ops.iter()
        .filter(|op| op.kind.tag() == Some((REPO, tag)))
        .filter_map(|op| {
            let complete = match op.outcome {
                Outcome::Ok(_) => Some(op.complete),
                Outcome::Unknown(_) => None,
                _ => return None,
            };
            let kind = match (&op.kind, &op.outcome) {
                (OpKind::MoveTag { image, .. } | OpKind::Push { image, .. }, _) => RegKind::Write(Some(image.digest.clone())),
                (OpKind::DeleteTag { .. }, _) => RegKind::Write(None),
                (OpKind::ReadTag { linearizable: true, .. }, Outcome::Ok(v)) => RegKind::Read(v.clone()),
                _ => return None,
            };
            Some(RegOp { id: op.id, process: op.client, invoke: op.invoke, complete, kind })
        })
        .collect()
}

fn tags_linearizable(ops: &[Op], shared_tags: usize, findings: &mut Vec<Finding>) -> (usize, usize) {
    let by_id: HashMap<usize, &Op> = ops.iter().map(|o| (o.id, o)).collect();
    let mut checked = 0;
    for t in 0..shared_tags {
        let tag = shared_tag(t);
        let reg = register_ops(ops, &tag);
        checked += reg.len();
        if let Err(v) = register::check(None, &reg) {
            findings.push(Finding {
                check: "3 tags linearizable",
                detail: format!("{REPO}:{tag}: {}", v.reason),
                excerpt: v.excerpt.iter().filter_map(|r| by_id.get(&r.id)).map(|o| o.line()).collect(),
            });
        }
        // Local reads may be stale, but only ever show a value some write put there.
        let written: Vec<(&str, u64)> = ops
            .iter()
            .filter(|o| o.kind.tag() == Some((REPO, tag.as_str())))
            .filter_map(|o| match (&o.kind, &o.outcome) {
                (OpKind::MoveTag { image, .. }, Outcome::Ok(_) | Outcome::Unknown(_)) => Some((image.digest.as_str(), o.invoke)),
                _ => None,
            })
            .collect();
        for op in ops.iter().filter(|o| o.kind.tag() == Some((REPO, tag.as_str()))) {
            if let (OpKind::ReadTag { linearizable: false, .. }, Outcome::Ok(Some(d))) = (&op.kind, &op.outcome) {
                checked += 1;
                if !written.iter().any(|(w, invoke)| w == d && *invoke <= op.complete) {
                    findings.push(Finding {
                        check: "3 tags linearizable",
                        detail: format!("{REPO}:{tag}: a local read returned {} which no write had put there", short(d)),
                        excerpt: vec![op.line()],
                    });
                }
            }
        }
    }
    (shared_tags, checked)
}

/// Each tag's final value (the linearizable final reads) comes from a write that no
/// acknowledged write strictly follows in real time.
fn no_lost_writes(ops: &[Op], shared_tags: usize, findings: &mut Vec<Finding>) {
    for t in 0..shared_tags {
        let tag = shared_tag(t);
        let on_tag: Vec<&Op> = ops.iter().filter(|o| o.kind.tag() == Some((REPO, tag.as_str()))).collect();
        let finals: BTreeSet<Option<String>> = on_tag
            .iter()
            .filter(|o| o.client >= 1000)
            .filter_map(|o| match (&o.kind, &o.outcome) {
                (OpKind::ReadTag { linearizable: true, .. }, Outcome::Ok(v)) => Some(v.clone()),
                _ => None,
            })
            .collect();
        if finals.len() != 1 {
            findings.push(Finding { check: "5 no lost tag writes", detail: format!("{tag}: regions end on different values {finals:?}"), excerpt: Vec::new() });
            continue;
        }
        let final_value = finals.into_iter().next().flatten();
        let writes: Vec<(&Op, Option<&str>, bool)> = on_tag
            .iter()
            .filter_map(|o| {
                let acked = matches!(o.outcome, Outcome::Ok(_));
                let maybe = acked || matches!(o.outcome, Outcome::Unknown(_));
                match &o.kind {
                    OpKind::MoveTag { image, .. } if maybe => Some((*o, Some(image.digest.as_str()), acked)),
                    OpKind::DeleteTag { .. } if maybe => Some((*o, None, acked)),
                    _ => None,
                }
            })
            .collect();
        let candidates: Vec<&(&Op, Option<&str>, bool)> = writes.iter().filter(|(_, v, _)| *v == final_value.as_deref()).collect();
        if candidates.is_empty() && final_value.is_some() {
            findings.push(Finding { check: "5 no lost tag writes", detail: format!("{tag} ends on a value no write put there"), excerpt: Vec::new() });
            continue;
        }
        // The final write must not be followed by an acknowledged write (else that one was lost).
        let survivor_ok = |end: u64| !writes.iter().any(|(w, _, acked)| *acked && w.invoke > end);
        let ok = if candidates.is_empty() {
            // Never written or deleted: fine only if no acknowledged write exists at all.
            !writes.iter().any(|(_, _, acked)| *acked)
        } else {
            candidates.iter().any(|(w, _, acked)| survivor_ok(if *acked { w.complete } else { u64::MAX }))
        };
        if !ok {
            let last_acked: Vec<String> = writes.iter().filter(|(_, _, a)| *a).rev().take(3).map(|(w, _, _)| w.line()).collect();
            let mut excerpt: Vec<String> = candidates.iter().map(|(w, _, _)| w.line()).collect();
            excerpt.extend(last_acked);
            findings.push(Finding {
                check: "5 no lost tag writes",
                detail: format!("{tag} ends on {:?}, but an acknowledged write came strictly after the write of that value", final_value.as_deref().map(short)),
                excerpt,
            });
        }
    }
}

// ---------------------------------------------------------------- 6

/// Every live region serves the same tags with the same digests and holds a verified
/// copy of every blob referenced by a manifest that exists.
async fn same_state(cluster: &Cluster, live: &[usize], ops: &[Op], http: &reqwest::Client, findings: &mut Vec<Finding>) -> usize {
    let mut states: Vec<(String, BTreeMap<String, Option<String>>)> = Vec::new();
    for &i in live {
        let base = &cluster[i].base;
        let mut state = BTreeMap::new();
        for tag in list_tags(http, base).await.unwrap_or_default() {
            state.insert(tag.clone(), tag_digest(http, base, &tag).await.unwrap_or_else(|e| Some(format!("error: {e}"))));
        }
        states.push((cluster[i].name.clone(), state));
    }
    if let Some((first_name, first)) = states.first() {
        for (name, state) in &states[1..] {
            if state != first {
                let differ: Vec<String> = first
                    .keys()
                    .chain(state.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| first.get(*k) != state.get(*k))
                    .take(8)
                    .map(|k| format!("{k}: {first_name} {:?} vs {name} {:?}", first.get(k), state.get(k)))
                    .collect();
                findings.push(Finding { check: "6 convergence", detail: format!("{first_name} and {name} serve different tags"), excerpt: differ });
            }
        }
    }
    // Referenced blobs: those of every image some region still serves by tag, and of every
    // acknowledged image (manifests stay pullable by digest after their tag moves on).
    let by_digest: HashMap<&str, &Image> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Push { image, .. } | OpKind::MoveTag { image, .. } if !image.digest.is_empty() => Some((image.digest.as_str(), image)),
            _ => None,
        })
        .collect();
    let mut digests: BTreeSet<String> = BTreeSet::new();
    for (_, image) in acknowledged(ops) {
        digests.extend(image.blobs.iter().map(|b| b.digest.clone()));
    }
    for (_, state) in &states {
        for d in state.values().flatten() {
            if let Some(image) = by_digest.get(d.as_str()) {
                digests.extend(image.blobs.iter().map(|b| b.digest.clone()));
            }
        }
    }
    let digests: Vec<String> = digests.into_iter().collect();
    for &i in live {
        let node = &cluster[i];
        // Replication runs in the background; give it time to finish after the heal.
        if let Err(e) = crate::harness::oci::wait_blob_files(node, &digests, Duration::from_secs(60)).await {
            let missing: Vec<String> = digests.iter().filter(|d| !blob_file_verified(node, d)).take(5).map(|d| blob_path(node, d).display().to_string()).collect();
            findings.push(Finding { check: "6 convergence", detail: format!("{}: {e}", node.name), excerpt: missing });
        }
    }
    digests.len()
}
