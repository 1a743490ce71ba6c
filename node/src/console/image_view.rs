//! Manifests and image configs read for display: tolerant of unknown fields and missing
//! ones (a stored manifest was validated at push; a config never was), every string cut
//! at `MAX_TEXT` and every list at `MAX_ROWS`, so no repository owner can make a page
//! unbounded. Nothing here is trusted: the templates escape all of it.

use serde_json::Value;

/// The longest string shown (longer ones end in "…").
pub const MAX_TEXT: usize = 4096;
/// The most rows of any one list shown.
pub const MAX_ROWS: usize = 1000;

/// A descriptor as shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// `os/architecture[/variant]` of an index's child.
    pub platform: Option<String>,
    pub annotations: Vec<(String, String)>,
}

/// What kind of manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest whose config is a container image config.
    Image,
    /// An index (or Docker manifest list).
    Index,
    /// An image manifest carrying something else (a signature, an SBOM…).
    Artifact,
}

/// A manifest as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestView {
    pub kind: Kind,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub config: Option<Desc>,
    pub layers: Vec<Desc>,
    pub children: Vec<Desc>,
    pub subject: Option<Desc>,
    pub annotations: Vec<(String, String)>,
}

impl ManifestView {
    /// The bytes an image takes: the manifest, its config and its layers (an index: its
    /// own bytes and its children's manifests as listed).
    pub fn size(&self, manifest_len: u64) -> u64 {
        let parts: u64 = self.config.iter().chain(&self.layers).chain(&self.children).map(|d| d.size).sum();
        manifest_len.saturating_add(parts)
    }
}

/// An image config as shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigView {
    pub platform: Option<String>,
    pub created: Option<String>,
    pub labels: Vec<(String, String)>,
    pub env: Vec<String>,
    pub entrypoint: Option<String>,
    pub cmd: Option<String>,
    pub history: Vec<HistoryRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryRow {
    pub created: String,
    pub created_by: String,
    pub comment: String,
    pub empty_layer: bool,
}

/// `s` cut at `MAX_TEXT` characters, with the invisible and direction-changing
/// characters that could make text look like something else shown as `\u{…}`.
pub fn text(s: &str) -> String {
    let cut = match s.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    };
    if !cut.chars().any(spoofing) {
        return cut;
    }
    cut.chars().map(|c| if spoofing(c) { format!("\\u{{{:x}}}", c as u32) } else { c.to_string() }).collect()
}

/// Zero-width and bidirectional-control characters.
fn spoofing(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(text)
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    let Some(map) = v.as_object() else { return Vec::new() };
    map.iter()
        .take(MAX_ROWS)
        .map(|(k, v)| (text(k), v.as_str().map(text).unwrap_or_else(|| text(&v.to_string()))))
        .collect()
}

fn platform(v: &Value) -> Option<String> {
    let os = v["os"].as_str()?;
    let arch = v["architecture"].as_str()?;
    Some(text(&match v["variant"].as_str() {
        Some(variant) => format!("{os}/{arch}/{variant}"),
        None => format!("{os}/{arch}"),
    }))
}

fn desc(v: &Value) -> Desc {
    Desc {
        media_type: string(&v["mediaType"]).unwrap_or_default(),
        digest: string(&v["digest"]).unwrap_or_default(),
        size: v["size"].as_u64().unwrap_or(0),
        artifact_type: string(&v["artifactType"]),
        platform: platform(&v["platform"]),
        annotations: pairs(&v["annotations"]),
    }
}

const IMAGE_CONFIGS: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
const INDEXES: [&str; 2] = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

/// Reads a stored manifest of `media_type` (as stored: what the registry validated it
/// as); `None` if it is not JSON at all. Only the fields its kind has are read: the
/// registry checks an index's `manifests` and an image's `config` and `layers`, nothing
/// else.
pub fn manifest(media_type: &str, body: &[u8]) -> Option<ManifestView> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = |key: &str| -> Vec<Desc> { v[key].as_array().map(|a| a.iter().take(MAX_ROWS).map(desc).collect()).unwrap_or_default() };
    let bare = media_type.split(';').next().unwrap_or_default().trim();
    let is_index = INDEXES.contains(&bare) || (bare.is_empty() && v.get("manifests").is_some());
    let (config, layers, children) = if is_index {
        (None, Vec::new(), list("manifests"))
    } else {
        (v.get("config").filter(|c| c.is_object()).map(desc), list("layers"), Vec::new())
    };
    let kind = if is_index {
        Kind::Index
    } else if config.as_ref().is_some_and(|c| IMAGE_CONFIGS.contains(&c.media_type.as_str())) {
        Kind::Image
    } else {
        Kind::Artifact
    };
    let artifact_type = string(&v["artifactType"]).or_else(|| match kind {
        Kind::Artifact => config.as_ref().map(|c| c.media_type.clone()),
        _ => None,
    });
    Some(ManifestView {
        kind,
        media_type: if bare.is_empty() { string(&v["mediaType"]).unwrap_or_default() } else { text(bare) },
        artifact_type,
        config,
        layers,
        children,
        subject: v.get("subject").filter(|s| s.is_object()).map(desc),
        annotations: pairs(&v["annotations"]),
    })
}

/// Reads an image config blob; `None` if it is not a JSON object.
pub fn config(body: &[u8]) -> Option<ConfigView> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if !v.is_object() {
        return None;
    }
    let c = &v["config"];
    let joined = |v: &Value| v.as_array().map(|a| text(&a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")));
    Some(ConfigView {
        platform: platform(&v),
        created: string(&v["created"]),
        labels: pairs(&c["Labels"]),
        env: c["Env"].as_array().map(|a| a.iter().take(MAX_ROWS).filter_map(string).collect()).unwrap_or_default(),
        entrypoint: joined(&c["Entrypoint"]),
        cmd: joined(&c["Cmd"]),
        history: v["history"]
            .as_array()
            .map(|a| {
                a.iter()
                    .take(MAX_ROWS)
                    .map(|h| HistoryRow {
                        created: string(&h["created"]).unwrap_or_default(),
                        created_by: string(&h["created_by"]).unwrap_or_default(),
                        comment: string(&h["comment"]).unwrap_or_default(),
                        empty_layer: h["empty_layer"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_v2_oci_index_and_artifact_manifests() {
        let image = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:c", "size": 10},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:l", "size": 100}],
            "unknownField": {"ignored": true}
        });
        let m = manifest("application/vnd.docker.distribution.manifest.v2+json", image.to_string().as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.size(50), 160);
        let index = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:a", "size": 5, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:b", "size": 6, "platform": {"os": "linux", "architecture": "amd64"}}
            ],
            "annotations": {"org.opencontainers.image.url": "javascript:alert(1)"}
        });
        let m = manifest("application/vnd.oci.image.index.v1+json", index.to_string().as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        let platforms: Vec<_> = m.children.iter().map(|c| c.platform.clone().unwrap()).collect();
        assert_eq!(platforms, ["linux/arm64/v8", "linux/amd64"]);
        assert_eq!(m.annotations, [("org.opencontainers.image.url".to_string(), "javascript:alert(1)".to_string())]);
        let signature = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.dev.cosign.artifact.sig.v1+json", "digest": "sha256:e", "size": 2},
            "layers": [], "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:a", "size": 5}
        });
        let m = manifest("application/vnd.oci.image.manifest.v1+json", signature.to_string().as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Artifact);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.dev.cosign.artifact.sig.v1+json"));
        assert_eq!(m.subject.unwrap().digest, "sha256:a");
        assert!(manifest("", b"not json").is_none());
        // An image manifest that also carries `manifests` (ignored by the registry) is an image.
        let odd = json!({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c", "size": 1},
            "layers": [], "manifests": [{"digest": "sha256:x", "platform": {"os": "fake", "architecture": "x"}}]});
        let m = manifest("application/vnd.oci.image.manifest.v1+json", odd.to_string().as_bytes()).unwrap();
        assert_eq!((m.kind, m.children.len()), (Kind::Image, 0));
        // Invisible and direction-changing characters are shown, not obeyed.
        assert_eq!(text("abc\u{202E}fed\u{200B}"), "abc\\u{202e}fed\\u{200b}");
    }

    #[test]
    fn configs_are_read_tolerantly_and_capped() {
        let long = "x".repeat(MAX_TEXT + 10);
        let cfg = json!({
            "os": "linux", "architecture": "amd64", "created": "2026-12-03T00:00:00Z",
            "config": {"Labels": {"a": "<script>", "n": 5}, "Env": ["PATH=/bin", 7, long], "Cmd": ["sh", "-c", "true"]},
            "history": [{"created_by": "COPY x /", "empty_layer": true}]
        });
        let c = config(cfg.to_string().as_bytes()).unwrap();
        assert_eq!(c.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(c.labels, [("a".to_string(), "<script>".to_string()), ("n".to_string(), "5".to_string())]);
        assert_eq!(c.env.len(), 2);
        assert!(c.env[1].ends_with('…') && c.env[1].chars().count() == MAX_TEXT + 1);
        assert_eq!(c.cmd.as_deref(), Some("sh -c true"));
        assert!(c.history[0].empty_layer);
        assert!(config(b"[1,2]").is_none());
    }
}
