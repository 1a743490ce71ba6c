//! `meridian admin image …`: what the cluster knows about one image beyond its bytes —
//! today, which images were built on it (base-image triggers, `base_updated` events).

use super::{call, or_dash, pretty, Admin, CliError, SHORT_CALL_TIMEOUT};
use crate::cli::table::{Align, Table};
use clap::Subcommand;
use meridian_proto::admin::{ImageDependentsReply, ImageRequest};
use serde_json::{json, Value};

/// `meridian admin image …`
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// The images built on an image: by its `org.opencontainers.image.base.*` annotations
    /// or by sharing its layers. Asked by tag, images built on digests the tag pointed at
    /// before are listed too, as outdated (what a base-image update should rebuild).
    Dependents {
        /// The base image: `repo:tag` or `repo@sha256:…`.
        reference: String,
    },
}

pub async fn run_image(admin: &Admin, cmd: ImageCommand, json: bool) -> Result<String, CliError> {
    let mut client = admin.client.clone();
    match cmd {
        ImageCommand::Dependents { reference } => {
            let reply = call(SHORT_CALL_TIMEOUT, client.image_dependents(admin.request(ImageRequest { reference }))).await?;
            Ok(if json { pretty(&dependents_json(&reply)) } else { render_dependents(&reply) })
        }
    }
}

fn dependents_json(reply: &ImageDependentsReply) -> Value {
    json!({
        "repository": reply.repository,
        "digest": reply.digest,
        "bases": reply.bases,
        "via": reply.via,
        "dependents": reply.dependents.iter().map(|d| json!({
            "repository": d.repository,
            "digest": d.digest,
            "tags": d.tags,
            "via": d.via,
            "base_digest": d.base_digest,
            "outdated": d.outdated,
        })).collect::<Vec<_>>(),
    })
}

/// `repo@digest: N images built on it`, a blank line, then IMAGE, TAGS, VIA, BUILT ON.
pub fn render_dependents(reply: &ImageDependentsReply) -> String {
    let count = match reply.dependents.len() {
        0 => "no image is built on it".to_string(),
        1 => "1 image built on it".to_string(),
        n => format!("{n} images built on it"),
    };
    let mut out = format!("{}@{}: {count}\n", or_dash(&reply.repository), or_dash(&reply.digest));
    if reply.dependents.is_empty() {
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&[("IMAGE", Align::Left), ("TAGS", Align::Left), ("VIA", Align::Left), ("BUILT ON", Align::Left)]);
    for d in &reply.dependents {
        let built_on = if d.outdated { format!("{} (outdated)", short(&d.base_digest)) } else { short(&d.base_digest) };
        let tags = if d.tags.is_empty() { "-".to_string() } else { d.tags.join(",") };
        table.row(vec![format!("{}@{}", d.repository, short(&d.digest)), tags, or_dash(&d.via), built_on]);
    }
    out.push_str(&table.render());
    out
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows ids.
fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::admin::Dependent;

    #[test]
    fn dependents_table_marks_outdated_ones() {
        let dep = |repo: &str, tag: &str, outdated: bool| Dependent {
            repository: repo.into(),
            digest: "sha256:0123456789abcdef0123".into(),
            tags: vec![tag.into()],
            via: "layers".into(),
            base_digest: "sha256:fedcba9876543210fedc".into(),
            outdated,
        };
        let reply = ImageDependentsReply {
            repository: "base/alpine".into(),
            digest: "sha256:aa".into(),
            bases: vec![],
            via: String::new(),
            dependents: vec![dep("app/a", "1", false), dep("app/b", "2", true)],
        };
        let text = render_dependents(&reply);
        assert!(text.starts_with("base/alpine@sha256:aa: 2 images built on it\n\nIMAGE"), "{text}");
        assert!(text.contains("app/a@sha256:0123456789ab  1"), "{text}");
        assert!(text.contains("sha256:fedcba987654 (outdated)"), "{text}");
        let empty = ImageDependentsReply { dependents: vec![], ..reply };
        assert_eq!(render_dependents(&empty), "base/alpine@sha256:aa: no image is built on it\n");
    }
}
