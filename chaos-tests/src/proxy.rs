//! A TCP proxy with run-time switchable faults. Loopback only: it refuses to forward to
//! anything but 127.0.0.0/8 or ::1, so a test can never send traffic elsewhere.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Faults currently applied to the link. Delay and bandwidth changes apply to data read
/// after the change. A partition stalls the link (as lost packets stall TCP): nothing
/// crosses while it lasts, and what was sent meanwhile arrives, in order, after the heal.
#[derive(Default)]
pub struct Faults {
    /// One-way delay added to every chunk, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Up to this many more milliseconds, drawn per chunk (order is kept: a chunk never
    /// overtakes the one before it, as on a single TCP connection).
    pub jitter_ms: AtomicU64,
    /// Bandwidth cap per direction in bytes per second (0 = unlimited), shared by every
    /// connection through the proxy, as on one physical link.
    pub bytes_per_sec: AtomicU64,
    /// Stall data from client to upstream (connections stay open, nothing crosses).
    pub block_forward: AtomicBool,
    /// Stall data from upstream back to the client.
    pub block_backward: AtomicBool,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Per direction (forward, backward): when the link finishes sending what has been
    /// queued on it so far under the bandwidth cap.
    link_free: [Mutex<Option<Instant>>; 2],
}

pub struct FaultProxy {
    pub listen_addr: SocketAddr,
    pub faults: Arc<Faults>,
    /// Bumped to reset every open connection.
    reset: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {0} is not a loopback address; fault proxies only forward on loopback")]
    NotLoopback(SocketAddr),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<FaultProxy, ProxyError> {
        FaultProxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// Listens on `listen_addr` (loopback; port 0 picks a free one) and forwards every
    /// accepted connection to `upstream` (loopback).
    pub async fn start_on(listen_addr: SocketAddr, upstream: SocketAddr) -> Result<FaultProxy, ProxyError> {
        if !upstream.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(upstream));
        }
        if !listen_addr.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(listen_addr));
        }
        let listener = TcpListener::bind(listen_addr).await?;
        let listen_addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let (reset, _) = watch::channel(0u64);
        let task = {
            let faults = faults.clone();
            let reset = reset.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    faults.accepted.fetch_add(1, Ordering::SeqCst);
                    let faults = faults.clone();
                    let reset_rx = reset.subscribe();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            pipe_both(client, server, faults, reset_rx).await;
                        }
                    });
                }
            })
        };
        Ok(FaultProxy { listen_addr, faults, reset, task })
    }

    pub fn set_delay(&self, d: Duration) {
        self.faults.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Random extra delay per chunk, uniformly in `[0, d]`.
    pub fn set_jitter(&self, d: Duration) {
        self.faults.jitter_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// How many connections the proxy has accepted since it started.
    pub fn connections(&self) -> u64 {
        self.faults.accepted.load(Ordering::SeqCst)
    }

    pub fn set_bandwidth(&self, bytes_per_sec: u64) {
        self.faults.bytes_per_sec.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Partitions the link: `forward` blocks client→upstream, `backward` the reverse.
    pub fn partition(&self, forward: bool, backward: bool) {
        self.faults.block_forward.store(forward, Ordering::SeqCst);
        self.faults.block_backward.store(backward, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.partition(false, false);
        self.set_delay(Duration::ZERO);
        self.set_jitter(Duration::ZERO);
        self.set_bandwidth(0);
    }

    /// Closes every connection open right now.
    pub fn reset_connections(&self) {
        self.reset.send_modify(|v| *v += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_connections();
    }
}

/// How often a stalled direction looks whether its partition has healed.
const PARTITION_POLL: Duration = Duration::from_millis(10);

async fn pipe_both(client: TcpStream, server: TcpStream, faults: Arc<Faults>, reset: watch::Receiver<u64>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let f1 = faults.clone();
    let mut r1 = reset.clone();
    let mut r2 = reset;
    // Each direction runs until its sender closes (half-closes are passed on), or until
    // every connection is reset.
    tokio::select! {
        _ = async { tokio::join!(pipe(cr, sw, f1, true), pipe(sr, cw, faults, false)) } => {}
        _ = r1.changed() => {}
        _ = r2.changed() => {}
    }
}

/// One direction of a connection, as a delay line: the reader stamps each chunk with the
/// time it may leave (arrival + the one-way delay, then paced by the bandwidth cap) and a
/// writer sends it at that time. Chunks in flight overlap, so the delay is a pure latency
/// (a chunk is never held up by the delay of the chunk before it) and throughput is
/// limited only by the bandwidth cap. At most `MAX_IN_FLIGHT` chunks are queued; beyond
/// that the reader stops reading, which pushes back on the sender through TCP.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Faults>,
    forward: bool,
) {
    const MAX_IN_FLIGHT: usize = 1024;
    const LINK_BUFFER: Duration = Duration::from_millis(100);
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_IN_FLIGHT);
    let blocked = |f: &Faults| {
        let flag = if forward { &f.block_forward } else { &f.block_backward };
        flag.load(Ordering::SeqCst)
    };
    let reader = {
        let faults = faults.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // Partitioned: stop reading, so the sender's TCP stalls as it would when
                // packets are lost (and resumes intact after the heal — TCP never delivers
                // a stream with holes, so neither does the proxy).
                while blocked(&faults) {
                    tokio::time::sleep(PARTITION_POLL).await;
                }
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let now = Instant::now();
                let jitter = match faults.jitter_ms.load(Ordering::SeqCst) {
                    0 => 0,
                    j => rand::random_range(0..=j),
                };
                let mut due = now + Duration::from_millis(faults.delay_ms.load(Ordering::SeqCst) + jitter);
                let rate = faults.bytes_per_sec.load(Ordering::SeqCst);
                if rate > 0 {
                    // The chunk starts "transmitting" once the link has sent everything
                    // queued before it, by any connection in this direction.
                    let sent = {
                        let mut free = faults.link_free[usize::from(!forward)].lock().unwrap_or_else(|p| p.into_inner());
                        let start = free.map_or(now, |f| f.max(now));
                        let sent = start + Duration::from_secs_f64(n as f64 / rate as f64);
                        *free = Some(sent);
                        sent
                    };
                    due = due.max(sent + (due - now));
                    // A bottleneck buffers only so much: stop reading while the link's
                    // queue is longer than LINK_BUFFER, so the sender feels the cap through
                    // TCP and a small message never waits behind seconds of bulk data.
                    if let Some(wait) = (sent - now).checked_sub(LINK_BUFFER) {
                        tokio::time::sleep(wait).await;
                    }
                }
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Data read before the partition began waits for the heal too.
            while blocked(&faults) {
                tokio::time::sleep(PARTITION_POLL).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The reader ends at EOF (dropping `tx`); the writer then drains what is in flight.
    tokio::join!(reader, writer);
}
