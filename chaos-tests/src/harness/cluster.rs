//! Multi-process cluster harness: N `meridian serve` processes on free loopback ports,
//! each with a generated config file and data directory in one temporary directory.
//!
//! Member `i` (0-based) is region `r{i+1}` (or a given name), node id `i+1`; member 0
//! bootstraps the cluster and the others join it (`join = [<member 0's gRPC>]`). Raft
//! timings are the fast local ones (heartbeat 100 ms, election 600–1200 ms). Members can
//! be SIGKILLed, stopped (SIGTERM), paused (SIGSTOP) and restarted on their data dir with
//! the same ports. The admin CLI is the real binary (`meridian admin …`).
//!
//! With `ClusterOptions::link_proxies()`, every directed link between the members that
//! start together runs through its own `FaultProxy` (member i dials member j through
//! `cluster.link(i, j)`, configured with `dial_via`), so a test can delay, cap, partition
//! or reset one direction of one link. Members added later dial and are dialled directly.
//!
//! A [`Member`] derefs to [`Node`], so the `common::oci` helpers take `&cluster[i]`.
//! When a test panics, the tail of every member's log is printed.

use super::{free_ports, Node};
use crate::proxy::FaultProxy;
use serde_json::Value;
use std::ops::{Deref, Index, IndexMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How a cluster is started.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Region names, one per member; `r1..rN` by default.
    pub names: Vec<String>,
    /// Extra `[raft]` keys (TOML values), e.g. `("snapshot_every", "50")`.
    pub raft: Vec<(String, String)>,
    /// Extra environment for every member.
    pub env: Vec<(String, String)>,
    /// How long a member may take to answer `/readyz` 200.
    pub ready_timeout: Duration,
    /// Put a fault proxy on every directed inter-member link.
    pub link_proxies: bool,
    /// Extra arguments for every `meridian admin` call (e.g. `--tls-ca …` under mutual TLS).
    pub admin_args: Vec<String>,
    /// Members (by region name) whose blobs live in a Garage the cluster starts, each
    /// under its region's name as prefix.
    pub s3_regions: Vec<String>,
}

impl ClusterOptions {
    pub fn new(n: usize) -> ClusterOptions {
        ClusterOptions {
            names: (1..=n).map(|i| format!("r{i}")).collect(),
            raft: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            link_proxies: false,
            admin_args: Vec::new(),
            s3_regions: Vec::new(),
        }
    }

    pub fn s3_regions(mut self, names: &[&str]) -> ClusterOptions {
        self.s3_regions = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn admin_args(mut self, args: &[&str]) -> ClusterOptions {
        self.admin_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn link_proxies(mut self) -> ClusterOptions {
        self.link_proxies = true;
        self
    }

    pub fn names(mut self, names: &[&str]) -> ClusterOptions {
        self.names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn raft(mut self, key: &str, value: &str) -> ClusterOptions {
        self.raft.push((key.to_string(), value.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> ClusterOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The README's wide-area Raft timings (heartbeat 250 ms, elections after 1.5–3 s),
    /// for clusters whose links are given wide-area delays.
    pub fn wide_area_raft(self) -> ClusterOptions {
        self.raft("heartbeat_ms", "250").raft("election_timeout_min_ms", "1500").raft("election_timeout_max_ms", "3000")
    }
}

/// One region's process, its ports, config file and data directory.
pub struct Member {
    pub node: Node,
    pub name: String,
    pub node_id: u64,
    pub grpc_port: u16,
    /// `<tmp>/<name>`: holds `config.toml`, `data/` and `node.log`.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub join: Vec<String>,
    /// `dial_via` entries: (advertised gRPC address of a peer, address dialled instead).
    pub dial_via: Vec<(String, String)>,
    env: Vec<(String, String)>,
    paused: bool,
    starts: u32,
}

impl Deref for Member {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Member {
    /// `http://127.0.0.1:<grpc port>`: what `join`, `--addr` and `region add` take.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `127.0.0.1:<grpc port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// `127.0.0.1:<http port>`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.node.port)
    }

    /// The process was started and has not been killed or stopped (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match self.node.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Running and not paused: it can answer requests.
    pub fn is_live(&mut self) -> bool {
        !self.paused && self.is_running()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> u32 {
        self.node.pid()
    }

    fn write_config(&self, opts_raft: &[(String, String)]) {
        let join = self.join.iter().map(|j| format!("{j:?}")).collect::<Vec<_>>().join(", ");
        let mut raft: Vec<(String, String)> = vec![
            ("heartbeat_ms".into(), "100".into()),
            ("election_timeout_min_ms".into(), "600".into()),
            ("election_timeout_max_ms".into(), "1200".into()),
            ("snapshot_every".into(), "10000".into()),
            ("max_logs_kept".into(), "5000".into()),
            ("write_timeout_ms".into(), "5000".into()),
        ];
        for (k, v) in opts_raft {
            match raft.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => raft.push((k.clone(), v.clone())),
            }
        }
        let mut text = format!(
            "region = {:?}\nnode_id = {}\nlisten = \"127.0.0.1:{}\"\ngrpc_listen = \"127.0.0.1:{}\"\n\
             data_dir = {:?}\njoin = [{join}]\nadmin_token = {:?}\n\n[raft]\n",
            self.name,
            self.node_id,
            self.node.port,
            self.grpc_port,
            self.node.data_dir.to_string_lossy(),
            ADMIN_TOKEN,
        );
        for (k, v) in raft {
            text.push_str(&format!("{k} = {v}\n"));
        }
        if !self.dial_via.is_empty() {
            text.push_str("\n[dial_via]\n");
            for (from, to) in &self.dial_via {
                text.push_str(&format!("{from:?} = {to:?}\n"));
            }
        }
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Starts the process on the member's config (and data dir, if any); does not wait.
    pub fn spawn(&mut self) {
        assert!(!self.is_running(), "{} is already running", self.name);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.node.log_path)
            .expect("log file");
        {
            use std::io::Write;
            let mut l = &log;
            let _ = writeln!(l, "\n===== harness: start #{} of {} =====", self.starts, self.name);
        }
        let mut cmd = Command::new(super::meridian_bin());
        cmd.arg("serve").arg("--config").arg(&self.config_path);
        // The member's environment is the config file plus the test's extra variables only.
        for (k, _) in std::env::vars() {
            if k.starts_with("MERIDIAN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        // Auth is off unless the test's environment turns it on (see `common`).
        cmd.env("MERIDIAN_AUTH_ENABLED", "false");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn meridian");
        self.paused = false;
        self.node.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if self.paused {
            self.resume();
        }
        self.node.kill9();
    }

    /// SIGTERM, then SIGKILL if it has not exited after 10 s.
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let Some(mut child) = self.node.child.take() else { return };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("[cluster] {} did not exit 10 s after SIGTERM; SIGKILL", self.name);
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&mut self) {
        if let Some(c) = &self.node.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGSTOP);
            }
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(c) = &self.node.child {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.paused = false;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.node.log_path).unwrap_or_default()
    }

    /// The log written since the member's last (re)start.
    pub fn log_since_start(&self) -> String {
        let log = self.log();
        let marker = format!("===== harness: start #{} of {} =====", self.starts, self.name);
        match log.rfind(&marker) {
            Some(i) => log[i..].to_string(),
            None => log,
        }
    }

    /// Log lines (since the first start, colour codes removed) that contain every one of
    /// `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log().lines().map(strip_ansi).filter(|l| needles.iter().all(|n| l.contains(n))).collect()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A log line without ANSI colour sequences (`ESC [ … letter`), so `key=value` fields
/// can be matched as written.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // Skip `[`, parameters, and the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// One entry of `meridian admin region list --json`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionEntry {
    pub node_id: u64,
    pub name: String,
    pub http_addr: String,
    pub grpc_addr: String,
    pub role: String,
    pub last_applied: u64,
    pub lag: u64,
    pub reachable: bool,
}

impl RegionEntry {
    fn from_json(v: &Value) -> RegionEntry {
        let num = |k: &str| v[k].as_u64().or_else(|| v[k].as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
        RegionEntry {
            node_id: num("node_id"),
            name: v["name"].as_str().unwrap_or("").to_string(),
            http_addr: v["http_addr"].as_str().unwrap_or("").to_string(),
            grpc_addr: v["grpc_addr"].as_str().unwrap_or("").to_string(),
            role: v["role"].as_str().unwrap_or("").to_ascii_lowercase(),
            last_applied: num("last_applied"),
            lag: num("lag"),
            reachable: v["reachable"].as_bool().unwrap_or(false),
        }
    }

    /// leader or voter.
    pub fn is_voter(&self) -> bool {
        self.role == "leader" || self.role == "voter"
    }

    /// The parts of an entry that only a membership change alters: id, name,
    /// addresses and voter/learner (a leader counts as a voter).
    pub fn membership_key(&self) -> (u64, String, String, String, bool) {
        (self.node_id, self.name.clone(), self.http_addr.clone(), self.grpc_addr.clone(), self.is_voter())
    }
}

/// Output of one CLI run.
#[derive(Clone, Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    pub opts: ClusterOptions,
    /// (dialling member, dialled member) → the proxy on that link (`link_proxies`).
    links: std::collections::HashMap<(usize, usize), FaultProxy>,
    tmp: tempfile::TempDir,
    /// The object store of `s3_regions` (last: stopped after the members).
    pub garage: Option<super::garage::Garage>,
}

impl Index<usize> for Cluster {
    type Output = Member;
    fn index(&self, i: usize) -> &Member {
        &self.members[i]
    }
}

impl IndexMut<usize> for Cluster {
    fn index_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }
}

impl Cluster {
    /// `n` members r1..rn, started one after the other (r1 bootstraps, the rest join
    /// it), waiting until each answers `/readyz` and all are voters.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(ClusterOptions::new(n)).await
    }

    pub async fn start_with(opts: ClusterOptions) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let garage = if opts.s3_regions.is_empty() { None } else { Some(super::garage::Garage::start().await) };
        let mut cluster = Cluster { members: Vec::new(), opts: opts.clone(), links: Default::default(), tmp, garage };
        let t0 = Instant::now();
        for name in opts.names.clone() {
            let join = match cluster.members.first() {
                Some(first) => vec![first.grpc_url()],
                None => Vec::new(),
            };
            let i = cluster.add_member(&name, join);
            if let Some(garage) = cluster.garage.as_ref().filter(|_| opts.s3_regions.contains(&name)) {
                cluster.members[i].env.extend(garage.node_env(&name));
                cluster.members[i].node.s3 = Some(garage.listing(&format!("{name}/blobs")));
            }
        }
        if opts.link_proxies {
            cluster.start_link_proxies().await;
        }
        for i in 0..cluster.members.len() {
            cluster[i].spawn();
            // The first member must be up before the others can join it; the rest start together.
            if i == 0 {
                cluster.wait_ready(0).await;
            }
        }
        for i in 1..cluster.members.len() {
            cluster.wait_ready(i).await;
        }
        let names: Vec<String> = opts.names.clone();
        cluster.wait_voters(&names, Duration::from_secs(30)).await;
        eprintln!(
            "[cluster] {} members up in {:.1}s: {}",
            cluster.members.len(),
            t0.elapsed().as_secs_f64(),
            cluster.describe()
        );
        cluster
    }

    /// One proxy per ordered pair of members; each member's config dials its peers through them.
    async fn start_link_proxies(&mut self) {
        let n = self.members.len();
        for i in 0..n {
            let mut dial_via = Vec::new();
            for j in (0..n).filter(|&j| j != i) {
                let upstream: std::net::SocketAddr = self.members[j].grpc_addr().parse().expect("grpc addr");
                // The proxy's own port is an ephemeral one; members' ports are chosen
                // below that range (`free_ports`), so the two never collide.
                let proxy = FaultProxy::start(upstream).await.expect("start link proxy");
                dial_via.push((self.members[j].grpc_addr(), proxy.listen_addr.to_string()));
                self.links.insert((i, j), proxy);
            }
            self.members[i].dial_via = dial_via;
            self.members[i].write_config(&self.opts.raft);
        }
    }

    /// Arms failpoint `name` on member `i` with `actions` (`fail` crate syntax; `off` clears
    /// it). The member must run a failpoints build with `MERIDIAN_FAILPOINTS_API=1`.
    pub async fn failpoint(&self, i: usize, name: &str, actions: &str) {
        let http = http_client(Duration::from_secs(10));
        let url = self[i].url(&format!("/debug/failpoints/{name}"));
        let resp = if actions == "off" { http.delete(url).send().await } else { http.put(url).body(actions.to_string()).send().await };
        match resp {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => panic!("failpoint {name}={actions} on {}: {}", self[i].name, r.status()),
            Err(e) => panic!("failpoint {name}={actions} on {}: {e}", self[i].name),
        }
    }

    /// The proxy on link `from` → `to`, if the cluster has link proxies.
    pub fn try_link(&self, from: usize, to: usize) -> Option<&FaultProxy> {
        self.links.get(&(from, to))
    }

    /// The proxy member `from` dials member `to` through (`ClusterOptions::link_proxies`).
    pub fn link(&self, from: usize, to: usize) -> &FaultProxy {
        self.links.get(&(from, to)).unwrap_or_else(|| panic!("no proxy on link {from} -> {to}"))
    }

    /// Adds a member (not started) with fresh ports and a config file; returns its index.
    pub fn add_member(&mut self, name: &str, join: Vec<String>) -> usize {
        let node_id = self.members.iter().map(|m| m.node_id).max().unwrap_or(0) + 1;
        self.add_member_with(name, node_id, join)
    }

    pub fn add_member_with(&mut self, name: &str, node_id: u64, join: Vec<String>) -> usize {
        let ports = free_ports(2);
        let dir = self.tmp.path().join(format!("{name}-{node_id}"));
        std::fs::create_dir_all(&dir).expect("member dir");
        let node = Node {
            child: None,
            port: ports[0],
            base: format!("http://127.0.0.1:{}", ports[0]),
            data_dir: dir.join("data"),
            _tmp: None,
            log_path: dir.join("node.log"),
            s3: None,
            garage: None,
        };
        let member = Member {
            node,
            name: name.to_string(),
            node_id,
            grpc_port: ports[1],
            config_path: dir.join("config.toml"),
            dir,
            join,
            dial_via: Vec::new(),
            env: self.opts.env.clone(),
            paused: false,
            starts: 0,
        };
        member.write_config(&self.opts.raft);
        self.members.push(member);
        self.members.len() - 1
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member named {name}"))
    }

    pub fn by_name(&self, name: &str) -> &Member {
        &self.members[self.index_of(name)]
    }

    /// `name(pid, http, grpc)` for every member.
    pub fn describe(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}(pid {}, http {}, grpc {})", m.name, m.pid(), m.http_addr(), m.grpc_addr()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until member `i` answers `/readyz` 200; panics (with its log) otherwise.
    pub async fn wait_ready(&mut self, i: usize) {
        let timeout = self.opts.ready_timeout;
        self.wait_ready_for(i, timeout).await
    }

    pub async fn wait_ready_for(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let url = self.members[i].url("/readyz");
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if !self.members[i].is_running() {
                panic!(
                    "{} exited before it was ready; log:\n{}",
                    self.members[i].name,
                    self.members[i].log_tail(80)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} (http {}) not ready after {:?}; log:\n{}",
                    self.members[i].name,
                    self.members[i].http_addr(),
                    timeout,
                    self.members[i].log_tail(80)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/readyz` status of member `i` right now (0 when nothing answers).
    pub async fn readyz(&self, i: usize) -> u16 {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        match client.get(self.members[i].url("/readyz")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub fn kill9(&mut self, i: usize) {
        eprintln!("[cluster] INJECT: kill -9 {} (pid {})", self.members[i].name, self.members[i].pid());
        self.members[i].kill9();
    }

    pub fn stop(&mut self, i: usize) {
        eprintln!("[cluster] INJECT: stop (SIGTERM) {} (pid {})", self.members[i].name, self.members[i].pid());
        self.members[i].stop();
    }

    pub fn pause(&mut self, i: usize) {
        eprintln!("[cluster] INJECT: SIGSTOP {} (pid {})", self.members[i].name, self.members[i].pid());
        self.members[i].pause();
    }

    pub fn resume(&mut self, i: usize) {
        eprintln!("[cluster] INJECT: SIGCONT {} (pid {})", self.members[i].name, self.members[i].pid());
        self.members[i].resume();
    }

    /// Starts member `i` again on its data dir and ports; waits for `/readyz`.
    pub async fn restart(&mut self, i: usize) {
        eprintln!("[cluster] INJECT: restart {} on its data dir", self.members[i].name);
        self.members[i].spawn();
        self.wait_ready(i).await;
        eprintln!("[cluster] {} ready again (pid {})", self.members[i].name, self.members[i].pid());
    }

    /// Stops member `i` and deletes its data directory (its log stays, for the report).
    pub fn wipe(&mut self, i: usize) {
        self.stop(i);
        let data = self.members[i].node.data_dir.clone();
        eprintln!("[cluster] INJECT: wipe {} ({})", self.members[i].name, data.display());
        std::fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("wiping {}: {e}", data.display()));
    }

    /// Starts a fresh member for region `name` under a new node id, joining the members
    /// in `via`, and waits until it is ready and `voters` (which should include it) are
    /// exactly the cluster's voters. Returns its index.
    pub async fn rejoin_as_new_member(&mut self, name: &str, node_id: u64, via: &[usize], voters: &[String]) -> usize {
        let join: Vec<String> = via.iter().map(|&j| self.members[j].grpc_url()).collect();
        let i = self.add_member_with(name, node_id, join.clone());
        eprintln!("[cluster] INJECT: region {name} rejoins as node_id {node_id} via {join:?}");
        self.members[i].spawn();
        self.wait_ready(i).await;
        self.wait_voters(voters, Duration::from_secs(60)).await;
        i
    }

    /// Adds region `name` as a new member joining every live member, starts it and waits
    /// until it is ready and every member is a voter; returns its index.
    pub async fn join_new_member(&mut self, name: &str) -> usize {
        let join: Vec<String> =
            self.members.iter_mut().filter_map(|m| if m.is_live() { Some(m.grpc_url()) } else { None }).collect();
        let i = self.add_member(name, join.clone());
        eprintln!("[cluster] INJECT: start new region {name} (node_id {}) with join = {join:?}", self.members[i].node_id);
        self.members[i].spawn();
        self.wait_ready(i).await;
        // Stopped members are still members: the list shows them all.
        let names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        self.wait_voters(&names, Duration::from_secs(30)).await;
        eprintln!("[cluster] {name} joined (pid {})", self.members[i].pid());
        i
    }

    /// Starts another node of region `name` (joining the first member) with its blobs under
    /// `prefix` in the cluster's Garage (the region's own prefix, or another to see the
    /// node refused); does not wait for it. Returns its index.
    pub fn spawn_region_node(&mut self, name: &str, prefix: &str) -> usize {
        let join = vec![self.members[0].grpc_url()];
        let i = self.add_member(name, join);
        if let Some(garage) = &self.garage {
            self.members[i].env.extend(garage.node_env(prefix));
            self.members[i].node.s3 = Some(garage.listing(&format!("{prefix}/blobs")));
        }
        eprintln!("[cluster] INJECT: start node {} of region {name} (blobs under {prefix:?})", self.members[i].node_id);
        self.members[i].spawn();
        i
    }

    /// Index of the first member that is running and not paused.
    pub fn live_member(&mut self) -> usize {
        (0..self.members.len())
            .find(|&i| self.members[i].is_live())
            .expect("no live member")
    }

    // ------------------------------------------------------------ admin CLI

    /// Runs `meridian admin --addr <addr> --token <token> ARGS…` (30 s limit).
    pub async fn admin_raw(addr: &str, token: &str, args: &[&str]) -> CliOutput {
        let mut cmd = tokio::process::Command::new(super::meridian_bin());
        cmd.arg("admin").arg("--addr").arg(addr).arg("--token").arg(token).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("MERIDIAN_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let child = cmd.spawn().expect("spawn meridian admin");
        match tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await {
            Ok(Ok(out)) => CliOutput {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            },
            Ok(Err(e)) => panic!("meridian admin {args:?}: {e}"),
            Err(_) => CliOutput {
                code: -1,
                stdout: String::new(),
                stderr: format!("harness: `meridian admin {}` did not finish within 30 s", args.join(" ")),
            },
        }
    }

    /// Waits until member `i` has applied user `name` (asked through the admin CLI, not by
    /// logging in: failed logins count against the rate limit).
    pub async fn wait_for_user(&self, i: usize, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.admin_at(i, &["--json", "user", "list"]).await;
            let known = serde_json::from_str::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["users"].as_array().map(|u| u.iter().any(|x| x["name"] == name)))
                .unwrap_or(false);
            if known {
                return;
            }
            assert!(Instant::now() < deadline, "{} never knew user {name}: {out}", self.members[i].name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `meridian admin user add NAME --role ROLE` through member `i`; returns the
    /// generated password the CLI prints once.
    pub async fn add_user(&self, i: usize, name: &str, role: &str) -> String {
        let out = self.admin_at(i, &["--json", "user", "add", name, "--role", role]).await;
        assert_eq!(out.code, 0, "user add {name}: {out}");
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("user add output {e}: {out}"));
        v["password"].as_str().expect("generated password in the output").to_string()
    }

    /// `meridian admin --json ARGS` against member `i`, which must succeed; the JSON it printed.
    pub async fn admin_json_at(&self, i: usize, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.admin_at(i, &full).await;
        assert_eq!(out.code, 0, "meridian admin {args:?}: {out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("meridian admin {args:?} output {e}: {out}"))
    }

    /// `meridian admin` against member `i` with the cluster's token.
    pub async fn admin_at(&self, i: usize, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = self.opts.admin_args.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        Cluster::admin_raw(&self.members[i].grpc_url(), ADMIN_TOKEN, &all).await
    }

    /// `meridian admin` against the first live member; prints the command and its output.
    pub async fn admin(&mut self, args: &[&str]) -> CliOutput {
        let i = self.live_member();
        eprintln!("[cluster] $ meridian admin --addr {} {}", self.members[i].grpc_url(), args.join(" "));
        let out = self.admin_at(i, args).await;
        eprintln!("{out}");
        out
    }

    /// `region list --json` as seen by member `i`.
    pub async fn regions_at(&self, i: usize) -> Result<Vec<RegionEntry>, String> {
        let out = self.admin_at(i, &["--json", "region", "list"]).await;
        if out.code != 0 {
            return Err(out.to_string());
        }
        let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| format!("region list --json is not JSON ({e}): {out}"))?;
        let regions = v["regions"].as_array().ok_or_else(|| format!("no `regions` array: {out}"))?;
        Ok(regions.iter().map(RegionEntry::from_json).collect())
    }

    /// `status --json` as seen by member `i`.
    pub async fn status_at(&self, i: usize) -> Result<Value, String> {
        let out = self.admin_at(i, &["--json", "status"]).await;
        if out.code != 0 {
            return Err(out.to_string());
        }
        serde_json::from_str(out.stdout.trim()).map_err(|e| format!("status --json is not JSON ({e}): {out}"))
    }

    /// The member that reports itself as leader in its own `region list` (15 s limit),
    /// among live members.
    pub async fn leader(&mut self) -> usize {
        self.leader_within(Duration::from_secs(15)).await
    }

    pub async fn leader_within(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            for i in 0..self.members.len() {
                if !self.members[i].is_live() {
                    continue;
                }
                match self.regions_at(i).await {
                    Ok(regions) => {
                        if regions.iter().any(|r| r.role == "leader" && r.name == self.members[i].name) {
                            return i;
                        }
                        last = format!("{} sees {:?}", self.members[i].name, regions);
                    }
                    Err(e) => last = format!("{}: {e}", self.members[i].name),
                }
            }
            if Instant::now() > deadline {
                panic!("no live member reports itself leader within {timeout:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a live member's `region list` shows exactly these regions, all voters.
    pub async fn wait_voters(&mut self, names: &[String], timeout: Duration) -> Vec<RegionEntry> {
        let mut want: Vec<String> = names.to_vec();
        want.sort();
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            let i = self.live_member();
            match self.regions_at(i).await {
                Ok(regions) => {
                    let mut got: Vec<String> = regions.iter().map(|r| r.name.clone()).collect();
                    got.sort();
                    if got == want && regions.iter().all(|r| r.is_voter()) && regions.iter().any(|r| r.role == "leader") {
                        return regions;
                    }
                    last = format!("{regions:?}");
                }
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!("region list did not become {want:?} (all voters) within {timeout:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `replication status --json` as seen by member `i`: its `regions` array.
    pub async fn replication_status_at(&self, i: usize) -> Result<Vec<Value>, String> {
        let out = self.admin_at(i, &["--json", "replication", "status"]).await;
        if out.code != 0 {
            return Err(out.to_string());
        }
        let v: Value = serde_json::from_str(out.stdout.trim())
            .map_err(|e| format!("replication status --json is not JSON ({e}): {out}"))?;
        v["regions"].as_array().cloned().ok_or_else(|| format!("no `regions` array: {out}"))
    }

    /// `replication image --json REF` as seen by member `i`.
    pub async fn replication_image_at(&self, i: usize, reference: &str) -> Result<Value, String> {
        let out = self.admin_at(i, &["--json", "replication", "image", reference]).await;
        if out.code != 0 {
            return Err(out.to_string());
        }
        serde_json::from_str(out.stdout.trim()).map_err(|e| format!("replication image --json is not JSON ({e}): {out}"))
    }

    /// Polls `replication image --json REF` at member `i` until every region in `regions`
    /// is reported complete; returns the last document or why it never got there.
    pub async fn wait_image_complete(&self, i: usize, reference: &str, regions: &[&str], timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.replication_image_at(i, reference).await {
                Ok(v) => {
                    let complete = |name: &str| {
                        v["regions"].as_array().is_some_and(|a| a.iter().any(|r| r["name"] == name && r["complete"] == true))
                    };
                    if regions.iter().all(|r| complete(r)) {
                        return Ok(v);
                    }
                    v.to_string()
                }
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(format!("{reference} not complete in {regions:?} within {timeout:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prints the last lines of every member's log.
    pub fn dump_logs(&self, lines: usize) {
        for m in &self.members {
            eprintln!("\n========== log of {} ({}), last {lines} lines ==========", m.name, m.node.log_path.display());
            eprintln!("{}", m.log_tail(lines));
        }
    }

    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            self.dump_logs(60);
        }
        for m in &mut self.members {
            m.kill9();
        }
        if failed {
            // Keep the data directories and full logs of a failed run for inspection.
            self.tmp.disable_cleanup(true);
            eprintln!("[cluster] failed run kept in {}", self.tmp.path().display());
        }
    }
}

// ---------------------------------------------------------------- fallible HTTP

/// Outcome of a request that may legitimately fail while the cluster is disturbed.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().expect("client")
}

/// Sends a request; `Err` for transport errors and timeouts.
pub async fn send(req: reqwest::RequestBuilder) -> Result<Reply, String> {
    let resp = req.send().await.map_err(|e| format!("transport: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(|e| format!("body: {e}"))?.to_vec();
    Ok(Reply { status, headers, body })
}

/// PUT a manifest without panicking.
pub async fn try_put_manifest(
    client: &reqwest::Client,
    node: &Node,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Result<Reply, String> {
    send(
        client
            .put(node.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(body.to_vec()),
    )
    .await
}

/// GET a manifest (optionally with `Meridian-Consistency: linearizable`) without panicking.
pub async fn try_get_manifest(
    client: &reqwest::Client,
    node: &Node,
    repo: &str,
    reference: &str,
    linearizable: bool,
) -> Result<Reply, String> {
    let mut req = client.get(node.url(&format!("/v2/{repo}/manifests/{reference}"))).header(
        "accept",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
    );
    if linearizable {
        req = req.header("meridian-consistency", "linearizable");
    }
    send(req).await
}

/// The digest member `node` serves for `repo:tag` right now (`None` on 404 or error).
pub async fn tag_digest(client: &reqwest::Client, node: &Node, repo: &str, tag: &str) -> Option<String> {
    match try_get_manifest(client, node, repo, tag, false).await {
        Ok(r) if r.status == 200 => r.header("docker-content-digest"),
        _ => None,
    }
}

/// Polls until `node` serves `repo:reference` with exactly these bytes; returns how long it took.
pub async fn wait_manifest(node: &Node, repo: &str, reference: &str, body: &[u8], timeout: Duration) -> Result<Duration, String> {
    let client = http_client(Duration::from_secs(5));
    let want = super::oci::sha256_digest(body);
    let t0 = Instant::now();
    let mut last: String;
    loop {
        match try_get_manifest(&client, node, repo, reference, false).await {
            Ok(r) if r.status == 200 && r.header("docker-content-digest").as_deref() == Some(&want) && r.body == body => {
                return Ok(t0.elapsed())
            }
            Ok(r) => last = format!("{} digest {:?} body {}", r.status, r.header("docker-content-digest"), r.text()),
            Err(e) => last = e,
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "{}: {repo}:{reference} not {want} within {timeout:?}; last answer: {last}",
                node.base
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A small OCI image manifest over a fixed config and layer, made unique by `seq`.
pub fn numbered_manifest(config: &super::oci::Descriptor, layer: &super::oci::Descriptor, label: &str) -> Vec<u8> {
    let mut v = super::oci::image_manifest(config, &[layer.clone()]);
    v["annotations"] = serde_json::json!({ "org.example.write": label });
    super::oci::to_bytes(&v)
}

/// Pushes the config and layer blobs into `repo` on every given member (blobs are
/// region-local) and returns their descriptors.
pub async fn seed_blobs(nodes: &[&Node], repo: &str, seed: &str) -> (super::oci::Descriptor, super::oci::Descriptor) {
    use super::oci::{push_blob_desc, test_bytes, to_bytes, OCI_CONFIG, OCI_LAYER};
    let config_bytes = to_bytes(&serde_json::json!({"architecture": "amd64", "os": "linux", "seed": seed}));
    let layer_bytes = test_bytes(&format!("layer-{seed}"), 512);
    let mut out = None;
    for n in nodes {
        let c = push_blob_desc(n, repo, OCI_CONFIG, &config_bytes).await;
        let l = push_blob_desc(n, repo, OCI_LAYER, &layer_bytes).await;
        out = Some((c, l));
    }
    out.expect("no nodes")
}

/// A JSON OCI error body whose `errors` hold code `UNAVAILABLE`.
pub fn is_unavailable_error(r: &Reply) -> bool {
    let ct_ok = r.header("content-type").map(|c| c.starts_with("application/json")).unwrap_or(false);
    let v: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(_) => return false,
    };
    ct_ok
        && v["errors"]
            .as_array()
            .map(|a| a.iter().any(|e| e["code"] == "UNAVAILABLE" && e["message"].is_string()))
            .unwrap_or(false)
}

// ---------------------------------------------------------------- auth

// ---------------------------------------------------------------- metrics

/// `GET /metrics` of a node ("" when it does not answer).
pub async fn metrics_text(node: &Node) -> String {
    let client = http_client(Duration::from_secs(5));
    match client.get(node.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Sum of a Prometheus metric over its series whose labels contain every one of `labels`
/// (e.g. `reason="background"`); the name must match exactly.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter(|l| {
            let series = l.rsplit_once(' ').map(|(s, _)| s).unwrap_or(l);
            labels.iter().all(|want| series.contains(want))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`metric_sum`] of a node's `/metrics` right now.
pub async fn metric(node: &Node, name: &str, labels: &[&str]) -> f64 {
    metric_sum(&metrics_text(node).await, name, labels)
}
