//! gRPC channels to other nodes, one per address, created lazily and reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message accepted or sent: a batch of Raft entries can carry several
/// manifests of up to 4 MiB each.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// `host:port` or a URL → a URL tonic can dial.
pub fn grpc_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Peers {
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let url = grpc_url(addr);
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&url) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| tonic::Status::invalid_argument(format!("bad gRPC address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(url, channel.clone());
        Ok(channel)
    }
}
