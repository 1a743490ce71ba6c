//! The node's integration tests share the multi-process harness in `chaos-tests`
//! (processes, clusters, fault proxies, OCI helpers); skopeo helpers are theirs alone.
#![allow(dead_code, unused_imports)]

pub use chaos_tests::harness::*;
pub mod containerd;
pub mod podman;
pub mod skopeo;
