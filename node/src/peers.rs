//! gRPC channels to other nodes, one per address and lane, created lazily and reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Largest gRPC message accepted or sent: a batch of Raft entries can carry several
/// manifests of up to 4 MiB each.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// HTTP/2 receive window per stream that carries bulk bytes (a client's blob fetch, Raft
/// appends): 8 MiB in flight is ~45 MB/s at 180 ms RTT.
pub(crate) const BULK_STREAM_WINDOW: u32 = 8 << 20;

/// Background blob bytes each peer may have in flight to this node, all its streams
/// together, unless configured (`replication_window_mib`).
pub const DEFAULT_REPLICATION_WINDOW: u32 = 16 << 20;

/// Which connection a call travels on. Blob bytes get their own TCP connection per peer
/// so a saturated link never queues Raft heartbeats and forwarded writes behind
/// megabytes of layer data (in one HTTP/2 connection they would share the TCP send
/// buffer and any bandwidth bottleneck on the way). Blob fetches a client waits for get
/// another one, for the same reason: the background queue's bytes already in the bulk
/// connection's buffers would otherwise go first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Lane {
    Control,
    Bulk,
    Priority,
}

#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<(String, Lane), Channel>>>,
    /// Advertised gRPC address → the address this node dials instead (`dial_via`).
    dial_via: Arc<BTreeMap<String, String>>,
    /// Mutual TLS for every link, when configured.
    tls: Option<ClientTlsConfig>,
    /// The bulk lane's HTTP/2 window, stream and connection alike: what a background
    /// transfer can have queued ahead of a client's bytes on a shared link.
    replication_window: u32,
}

/// `host:port` or a URL → a URL tonic can dial.
pub fn grpc_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The URL with `https` when the links use TLS (addresses are often given without a scheme).
fn with_scheme(url: String, tls: bool) -> String {
    match (tls, url.strip_prefix("http://")) {
        (true, Some(rest)) => format!("https://{rest}"),
        _ => url,
    }
}

impl Peers {
    /// `dial_via` maps advertised gRPC addresses (as `host:port` or URL) to the address
    /// to dial in their place.
    pub fn new(dial_via: BTreeMap<String, String>, tls: Option<ClientTlsConfig>) -> Peers {
        let dial_via = dial_via.into_iter().map(|(from, to)| (grpc_url(&from), grpc_url(&to))).collect();
        Peers { channels: Arc::default(), dial_via: Arc::new(dial_via), tls, replication_window: DEFAULT_REPLICATION_WINDOW }
    }

    /// The same, with the bulk lane's window at `bytes` (1 MiB to 1 GiB).
    pub fn with_replication_window(mut self, bytes: u32) -> Peers {
        self.replication_window = bytes;
        self
    }

    /// The channel for Raft, forwarding, admin and probes to the node advertising `addr`.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        self.channel_on(addr, Lane::Control)
    }

    /// The channel for background blob transfers from the node advertising `addr`.
    pub fn bulk_channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        self.channel_on(addr, Lane::Bulk)
    }

    /// The channel for blob transfers a client waits for, from the node advertising `addr`.
    pub fn priority_channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        self.channel_on(addr, Lane::Priority)
    }

    /// Forgets the background connection to the node advertising `addr`: it closes once
    /// the streams on it are gone, dropping the bytes queued in it, and the next
    /// background call dials a new one (`meridian_replication::yielding`).
    pub fn drop_bulk_channel(&self, addr: &str) {
        let key = self.key(addr, Lane::Bulk);
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// The URL dialled for `addr` (after `dial_via`, with the scheme TLS needs) and `lane`.
    fn key(&self, addr: &str, lane: Lane) -> (String, Lane) {
        let advertised = grpc_url(addr);
        let url = self.dial_via.get(&advertised).cloned().unwrap_or(advertised);
        (with_scheme(url, self.tls.is_some()), lane)
    }

    fn channel_on(&self, addr: &str, lane: Lane) -> Result<Channel, tonic::Status> {
        let key = self.key(addr, lane);
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(key.0.clone())
            .map_err(|e| tonic::Status::invalid_argument(format!("bad gRPC address {addr:?}: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| tonic::Status::invalid_argument(format!("TLS for {addr:?}: {e}")))?;
        }
        // An HTTP/2 stream moves at most one window per round trip: hyper's default 2 MiB
        // is 11 MiB/s over 180 ms. Blob streams get windows sized for long fat links from
        // the first byte (BDP-adaptive windows take many round trips to grow). The bulk
        // lane's connection window is no larger than one stream's: whatever background
        // bytes it lets out sit in buffers on the way, and when a client starts waiting on
        // the priority lane over the same link, they drain first (the source holds
        // background streams from then on: `WaitingClients` in `cluster::blob_transfer_service`).
        let (stream_window, connection_window) = match lane {
            Lane::Control => (None, None),
            Lane::Bulk => (Some(self.replication_window), Some(self.replication_window)),
            Lane::Priority => (Some(BULK_STREAM_WINDOW), Some(4 * BULK_STREAM_WINDOW)),
        };
        let channel = endpoint
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(connection_window)
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(key, channel.clone());
        Ok(channel)
    }
}
