//! Operator command-line tools built into the `meridian` binary.
//!
//! - [`entry`]: the binary's argument parsing and subcommands (`serve`, `admin`).
//! - [`admin`]: `meridian admin …`, a client of the cluster's admin gRPC service.
//! - [`table`]: plain-text table rendering for human-readable output.

pub mod admin;
mod entry;
pub use entry::main;
pub mod table;
