//! A repository's pages, under `/ui/r/<name>/-/…` (no component of a repository name
//! can be a lone `-`, so `/-/` splits the path without ambiguity): its tags
//! (`/-/tags`) and one manifest (`/-/m/<digest>`, in `manifest.rs`). Both need pull on
//! the repository, exactly as the registry API's reads do, and read the state directly:
//! browsing is not pulling (no pull time, no usage recorded).

use super::super::html::{self, Section};
use super::super::image_view::{self, Kind, ManifestView};
use super::super::{see_other, Console};
use crate::api::query::Query;
use crate::auth::scope::Action;
use crate::auth::Need;
use crate::registry::names::validate_name;
use crate::registry::BlobSource;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use meridian_replication::Digest;
use std::sync::Arc;

/// The largest config blob read for a manifest page.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest config read for a tag list's platform column (one per row).
const MAX_LISTED_CONFIG_BYTES: u64 = 64 << 10;

/// `/ui/r/<name>/-/tags`.
pub fn tags_url(name: &str) -> String {
    format!("/ui/r/{name}/-/tags")
}

/// `/ui/r/<name>/-/m/<digest>`.
pub fn manifest_url(name: &str, digest: &str) -> String {
    format!("/ui/r/{name}/-/m/{digest}")
}

/// Which page of a repository a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Tags(&'a str),
    Delete(&'a str),
    Manifest(&'a str, Digest),
    Replication(&'a str, Digest),
}

fn parse(path: &str) -> Option<Target<'_>> {
    let (name, rest) = path.split_once("/-/")?;
    validate_name(name).ok()?;
    match rest.split_once('/') {
        None if rest == "tags" => Some(Target::Tags(name)),
        None if rest == "delete" => Some(Target::Delete(name)),
        Some(("m", rest)) => match rest.split_once('/') {
            None => Some(Target::Manifest(name, Digest::parse(rest).ok()?)),
            Some((digest, "replication")) => Some(Target::Replication(name, Digest::parse(digest).ok()?)),
            Some(_) => None,
        },
        _ => None,
    }
}

/// `GET /ui/r/{*path}`.
pub async fn show(
    State(console): State<Arc<Console>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return super::log_in_first(&format!("/ui/r/{path}"), raw.as_deref()) };
    let Some(target) = parse(&path) else { return super::not_found() };
    let name = match &target {
        Target::Tags(n) | Target::Delete(n) | Target::Manifest(n, _) | Target::Replication(n, _) => *n,
    };
    if !console.auth.allows(&visitor.caller, Need::Repo { name, actions: &[Action::Pull] }) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "You may not pull from this repository.");
    }
    let query = Query::parse(raw.as_deref());
    let page = match target {
        Target::Delete(name) => return super::delete::confirm(&console, &visitor, name, raw.as_deref()),
        Target::Tags(name) => tags(&console, &visitor.caller, &headers, name, query.get("after").filter(|a| !a.is_empty())).await,
        Target::Manifest(name, digest) => super::manifest::show(&console, &visitor.caller, name, &digest).await,
        Target::Replication(name, digest) => super::regions::matrix_page(&console, name, &digest),
    };
    match page {
        Ok(Some((title, body))) => super::render(&console, &visitor, &title, Section::Repositories, body),
        Ok(None) => super::not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "console: reading a repository failed");
            super::message(StatusCode::SERVICE_UNAVAILABLE, "Repository", "Cannot read this repository right now.")
        }
    }
}

/// `GET /ui/live/r/{*path}`: an image's replication matrix as JSON, for live updates.
pub async fn live(State(console): State<Arc<Console>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(visitor) = console.visitor(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    let Some(Target::Replication(name, digest)) = parse(&path) else { return StatusCode::NOT_FOUND.into_response() };
    if !console.auth.allows(&visitor.caller, Need::Repo { name, actions: &[Action::Pull] }) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match console.views.image_matrix(name, &digest) {
        Ok(m) => super::regions::matrix_json(&m),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `POST /ui/r/{*path}`: the confirmed delete (`…/-/delete`).
pub async fn post(State(console): State<Arc<Console>>, Path(path): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(visitor) = console.visitor(&parts.headers) else { return see_other("/ui/login") };
    match parse(&path) {
        Some(Target::Delete(name)) => super::delete::submit(&console, &visitor, name, &parts, body).await,
        _ => super::not_found(),
    }
}

/// A page's title and body, `None` for "no such repository or manifest".
pub type Page = Result<Option<(String, Markup)>, crate::meta::store::StoreError>;

async fn tags(console: &Console, caller: &crate::auth::Caller, headers: &HeaderMap, name: &str, after: Option<&str>) -> Page {
    if !console.store.repo_exists(name)? {
        return Ok(None);
    }
    let rows = console.cfg.rows();
    let mut tags = console.store.tag_rows(name, after, rows + 1)?;
    let more = tags.len() > rows;
    tags.truncate(rows);
    let mut shown = Vec::with_capacity(tags.len());
    for t in &tags {
        let view = Digest::parse(&t.digest)
            .ok()
            .and_then(|d| console.store.manifest(name, &d).ok().flatten())
            .and_then(|m| image_view::manifest(&m.media_type, &m.body).map(|v| (v, m.body.len() as u64)));
        let platform = match view.as_ref().and_then(|(v, _)| v.config.as_ref().filter(|_| v.kind == Kind::Image)) {
            Some(config) => local_platform(console, &config.digest).await,
            None => None,
        };
        shown.push((t, view, platform));
    }
    let host = pull_host(console, headers);
    let first_tag = tags.first().map(|t| t.tag.as_str()).unwrap_or("latest");
    let deletes = super::delete::may_delete(console, caller, name, first_tag);
    let body = html! {
        h1 { (name) }
        (pull_commands(console, &host, name, first_tag))
        @if shown.is_empty() {
            p.muted #empty { "No tags." }
        } @else {
            table #tags {
                thead { tr { th { "Tag" } th { "Digest" } th { "Platforms" } th.num { "Size" } th { "Pushed" } @if deletes { th {} } } }
                tbody {
                    @for (t, view, platform) in &shown {
                        tr {
                            td.tag { a href=(manifest_url(name, &t.digest)) { (t.tag) } }
                            td.digest.mono title=(t.digest) { (short_digest(&t.digest)) }
                            td.platforms { (platforms(view.as_ref().map(|v| &v.0), platform.as_deref())) }
                            td.num.size { @if let Some((v, len)) = view { (html::bytes(v.size(*len))) } @else { "—" } }
                            td.pushed { @if let Some(at) = t.tagged_unix { (html::time(at)) } @else { "—" } }
                            @if deletes { td { a.delete href=(super::delete::delete_url(name, &t.tag)) { "Delete" } } }
                        }
                    }
                }
            }
        }
        div.pager {
            @if after.is_some() { a #first href=(tags_url(name)) { "First page" } }
            @if more {
                @if let Some(last) = tags.last() {
                    a #next href={ (tags_url(name)) "?after=" (html::query_value(&last.tag)) } { "Next page" }
                }
            }
        }
    };
    Ok(Some((name.to_string(), body)))
}

/// `sha256:0123456789ab…`.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        // By characters: a digest in a manifest the registry never checked (an index's
        // `layers`, say) may hold anything.
        Some((alg, hex)) if hex.chars().count() > 12 => format!("{alg}:{}…", hex.chars().take(12).collect::<String>()),
        _ => digest.to_string(),
    }
}

/// An image's platform (`image_platform`, from its config when this node holds it), an
/// index's platforms, or an artifact's type.
fn platforms(view: Option<&ManifestView>, image_platform: Option<&str>) -> Markup {
    let Some(view) = view else { return html! { "—" } };
    match view.kind {
        Kind::Index => {
            let list: Vec<&str> = view.children.iter().filter_map(|c| c.platform.as_deref()).collect();
            html! { (list.join(", ")) }
        }
        Kind::Image => html! { (image_platform.unwrap_or("?")) },
        Kind::Artifact => html! { span.muted { (view.artifact_type.as_deref().unwrap_or("artifact")) } },
    }
}

/// An image's platform from its config — only when the blob is on this node's disk;
/// a list never fetches across regions (the manifest page does).
async fn local_platform(console: &Console, config_digest: &str) -> Option<String> {
    let digest = Digest::parse(config_digest).ok()?;
    let reader = console.registry.blobs.open(&digest).await.ok()??;
    let bytes = BlobSource::Local(reader).read_small(MAX_LISTED_CONFIG_BYTES).await?;
    image_view::config(&bytes)?.platform
}

/// The config blob of an image, for its page: read locally, or fetched from a region
/// that holds it as a pull would (without recording a pull).
pub async fn config_bytes(console: &Console, repo: &str, digest: &str) -> Option<Vec<u8>> {
    let digest = Digest::parse(digest).ok()?;
    // Sized from the state first: a "config" naming a big layer never starts a transfer.
    if console.registry.blob_size(repo, &digest).await.ok()? > MAX_CONFIG_BYTES {
        return None;
    }
    console.registry.open_blob(repo, &digest).await.ok()?.read_small(MAX_CONFIG_BYTES).await
}

/// Where clients should pull from: `public_url`'s host, else the request's.
fn pull_host(console: &Console, headers: &HeaderMap) -> String {
    if let Some(origin) = &console.public_origin {
        if let Some((_, host)) = origin.split_once("://") {
            return host.to_string();
        }
    }
    headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("registry").to_string()
}

/// Copyable pull commands for docker, podman, skopeo and oras.
fn pull_commands(console: &Console, host: &str, name: &str, tag: &str) -> Markup {
    let plain = !console.secure;
    let image = format!("{host}/{name}:{tag}");
    let last = name.rsplit('/').next().unwrap_or(name);
    let commands = [
        ("docker", format!("docker pull {image}")),
        ("podman", format!("podman pull {}{image}", if plain { "--tls-verify=false " } else { "" })),
        ("skopeo", format!("skopeo copy {}docker://{image} oci:{last}:{tag}", if plain { "--src-tls-verify=false " } else { "" })),
        ("oras", format!("oras pull {}{image}", if plain { "--plain-http " } else { "" })),
    ];
    html! {
        div.pull #pull {
            @for (client, command) in &commands {
                div.command {
                    span.client { (client) }
                    input.mono type="text" readonly value=(command) data-client=(client);
                    button type="button" data-copy=(command) { "Copy" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_the_lone_dash() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert_eq!(parse("team/app/-/tags"), Some(Target::Tags("team/app")));
        assert_eq!(parse(&format!("team/app/-/m/{d}")), Some(Target::Manifest("team/app", Digest::parse(&d).unwrap())));
        for bad in ["team/app/tags", "Team/app/-/tags", "team/app/-/m/sha256:zz", "team/app/-/x", "-/tags", "team/app/-/tags/x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(short_digest(&d), format!("sha256:{}…", "a".repeat(12)));
        assert_eq!(short_digest("sha256:ééééééééééééé"), "sha256:éééééééééééé…");
    }
}
