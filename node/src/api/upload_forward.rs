//! Upload sessions owned by another node of this region: their requests are passed on to
//! the owner (`cluster::upload_forwarding` says why sessions are not shared instead), and
//! the owner serves what other nodes pass on.

use super::errors::ApiError;
use super::route::{self, Endpoint};
use crate::blobs::uploads::SessionId;
use crate::meta::types::NodeInfo;
use crate::meta::Meta;
use crate::registry::{Registry, RegistryError};
use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The node of this region that owns upload session `id`, when it is not this node. A
/// session of a node that left, or of another region, is served here (as unknown).
pub(super) fn owner_elsewhere(meta: &Meta, id: &str) -> Option<NodeInfo> {
    let owner = SessionId::parse(id)?.node?;
    if owner == meta.node_id() {
        return None;
    }
    let region = &meta.me().region;
    meta.members().into_iter().find(|m| m.node_id == owner && &m.info.region == region).map(|m| m.info)
}

/// Passes the (authorized) request on to `owner` and relays its answer. An owner that
/// cannot be reached answers `503 UNAVAILABLE`: the session is still there when it comes
/// back, and nothing of this request was kept.
pub(super) async fn forward(registry: &Registry, owner: &NodeInfo, parts: Parts, body: Body) -> Response {
    let body = super::uploads::body_stream(body, registry.body_idle_timeout);
    match crate::cluster::upload_forwarding::forward(registry.meta.peers(), &owner.grpc_addr, &parts, body).await {
        Ok(response) => response,
        Err(status) => {
            tracing::warn!(owner = %owner.grpc_addr, error = %status.message(), "could not pass an upload request on to the node holding its session");
            ApiError(RegistryError::UploadOwnerUnavailable(format!("{}: {}", owner.grpc_addr, status.message())))
                .into_response()
        }
    }
}

/// Serves upload requests other nodes of the region pass on. They were authorized where
/// they arrived; only session requests (`/v2/<name>/blobs/uploads/<id>`) are accepted.
pub struct ForwardedUploads {
    pub registry: Arc<Registry>,
}

#[tonic::async_trait]
impl crate::cluster::upload_forwarding::UploadHandler for ForwardedUploads {
    async fn handle(&self, request: Request<Body>) -> Response {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let endpoint = match path.strip_prefix("/v2/").map(route::parse) {
            Some(Ok(Some(endpoint @ Endpoint::Upload { .. }))) => endpoint,
            Some(Err(e)) => return ApiError(e).into_response(),
            _ => return ApiError(RegistryError::Unsupported("only upload session requests are passed on".into())).into_response(),
        };
        super::serve(&self.registry, &endpoint, &parts, parts.uri.query(), &super::Allowed::default(), body)
            .await
            .unwrap_or_else(|e| e.into_response())
    }
}
