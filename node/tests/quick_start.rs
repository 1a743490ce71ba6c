//! The README's quick start, run as written: the `sh` block under "Quick start" is read
//! from README.md and each command runs in order (continuation lines joined), in a copy of
//! `deploy/` with `target/` linked in, as a new user would run it from the repository root:
//!
//! * `deploy/local-cluster.sh up` starts us, eu and ap and says each is ready;
//! * the demo image pushed to us is there, by its digest;
//! * the pull from ap gives back the demo image's exact blobs;
//! * `meridian admin … region list` lists the three regions;
//! * `status` shows three running processes;
//! * `down` stops them, and no process of the cluster is left.
//!
//! The only change from the README is `SKIP_BUILD=1` (the suite has built the binary). The
//! demo cluster's fixed ports (5001–5003, 6001–6003) must be free.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DEMO_TAG: &str = "hello";

/// The commands of the quick start's first `sh` block, continuation lines joined,
/// comments and blank lines dropped.
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = readme.split("\n## Quick start").nth(1).expect("a Quick start section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("an sh block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}


struct Ran {
    code: i32,
    out: String,
}

fn run(dir: &Path, command: &str) -> Ran {
    eprintln!("$ {command}");
    let started = Instant::now();
    let output = Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .env("SKIP_BUILD", "1")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run bash");
    let out = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{out}(exit {:?}, {:.1}s)", output.status.code(), started.elapsed().as_secs_f64());
    Ran { code: output.status.code().unwrap_or(-1), out }
}

fn blobs_of(layout: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = layout.join("blobs/sha256");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// The digest the layout's index gives `tag`.
fn tagged_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap_or_else(|| panic!("no {tag} in {}", layout.display()))
        .to_string()
}

/// Running (not zombie) processes among `pids`.
fn alive(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
        .collect()
}

/// Processes whose working directory is `dir` (what the cluster's nodes run in).
fn processes_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

#[test]
fn the_readme_quick_start_works_as_written() {
    common::skopeo::ensure_skopeo();
    let commands = quick_start_commands();
    let step = |needle: &str| {
        commands.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("the quick start lost its step {needle:?}: {commands:#?}"))
    };
    let (up, push, pull, list, status, down) = (
        step("local-cluster.sh up"),
        step("oci:deploy/demo-image"),
        step("docker://127.0.0.1:5003/"),
        step("region list"),
        step("local-cluster.sh status"),
        step("local-cluster.sh down"),
    );
    assert!(up < push && push < pull && pull < list && list < status && status < down, "{commands:#?}");
    for port in [5001, 5002, 5003, 6001, 6002, 6003] {
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is in use: the quick start needs it");
    }

    // A checkout as a new user has it: deploy/ and README.md, with the built binary.
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    common::copy_dir(&repo_root().join("deploy"), &root.join("deploy"));
    std::fs::copy(repo_root().join("README.md"), root.join("README.md")).unwrap();
    let binary = common::meridian_bin();
    let target_dir = binary.parent().and_then(Path::parent).expect("target/<profile>/meridian");
    std::os::unix::fs::symlink(target_dir, root.join("target")).unwrap();
    let state = root.join(".local-cluster");

    let mut pids = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for (i, command) in commands.iter().enumerate() {
            let ran = run(root, command);
            assert_eq!(ran.code, 0, "step {i} failed: {command}\n{}", ran.out);
            if i == up {
                for r in ["us", "eu", "ap"] {
                    assert!(ran.out.contains(&format!("{r}: ready on http://127.0.0.1:")), "{r} not ready:\n{}", ran.out);
                    let pid = std::fs::read_to_string(state.join(format!("{r}.pid"))).unwrap();
                    pids.push(pid.trim().parse::<u32>().unwrap());
                }
                assert_eq!(alive(&pids).len(), 3, "three node processes after up");
            } else if i == push {
                let demo = tagged_digest(&root.join("deploy/demo-image"), DEMO_TAG);
                let pw = std::fs::read_to_string(state.join("us/admin-password")).unwrap();
                let resp = common::cluster::http_client(Duration::from_secs(10));
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let (status, digest) = rt.block_on(async {
                    let r = resp
                        .get("http://127.0.0.1:5001/v2/demo/hello/manifests/1")
                        .basic_auth("admin", Some(pw.trim()))
                        .header("accept", "application/vnd.oci.image.manifest.v1+json")
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), r.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_string()))
                });
                assert_eq!((status, digest.as_deref()), (200, Some(demo.as_str())), "the pushed tag in us");
            } else if i == pull {
                let pulled = state.join("hello-from-ap");
                let original = root.join("deploy/demo-image");
                assert_eq!(tagged_digest(&pulled, "1"), tagged_digest(&original, DEMO_TAG));
                assert_eq!(blobs_of(&pulled), blobs_of(&original), "ap gave back the demo image's exact blobs");
            } else if i == list {
                for r in ["us", "eu", "ap"] {
                    assert!(ran.out.lines().any(|l| l.split_whitespace().next() == Some(r)), "{r} missing:\n{}", ran.out);
                }
            } else if i == status {
                assert_eq!(ran.out.matches(": running (pid").count(), 3, "{}", ran.out);
            }
        }
    }));
    // Whatever happened, nothing of the cluster may outlive the test.
    if result.is_err() {
        run(root, "deploy/local-cluster.sh down");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(alive(&pids).is_empty() && processes_in(root).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = (alive(&pids), processes_in(root));
    for pid in left.0.iter().chain(&left.1) {
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(left.0.is_empty() && left.1.is_empty(), "processes left after `down`: {left:?}");
}
