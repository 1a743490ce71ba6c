//! Failed-login rate limit: after `limit` failed logins within a minute for one user name
//! or from one address, further logins for that name or from that address are refused
//! with `429 TOOMANYREQUESTS` until the minute is over — correct credentials included,
//! so guessing stops paying off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Tracked keys at most; beyond that the oldest windows are dropped first.
const MAX_KEYS: usize = 100_000;

struct Window {
    start: Instant,
    failures: u32,
}

pub struct LoginGuard {
    /// Failures allowed per key and minute; 0 turns the guard off.
    limit: u32,
    windows: Mutex<HashMap<String, Window>>,
}

impl LoginGuard {
    pub fn new(limit: u32) -> LoginGuard {
        LoginGuard { limit, windows: Mutex::default() }
    }

    fn keys(user: &str, peer: Option<IpAddr>) -> Vec<String> {
        let mut keys = vec![format!("user:{user}")];
        if let Some(ip) = peer {
            keys.push(format!("ip:{ip}"));
        }
        keys
    }

    /// `Err(seconds to wait)` while `user` or `peer` is over the limit.
    pub fn check(&self, user: &str, peer: Option<IpAddr>) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for key in Self::keys(user, peer) {
            if let Some(w) = windows.get(&key) {
                let elapsed = now.duration_since(w.start);
                if elapsed < WINDOW && w.failures >= self.limit {
                    let left = (WINDOW - elapsed).as_secs().max(1);
                    wait = Some(wait.map_or(left, |x: u64| x.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, user: &str, peer: Option<IpAddr>) {
        if self.limit == 0 {
            return;
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_KEYS {
            windows.retain(|_, w| now.duration_since(w.start) < WINDOW);
        }
        for key in Self::keys(user, peer) {
            let w = windows.entry(key).or_insert(Window { start: now, failures: 0 });
            if now.duration_since(w.start) >= WINDOW {
                *w = Window { start: now, failures: 0 };
            }
            w.failures += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_user_and_address() {
        let g = LoginGuard::new(3);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(g.check("alice", Some(ip)).is_ok());
            g.record_failure("alice", Some(ip));
        }
        assert!(g.check("alice", None).is_err(), "user key");
        assert!(g.check("bob", Some(ip)).is_err(), "address key");
        assert!(g.check("bob", Some("127.0.0.8".parse().unwrap())).is_ok());
        assert!(LoginGuard::new(0).check("alice", Some(ip)).is_ok());
    }
}
