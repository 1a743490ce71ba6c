//! The console's page layout, formatting helpers and static assets.
//!
//! Every page is a maud template: text and attribute values are escaped by maud, and the
//! one way around it (`PreEscaped`) is used in this file only, for maud's own DOCTYPE
//! (a unit test keeps it that way). Untrusted text — anything a repository's owner
//! controls — is therefore only ever a text node or a quoted attribute value.

use super::csrf;
use maud::{html, Markup, DOCTYPE};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// An asset served under `/ui/static/<hash>/<name>`: the hash changes with the content,
/// so browsers may cache it for ever.
pub struct Asset {
    pub name: &'static str,
    pub body: &'static str,
    pub content_type: &'static str,
    pub hash: String,
}

impl Asset {
    fn new(name: &'static str, body: &'static str, content_type: &'static str) -> Asset {
        let hash = hex::encode(&Sha256::digest(body.as_bytes())[..4]);
        Asset { name, body, content_type, hash }
    }

    pub fn url(&self) -> String {
        format!("/ui/static/{}/{}", self.hash, self.name)
    }
}

pub static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [Asset::new("console.css", CSS, "text/css; charset=utf-8"), Asset::new("console.js", JS, "text/javascript; charset=utf-8")]
});

/// Who is looking, for the page header.
pub struct Viewer<'a> {
    /// The user's name (`None` with auth off).
    pub user: Option<&'a str>,
    /// The CSRF token for the logout form.
    pub csrf: &'a str,
    /// An administrator: the Regions section is shown.
    pub admin: bool,
    /// May manage identities: the Access section is shown.
    pub access: bool,
}

/// Which section of the header is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Repositories,
    Regions,
    Access,
    Login,
}

/// A whole page: the header with navigation (when someone is logged in, or auth is
/// off), then `body`.
pub fn page(title: &str, section: Section, viewer: Option<&Viewer<'_>>, body: Markup) -> Markup {
    let [css, js] = &*ASSETS;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Meridian" }
                link rel="stylesheet" href=(css.url());
                script src=(js.url()) defer {}
            }
            body {
                header {
                    span.brand { "Meridian" }
                    @if let Some(viewer) = viewer {
                        nav {
                            a href="/ui/repos" class=[(section == Section::Repositories).then_some("here")] { "Repositories" }
                            @if viewer.admin {
                                a #nav-regions href="/ui/regions" class=[(section == Section::Regions).then_some("here")] { "Regions" }
                            }
                            @if viewer.access {
                                a #nav-access href="/ui/access" class=[(section == Section::Access).then_some("here")] { "Access" }
                            }
                        }
                        @if let Some(user) = viewer.user {
                            div.who {
                                span #user { (user) }
                                form.inline method="post" action="/ui/logout" {
                                    input type="hidden" name=(csrf::FIELD) value=(viewer.csrf);
                                    button #logout type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `1234567` → `1.2 MB` (decimal units, as registries and `docker images` show sizes).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix seconds → `2026-12-03 17:24 UTC`.
pub fn time(unix: u64) -> String {
    let iso = crate::auth::rfc3339(unix);
    format!("{} {} UTC", &iso[..10], &iso[11..16])
}

/// A query-string value, percent-encoded.
pub fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_as_people_expect() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(bytes(3_000_000_000), "3.0 GB");
        assert_eq!(time(0), "1970-01-01 00:00 UTC");
        assert_eq!(time(1_796_318_640), "2026-12-03 17:24 UTC");
        assert_eq!(time(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn untrusted_text_is_escaped_and_pre_escaped_stays_here() {
        let evil = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
        let out = html! { td title=(evil) { (evil) } }.into_string();
        assert!(!out.contains("<script>") && !out.contains("<img"), "{out}");
        assert!(out.contains("&lt;script&gt;") && out.contains("&quot;&gt;&lt;img"), "{out}");
        // Only this file may opt out of escaping.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/console");
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("html.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(!text.contains("PreEscaped"), "{} opts out of escaping", path.display());
                }
            }
        }
    }

    #[test]
    fn the_script_never_parses_html() {
        for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"] {
            assert!(!JS.contains(banned), "console.js uses {banned}");
        }
    }
}
