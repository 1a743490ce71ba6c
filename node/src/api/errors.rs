//! The one place registry errors become HTTP: status, OCI error code, JSON body.

use crate::registry::RegistryError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Status and OCI code for each error kind.
fn classify(e: &RegistryError) -> (StatusCode, &'static str) {
    use RegistryError::*;
    match e {
        NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        // Distribution's code for a manifest PUT under a tag the grammar refuses (the spec
        // keeps it among the legacy codes clients may meet).
        TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
        DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        ChunkOutOfOrder { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
        SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
        ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
        ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID"),
        BlobTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
        ManifestUnknown(_) | ReferenceUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        Unsupported(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        // The spec's answer for a blob delete the registry does not do.
        BlobReferenced(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        NoQuorum(_) | SourceUnavailable(_) | StorageUnavailable(_) | UploadOwnerUnavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
        }
        // Not the client's fault and not over in a moment: 507 says which, and a client's
        // retry after space is freed succeeds (nothing of this request was kept).
        StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "UNAVAILABLE"),
        BodyFailed(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
        Denied { .. } | QuotaExceeded(_) => (StatusCode::FORBIDDEN, "DENIED"),
        TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    }
}

/// Builds an error response; handlers return `Result<Response, ApiError>`.
pub struct ApiError(pub RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = classify(&self.0);
        let message = self.0.to_string();
        if status.is_server_error() {
            tracing::error!(oci_code = code, error = %message, "request failed");
        } else {
            tracing::debug!(oci_code = code, error = %message, "request refused");
        }
        let body = json!({ "errors": [{ "code": code, "message": message, "detail": {} }] });
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self.0 {
            RegistryError::ChunkOutOfOrder { offset, location, upload_id } => {
                if let Ok(v) = HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1))) {
                    headers.insert(header::RANGE, v);
                }
                if let Ok(v) = HeaderValue::from_str(location) {
                    headers.insert(header::LOCATION, v);
                }
                if let Ok(v) = HeaderValue::from_str(upload_id) {
                    headers.insert("docker-upload-uuid", v);
                }
            }
            RegistryError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            RegistryError::NoQuorum(_) | RegistryError::StorageUnavailable(_) | RegistryError::UploadOwnerUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            RegistryError::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            RegistryError::Unauthorized { challenge, .. } | RegistryError::Denied { challenge: Some(challenge) } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        resp
    }
}
