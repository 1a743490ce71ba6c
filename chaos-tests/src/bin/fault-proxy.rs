//! `fault-proxy`: a standalone loopback TCP proxy that adds a fixed one-way delay (and
//! optionally a bandwidth cap) to every connection through it, for running multi-process
//! clusters with WAN-like links on one machine.
//!
//! ```text
//! fault-proxy --listen 127.0.0.1:7001 --upstream 127.0.0.1:6001 --delay-ms 25
//! ```
//!
//! Each direction is delayed by `--delay-ms`, so a request/response round trip through the
//! proxy costs twice that. Both addresses must be loopback. Runs until killed (SIGINT or
//! SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use chaos_tests::proxy::FaultProxy;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "fault-proxy",
    version,
    about = "Loopback TCP proxy adding a one-way delay and/or bandwidth cap to each direction"
)]
struct Args {
    /// Address to listen on (loopback only), e.g. 127.0.0.1:7001.
    #[arg(long)]
    listen: SocketAddr,
    /// Address to forward to (loopback only), e.g. 127.0.0.1:6001.
    #[arg(long)]
    upstream: SocketAddr,
    /// Delay added to each direction, in milliseconds (round trip = 2 × this).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Bandwidth cap per direction in bytes per second, shared by all connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    bandwidth: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // One thread: several proxies usually share a small machine with the nodes they
    // connect, and a delay line needs little CPU.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let proxy = FaultProxy::start_on(args.listen, args.upstream)
            .await
            .with_context(|| format!("fault-proxy: cannot start {} -> {}", args.listen, args.upstream))?;
        proxy.set_delay(Duration::from_millis(args.delay_ms));
        proxy.set_bandwidth(args.bandwidth);
        eprintln!(
            "fault-proxy: {} -> {} (delay {} ms each way, bandwidth {})",
            proxy.listen_addr,
            args.upstream,
            args.delay_ms,
            if args.bandwidth == 0 { "unlimited".to_string() } else { format!("{} B/s", args.bandwidth) }
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(proxy);
        Ok(())
    })
}
