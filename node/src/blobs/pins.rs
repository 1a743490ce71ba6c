//! Digests this node is using right now, which garbage collection must not remove.
//!
//! An upload being committed, a mount being linked, a manifest push whose entry says
//! "this region holds the blob": each holds a pin on the digest from before it looks at
//! the file until its record is durable. The sweep removes a file only inside
//! [`BlobPins::unless_pinned`], which runs under the same lock after re-checking that
//! nothing needs the blob, so "exists" and "removed" can never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct BlobPins {
    counts: Mutex<HashMap<String, usize>>,
}

/// Holds a pin until dropped.
pub struct Pin {
    pins: Arc<BlobPins>,
    digests: Vec<String>,
}

impl BlobPins {
    /// Pins every digest in `digests` (a digest may appear more than once).
    pub fn pin(self: &Arc<Self>, digests: impl IntoIterator<Item = String>) -> Pin {
        let digests: Vec<String> = digests.into_iter().collect();
        let mut counts = self.lock();
        for d in &digests {
            *counts.entry(d.clone()).or_insert(0) += 1;
        }
        Pin { pins: self.clone(), digests }
    }

    /// Runs `remove` while no pin can be taken, unless `digest` is pinned now. `remove`
    /// re-checks whatever else keeps the blob and deletes it; it should be quick.
    pub fn unless_pinned<R>(&self, digest: &str, remove: impl FnOnce() -> R) -> Option<R> {
        let counts = self.lock();
        if counts.get(digest).is_some_and(|n| *n > 0) {
            return None;
        }
        Some(remove())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut counts = self.pins.lock();
        for d in &self.digests {
            if let Some(n) = counts.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_digest_is_not_removed_until_every_pin_is_dropped() {
        let pins = Arc::new(BlobPins::default());
        let a = pins.pin(["sha256:a".to_string()]);
        let b = pins.pin(["sha256:a".to_string(), "sha256:b".to_string()]);
        assert!(pins.unless_pinned("sha256:a", || ()).is_none());
        assert!(pins.unless_pinned("sha256:c", || ()).is_some());
        drop(a);
        assert!(pins.unless_pinned("sha256:a", || ()).is_none(), "still pinned by b");
        drop(b);
        assert_eq!(pins.unless_pinned("sha256:a", || 7), Some(7));
        assert!(pins.unless_pinned("sha256:b", || ()).is_some());
    }
}
