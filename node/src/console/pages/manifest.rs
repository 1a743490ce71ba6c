//! One manifest's page: what it is, its layers and config (platform, creation time,
//! labels, environment, history) or an index's platforms, what refers to it
//! (signatures, SBOMs, attestations) and its annotations. Everything in it is the
//! repository owner's text: shown as text, never as markup or a link target (links are
//! built only from validated names and parsed digests).

use super::super::html;
use super::super::image_view::{self, ConfigView, Desc, Kind};
use super::super::Console;
use super::repo::{config_bytes, manifest_url, short_digest, tags_url, Page};
use maud::{html, Markup};
use meridian_replication::Digest;

/// Tags read at most when listing those on this manifest.
const TAG_SCAN: usize = 10_000;

pub async fn show(console: &Console, caller: &crate::auth::Caller, name: &str, digest: &Digest) -> Page {
    let Some(stored) = console.store.manifest(name, digest)? else { return Ok(None) };
    let digest_s = digest.to_string();
    let Some(view) = image_view::manifest(&stored.media_type, &stored.body) else {
        let body = html! { h1 { (name) "@" (short_digest(&digest_s)) } p.error { "This manifest is not JSON." } };
        return Ok(Some((name.to_string(), body)));
    };
    let tags = console.store.tags_of(name, &digest_s, TAG_SCAN)?;
    let mut referrers = console.store.referrers(name, digest)?;
    let more_referrers = referrers.len().saturating_sub(image_view::MAX_ROWS);
    referrers.truncate(image_view::MAX_ROWS);
    let config = match (&view.kind, &view.config) {
        (Kind::Image, Some(c)) => config_bytes(console, name, &c.digest).await.and_then(|b| image_view::config(&b)),
        _ => None,
    };
    let kind = match view.kind {
        Kind::Image => "image",
        Kind::Index => "index",
        Kind::Artifact => "artifact",
    };
    let body = html! {
        p.crumbs { a href=(tags_url(name)) { (name) } }
        h1 #title { (name) "@" span.mono title=(digest_s) { (short_digest(&digest_s)) } }
        table #summary.facts {
            tr { th { "Digest" } td.mono { (digest_s) } }
            tr { th { "Kind" } td #kind { (kind) } }
            tr { th { "Media type" } td #media-type { (view.media_type) } }
            @if let Some(t) = &view.artifact_type { tr { th { "Artifact type" } td #artifact-type { (t) } } }
            tr { th { "Size" } td { (html::bytes(view.size(stored.body.len() as u64))) } }
            tr { th { "Tags" } td #tags-here { @if tags.is_empty() { span.muted { "none" } } @else { (tags.join(", ")) } } }
            @if let Some(s) = &view.subject {
                tr { th { "Refers to" } td { (digest_link(name, &s.digest)) } }
            }
        }
        p { a #replication href=(super::regions::replication_url(name, &digest_s)) { "Where is it? Blobs by region" } }
        @if super::delete::may_delete(console, caller, name, &digest_s) {
            p { a.delete #delete-manifest href=(super::delete::delete_url(name, &digest_s)) { "Delete this manifest" } }
        }
        @if !view.children.is_empty() {
            h2 { "Platforms" }
            table #platforms {
                thead { tr { th { "Platform" } th { "Manifest" } th { "Media type" } th.num { "Size" } } }
                tbody {
                    @for c in &view.children {
                        tr {
                            td.platform { (c.platform.as_deref().unwrap_or("—")) }
                            td { (digest_link(name, &c.digest)) }
                            td { (c.media_type) }
                            td.num { (html::bytes(c.size)) }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &config { (config_section(c)) }
        @else if view.kind == Kind::Image { p.muted #no-config { "The image's config could not be read in this region right now." } }
        @if let Some(c) = &view.config {
            @if view.kind != Kind::Image {
                h2 { "Config" }
                p { span.mono { (c.media_type) } ", " (html::bytes(c.size)) }
            }
        }
        @if !view.layers.is_empty() {
            h2 { "Layers" }
            table #layers {
                thead { tr { th { "#" } th { "Media type" } th.num { "Size" } th { "Digest" } } }
                tbody {
                    @for (i, l) in view.layers.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td.media-type { (l.media_type) }
                            td.num.size title=(l.size) { (html::bytes(l.size)) }
                            td.mono title=(l.digest) { (short_digest(&l.digest)) }
                        }
                    }
                }
            }
        }
        h2 { "Referrers" }
        @if referrers.is_empty() {
            p.muted #no-referrers { "Nothing refers to this manifest." }
        } @else {
            table #referrers {
                thead { tr { th { "Artifact type" } th { "Manifest" } th.num { "Size" } th { "Annotations" } } }
                tbody {
                    @for r in &referrers {
                        tr {
                            td.artifact-type { (r.artifact_type.as_deref().map(image_view::text).unwrap_or_default()) }
                            td { (digest_link(name, &r.digest)) }
                            td.num { (html::bytes(r.size)) }
                            td { (pairs(r.annotations.iter().flatten().take(image_view::MAX_ROWS).map(|(k, v)| (image_view::text(k), image_view::text(v))))) }
                        }
                    }
                }
            }
            @if more_referrers > 0 { p.muted { "And " (more_referrers) " more, not shown." } }
        }
        @if !view.annotations.is_empty() {
            h2 { "Annotations" }
            table #annotations { (rows(&view.annotations)) }
        }
        @for (d, label) in descriptors_with_annotations(&view) {
            h2 { "Annotations of " (label) }
            table.annotations { (rows(&d.annotations)) }
        }
    };
    Ok(Some((format!("{name}@{}", short_digest(&digest_s)), body)))
}

fn config_section(c: &ConfigView) -> Markup {
    html! {
        h2 { "Config" }
        table #config.facts {
            tr { th { "Platform" } td #platform { (c.platform.as_deref().unwrap_or("—")) } }
            tr { th { "Created" } td #created { (c.created.as_deref().unwrap_or("—")) } }
            @if let Some(e) = &c.entrypoint { tr { th { "Entrypoint" } td.mono { (e) } } }
            @if let Some(cmd) = &c.cmd { tr { th { "Command" } td.mono { (cmd) } } }
        }
        @if !c.labels.is_empty() {
            h3 { "Labels" }
            table #labels { (rows(&c.labels)) }
        }
        @if !c.env.is_empty() {
            h3 { "Environment" }
            ul #env.mono { @for e in &c.env { li { (e) } } }
        }
        @if !c.history.is_empty() {
            h3 { "History" }
            table #history {
                thead { tr { th { "Created" } th { "Created by" } th { "Comment" } } }
                tbody {
                    @for h in &c.history {
                        tr.empty-layer[h.empty_layer] {
                            td { (h.created) }
                            td.mono { (h.created_by) }
                            td { (h.comment) }
                        }
                    }
                }
            }
        }
    }
}

/// A digest linking to its manifest page in `name` (when it parses as a digest).
fn digest_link(name: &str, digest: &str) -> Markup {
    match Digest::parse(digest) {
        Ok(d) => html! { a.mono href=(manifest_url(name, &d.to_string())) title=(digest) { (short_digest(digest)) } },
        Err(_) => html! { span.mono { (digest) } },
    }
}

fn rows(pairs: &[(String, String)]) -> Markup {
    html! { @for (k, v) in pairs { tr { th.key { (k) } td.value { (v) } } } }
}

fn pairs(it: impl Iterator<Item = (String, String)>) -> Markup {
    html! { @for (k, v) in it { div { span.key { (k) } " = " span.value { (v) } } } }
}

/// Layers, config and children that carry annotations of their own, with a label.
fn descriptors_with_annotations(view: &image_view::ManifestView) -> Vec<(&Desc, String)> {
    let config = view.config.iter().map(|c| (c, "the config".to_string()));
    let layers = view.layers.iter().enumerate().map(|(i, l)| (l, format!("layer {}", i + 1)));
    let children = view.children.iter().map(|c| (c, short_digest(&c.digest)));
    config.chain(layers).chain(children).filter(|(d, _)| !d.annotations.is_empty()).collect()
}
