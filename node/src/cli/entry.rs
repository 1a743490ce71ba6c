//! The `meridian` binary's entry point: `serve`, `admin` and `restore`.

use clap::{Parser, Subcommand};
use crate::config::{Config, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "meridian", version, about = "Geo-replicated OCI container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a registry node.
    Serve {
        /// Address for the OCI Distribution API (default 127.0.0.1:5000).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address for the node's gRPC services: Raft, forwarding, admin (default 127.0.0.1:6000).
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// Data directory (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Operate a cluster through its admin gRPC service.
    Admin(crate::cli::admin::AdminArgs),
    /// Turn a stopped copy of one region's data directory (a backup) into the first
    /// region of a new cluster: this node alone, the other regions' blob copies
    /// forgotten. Run it on the copy, with the config the node will serve with, then
    /// `meridian serve` it; other regions join it as new ones.
    Restore {
        /// Data directory holding the copy (default: the config's `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The node's TOML configuration (its region must be the copy's region).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The async runtime a subcommand runs on; the exit code when there is none.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("meridian: cannot start the async runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}

/// The `meridian` command line: parses the arguments and runs the subcommand.
/// Lives in the library so test builds of the binary (`chaos-tests`) run the same code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { listen, grpc_listen, data_dir, config } => {
            let overrides = Overrides { config_file: config, listen, grpc_listen, data_dir };
            let config = match Config::load(&overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("meridian: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            runtime.block_on(async move {
                let _telemetry = match crate::observability::init_tracing(&config) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("meridian: cannot set up logging: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                };
                match crate::serve(config).await {
                    Ok(()) => std::process::ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "meridian failed");
                        eprintln!("meridian: {e:#}");
                        std::process::ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Restore { data_dir, config } => {
            let overrides = Overrides { config_file: config, data_dir, ..Overrides::default() };
            let config = match Config::load(&overrides).and_then(|c| c.public_url().map(|_| c)) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("meridian: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let me = crate::meta::node_info(&config);
            match runtime.block_on(crate::meta::restore::restore(&config.data_dir, config.node_id, me)) {
                Ok(r) => {
                    println!(
                        "restored {} as region {:?} (node {}) alone, metadata at index {}",
                        config.data_dir.display(),
                        config.region,
                        config.node_id,
                        r.applied_index
                    );
                    if r.replayed_entries > 0 {
                        println!("{} log entries past the copy's applied point applied", r.replayed_entries);
                    }
                    if !r.dropped_regions.is_empty() {
                        println!("regions no longer members (their blob copies forgotten): {}", r.dropped_regions.join(", "));
                    }
                    if r.lost_blobs > 0 {
                        println!(
                            "{} blobs ({} bytes) were held only by those regions: their manifests remain, their bytes are not in this backup",
                            r.lost_blobs, r.lost_bytes
                        );
                    }
                    println!("start it with `meridian serve` and this config; other regions join it as new ones");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("meridian restore: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Admin(args) => {
            let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
                Ok(r) => r,
                Err(code) => return code,
            };
            runtime.block_on(crate::cli::admin::run(args))
        }
    }
}
