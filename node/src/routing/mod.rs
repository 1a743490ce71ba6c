//! Nearest-region routing of layer bytes: one registry name for every region.
//!
//! Clients may all talk to one name (geo DNS, a load balancer, or simply the region they
//! were configured with). Manifests, tokens and pushes are answered wherever the client
//! connected; a blob `GET` from a network the `[routing]` table maps to another region is
//! answered `307 Temporary Redirect` to that region's public URL, so the bytes come from
//! the copy nearest the client — as ACR's regional data endpoints do.
//!
//! The redirect is only ever to a region that can serve at once: one of its nodes answered
//! this node's last probe (every 2 s, see `replicas::measure_rtt`) with a URL clients can
//! reach, and the cluster records the region as holding the blob. Otherwise the client is
//! served where it connected. A request that arrived by such a redirect is never
//! redirected again (see `api::blobs::arrived_by_redirect`).

use crate::meta::{Meta, Store};
use crate::replicas::Replicator;
use meridian_replication::Digest;
use std::net::IpAddr;
use std::sync::Arc;

/// Where a pull is sent instead of being served here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub region: String,
    /// The target region's public URL (no trailing slash).
    pub base_url: String,
}

/// One node's public URL as this node sees it (`meridian admin endpoints`).
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub region: String,
    pub node_id: u64,
    pub public_url: String,
    pub up: bool,
    pub local: bool,
}

/// The `[routing]` table: client networks → region names.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// Most specific network first, so `10.20.5.0/24 = ap` wins over `10.20.0.0/16 = eu`.
    rows: Vec<(ipnet::IpNet, String)>,
}

impl RoutingTable {
    pub fn new(mut rows: Vec<(ipnet::IpNet, String)>) -> RoutingTable {
        rows.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then_with(|| a.0.cmp(&b.0)));
        RoutingTable { rows }
    }

    /// The rows, most specific first.
    pub fn rows(&self) -> &[(ipnet::IpNet, String)] {
        &self.rows
    }

    /// The region a client address is mapped to, if any.
    pub fn region_for(&self, client: IpAddr) -> Option<&str> {
        let client = canonical(client);
        self.rows.iter().find(|(net, _)| net.contains(&client)).map(|(_, region)| region.as_str())
    }
}

pub struct NearestRegion {
    table: RoutingTable,
    meta: Meta,
    store: Store,
    replicator: Arc<Replicator>,
}

impl NearestRegion {
    pub fn new(table: RoutingTable, meta: Meta, store: Store, replicator: Arc<Replicator>) -> NearestRegion {
        NearestRegion { table, meta, store, replicator }
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Where a blob `GET` from `client` should be served instead of here: `None` unless the
    /// client's network is mapped to another region that is up and holds the blob.
    pub fn redirect(&self, client: Option<IpAddr>, digest: &Digest) -> Option<Redirect> {
        let target = self.table.region_for(client?)?;
        if target == self.meta.me().region {
            return None;
        }
        let location = self.store.blob_location(digest).ok().flatten()?;
        if !location.regions.iter().any(|r| r == target) {
            return None;
        }
        // Of the target region's nodes, the nearest that answered its last probe (they
        // share one store and normally one URL; a node that stopped answering is skipped).
        let mut nodes: Vec<_> = self
            .meta
            .members()
            .into_iter()
            .filter(|m| m.info.region == target)
            .filter_map(|m| {
                let url = self.replicator.public_url_of(&m.info.grpc_addr).filter(|u| routable(u))?;
                Some((self.replicator.rtt_of(&m.info.grpc_addr)?, url))
            })
            .collect();
        nodes.sort();
        let (_, base_url) = nodes.into_iter().next()?;
        Some(Redirect { region: target.to_string(), base_url })
    }

    /// Every member's public URL and whether it answered this node's last probe.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        let me = self.meta.node_id();
        let mut views: Vec<EndpointView> = self
            .meta
            .members()
            .into_iter()
            .map(|m| {
                let local = m.node_id == me;
                let probed = if local { None } else { self.replicator.public_url_of(&m.info.grpc_addr) };
                let up = local || self.replicator.rtt_of(&m.info.grpc_addr).is_some();
                // The URL the node reports; for one not answering, what it said when it joined.
                let public_url = if local {
                    self.meta.me().public_url.clone()
                } else {
                    probed.unwrap_or_else(|| match m.info.public_url.is_empty() {
                        true => format!("http://{}", m.info.http_addr),
                        false => m.info.public_url.clone(),
                    })
                };
                EndpointView { region: m.info.region, node_id: m.node_id, public_url, up, local }
            })
            .collect();
        views.sort_by(|a, b| (&a.region, a.node_id).cmp(&(&b.region, b.node_id)));
        views
    }
}

/// A URL a client can be sent to: not one made of a wildcard listen address (a node with
/// `listen = "0.0.0.0:5000"` and neither `advertise_http_addr` nor `public_url`).
fn routable(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or_default().split('/').next().unwrap_or_default();
    !(host.starts_with("0.0.0.0") || host.starts_with("[::]"))
}

/// An IPv4 client reaching a dual-stack listener shows up as `::ffff:a.b.c.d`; the table's
/// IPv4 networks must still match it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_network_wins_and_mapped_v4_matches() {
        let rows = [("10.20.0.0/16", "eu"), ("10.20.5.0/24", "ap"), ("2001:db8::/32", "us"), ("0.0.0.0/0", "us")];
        let t = RoutingTable::new(rows.iter().map(|(n, r)| (n.parse().unwrap(), r.to_string())).collect());
        let at = |ip: &str| t.region_for(ip.parse().unwrap());
        assert_eq!(at("10.20.9.1"), Some("eu"));
        assert_eq!(at("10.20.5.7"), Some("ap"));
        assert_eq!(at("::ffff:10.20.5.7"), Some("ap"));
        assert_eq!(at("2001:db8::1"), Some("us"));
        assert_eq!(at("10.21.0.1"), Some("us"));
        assert_eq!(at("2001:db9::1"), None);
    }

    #[test]
    fn wildcard_addresses_are_not_routable() {
        assert!(routable("https://eu.registry.example.com"));
        assert!(routable("http://10.0.0.5:5000/prefix"));
        assert!(!routable("http://0.0.0.0:5000"));
        assert!(!routable("http://[::]:5000"));
    }
}
