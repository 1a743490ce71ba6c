//! Cross-site request forgery: every console POST passes two checks.
//!
//! 1. A synchronizer token in the form (`_csrf`), a MAC of the session's nonce (before
//!    login: of the `meridian_login` pre-session cookie's nonce). A page of another site
//!    cannot read it, so it cannot post it.
//! 2. The browser's word on where the request comes from: `Origin` must be this
//!    console's own origin; without `Origin`, `Sec-Fetch-Site` must say `same-origin`;
//!    with neither the POST is refused (every browser the console supports sends one).

use super::session;
use crate::meta::records::SigningKey;
use axum::http::HeaderMap;

/// The form field carrying the token.
pub const FIELD: &str = "_csrf";

/// The token bound to `nonce`, under the newest key.
pub fn token(keys: &[SigningKey], nonce: &str) -> String {
    keys.last().and_then(|k| session::tag(k, &[b"csrf", nonce.as_bytes()])).unwrap_or_default()
}

/// Whether `sent` is the token of `nonce` under any key the cluster holds.
pub fn token_matches(keys: &[SigningKey], nonce: &str, sent: &str) -> bool {
    !nonce.is_empty() && keys.iter().any(|k| session::tag_matches(k, &[b"csrf", nonce.as_bytes()], sent))
}

/// Whether the browser says the request comes from one of `origins` (each
/// `scheme://host[:port]`).
pub fn same_origin(headers: &HeaderMap, origins: &[String]) -> bool {
    if let Some(origin) = headers.get("origin") {
        let Ok(origin) = origin.to_str() else { return false };
        return origins.iter().any(|o| o.eq_ignore_ascii_case(origin));
    }
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("same-origin")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn keys() -> Vec<SigningKey> {
        let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        vec![SigningKey { kid: "k1".into(), secret, created_unix: 0 }]
    }

    #[test]
    fn a_token_is_bound_to_its_nonce() {
        let keys = keys();
        let t = token(&keys, "nonce-a");
        assert!(token_matches(&keys, "nonce-a", &t));
        assert!(!token_matches(&keys, "nonce-b", &t));
        assert!(!token_matches(&keys, "nonce-a", ""));
        assert!(!token_matches(&keys, "", &token(&keys, "")));
        assert!(!token_matches(&[], "nonce-a", &t));
    }

    #[test]
    fn origin_then_fetch_metadata_decide() {
        let own = vec!["http://127.0.0.1:5000".to_string()];
        let mut h = HeaderMap::new();
        assert!(!same_origin(&h, &own), "neither header");
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(same_origin(&h, &own));
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h, &own), "Origin wins over Sec-Fetch-Site");
        h.insert("origin", "http://127.0.0.1:5000".parse().unwrap());
        assert!(same_origin(&h, &own));
        h.insert("origin", "null".parse().unwrap());
        assert!(!same_origin(&h, &own));
    }
}
