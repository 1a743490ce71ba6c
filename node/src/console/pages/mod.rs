//! The console's pages, one file per page (or pair of form handlers).

pub mod access;
pub mod delete;
pub mod login;
pub mod manifest;
pub mod regions;
pub mod repo;
pub mod repos;

use super::html::{self, Section, Viewer};
use super::{with_cookies, Console, Visitor};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;

/// A page saying only `message`, with `status`.
pub fn message(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        h1 { (title) }
        p.error #message { (message) }
        p { a href="/ui/repos" { "Back to the repositories" } }
    };
    (status, Html(html::page(title, Section::Login, None, body).into_string())).into_response()
}

pub fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// A form that failed the CSRF checks.
pub fn forged() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form has expired or was sent from another site. Reload the page and try again.",
    )
}

/// A whole page for `visitor`: the layout around `body`, with any cookies to set.
pub fn render(console: &Console, visitor: &Visitor, title: &str, section: Section, body: maud::Markup) -> Response {
    let csrf = visitor.csrf(console);
    let viewer = Viewer {
        user: visitor.user.as_deref(),
        csrf: &csrf,
        admin: regions::may_see_regions(console, visitor),
        access: access::may_manage(console, visitor),
    };
    let page = html::page(title, section, Some(&viewer), body);
    with_cookies(Html(page.into_string()).into_response(), &visitor.set_cookies)
}

/// The largest console form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A posted form's fields; a form over `MAX_FORM_BYTES` is answered 413 (the `Err`).
pub async fn read_form(body: axum::body::Body) -> Result<crate::api::query::Query, Response> {
    match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(bytes) => Ok(crate::api::query::Query::parse(std::str::from_utf8(&bytes).ok())),
        Err(_) => Err(message(StatusCode::PAYLOAD_TOO_LARGE, "Form too large", "The form was too large.")),
    }
}

/// To the login page, which comes back to `path` (with its query) afterwards.
pub fn log_in_first(path: &str, query: Option<&str>) -> Response {
    let here = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    super::see_other(&format!("/ui/login?next={}", html::query_value(&here)))
}
