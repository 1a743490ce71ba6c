//! Upload requests passed between the nodes of one region.
//!
//! An upload session's running hash and staged bytes live on the node that opened it (its
//! id names that node, `blobs::uploads::SessionId`). Behind a load balancer the next
//! request of the session may reach another node of the region, which passes it on here,
//! over the cluster's gRPC link (mutual TLS when configured, the bulk lane, so a chunk
//! never queues Raft traffic). Why not keep sessions in the shared object store instead:
//! the digest is computed while bytes arrive, and a SHA-256 state cannot be resumed
//! elsewhere without re-reading everything sent so far; and S3 multipart parts have a
//! 5 MiB minimum where OCI chunks may be any size.
//!
//! The forwarding node has already authorized the request; the owner serves it without
//! asking again (a cluster link is trusted as Raft's own messages are).

use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use meridian_proto::cluster::forward_service_client::ForwardServiceClient;
use meridian_proto::cluster::{HttpHeader, UploadRequestHead, UploadRequestPart, UploadResponse};
use tonic::Status;

/// Upload answers carry headers and at most an OCI error body.
const MAX_RESPONSE_BODY: usize = 1 << 20;

/// Serves upload requests passed on by another node of the region (the API, handed in by
/// the composition root, so `cluster` does not import `api`).
#[tonic::async_trait]
pub trait UploadHandler: Send + Sync {
    async fn handle(&self, request: Request<Body>) -> Response<Body>;
}

/// Headers that describe one connection, not the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str(), "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "host")
}

fn to_wire(headers: &axum::http::HeaderMap) -> Vec<HttpHeader> {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name))
        .map(|(name, value)| HttpHeader { name: name.as_str().to_string(), value: value.as_bytes().to_vec() })
        .collect()
}

fn from_wire(headers: Vec<HttpHeader>, into: &mut axum::http::HeaderMap) {
    for h in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(&h.value)) {
            if !hop_by_hop(&name) {
                into.append(name, value);
            }
        }
    }
}

/// Passes `parts` and `body` to the node at `grpc_addr` and returns its answer. A body that
/// fails on the way (the client went away) is sent as an abort, so the owner drops the
/// chunk instead of taking what arrived for all of it. `Err`: the owner could not be
/// reached or broke off.
pub async fn forward(
    peers: &crate::peers::Peers,
    grpc_addr: &str,
    parts: &axum::http::request::Parts,
    body: impl Stream<Item = Result<Bytes, String>> + Send + 'static,
) -> Result<Response<Body>, Status> {
    let channel = peers.bulk_channel(grpc_addr)?;
    let head = UploadRequestHead {
        method: parts.method.as_str().to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default(),
        headers: to_wire(&parts.headers),
    };
    let first = UploadRequestPart { head: Some(head), ..Default::default() };
    let rest = body.map(|item| match item {
        Ok(chunk) => UploadRequestPart { body: chunk.to_vec(), ..Default::default() },
        Err(reason) => UploadRequestPart { abort: reason, ..Default::default() },
    });
    let stream = futures::stream::once(async move { first }).chain(rest);
    let reply = ForwardServiceClient::new(channel)
        .max_decoding_message_size(crate::peers::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::peers::MAX_MESSAGE_BYTES)
        .forward_upload(stream)
        .await?
        .into_inner();
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    from_wire(reply.headers, response.headers_mut());
    Ok(response)
}

/// The owner's side: rebuilds the request from the stream, serves it, and sends the
/// whole answer back.
pub async fn serve(
    handler: &dyn UploadHandler,
    mut stream: tonic::Streaming<UploadRequestPart>,
) -> Result<UploadResponse, Status> {
    let head = match stream.message().await? {
        Some(UploadRequestPart { head: Some(head), .. }) => head,
        _ => return Err(Status::invalid_argument("a forwarded upload starts with the request head")),
    };
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| Status::invalid_argument(format!("bad method {:?}", head.method)))?;
    let mut request = Request::builder()
        .method(method)
        .uri(&head.path_and_query)
        .body(Body::from_stream(stream.map(|part| match part {
            Ok(part) if part.abort.is_empty() => Ok(Bytes::from(part.body)),
            Ok(part) => Err(std::io::Error::other(format!("the client's body failed: {}", part.abort))),
            Err(status) => Err(std::io::Error::other(format!("the forwarding node broke off: {}", status.message()))),
        })))
        .map_err(|e| Status::invalid_argument(format!("bad forwarded request: {e}")))?;
    from_wire(head.headers, request.headers_mut());
    let response = handler.handle(request).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_RESPONSE_BODY)
        .await
        .map_err(|e| Status::internal(format!("reading the upload answer: {e}")))?;
    Ok(UploadResponse { status: parts.status.as_u16() as u32, headers: to_wire(&parts.headers), body: body.to_vec() })
}
