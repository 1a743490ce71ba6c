//! Test harness: runs the real `meridian` binary as a child process on a free
//! loopback port with its own data directory, and talks to it over HTTP.
//!
//! Nodes start with `MERIDIAN_AUTH_ENABLED=false` unless the test passes
//! `MERIDIAN_AUTH_ENABLED=true`: most suites exercise the API itself; the `auth_*`
//! suites exercise authentication and authorization.
#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod oci;
pub mod skopeo;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub data_dir: PathBuf,
    /// Keeps the temporary directory alive for the node's lifetime.
    _tmp: Option<tempfile::TempDir>,
    pub log_path: PathBuf,
}

/// A port the OS says is free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Node {
    /// Starts a node with a fresh temporary data directory and waits until `/readyz` is 200.
    pub async fn start() -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node::spawn_in(&dir, free_port(), &[]);
        node._tmp = Some(tmp);
        node.wait_ready().await;
        node
    }

    /// Like `start`, with extra environment variables (e.g. `MERIDIAN_LOG_FORMAT`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Node {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node::spawn_in(&dir, free_port(), env);
        node._tmp = Some(tmp);
        node.wait_ready().await;
        node
    }

    /// Starts a node on an existing data directory (restart after a crash).
    pub async fn start_in(dir: &Path, port: u16) -> Node {
        let node = Node::spawn_in(dir, port, &[]);
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
        let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
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
