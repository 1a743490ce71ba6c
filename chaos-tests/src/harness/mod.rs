//! Multi-process harness: runs the real `meridian` binary as child processes on free
//! loopback ports with their own data directories, and talks to them over HTTP and the
//! admin CLI. Shared by the node's integration tests and the chaos scenarios.
//!
//! Which binary: [`use_binary`] if a test called it (the chaos scenarios run
//! `meridian-chaos-node`, the node built with failpoints), else `MERIDIAN_BIN`, else the
//! `meridian` next to the test executable's `deps/` directory (where cargo puts the
//! package's binaries for its integration tests).
//!
//! Nodes start with `MERIDIAN_AUTH_ENABLED=false` unless the test passes
//! `MERIDIAN_AUTH_ENABLED=true`: most suites exercise the API itself; the `auth_*`
//! suites exercise authentication and authorization.

pub mod browser;
pub mod certs;
pub mod cluster;
pub mod garage;
pub mod oci;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Runs every node this process starts from `path` (first call wins).
pub fn use_binary(path: impl Into<PathBuf>) {
    let _ = BINARY.set(path.into());
}

/// The `meridian` executable nodes are started from.
pub fn meridian_bin() -> PathBuf {
    BINARY
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("MERIDIAN_BIN") {
                return PathBuf::from(p);
            }
            // target/<profile>/deps/<test>-<hash> → target/<profile>/meridian
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("test executable in target/<profile>/deps");
            profile_dir.join("meridian")
        })
        .clone()
}

pub struct Node {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub data_dir: PathBuf,
    /// Keeps the temporary directory alive for the node's lifetime.
    _tmp: Option<tempfile::TempDir>,
    pub log_path: PathBuf,
    /// Where the node's blobs are when it keeps them in a test's Garage.
    pub s3: Option<garage::S3Listing>,
    /// The Garage this node alone uses, when the suite runs on S3 (declared after
    /// `child`: the node stops before its store).
    pub garage: Option<garage::Garage>,
}

/// Which blob store nodes started by `Node::start` use: `MERIDIAN_TEST_STORE=s3` runs
/// them on a Garage of their own (`deploy/test.sh` runs the blob and upload suites once
/// that way), anything else on the filesystem.
pub fn store_under_test_is_s3() -> bool {
    std::env::var("MERIDIAN_TEST_STORE").map(|v| v == "s3").unwrap_or(false)
}

/// The key prefix a node started on Garage keeps its blobs under.
pub const NODE_STORE_PREFIX: &str = "node";

/// A loopback port that is free now and that no other caller in this process was given.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct loopback ports for members to bind later.
///
/// Why not `bind(":0")`: the kernel hands those out from its ephemeral range, the same
/// range every outgoing connection takes its local port from. Between choosing a port
/// and the member binding it, a client's or a proxy's connection could take it, and the
/// member died with "Address already in use" (two CI runs failed that way). So ports come
/// from below the ephemeral range, which the kernel never assigns implicitly, are checked
/// free by binding once, and are never handed out twice by this process.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<PortPool>> = Mutex::new(None);
    let mut guard = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(PortPool::new);
    (0..n).map(|_| pool.take()).collect()
}

/// Walks the ports below the ephemeral range from a per-process offset (so two test
/// processes running at once start far apart), skipping ports given out or bound.
struct PortPool {
    low: u16,
    high: u16,
    next: u16,
    given: std::collections::HashSet<u16>,
}

impl PortPool {
    fn new() -> PortPool {
        const LOW: u16 = 10_000;
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u16>().ok()))
            .unwrap_or(32_768);
        // Without room below the ephemeral range, fall back to the kernel's choice.
        let high = if ephemeral_low > LOW + 1_000 { ephemeral_low } else { LOW };
        let span = u32::from(high - LOW).max(1);
        let next = LOW + ((std::process::id().wrapping_mul(7_919)) % span) as u16;
        PortPool { low: LOW, high, next, given: Default::default() }
    }

    fn take(&mut self) -> u16 {
        if self.high > self.low {
            for _ in 0..(self.high - self.low) {
                let port = self.next;
                self.next = if self.next + 1 >= self.high { self.low } else { self.next + 1 };
                if !self.given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                    self.given.insert(port);
                    return port;
                }
            }
        }
        loop {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port");
            if self.given.insert(port) {
                return port;
            }
        }
    }
}

impl Node {
    /// Starts a node with a fresh temporary data directory and waits until `/readyz` is 200
    /// (its blobs on a Garage of its own under `MERIDIAN_TEST_STORE=s3`).
    pub async fn start() -> Node {
        Node::start_with_env(&[]).await
    }

    /// Like `start`, with extra environment variables (e.g. `MERIDIAN_LOG_FORMAT`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        // A test that sets its own store keeps it.
        let own_store = env.iter().any(|(k, _)| *k == "MERIDIAN_STORAGE_KIND");
        let garage = if store_under_test_is_s3() && !own_store { Some(garage::Garage::start().await) } else { None };
        let mut all: Vec<(String, String)> = garage.iter().flat_map(|g| g.node_env(NODE_STORE_PREFIX)).collect();
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut node = Node::spawn_in(&dir, free_port(), &all);
        node._tmp = Some(tmp);
        node.s3 = garage.as_ref().map(|g| g.listing(&format!("{NODE_STORE_PREFIX}/blobs")));
        node.garage = garage;
        node.wait_ready().await;
        node
    }

    /// The names of the blobs the node's store holds: files under `<data_dir>/blobs/`, or
    /// keys in its bucket.
    pub fn stored_blob_names(&self) -> Vec<String> {
        match &self.s3 {
            Some(listing) => listing.keys(),
            None => oci::files_under(&self.data_dir.join("blobs")).iter().map(|p| p.to_string_lossy().to_string()).collect(),
        }
    }

    /// Starts a node with a fresh temporary data directory and returns at once, before it
    /// listens (for tests of what a client sees while a node starts).
    pub fn spawn_with_env(env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node::spawn_in(&dir, free_port(), env);
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node on an existing data directory (restart after a crash).
    pub async fn start_in(dir: &Path, port: u16) -> Node {
        Node::start_in_with_env(dir, port, &[]).await
    }

    /// Like `start_in`, with extra environment variables (the same store settings, say).
    pub async fn start_in_with_env(dir: &Path, port: u16, env: &[(&str, &str)]) -> Node {
        let node = Node::spawn_in(dir, port, env);
        node.wait_ready().await;
        node
    }

    fn spawn_in(dir: &Path, port: u16, env: &[(&str, &str)]) -> Node {
        let log_path = dir.join(format!("node-{port}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(meridian_bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "info")
            .env("MERIDIAN_AUTH_ENABLED", "false")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn meridian");
        Node {
            child: Some(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            data_dir: dir.join("data"),
            _tmp: None,
            log_path,
            s3: None,
            garage: None,
        }
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node on port {} not ready in 30s; log:\n{}",
                    self.port,
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
