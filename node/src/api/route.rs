//! Splits a `/v2/...` path into the repository name and the endpoint. Repository names
//! contain slashes, so the endpoint is found from the right.

use crate::registry::names::validate_name;
use crate::registry::RegistryError;

#[derive(Debug, PartialEq)]
pub enum Endpoint<'a> {
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Tags { name: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Endpoint<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => name,
        }
    }

    /// The route label used in metrics and spans.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Manifest { .. } => "manifest",
            Endpoint::Blob { .. } => "blob",
            Endpoint::UploadStart { .. } => "upload_start",
            Endpoint::Upload { .. } => "upload",
            Endpoint::Tags { .. } => "tags",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

/// Parses the part of the path after `/v2/`. `Ok(None)` means no such endpoint.
pub fn parse(rest: &str) -> Result<Option<Endpoint<'_>>, RegistryError> {
    let endpoint = if let Some(name) = rest.strip_suffix("/tags/list") {
        Endpoint::Tags { name }
    } else if let Some(name) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        Endpoint::UploadStart { name }
    } else if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        Endpoint::Upload { name, id }
    } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        Endpoint::Manifest { name, reference }
    } else if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        Endpoint::Blob { name, digest }
    } else if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        Endpoint::Referrers { name, digest }
    } else {
        return Ok(None);
    };
    validate_name(endpoint.name())?;
    Ok(Some(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_from_the_right() {
        assert_eq!(
            parse("a/manifests/b/manifests/latest").unwrap(),
            Some(Endpoint::Manifest { name: "a/manifests/b", reference: "latest" })
        );
        assert_eq!(parse("a/b/blobs/uploads/").unwrap(), Some(Endpoint::UploadStart { name: "a/b" }));
        assert_eq!(parse("a/blobs/uploads/123").unwrap(), Some(Endpoint::Upload { name: "a", id: "123" }));
        assert!(parse("A/tags/list").is_err());
        assert!(parse("a//tags/list").is_err());
        assert!(parse("a/../b/tags/list").is_err());
        assert_eq!(parse("a/unknown").unwrap(), None);
    }
}
