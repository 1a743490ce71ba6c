//! Which tokens were just told `401 insufficient_scope`, and for what scope.
//!
//! Docker's token flow answers a token that lacks a scope with a 401; the Go clients then
//! fetch a token for the challenge's scope and never send the old one again. The Python
//! oras client instead retries the very same request once with the token it has, and
//! fetches a new one only on a 403. So the first refusal of a token for a scope and a
//! request (method and path) is a 401, and the same again within `REMEMBER` is a 403 with
//! the same challenge: each client gets the answer it acts on, and neither needs to be
//! recognised by name. Keying on the request too keeps a client that sends one stale
//! token on several requests at once (parallel layer uploads) on 401s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a refusal is remembered: a client's immediate retry, not a later request.
const REMEMBER: Duration = Duration::from_secs(60);
/// Pairs kept at most (then the oldest half of the map is forgotten at once).
const LIMIT: usize = 10_000;

#[derive(Default)]
pub struct ScopeRefusals {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl ScopeRefusals {
    /// Records that `token_id` was refused `what` (the scope and the request) now; true
    /// when it already was within `REMEMBER` (the caller repeats a token it was told is
    /// insufficient).
    pub fn refused_before(&self, token_id: &str, what: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= LIMIT {
            seen.retain(|_, at| now.duration_since(*at) < REMEMBER / 2);
            if seen.len() >= LIMIT {
                seen.clear();
            }
        }
        let key = (token_id.to_string(), what.to_string());
        let before = seen.get(&key).is_some_and(|at| now.duration_since(*at) < REMEMBER);
        seen.insert(key, now);
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_new_a_repeat_is_not() {
        let r = ScopeRefusals::default();
        assert!(!r.refused_before("t1", "repository:a:pull,push"));
        assert!(r.refused_before("t1", "repository:a:pull,push"));
        assert!(!r.refused_before("t1", "repository:a:delete"), "another scope is a new refusal");
        assert!(!r.refused_before("t2", "repository:a:pull,push"), "another token is a new refusal");
    }
}
