//! Operator command-line tools built into the `meridian` binary.
//!
//! - [`admin`]: `meridian admin …`, a client of the cluster's admin gRPC service.
//! - [`table`]: plain-text table rendering for human-readable output.

pub mod admin;
pub mod table;
