//! Background transfers yield the link to a fetch a client waits for.
//!
//! A source can hold back background streams once it learns a client waits (the request
//! takes half a round trip to get there), but the bytes those streams already sent sit in
//! socket buffers and on the link's queue, ahead of the client's: on a 25 MB/s link an
//! 8 MiB window is a third of a second. So this node, the receiver, also steps aside: the
//! moment a client's fetch from a source begins, its background streams from that source
//! are dropped and the background connection with them (`ClientFetches::new`'s
//! `drop_background`), which discards what was queued; they ask again, from the byte they
//! reached, once no client's fetch from that source is in flight.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// A background transfer waits at most this long for clients' fetches from its source to
/// end, then goes on beside them (a client's fetch that hangs must not stop replication).
pub const MAX_YIELD: Duration = Duration::from_secs(30);

/// This node's fetches that a client waits for, and its background streams, counted per
/// source address.
pub struct ClientFetches {
    in_flight: Mutex<HashMap<String, usize>>,
    /// Background streams open per source: the connection is dropped only when some are
    /// (it also carries forwarded uploads, which would pay for a new one for nothing).
    background: Mutex<HashMap<String, usize>>,
    /// Bumped at every change, to wake background transfers.
    changed: watch::Sender<u64>,
    /// Drops the background connection to a source (called when its first client fetch
    /// begins), so the bytes queued on it go nowhere rather than ahead of the client's.
    drop_background: Box<dyn Fn(&str) + Send + Sync>,
}

/// One client's fetch from a source, in flight until dropped.
pub struct ClientFetch<'a> {
    all: &'a ClientFetches,
    addr: String,
}

/// One background stream from a source, open until dropped.
pub struct BackgroundStream<'a> {
    all: &'a ClientFetches,
    addr: String,
}

fn count_down(map: &Mutex<HashMap<String, usize>>, addr: &str) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = map.get_mut(addr) {
        *n -= 1;
        if *n == 0 {
            map.remove(addr);
        }
    }
}

impl ClientFetches {
    pub fn new(drop_background: impl Fn(&str) + Send + Sync + 'static) -> ClientFetches {
        ClientFetches {
            in_flight: Mutex::default(),
            background: Mutex::default(),
            changed: watch::Sender::new(0),
            drop_background: Box::new(drop_background),
        }
    }

    /// A background stream from the source at `addr` opens.
    pub fn background(&self, addr: &str) -> BackgroundStream<'_> {
        *self.background.lock().unwrap_or_else(|p| p.into_inner()).entry(addr.to_string()).or_insert(0) += 1;
        BackgroundStream { all: self, addr: addr.to_string() }
    }

    fn background_from(&self, addr: &str) -> bool {
        self.background.lock().unwrap_or_else(|p| p.into_inner()).contains_key(addr)
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client's fetch from the source at `addr` begins.
    pub fn begin(&self, addr: &str) -> ClientFetch<'_> {
        let first = {
            let mut in_flight = self.in_flight();
            let n = in_flight.entry(addr.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first && self.background_from(addr) {
            (self.drop_background)(addr);
        }
        self.changed.send_modify(|v| *v += 1);
        ClientFetch { all: self, addr: addr.to_string() }
    }

    /// Whether a client's fetch from `addr` is in flight.
    pub fn waiting_on(&self, addr: &str) -> bool {
        self.in_flight().contains_key(addr)
    }

    /// Resolves once a client's fetch from `addr` is in flight.
    pub async fn until_waiting_on(&self, addr: &str) {
        let mut changes = self.changed.subscribe();
        while !self.waiting_on(addr) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves once no client's fetch from `addr` is in flight (`true`), or after `max`
    /// (`false`).
    pub async fn until_none_waiting_on(&self, addr: &str, max: Duration) -> bool {
        let mut changes = self.changed.subscribe();
        tokio::time::timeout(max, async {
            while self.waiting_on(addr) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }
}

impl Drop for ClientFetch<'_> {
    fn drop(&mut self) {
        count_down(&self.all.in_flight, &self.addr);
        self.all.changed.send_modify(|v| *v += 1);
    }
}

impl Drop for BackgroundStream<'_> {
    fn drop(&mut self) {
        count_down(&self.all.background, &self.addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn the_first_client_fetch_drops_the_background_connection_and_the_last_frees_the_source() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let counted = dropped.clone();
        let clients = Arc::new(ClientFetches::new(move |addr| {
            assert_eq!(addr, "us:7000");
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        // No background stream from us: nothing to drop.
        drop(clients.begin("us:7000"));
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "dropped a connection no background stream used");
        let background = clients.background("us:7000");
        let waiter = {
            let clients = clients.clone();
            tokio::spawn(async move { clients.until_waiting_on("us:7000").await })
        };
        let first = clients.begin("us:7000");
        let second = clients.begin("us:7000");
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("task");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "only the first fetch drops the connection");
        assert!(clients.waiting_on("us:7000") && !clients.waiting_on("eu:7000"));
        drop(first);
        assert!(clients.waiting_on("us:7000"), "one fetch still in flight");
        let freed = {
            let clients = clients.clone();
            tokio::spawn(async move { clients.until_none_waiting_on("us:7000", Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(!freed.is_finished());
        drop(second);
        assert!(tokio::time::timeout(Duration::from_secs(5), freed).await.expect("freed").expect("task"));
        assert!(!clients.waiting_on("us:7000"));
        drop(background);
        let _third = clients.begin("us:7000");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "no background stream left to drop");
        assert!(!clients.until_none_waiting_on("us:7000", Duration::from_millis(10)).await, "timed out, not freed");
    }
}
