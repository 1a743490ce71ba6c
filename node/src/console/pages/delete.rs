//! Deleting a tag or a manifest: a confirmation page (`GET /ui/r/<name>/-/delete?ref=…`)
//! saying exactly what goes, then the form's POST. Each is the API request it stands for
//! — `DELETE /v2/<name>/manifests/<ref>` — authorized by the API's own table of what a
//! request needs, and made through the same registry call, so webhooks name the user.

use super::super::html::{self, Section};
use super::super::{csrf, see_other, with_cookies, Console, Visitor};
use super::repo::{manifest_url, short_digest, tags_url};
use crate::api::query::Query;
use crate::api::route::Endpoint;
use crate::auth::Caller;
use crate::registry::names::Reference;
use crate::registry::RegistryError;
use axum::http::{request::Parts, Method, StatusCode};
use axum::response::Response;
use maud::html;

/// Tags read at most when listing those a manifest delete takes with it.
const TAG_SCAN: usize = 10_000;

/// `/ui/r/<name>/-/delete?ref=<tag or digest>`.
pub fn delete_url(name: &str, reference: &str) -> String {
    format!("/ui/r/{name}/-/delete?ref={}", html::query_value(reference))
}

/// Whether `caller` may delete `reference` in `name`: what the registry API requires of
/// `DELETE /v2/<name>/manifests/<reference>`.
pub fn may_delete(console: &Console, caller: &Caller, name: &str, reference: &str) -> bool {
    let endpoint = Endpoint::Manifest { name, reference };
    crate::api::required_actions(&endpoint, &Method::DELETE)
        .is_some_and(|actions| console.auth.allows(caller, crate::auth::Need::Repo { name, actions }))
}

/// The confirmation page.
pub fn confirm(console: &Console, visitor: &Visitor, name: &str, raw_query: Option<&str>) -> Response {
    let query = Query::parse(raw_query);
    let Some(reference) = query.get("ref").and_then(|r| Reference::parse(r).ok()) else { return super::not_found() };
    let shown = reference_string(&reference);
    if !may_delete(console, &visitor.caller, name, &shown) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "You may not delete from this repository.");
    }
    let goes = match &reference {
        Reference::Tag(tag) => match console.store.resolve_tag(name, tag) {
            Ok(Some(d)) => html! {
                p #what { "The tag " strong { (tag) } " will be removed. The manifest it points at, "
                    span.mono { (short_digest(&d.to_string())) } ", stays, with any other tags on it." }
            },
            Ok(None) => return super::not_found(),
            Err(_) => return unavailable(),
        },
        Reference::Digest(d) => {
            match console.store.manifest_exists(name, d) {
                Ok(true) => {}
                Ok(false) => return super::not_found(),
                Err(_) => return unavailable(),
            }
            let tags = console.store.tags_of(name, &d.to_string(), TAG_SCAN).unwrap_or_default();
            html! {
                p #what { "The manifest " span.mono { (d.to_string()) } " will be deleted"
                    @if !tags.is_empty() { ", with its tags: " strong { (tags.join(", ")) } } "." }
                @if console.registry.trash_for.is_some() {
                    p.muted { "It goes to the trash first: `meridian admin trash restore` brings it back." }
                }
            }
        }
    };
    let token = visitor.csrf(console);
    let back = match &reference {
        Reference::Tag(_) => tags_url(name),
        Reference::Digest(d) => manifest_url(name, &d.to_string()),
    };
    let body = html! {
        h1 { "Delete from " (name) "?" }
        (goes)
        form.confirm method="post" action={ "/ui/r/" (name) "/-/delete" } {
            input type="hidden" name=(csrf::FIELD) value=(token);
            input type="hidden" name="ref" value=(shown);
            button.danger #confirm type="submit" { "Delete" }
            " "
            a #cancel href=(back) { "Cancel" }
        }
    };
    super::render(console, visitor, "Delete", Section::Repositories, body)
}

/// The confirmed delete (`POST /ui/r/<name>/-/delete`).
pub async fn submit(console: &Console, visitor: &Visitor, name: &str, parts: &Parts, body: axum::body::Body) -> Response {
    let fields = match super::read_form(body).await {
        Ok(f) => f,
        Err(too_large) => return too_large,
    };
    if !console.form_is_genuine(&parts.headers, &visitor.nonce, fields.get(csrf::FIELD)) {
        return super::forged();
    }
    let Some(reference) = fields.get("ref").and_then(|r| Reference::parse(r).ok()) else { return super::not_found() };
    let shown = reference_string(&reference);
    if !may_delete(console, &visitor.caller, name, &shown) {
        return super::message(StatusCode::FORBIDDEN, "Not allowed", "You may not delete from this repository.");
    }
    let origin = crate::api::change_origin(&console.registry, parts, visitor.caller.subject());
    match console.registry.delete_manifest(name, &reference, origin).await {
        Ok(()) => {
            tracing::info!(repo = %name, reference = %shown, user = visitor.user.as_deref().unwrap_or_default(), "console delete");
            with_cookies(see_other(&tags_url(name)), &visitor.set_cookies)
        }
        Err(RegistryError::ManifestUnknown(_)) => super::not_found(),
        Err(e) => super::message(StatusCode::SERVICE_UNAVAILABLE, "Not deleted", &format!("The delete did not go through: {e}")),
    }
}

fn reference_string(reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => d.to_string(),
    }
}

fn unavailable() -> Response {
    super::message(StatusCode::SERVICE_UNAVAILABLE, "Delete", "Cannot read this repository right now.")
}
