//! Fault injection for Meridian's multi-process tests.
//!
//! [`proxy::FaultProxy`] sits on a loopback link (an inter-region gRPC connection, or a
//! client's path to a node) and can add latency, cap bandwidth, partition the link in
//! either direction and reset connections, all switchable while traffic flows. The
//! cluster harness, failpoints, workload clients and history checkers build on it.

pub mod proxy;
pub mod check;
pub mod harness;
pub mod history;
pub mod scenario;
pub mod workload;
