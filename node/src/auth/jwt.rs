//! Bearer tokens: compact JWS with HS256 (docker-token-jwt.md's claim set). The registry
//! is its own token server, so a symmetric key from the cluster state both signs and
//! verifies; clients treat tokens as opaque.

use super::scope::AccessEntry;
use crate::meta::records::SigningKey;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    /// The robot secret the token was issued for (robot tokens only): revoking that
    /// secret refuses the token too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
    /// A blob grant (see `auth::blob_grant`): the token is good for reading this one blob
    /// only, given in a redirect URL, and never as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    typ: String,
    alg: String,
    kid: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("bad token signature")]
    BadSignature,
}

fn mac(key: &SigningKey) -> Option<Hmac<Sha256>> {
    let secret = STANDARD.decode(&key.secret).ok()?;
    Hmac::<Sha256>::new_from_slice(&secret).ok()
}

/// Signs `claims` with `key` (its kid goes into the header).
pub fn sign(claims: &Claims, key: &SigningKey) -> Option<String> {
    let header = Header { typ: "JWT".into(), alg: "HS256".into(), kid: key.kid.clone() };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).ok()?)
    );
    let mut m = mac(key)?;
    m.update(signing_input.as_bytes());
    Some(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())))
}

/// Checks the signature with the key the header names; times and audience are the
/// caller's to check.
pub fn verify(token: &str, keys: &[SigningKey]) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Malformed);
    }
    let key = keys.iter().find(|k| k.kid == header.kid).ok_or(TokenError::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(key).ok_or(TokenError::UnknownKey)?;
    m.update(h.as_bytes());
    m.update(b".");
    m.update(c.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    URL_SAFE_NO_PAD.decode(c).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(TokenError::Malformed)
}

/// A new random key named `kid`.
pub fn new_key(kid: String, created_unix: u64) -> SigningKey {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    SigningKey { kid, secret: STANDARD.encode(secret), created_unix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let key = new_key("k1".into(), 1);
        let other = new_key("k1".into(), 1);
        let claims = Claims {
            iss: "meridian".into(),
            sub: "alice".into(),
            aud: "meridian".into(),
            exp: 10,
            nbf: 0,
            iat: 0,
            jti: "j".into(),
            sid: None,
            access: vec![AccessEntry { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into()] }],
            blob: None,
        };
        let t = sign(&claims, &key).unwrap();
        assert_eq!(verify(&t, &[key.clone()]).unwrap(), claims);
        assert_eq!(verify(&t, &[other]), Err(TokenError::BadSignature));
        assert_eq!(verify(&t, &[]), Err(TokenError::UnknownKey));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"iss":"meridian","sub":"root"}"#);
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), &[key.clone()]), Err(TokenError::BadSignature));
        assert_eq!(verify("a.b", &[key]), Err(TokenError::Malformed));
    }
}
