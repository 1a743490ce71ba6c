//! The `meridian` binary's entry point: `serve` and `admin`.

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
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("meridian: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
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
        Command::Admin(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("meridian: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            runtime.block_on(crate::cli::admin::run(args))
        }
    }
}
