//! The node's integration tests share the multi-process harness in `chaos-tests`
//! (processes, clusters, fault proxies, OCI helpers); skopeo helpers are theirs alone.
#![allow(dead_code, unused_imports)]

pub use chaos_tests::harness::*;
pub mod console;
pub mod containerd;
pub mod podman;
pub mod receiver;
pub mod skopeo;

/// Copies a directory tree (a data directory, `deploy/`).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
