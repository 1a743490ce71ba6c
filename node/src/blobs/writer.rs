//! Streams a request body into a file while hashing it, on a blocking thread, with a
//! bounded channel in between so memory stays flat whatever the blob size.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use meridian_replication::DigestHasher;
use std::io::Write;
use std::path::PathBuf;

/// Channel depth between the body reader and the file writer (chunks are typically
/// 16–64 KiB, so this bounds buffered memory to a few MiB per upload).
const CHANNEL_DEPTH: usize = 64;
/// Write buffer: larger writes mean fewer syscalls on the hot push path.
const WRITE_BUFFER: usize = 1 << 20;
/// Every this many bytes, ask the kernel to start writing back what we wrote so far, so
/// the disk works while the body is still arriving and the final fsync has little left.
const WRITEBACK_STEP: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("client body: {0}")]
    Body(String),
    #[error("body exceeds the {limit} bytes announced")]
    TooLong { limit: u64 },
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
}

pub struct WriteOutcome {
    pub hasher: DigestHasher,
    /// Bytes written by this call.
    pub written: u64,
}

/// Appends `body` to `path` (creating it), feeding every byte to `hasher`. With `limit`,
/// a body longer than that is refused. With `sync`, the file is fsynced before returning.
pub async fn stream_to_file<S, E>(
    path: PathBuf,
    mut hasher: DigestHasher,
    body: S,
    limit: Option<u64>,
    sync: bool,
) -> Result<WriteOutcome, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> Result<(DigestHasher, u64), std::io::Error> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut written = 0u64;
        let mut flushed_to = 0u64;
        let start_offset = out.get_ref().metadata()?.len();
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
            if written - flushed_to >= WRITEBACK_STEP {
                out.flush()?;
                start_writeback(out.get_ref(), start_offset + flushed_to, written - flushed_to);
                flushed_to = written;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        if sync {
            file.sync_data()?;
        }
        Ok((hasher, written))
    });

    let mut body = body;
    let mut received = 0u64;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                received += bytes.len() as u64;
                if let Some(limit) = limit {
                    if received > limit {
                        failure = Some(WriteError::TooLong { limit });
                        break;
                    }
                }
                if tx.send(bytes).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(WriteError::Body(e.to_string()));
                break;
            }
        }
    }
    drop(tx);
    let result = writer.await.map_err(|e| WriteError::Io(std::io::Error::other(e.to_string())))?;
    if let Some(f) = failure {
        return Err(f);
    }
    let (hasher, written) = result?;
    metrics::counter!("meridian_blob_bytes_received_total").increment(written);
    Ok(WriteOutcome { hasher, written })
}

/// Starts asynchronous writeback of a byte range (Linux `sync_file_range`); a hint only,
/// durability still comes from the fsync at the end.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the duration of the call; the flags only schedule I/O.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _len: u64) {}
