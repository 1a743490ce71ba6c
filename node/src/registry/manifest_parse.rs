//! Parsing and validating pushed manifests: what they are and what they reference.

use super::errors::RegistryError;
use meridian_replication::Digest;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layer media types whose bytes live elsewhere (`urls`); they need not be pushed.
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What a manifest is and what it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Blobs that must exist (config, layers).
    pub blobs: Vec<Descriptor>,
    /// Manifests an index lists.
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// The referrers API's `artifactType` for this manifest.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    /// An image manifest's layers in order, foreign ones included (what it was built from).
    pub layers: Vec<Digest>,
    /// An image manifest whose config is a container image config (not an artifact).
    pub is_image: bool,
}

/// Config media types of container images (as opposed to artifacts).
const IMAGE_CONFIGS: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

/// Media type without parameters, lowercased.
pub fn bare_media_type(s: &str) -> String {
    s.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, RegistryError> {
    let obj = v.as_object().ok_or_else(|| invalid(format!("{what} is not an object")))?;
    let media_type = obj
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what} has no mediaType")))?
        .to_string();
    let digest_str = obj.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{what} has no digest")))?;
    let digest = Digest::parse(digest_str).map_err(|e| invalid(format!("{what} digest: {e}")))?;
    let size = obj.get("size").and_then(Value::as_u64).ok_or_else(|| invalid(format!("{what} has no valid size")))?;
    Ok(Descriptor { media_type, digest, size })
}

fn descriptors(obj: &Map<String, Value>, field: &str, required: bool) -> Result<Vec<(Descriptor, bool)>, RegistryError> {
    match obj.get(field) {
        None if !required => Ok(Vec::new()),
        None => Err(invalid(format!("missing {field}"))),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let d = descriptor(v, &format!("{field}[{i}]"))?;
                let has_urls = v.get("urls").map(|u| u.is_array()).unwrap_or(false);
                Ok((d, has_urls))
            })
            .collect(),
        Some(_) => Err(invalid(format!("{field} is not an array"))),
    }
}

fn annotations(obj: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, RegistryError> {
    match obj.get("annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str().map(|s| (k.clone(), s.to_string())).ok_or_else(|| invalid("annotation values must be strings"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Some),
        Some(_) => Err(invalid("annotations is not an object")),
    }
}

/// Parses `body` pushed with `content_type`.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, RegistryError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| invalid("manifest is not a JSON object"))?;
    match obj.get("schemaVersion").and_then(Value::as_u64) {
        Some(2) => {}
        Some(v) => return Err(invalid(format!("schemaVersion {v} is not supported (only 2)"))),
        None => return Err(invalid("missing schemaVersion")),
    }
    let declared = match obj.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("mediaType is not a string")),
    };
    let content_type = content_type.map(bare_media_type).filter(|c| !c.is_empty());
    if let (Some(d), Some(c)) = (&declared, &content_type) {
        if d != c {
            return Err(invalid(format!("mediaType {d} does not match Content-Type {c}")));
        }
    }
    let media_type = match declared.or(content_type) {
        Some(t) => t,
        // Neither says: an OCI manifest or index may omit both; tell them apart by shape.
        None if obj.contains_key("manifests") => OCI_INDEX.to_string(),
        None if obj.contains_key("config") => OCI_MANIFEST.to_string(),
        None => return Err(invalid("cannot tell the manifest's media type")),
    };
    let artifact_type = match obj.get("artifactType") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("artifactType is not a string")),
    };
    let subject = match obj.get("subject") {
        None | Some(Value::Null) => None,
        Some(v) => Some(descriptor(v, "subject")?),
    };
    let annotations = annotations(obj)?;
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = descriptor(obj.get("config").ok_or_else(|| invalid("missing config"))?, "config")?;
            let layers = descriptors(obj, "layers", media_type == DOCKER_MANIFEST)?;
            let mut blobs = vec![config.clone()];
            let all_layers = layers.iter().map(|(l, _)| l.digest.clone()).collect();
            for (layer, has_urls) in layers {
                if has_urls && FOREIGN_LAYERS.contains(&layer.media_type.as_str()) {
                    continue;
                }
                blobs.push(layer);
            }
            let is_image = IMAGE_CONFIGS.contains(&bare_media_type(&config.media_type).as_str());
            let artifact_type = artifact_type.or(Some(config.media_type.clone()));
            Ok(ParsedManifest {
                media_type,
                blobs,
                children: Vec::new(),
                subject,
                artifact_type,
                annotations,
                layers: all_layers,
                is_image,
            })
        }
        OCI_INDEX | DOCKER_LIST => {
            let children = descriptors(obj, "manifests", true)?.into_iter().map(|(d, _)| d).collect();
            Ok(ParsedManifest {
                media_type,
                blobs: Vec::new(),
                children,
                subject,
                artifact_type,
                annotations,
                layers: Vec::new(),
                is_image: false,
            })
        }
        other => Err(invalid(format!("unsupported manifest media type {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn image_manifest_references_config_and_layers() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[{{"mediaType":"x","digest":"{D}","size":2}}]}}"#
        );
        let m = parse_manifest(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn refusals() {
        assert!(parse_manifest(None, b"{").is_err());
        assert!(parse_manifest(None, b"[]").is_err());
        assert!(parse_manifest(None, br#"{"schemaVersion":1}"#).is_err());
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse_manifest(Some(OCI_MANIFEST), body.as_bytes()).is_err());
        assert!(parse_manifest(Some(OCI_INDEX), body.as_bytes()).is_ok());
        let bad_digest = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"x","digest":"sha256:zz","size":1}}]}}"#);
        assert!(parse_manifest(Some(OCI_INDEX), bad_digest.as_bytes()).is_err());
    }
}
