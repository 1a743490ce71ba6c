//! One chaos scenario: a cluster of `meridian-chaos-node` processes with a fault proxy on
//! every inter-region link, the workload running in every region, a fault schedule the
//! scenario drives, then the heal and the checkers.
//!
//! Each scenario has a fixed default seed so CI runs are replayable; `CHAOS_SEED=<n>`
//! replays another, `CHAOS_DURATION=10m` (or `90s`) soaks any scenario for longer.
//! Scenarios run one at a time (a process-wide lock): they are timing-sensitive and
//! the machine has two cores.

use crate::check::{self, Report};
use crate::harness::cluster::{Cluster, ClusterOptions};
use crate::history::History;
use crate::workload::{Workload, WorkloadConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};

/// How long the checkers may take beyond the convergence wait before the scenario counts
/// as hung.
const CHECK_LIMIT: Duration = Duration::from_secs(210);
/// How long the regions get to reach the same applied index after the heal, plus a
/// quarter of the time the faults ran (see `finish`).
const CONVERGE_BASE: Duration = Duration::from_secs(90);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `90s`, `10m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: u64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

pub struct Scenario {
    pub name: String,
    pub seed: u64,
    /// How long the faults run (the default, or `CHAOS_DURATION`).
    pub duration: Duration,
    pub rng: StdRng,
    pub cluster: Cluster,
    pub workload: Option<Workload>,
    /// Members that are still part of the cluster (removed regions leave it).
    pub live: Vec<usize>,
    schedule: Vec<String>,
    t0: Instant,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    /// Waits for its turn, starts the cluster from `binary` (the integration test passes
    /// `env!("CARGO_BIN_EXE_meridian-chaos-node")`), and announces the seed.
    pub async fn start(name: &str, default_seed: u64, default_duration: Duration, binary: &str, opts: ClusterOptions) -> Scenario {
        let turn = ONE_AT_A_TIME.lock().await;
        crate::harness::use_binary(binary);
        let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default_seed);
        let duration = std::env::var("CHAOS_DURATION").ok().and_then(|s| parse_duration(&s)).unwrap_or(default_duration);
        eprintln!(
            "[chaos] scenario {name}: seed {seed}, faults for {duration:?} (replay: CHAOS_SEED={seed} cargo test --release -p chaos-tests --test scenarios {name})"
        );
        let live = (0..opts.names.len()).collect();
        let cluster = Cluster::start_with(opts.link_proxies().env("MERIDIAN_FAILPOINTS_API", "1")).await;
        Scenario {
            name: name.to_string(),
            seed,
            duration,
            rng: StdRng::seed_from_u64(seed),
            cluster,
            workload: None,
            live,
            schedule: Vec::new(),
            t0: Instant::now(),
            _turn: turn,
        }
    }

    /// The (region, base URL) of every live member.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.live.iter().map(|&i| (self.cluster[i].name.clone(), self.cluster[i].base.clone())).collect()
    }

    pub fn start_workload(&mut self) {
        self.start_workload_with(WorkloadConfig::new(self.seed));
    }

    pub fn start_workload_with(&mut self, cfg: WorkloadConfig) {
        self.workload = Some(Workload::start(&self.endpoints(), cfg));
    }

    /// Records (and prints) a fault or a heal at the current time.
    pub fn fault(&mut self, what: impl Into<String>) {
        let line = format!("t={:>6.1}s {}", self.t0.elapsed().as_secs_f64(), what.into());
        eprintln!("[chaos] {} {line}", self.name);
        self.schedule.push(line);
    }

    /// Time left of the fault phase.
    pub fn running(&self) -> bool {
        self.t0.elapsed() < self.duration
    }

    /// A random pause in `[lo, hi)` milliseconds.
    pub async fn pause_ms(&mut self, lo: u64, hi: u64) {
        use rand::Rng;
        let ms = self.rng.random_range(lo..hi.max(lo + 1));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The member among `candidates` that reports itself leader, waiting up to `timeout`.
    pub async fn leader_among(&self, candidates: &[usize], timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            for &i in candidates {
                if let Ok(regions) = self.cluster.regions_at(i).await {
                    if regions.iter().any(|r| r.role == "leader" && r.name == self.cluster[i].name) {
                        return Some(i);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Arms failpoint `name` on member `i` with `actions` (`fail` syntax; `off` clears it).
    pub async fn failpoint(&mut self, i: usize, name: &str, actions: &str) {
        self.cluster.failpoint(i, name, actions).await;
        let member = self.cluster[i].name.clone();
        self.fault(format!("{member}: failpoint {name} = {actions}"));
    }

    /// Cuts (or restores) every link between member `i` and the other live members, both ways.
    pub fn isolate(&self, i: usize, cut: bool) {
        for &j in self.live.iter().filter(|&&j| j != i) {
            for (a, b) in [(i, j), (j, i)] {
                if let Some(link) = self.cluster.try_link(a, b) {
                    link.partition(cut, cut);
                }
            }
        }
    }

    /// Heals every link proxy (no partition, delay, bandwidth cap), resumes paused members
    /// and restarts stopped ones, so the checkers see the whole cluster.
    pub async fn heal_all(&mut self) {
        let n = self.cluster.members.len();
        for i in 0..n {
            for j in 0..n {
                if i != j && self.live.contains(&i) && self.live.contains(&j) {
                    if let Some(link) = self.cluster.try_link(i, j) {
                        link.heal();
                    }
                }
            }
        }
        for i in self.live.clone() {
            if self.cluster[i].is_paused() {
                self.cluster.resume(i);
            }
            if !self.cluster[i].is_running() {
                self.cluster.restart(i).await;
            }
        }
        self.fault("heal: links restored, every member running");
    }

    /// Stops the workload, heals, runs the checkers and panics with the seed, the fault
    /// schedule and the violating history excerpts if any property failed.
    pub async fn finish(mut self) -> Report {
        let history = match self.workload.take() {
            Some(w) => w.stop().await,
            None => History::new(),
        };
        self.heal_all().await;
        let shared = WorkloadConfig::new(self.seed).shared_tags;
        // What a region could not copy while the faults lasted is copied after the heal,
        // each copy a Raft write, so the applied indexes settle only once that backlog is
        // drained: a region cut off half the time for a 10-minute soak had ~4,600 blobs to
        // fetch (about 2 minutes). The wait grows with how long the faults ran.
        let converge_limit = CONVERGE_BASE + self.duration / 4;
        let check_limit = CHECK_LIMIT + converge_limit;
        let checking = check::run_all(&self.cluster, &self.live, &history, shared, converge_limit);
        let report = match tokio::time::timeout(check_limit, checking).await {
            Ok(report) => report,
            Err(_) => panic!("{}: the checkers did not finish within {check_limit:?} (seed {})", self.name, self.seed),
        };
        let mut text = format!(
            "\n===== chaos scenario {} (seed {}) =====\nfaults:\n{}\nhistory: {} ops — {}\ncheckers:\n{}\n",
            self.name,
            self.seed,
            self.schedule.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            history.ops().len(),
            history.summary(),
            report.lines.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
        );
        if report.findings.is_empty() {
            eprintln!("{text}===== {}: all properties hold =====", self.name);
        } else {
            for f in report.findings.iter().take(20) {
                text.push_str(&f.to_string());
            }
            panic!(
                "{text}===== {}: {} violation(s); replay with CHAOS_SEED={} =====",
                self.name,
                report.findings.len(),
                self.seed
            );
        }
        report
    }
}
