//! The Python `oras` client (oras-py, installed by `deploy/install-deps.sh --test` into
//! `target/test-tools/oras-venv`) logs in, pushes an artifact in one region and pulls it
//! back from another through the token flow; without credentials its push is refused and
//! nothing is stored. Its push goes through Meridian's answer for a repeated insufficient
//! token (`auth_token_flow.rs`): it asks with a pull token first, and fetches a push token
//! only after a 403.

mod common;

use common::cluster::{Cluster, ClusterOptions};
use std::path::PathBuf;
use std::time::Duration;

const ADMIN_PW: &str = "oras-admin-password";

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("MERIDIAN_TEST_ORAS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/test-tools/oras-venv/bin/python"));
    assert!(
        venv.exists(),
        "{} is missing: run `deploy/install-deps.sh --test` (it installs the Python oras client); this test is required",
        venv.display()
    );
    venv
}

async fn run_script(python: &PathBuf, args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oras_roundtrip.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python).arg(&script).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("oras script timed out")
    .expect("spawn python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "oras script failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("oras script output {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_oras_logs_in_pushes_and_pulls() {
    let python = python();
    let c = Cluster::start_with(
        ClusterOptions::new(2).env("MERIDIAN_AUTH_ENABLED", "true").env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW),
    )
    .await;
    c.wait_for_user(0, "admin").await;
    let pw = c.add_user(0, "ci", "writer").await;
    c.wait_for_user(1, "ci").await;
    let host = c[0].http_addr();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_string_lossy().to_string();

    // Anonymous: refused, nothing stored.
    let v = run_script(&python, &["--anonymous", &host, "team/artifact", &dir]).await;
    assert!(v.get("refused").is_some(), "anonymous oras push was not refused: {v}");
    let probe = reqwest::Client::new()
        .get(format!("http://{host}/v2/team/artifact/tags/list"))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 404, "a refused push created the repository");

    // Logged in: pushed (201) and pulled back from the other region with the same content.
    let elsewhere = c[1].http_addr();
    let v = run_script(&python, &[&host, "team/artifact", "ci", &pw, &dir, &elsewhere]).await;
    assert_eq!(v["pushed"], 201, "{v}");
    assert_eq!(v["pulled"], serde_json::json!(["hello.txt"]), "{v}");
    assert_eq!(v["content"], "hello from the python oras client\n", "{v}");

    // The password is not in the node's log.
    assert!(!c[0].log().contains(&pw), "the user's password appears in the log");
}
