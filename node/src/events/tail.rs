//! The newest events of each lane, read from the outbox and serialized once for all the
//! webhooks that send them. Ten webhooks of one lane would otherwise each read, decode
//! and serialize every event (the ten-webhook benchmark in `benches/RESULTS.md`).
//!
//! A lane's cache holds every event after `base` up to `through`, in order (events never
//! change, and the outbox only loses events every webhook is past). A reader whose cursor
//! is inside that window is served from it, topping it up from the store; one ahead of
//! it restarts the window at its cursor; one behind it (a webhook far behind, a re-send)
//! reads the store itself.

use super::envelope;
use crate::meta::events::{EventRecord, Seq};
use crate::meta::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

/// Events kept per lane.
const KEEP: usize = 4096;

/// An event and its bytes as sent.
pub struct Cached {
    pub event: EventRecord,
    pub bytes: Vec<u8>,
}

impl Cached {
    pub fn new(lane: &str, seq: Seq, event: EventRecord) -> Arc<Cached> {
        let bytes = envelope::event_bytes(lane, seq, &event);
        Arc::new(Cached { event, bytes })
    }
}

struct Window {
    base: Seq,
    through: Seq,
    events: BTreeMap<Seq, Arc<Cached>>,
}

impl Window {
    fn at(cursor: Seq) -> Window {
        Window { base: cursor, through: cursor, events: BTreeMap::new() }
    }
}

#[derive(Default)]
pub struct Tail {
    lanes: Mutex<HashMap<String, Window>>,
}

impl Tail {
    /// At most `limit` events of `lane` after `cursor`, in order.
    pub fn after(&self, store: &Store, lane: &str, cursor: Seq, limit: usize) -> Result<Vec<(Seq, Arc<Cached>)>, StoreError> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let window = lanes.entry(lane.to_string()).or_insert_with(|| Window::at(cursor));
        if cursor < window.base {
            drop(lanes);
            return Ok(store.events_after(lane, cursor, limit)?.into_iter().map(|(seq, e)| (seq, Cached::new(lane, seq, e))).collect());
        }
        if cursor > window.through {
            *window = Window::at(cursor);
        }
        let held = window.events.range((Bound::Excluded(cursor), Bound::Unbounded)).count();
        if held < limit {
            for (seq, event) in store.events_after(lane, window.through, limit - held)? {
                window.events.insert(seq, Cached::new(lane, seq, event));
                window.through = seq;
            }
        }
        let out = window.events.range((Bound::Excluded(cursor), Bound::Unbounded)).take(limit).map(|(s, c)| (*s, c.clone())).collect();
        while window.events.len() > KEEP {
            if let Some((seq, _)) = window.events.pop_first() {
                window.base = seq;
            }
        }
        Ok(out)
    }
}
