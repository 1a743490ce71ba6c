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
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            out.write_all(&chunk)?;
            written += chunk.len() as u64;
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
    Ok(WriteOutcome { hasher, written })
}
