//! One in-flight fetch of a blob from other regions, shared by everyone who wants it:
//! clients waiting on a GET read the bytes as they land, and the background queue
//! waits for the same transfer instead of starting another.

use bytes::Bytes;
use meridian_replication::{ChunkSink, FetchPriority};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes written so far (they may still turn out not to match the digest).
    Running(u64),
    /// Verified, fsynced and stored under its digest.
    Done(u64),
    /// Failed or did not match its digest; nothing was kept.
    Failed,
}

pub struct Transfer {
    pub size: u64,
    /// The file being written; readers use positioned reads, so they share it safely
    /// even after it was renamed into the blob store.
    pub file: Arc<std::fs::File>,
    pub progress: watch::Receiver<Progress>,
    /// Whether a client waits for it (a background fetch a client joins is promoted).
    pub priority: Arc<FetchPriority>,
}

impl Transfer {
    /// Waits until the transfer is verified and stored (`Done`) or has failed.
    pub async fn finished(&self) -> Progress {
        let mut rx = self.progress.clone();
        loop {
            let p = *rx.borrow_and_update();
            if !matches!(p, Progress::Running(_)) {
                return p;
            }
            if rx.changed().await.is_err() {
                // The transfer task ended without a final state.
                return Progress::Failed;
            }
        }
    }
}

impl Transfer {
    /// Waits until bytes flow (or the transfer is done): `false` when it failed first.
    pub async fn started(&self) -> bool {
        let mut rx = self.progress.clone();
        loop {
            match *rx.borrow_and_update() {
                Progress::Running(n) if n > 0 || self.size == 0 => return true,
                Progress::Done(_) => return true,
                Progress::Failed => return false,
                Progress::Running(_) => {}
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// Writes fetched bytes into the transfer's file and publishes progress.
pub struct FileSink {
    pub file: Arc<std::fs::File>,
    pub written: u64,
    pub progress: watch::Sender<Progress>,
    pub stats: Arc<super::ReplicationCounters>,
}

impl ChunkSink for FileSink {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        let file = self.file.clone();
        let at = self.written;
        let len = data.len() as u64;
        crate::failpoints::io("blob-write")?;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.written += len;
        metrics::counter!("meridian_replication_bytes_received_total").increment(len);
        self.stats.bytes_received.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        let _ = self.progress.send(Progress::Running(self.written));
        Ok(())
    }

    async fn reset(&mut self) -> std::io::Result<()> {
        metrics::counter!("meridian_replication_digest_mismatch_total").increment(1);
        self.stats.digest_mismatches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.file.set_len(0)?;
        self.written = 0;
        // Readers that already passed offset 0 see progress go backwards and abort.
        let _ = self.progress.send(Progress::Running(0));
        Ok(())
    }

    /// The sweep removes fetch files idle past the grace; this one is a live transfer's.
    fn keep_fresh(&mut self) -> std::io::Result<()> {
        self.file.set_modified(std::time::SystemTime::now())
    }
}

/// Streams `start..start+len` of a transfer to a client. Bytes are sent as they land,
/// except the last one, which waits for the digest check: a client never receives a
/// complete body that turned out wrong — on failure the stream errors and the
/// connection is cut.
pub fn read_stream(
    transfer: Arc<Transfer>,
    start: u64,
    len: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    const CHUNK: u64 = 1 << 20;
    let end = start + len;
    futures::stream::unfold((transfer, start), move |(t, pos)| async move {
        if pos >= end {
            return None;
        }
        let mut rx = t.progress.clone();
        loop {
            let p = *rx.borrow_and_update();
            let available = match p {
                Progress::Failed => {
                    return Some((Err(std::io::Error::other("blob transfer failed verification")), (t, end)));
                }
                Progress::Running(w) if w < pos => {
                    return Some((Err(std::io::Error::other("blob transfer restarted")), (t, end)));
                }
                // Hold back the final byte until the copy is verified.
                Progress::Running(w) => w.min(t.size.saturating_sub(1)).min(end),
                Progress::Done(_) => end,
            };
            if available > pos {
                let n = (available - pos).min(CHUNK);
                let file = t.file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    file.read_exact_at(&mut buf, pos).map(|_| buf)
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
                return match read {
                    Ok(buf) => Some((Ok(Bytes::from(buf)), (t, pos + n))),
                    Err(e) => Some((Err(e), (t, end))),
                };
            }
            if rx.changed().await.is_err() {
                // The transfer task ended without a final state.
                return Some((Err(std::io::Error::other("blob transfer abandoned")), (t, end)));
            }
        }
    })
}
