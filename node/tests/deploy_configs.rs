//! Every configuration file shipped in `deploy/` — the local demo's region files, the VM
//! example, each Kubernetes overlay's — is one the node accepts: it parses into the
//! node's own `Config` (unknown keys are refused there) and passes the checks `serve`
//! makes before starting (TLS files given in pairs, mutual TLS all or nothing, a valid
//! `public_url`, CIDRs in `[routing]`). A typo in a shipped file would otherwise surface
//! only when someone deploys it.

use meridian_node::config::Config;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_is_accepted_by_the_node() {
    let mut files = Vec::new();
    toml_files(&deploy_dir(), &mut files);
    files.sort();
    let names: Vec<String> = files.iter().map(|p| p.strip_prefix(deploy_dir()).unwrap().display().to_string()).collect();
    for expected in ["regions/us.toml", "vm/meridian.toml", "kubernetes/overlays/eu/meridian.toml"] {
        assert!(names.iter().any(|n| n == expected), "deploy/{expected} missing from {names:?}");
    }
    for path in &files {
        let config = Config::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let checked = (config.tls_files().err(), config.grpc_tls_files().err(), config.public_url().err(), config.routing_table().err());
        assert!(
            matches!(checked, (None, None, None, None)),
            "{}: {checked:?}",
            path.display()
        );
        assert!(!config.region.is_empty(), "{}: no region", path.display());
    }
}

#[test]
fn a_wrong_key_in_a_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "region = \"eu\"\npublic_uri = \"https://eu.example\"\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("public_uri"), "{err}");
}
