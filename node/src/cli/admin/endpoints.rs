//! `meridian admin endpoints`: the registry URL of every region, whether it is up, and the
//! routing table that sends clients' blob pulls to their nearest region.

use super::{call, pretty, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use meridian_proto::admin::{EndpointsReply, Empty};
use serde_json::{json, Value};

pub async fn run_endpoints(admin: &Admin, json: bool) -> Result<String, CliError> {
    let reply = call(SHORT_CALL_TIMEOUT, admin.client.clone().endpoints(admin.request(Empty {}))).await?;
    Ok(if json { pretty(&endpoints_json(&reply)) } else { render_endpoints(&reply) })
}

pub fn endpoints_json(r: &EndpointsReply) -> Value {
    json!({
        "answered_by": r.region,
        "endpoints": r.endpoints.iter().map(|e| json!({
            "region": e.region,
            "node_id": e.node_id,
            "public_url": e.public_url,
            "up": e.up,
        })).collect::<Vec<_>>(),
        "routing": r.routes.iter().map(|route| json!({
            "network": route.network,
            "region": route.region,
            "unknown_region": route.unknown_region,
        })).collect::<Vec<_>>(),
    })
}

pub fn render_endpoints(r: &EndpointsReply) -> String {
    let mut t = Table::new(&[("REGION", Align::Left), ("NODE", Align::Right), ("PUBLIC URL", Align::Left), ("UP", Align::Left)]);
    for e in &r.endpoints {
        let up = if e.up { "yes" } else { "no" };
        t.row(vec![e.region.clone(), e.node_id.to_string(), e.public_url.clone(), up.to_string()]);
    }
    let mut out = t.render();
    out.push('\n');
    if r.routes.is_empty() {
        out.push_str(&format!("routing ({}): none; every client is served where it connects\n", r.region));
        return out;
    }
    out.push_str(&format!("routing ({}): blob pulls from these networks go to their region\n", r.region));
    let mut t = Table::new(&[("NETWORK", Align::Left), ("REGION", Align::Left)]);
    for route in &r.routes {
        let region = if route.unknown_region { format!("{} (no such region)", route.region) } else { route.region.clone() };
        t.row(vec![route.network.clone(), region]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::admin::{EndpointInfo, RouteInfo};

    #[test]
    fn shows_urls_liveness_and_routes() {
        let reply = EndpointsReply {
            region: "us".into(),
            endpoints: vec![
                EndpointInfo { region: "eu".into(), node_id: 2, public_url: "https://eu.r.example".into(), up: false, local: false },
                EndpointInfo { region: "us".into(), node_id: 1, public_url: "https://us.r.example".into(), up: true, local: true },
            ],
            routes: vec![
                RouteInfo { network: "10.20.0.0/16".into(), region: "eu".into(), unknown_region: false },
                RouteInfo { network: "10.30.0.0/16".into(), region: "mars".into(), unknown_region: true },
            ],
        };
        let text = render_endpoints(&reply);
        assert!(text.contains("eu         2  https://eu.r.example  no"), "{text}");
        assert!(text.contains("10.30.0.0/16  mars (no such region)"), "{text}");
        let v = endpoints_json(&reply);
        assert_eq!(v["endpoints"][0]["up"], false);
        assert_eq!(v["routing"][1]["unknown_region"], true);
        let empty = render_endpoints(&EndpointsReply { region: "us".into(), ..Default::default() });
        assert!(empty.contains("routing (us): none"), "{empty}");
    }
}
