//! The web console, served by every node under `/ui/` on its registry listener.
//!
//! One door: `routes` builds the console's router, which the composition root hands to
//! the registry API to nest at `/ui`. Pages are rendered on the server (`html`), sessions
//! are stateless cookies derived from the replicated token-signing keys (`session`),
//! every form is checked against forgery (`csrf`), and what a visitor sees and may do is
//! what the registry API lets the same user do (`crate::auth`).

mod csrf;
mod html;
mod image_view;
mod pages;
mod session;

use crate::auth::{Auth, Caller};
use crate::config::ConsoleConfig;
use crate::meta::{Meta, Store};
use crate::registry::Registry;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the console reads and acts through.
pub struct Console {
    pub auth: Arc<Auth>,
    pub store: Store,
    pub meta: Meta,
    pub registry: Arc<Registry>,
    /// The cluster's regions and where blobs are, as `meridian admin` sees them.
    pub views: crate::cluster::views::ClusterViews,
    /// Users, robot tokens and scope maps, changed as `meridian admin` changes them.
    pub identities: Arc<crate::cluster::identity_admin::IdentityAdmin>,
    /// The last probe of the regions (see `pages::regions`).
    pub regions_cache: tokio::sync::Mutex<Option<(Instant, Arc<pages::regions::Snapshot>)>>,
    pub cfg: ConsoleConfig,
    /// The listener serves HTTPS, or `public_url` is `https://`: cookies are `Secure`
    /// with the `__Host-` prefix.
    pub secure: bool,
    /// The listener serves HTTPS (the scheme of the request's own origin).
    pub tls: bool,
    /// `public_url`'s origin (`scheme://host[:port]`), where forms may come from too.
    pub public_origin: Option<String>,
}

/// The console's routes, to be nested at `/ui` (paths here are relative to it).
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(|| async { see_other("/ui/repos") }))
        .route("/login", get(pages::login::show).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/repos", get(pages::repos::show))
        .route("/r/{*path}", get(pages::repo::show).post(pages::repo::post))
        .route("/regions", get(pages::regions::show))
        .route("/access", get(pages::access::show))
        .route("/access/{action}", post(pages::access::submit))
        .route("/live/regions", get(pages::regions::live))
        .route("/live/r/{*path}", get(pages::repo::live))
        .route("/static/{hash}/{name}", get(asset))
        .fallback(|| async { pages::not_found() })
        .layer(axum::middleware::from_fn(headers))
        .with_state(Arc::new(console))
}

/// Headers every console response carries: a Content-Security-Policy that allows no
/// inline script, style or foreign origin (a second wall behind escaping), no sniffing,
/// no framing, no caching of pages, and how long the server took (`Server-Timing`).
async fn headers(req: Request, next: axum::middleware::Next) -> Response {
    crate::observability::http::label_request("console", "");
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={took:.2}")) {
        h.insert("server-timing", v);
    }
    resp
}

/// `/ui/static/<hash>/<name>`: an asset of this build, cacheable for ever.
async fn asset(Path((hash, name)): Path<(String, String)>) -> Response {
    match html::ASSETS.iter().find(|a| a.name == name && a.hash == hash) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => pages::not_found(),
    }
}

/// Someone looking at the console: who the registry takes them for, and the nonce their
/// forms' CSRF tokens are bound to.
pub struct Visitor {
    pub caller: Caller,
    /// The logged-in user (`None` with auth off).
    pub user: Option<String>,
    /// The session's nonce (with auth off: the pre-session cookie's).
    pub nonce: String,
    /// Cookies to send with the response (a re-issued session, a new pre-session nonce).
    pub set_cookies: Vec<String>,
}

impl Visitor {
    /// This visitor's CSRF token.
    pub fn csrf(&self, console: &Console) -> String {
        csrf::token(&console.store.signing_keys().unwrap_or_default(), &self.nonce)
    }
}

impl Console {
    fn session_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-meridian_session"
        } else {
            "meridian_session"
        }
    }

    fn login_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-meridian_login"
        } else {
            "meridian_login"
        }
    }

    /// `Set-Cookie` for `name=value` living `max_age` seconds (0: delete it now).
    fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let scope = if self.secure { "Path=/; Secure" } else { "Path=/ui" };
        format!("{name}={value}; {scope}; HttpOnly; SameSite=Strict; Max-Age={max_age}")
    }

    /// Who sent `headers`: a valid session's user (its cookie re-issued once a minute,
    /// so the idle clock restarts), anyone with auth off; `None` means "log in first".
    pub fn visitor(&self, headers: &HeaderMap) -> Option<Visitor> {
        if !self.auth.enabled() {
            let (nonce, set_cookies) = self.pre_session(headers);
            return Some(Visitor { caller: Caller::Open, user: None, nonce, set_cookies });
        }
        let cookie = cookie_value(headers, self.session_cookie())?;
        let keys = self.store.signing_keys().ok()?;
        let now = now_unix();
        let (session, key, user) =
            session::open(cookie, &keys, now, self.cfg.idle_timeout_secs, |name| self.store.user(name).ok().flatten()).ok()?;
        let caller = self.auth.user_caller(&session.u)?;
        let mut set_cookies = Vec::new();
        if session::due_for_reissue(session.seen, now, self.cfg.idle_timeout_secs) {
            if let Some(renewed) = session::reissue(key, &session, &user, now) {
                set_cookies.push(self.cookie(self.session_cookie(), &renewed, session.exp.saturating_sub(now)));
            }
        }
        Some(Visitor { caller, user: Some(session.u), nonce: session.n, set_cookies })
    }

    /// The pre-session nonce (`meridian_login`), made and set when missing: what CSRF
    /// tokens bind to before a session exists.
    fn pre_session(&self, headers: &HeaderMap) -> (String, Vec<String>) {
        match cookie_value(headers, self.login_cookie()) {
            Some(n) if n.len() == 22 => (n.to_string(), Vec::new()),
            _ => {
                let n = session::nonce();
                let set = self.cookie(self.login_cookie(), &n, PRE_SESSION_SECS);
                (n, vec![set])
            }
        }
    }

    /// The origins a form may be posted from: the request's own, and `public_url`'s.
    fn origins(&self, headers: &HeaderMap) -> Vec<String> {
        let mut origins = Vec::with_capacity(2);
        if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
            origins.push(format!("{}://{host}", if self.tls { "https" } else { "http" }));
        }
        origins.extend(self.public_origin.clone());
        origins
    }

    /// Both CSRF checks (see `csrf`) for a form carrying `sent` from a visitor whose
    /// nonce is `nonce`.
    fn form_is_genuine(&self, headers: &HeaderMap, nonce: &str, sent: Option<&str>) -> bool {
        let keys = self.store.signing_keys().unwrap_or_default();
        csrf::same_origin(headers, &self.origins(headers)) && sent.is_some_and(|t| csrf::token_matches(&keys, nonce, t))
    }
}

/// How long a pre-session nonce (the login form's CSRF binding) lives.
const PRE_SESSION_SECS: u64 = 600;

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `303 See Other` to `location` (a path on this console).
fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `resp` with `cookies` appended as `Set-Cookie` headers.
fn with_cookies(mut resp: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The origin (`scheme://host[:port]`) of a URL such as `public_url`.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_url_origins() {
        assert_eq!(super::origin_of("https://EU.registry.example.com/path").as_deref(), Some("https://eu.registry.example.com"));
        assert_eq!(super::origin_of("http://127.0.0.1:5000").as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(super::origin_of("nope"), None);
    }
}
