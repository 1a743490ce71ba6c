//! `deploy/install-deps.sh` decides what to install from dpkg's package status, never from
//! a file pattern another package can satisfy: on a fresh machine (Debian 12 with only
//! Rust) `libclang-cpp14` provides `libclang-cpp.so.14`, which once made the script skip
//! `libclang-dev`, and the first build then failed in clang-sys. Here the script runs with
//! `--print` against a fake `dpkg-query` that knows exactly the packages such a machine
//! starts with (`deploy/testdata/fresh-debian12-rust.packages`), so the mistake cannot
//! come back unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fresh machine's packages, each "install ok installed".
fn fresh_machine() -> BTreeMap<String, String> {
    let list = std::fs::read_to_string(repo_root().join("deploy/testdata/fresh-debian12-rust.packages")).expect("package list");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|name| (name.to_string(), "install ok installed".to_string()))
        .collect()
}

/// A directory holding a `dpkg-query` that answers `-W -f='${Status}' PKG` from `packages`
/// (and fails, as the real one does, for a package it does not know).
fn fake_dpkg(dir: &Path, packages: &BTreeMap<String, String>) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let db = dir.join("status");
    let lines: Vec<String> = packages.iter().map(|(name, status)| format!("{name}\t{status}")).collect();
    std::fs::write(&db, lines.join("\n") + "\n").unwrap();
    let script = format!(
        "#!/usr/bin/env bash\n\
         # Fake dpkg-query: only `-W -f=FORMAT PKG` with FORMAT '${{Status}}' is used.\n\
         pkg=\"${{@: -1}}\"\n\
         status=$(awk -F '\\t' -v p=\"$pkg\" '$1 == p {{ print $2 }}' {db:?})\n\
         if [[ -z $status ]]; then echo \"dpkg-query: no packages found matching $pkg\" >&2; exit 1; fi\n\
         printf '%s' \"$status\"\n"
    );
    let path = bin.join("dpkg-query");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs `deploy/install-deps.sh ARGS --print` on a machine with `packages`; returns what
/// it would install.
fn would_install(packages: &BTreeMap<String, String>, args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_dpkg(dir.path(), packages);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/install-deps.sh"))
        .args(args)
        .arg("--print")
        .env("PATH", path)
        .output()
        .expect("run install-deps.sh");
    assert!(out.status.success(), "install-deps.sh {args:?} --print failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
}

#[test]
fn a_fresh_machine_gets_clang_and_libclang_dev() {
    let fresh = fresh_machine();
    // The trap: the fresh machine has libclang-cpp14 and llvm-14, nothing clang-sys loads.
    assert!(fresh.contains_key("libclang-cpp14") && fresh.contains_key("llvm-14"));
    assert!(!fresh.contains_key("libclang-dev") && !fresh.contains_key("clang"));
    assert_eq!(would_install(&fresh, &[]), ["clang", "libclang-dev"]);
}

#[test]
fn the_test_command_adds_the_real_clients_a_fresh_machine_lacks() {
    let fresh = fresh_machine();
    assert_eq!(
        would_install(&fresh, &["--test"]),
        ["clang", "libclang-dev", "skopeo", "podman", "containerd", "docker-compose", "chromium", "chromium-driver"]
    );
    // kubectl comes with the machine (Google's package); without it, Debian's.
    let mut bare = fresh.clone();
    bare.remove("kubectl");
    assert!(would_install(&bare, &["--test"]).contains(&"kubernetes-client".to_string()));
    assert_eq!(would_install(&fresh, &["--bench"]), ["clang", "libclang-dev", "docker-registry"]);
}

#[test]
fn installed_packages_are_left_alone_and_removed_ones_count_as_missing() {
    let mut machine = fresh_machine();
    for p in ["clang", "libclang-dev", "skopeo", "podman", "containerd", "docker-compose", "chromium", "chromium-driver", "docker-registry"] {
        machine.insert(p.to_string(), "install ok installed".to_string());
    }
    assert!(would_install(&machine, &["--test"]).is_empty());
    assert!(would_install(&machine, &["--bench"]).is_empty());
    // Removed but not purged (its config files remain): not installed.
    machine.insert("libclang-dev".to_string(), "deinstall ok config-files".to_string());
    machine.insert("podman".to_string(), "install ok half-configured".to_string());
    assert_eq!(would_install(&machine, &["--test"]), ["libclang-dev", "podman"]);
}

#[test]
fn an_unknown_argument_is_refused() {
    let out = Command::new("bash").arg(repo_root().join("deploy/install-deps.sh")).arg("--tset").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tset"));
}
