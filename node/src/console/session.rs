//! Console sessions: stateless cookies signed with keys derived from the cluster's
//! token-signing keys, so a session made in one region verifies in every region and no
//! session table is replicated.
//!
//! A cookie is `1.<kid>.<b64url(payload JSON)>.<b64url(HMAC(K, payload))>`, where
//! `K = HMAC(signing key, "meridian/console/session/v1")`: the label keeps cookies and
//! bearer tokens apart (neither passes for the other). The payload carries the user, the
//! login time, when it was last re-issued (idle timeout), its end, a random nonce (what
//! the CSRF token is bound to) and the user's *credential generation* — a MAC of the
//! stored password hash. Every verification reads the user's record: a removed user has
//! none, a changed password has a new hash (argon2 salts afresh), so either ends every
//! session in each region as soon as that region applies it.

use crate::meta::records::{SigningKey, UserRecord};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const LABEL: &[u8] = b"meridian/console/session/v1";
const VERSION: &str = "1";
/// Clock skew between regions tolerated on a session's times.
const LEEWAY_SECS: u64 = 30;
/// A session last re-issued longer ago than this (or than half the idle timeout, if
/// shorter) gets a fresh cookie (sliding idle time).
const REISSUE_AFTER_SECS: u64 = 60;

/// Whether a session last re-issued at `seen` gets a fresh cookie at `now`.
pub fn due_for_reissue(seen: u64, now: u64, idle_secs: u64) -> bool {
    now.saturating_sub(seen) >= REISSUE_AFTER_SECS.min(idle_secs / 2).max(1)
}

/// What a session cookie says, once verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user's name.
    pub u: String,
    /// Logged in at (Unix seconds).
    pub iat: u64,
    /// Last re-issued at.
    pub seen: u64,
    /// Ends at.
    pub exp: u64,
    /// The credential generation (b64url of 16 bytes).
    pub g: String,
    /// The nonce CSRF tokens are bound to (b64url of 16 bytes).
    pub n: String,
}

/// Why a cookie does not hold a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    Idle,
    UserRemoved,
    PasswordChanged,
}

/// The session key derived from one token-signing key.
fn session_key(key: &SigningKey) -> Option<Hmac<Sha256>> {
    let secret = STANDARD.decode(&key.secret).ok()?;
    let mut derive = Hmac::<Sha256>::new_from_slice(&secret).ok()?;
    derive.update(LABEL);
    Hmac::<Sha256>::new_from_slice(&derive.finalize().into_bytes()).ok()
}

/// A MAC over `parts` (each length-prefixed) with the session key of `key`, not yet
/// finalized: `finalize` it, or `verify_truncated_left` a tag against it.
pub fn mac(key: &SigningKey, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
    let mut m = session_key(key)?;
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
    Some(m)
}

/// Whether `tag` (b64url) is the first `TAG_BYTES` of the MAC of `parts`; the comparison
/// takes the same time wherever they differ.
pub fn tag_matches(key: &SigningKey, parts: &[&[u8]], tag: &str) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else { return false };
    tag.len() == TAG_BYTES && mac(key, parts).is_some_and(|m| m.verify_truncated_left(&tag).is_ok())
}

/// The first `TAG_BYTES` of the MAC of `parts`, b64url.
pub fn tag(key: &SigningKey, parts: &[&[u8]]) -> Option<String> {
    let full = mac(key, parts)?.finalize().into_bytes();
    Some(URL_SAFE_NO_PAD.encode(&full[..TAG_BYTES]))
}

/// Bytes of a credential generation or a CSRF token.
const TAG_BYTES: usize = 16;

/// The credential generation of `user` under `key`.
fn generation(key: &SigningKey, user: &UserRecord) -> Option<String> {
    tag(key, &[b"gen", user.password_hash.as_bytes()])
}

/// A fresh random nonce.
pub fn nonce() -> String {
    let mut n = [0u8; 16];
    rand::fill(&mut n);
    URL_SAFE_NO_PAD.encode(n)
}

/// A new session for `user`, logged in `now`, signed with `key` (the newest).
pub fn start(key: &SigningKey, user: &UserRecord, now: u64, ttl_secs: u64) -> Option<(Session, String)> {
    let session =
        Session { u: user.name.clone(), iat: now, seen: now, exp: now.saturating_add(ttl_secs.max(1)), g: generation(key, user)?, n: nonce() };
    let cookie = seal(key, &session)?;
    Some((session, cookie))
}

/// The same session, re-issued `now` (its idle clock restarted), under `key`.
pub fn reissue(key: &SigningKey, session: &Session, user: &UserRecord, now: u64) -> Option<String> {
    let renewed = Session { seen: now, g: generation(key, user)?, ..session.clone() };
    seal(key, &renewed)
}

fn seal(key: &SigningKey, session: &Session) -> Option<String> {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(session).ok()?);
    let sig = mac(key, &[key.kid.as_bytes(), payload.as_bytes()])?.finalize().into_bytes();
    Some(format!("{VERSION}.{}.{payload}.{}", key.kid, URL_SAFE_NO_PAD.encode(sig)))
}

/// Verifies `cookie` against `keys` at `now`: signature, lifetime, idle time, and that
/// its user still exists with the password it logged in with (`user_of`). Returns the
/// session and the key that signed it.
pub fn open<'k>(
    cookie: &str,
    keys: &'k [SigningKey],
    now: u64,
    idle_secs: u64,
    user_of: impl FnOnce(&str) -> Option<UserRecord>,
) -> Result<(Session, &'k SigningKey, UserRecord), Refused> {
    let mut parts = cookie.split('.');
    let (Some(VERSION), Some(kid), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    let key = keys.iter().find(|k| k.kid == kid).ok_or(Refused::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| Refused::Malformed)?;
    let m = mac(key, &[kid.as_bytes(), payload.as_bytes()]).ok_or(Refused::UnknownKey)?;
    // Constant-time comparison.
    m.verify_slice(&sig).map_err(|_| Refused::BadSignature)?;
    let session: Session = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Refused::Malformed)?;
    if now >= session.exp.saturating_add(LEEWAY_SECS) || session.iat > now + LEEWAY_SECS {
        return Err(Refused::Expired);
    }
    if now.saturating_sub(session.seen) >= idle_secs.max(1).saturating_add(LEEWAY_SECS) {
        return Err(Refused::Idle);
    }
    let user = user_of(&session.u).ok_or(Refused::UserRemoved)?;
    if !tag_matches(key, &[b"gen", user.password_hash.as_bytes()], &session.g) {
        return Err(Refused::PasswordChanged);
    }
    Ok((session, key, user))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::records::Role;

    fn key(kid: &str, byte: u8) -> SigningKey {
        SigningKey { kid: kid.into(), secret: STANDARD.encode([byte; 32]), created_unix: 0 }
    }

    fn user(hash: &str, role: Role) -> UserRecord {
        UserRecord { name: "dev".into(), password_hash: hash.into(), role, created_unix: 0 }
    }

    #[test]
    fn a_session_round_trips_and_survives_a_role_change() {
        let keys = [key("k1", 1), key("k2", 2)];
        let (session, cookie) = start(&keys[1], &user("hash-a", Role::Reader), 1000, 3600).unwrap();
        let (opened, signer, _) = open(&cookie, &keys, 1010, 600, |_| Some(user("hash-a", Role::Admin))).unwrap();
        assert_eq!(opened, session);
        assert_eq!(signer.kid, "k2");
        assert_eq!(session.n.len(), 22);
    }

    #[test]
    fn tampering_unknown_keys_and_time_are_refused() {
        let keys = [key("k1", 1)];
        let u = |_: &str| Some(user("hash-a", Role::Writer));
        let (_, cookie) = start(&keys[0], &user("hash-a", Role::Writer), 1000, 3600).unwrap();
        let parts: Vec<&str> = cookie.split('.').collect();
        // Another user's name in the payload, the old signature kept.
        let forged = URL_SAFE_NO_PAD.encode(br#"{"u":"admin","iat":1000,"seen":1000,"exp":99999,"g":"x","n":"y"}"#);
        let tampered = format!("{}.{}.{forged}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(open(&tampered, &keys, 1001, 600, u).unwrap_err(), Refused::BadSignature);
        assert_eq!(open(&cookie, &[key("k1", 9)], 1001, 600, u).unwrap_err(), Refused::BadSignature);
        assert_eq!(open(&cookie, &[key("k9", 1)], 1001, 600, u).unwrap_err(), Refused::UnknownKey);
        assert_eq!(open("garbage", &keys, 1001, 600, u).unwrap_err(), Refused::Malformed);
        assert_eq!(open(&cookie, &keys, 1000 + 3600 + LEEWAY_SECS, 100_000, u).unwrap_err(), Refused::Expired);
        assert_eq!(open(&cookie, &keys, 1000 + 600 + LEEWAY_SECS, 600, u).unwrap_err(), Refused::Idle);
        assert!(open(&cookie, &keys, 1000 + 599, 600, u).is_ok());
        // A bearer token's MAC under the raw signing key does not verify as a cookie.
        let raw = Hmac::<Sha256>::new_from_slice(&[1u8; 32]).unwrap().chain_update(parts[2]).finalize().into_bytes();
        let as_token = format!("1.k1.{}.{}", parts[2], URL_SAFE_NO_PAD.encode(raw));
        assert_eq!(open(&as_token, &keys, 1001, 600, u).unwrap_err(), Refused::BadSignature);
    }

    #[test]
    fn sessions_are_reissued_well_within_their_idle_time() {
        assert!(!due_for_reissue(1000, 1059, 1800));
        assert!(due_for_reissue(1000, 1060, 1800));
        // A short idle timeout: re-issued at half of it, so an active session never lapses.
        assert!(!due_for_reissue(1000, 1009, 20));
        assert!(due_for_reissue(1000, 1010, 20));
        assert!(due_for_reissue(1000, 1001, 1));
    }

    #[test]
    fn a_removed_user_or_a_new_password_ends_the_session() {
        let keys = [key("k1", 1)];
        let (session, cookie) = start(&keys[0], &user("hash-a", Role::Writer), 1000, 3600).unwrap();
        assert_eq!(open(&cookie, &keys, 1001, 600, |_| None).unwrap_err(), Refused::UserRemoved);
        let new_password = |_: &str| Some(user("hash-b", Role::Writer));
        assert_eq!(open(&cookie, &keys, 1001, 600, new_password).unwrap_err(), Refused::PasswordChanged);
        // Re-issued later: the idle clock restarts, nothing else changes.
        let again = reissue(&keys[0], &session, &user("hash-a", Role::Writer), 1500).unwrap();
        let (renewed, _, _) = open(&again, &keys, 2000, 600, |_| Some(user("hash-a", Role::Writer))).unwrap();
        assert_eq!((renewed.seen, renewed.iat, renewed.n), (1500, 1000, session.n));
    }
}
