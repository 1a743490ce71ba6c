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
/// Write buffer of the buffered path: larger writes mean fewer syscalls.
const WRITE_BUFFER: usize = 1 << 20;
/// Largest direct-I/O write; also the aligned buffer's size for bodies of unknown length.
const DIRECT_CHUNK: usize = 4 << 20;
/// Alignment direct I/O needs for buffers, offsets and lengths (covers 512 B and 4 KiB sectors).
const DIRECT_ALIGN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("client body: {0}")]
    Body(String),
    #[error("body exceeds the {limit} bytes announced")]
    TooLong { limit: u64 },
    /// The blob would grow past the configured cap on client uploads.
    #[error("blob larger than the {max} bytes this registry accepts")]
    OverCap { max: u64 },
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
}

pub struct WriteOutcome {
    pub hasher: DigestHasher,
    /// Bytes written by this call.
    pub written: u64,
}

/// The cap on a blob's size (`max_blob_bytes`) as it applies to one body.
#[derive(Debug, Clone, Copy)]
pub struct BlobCap {
    /// Bytes this body may add: the cap minus what the blob already holds.
    pub room: u64,
    /// The cap itself, for the error.
    pub max: u64,
}

/// Appends `body` to `path` (creating it), feeding every byte to `hasher`. With `limit`,
/// a body longer than that is refused; with `cap`, a body longer than its room. Either
/// way the caller discards or truncates what was written. With `sync`, the file is
/// fsynced before returning.
pub async fn stream_to_file<S, E>(
    path: PathBuf,
    mut hasher: DigestHasher,
    body: S,
    limit: Option<u64>,
    cap: Option<BlobCap>,
    sync: bool,
) -> Result<WriteOutcome, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = tokio::task::spawn_blocking(move || -> Result<(DigestHasher, u64), std::io::Error> {
        let mut sink = FileSink::open(&path, limit)?;
        let mut written = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            sink.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        sink.finish(sync)?;
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
                if let Some(cap) = cap {
                    if received > cap.room {
                        failure = Some(WriteError::OverCap { max: cap.max });
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

/// Where a body's bytes go. Direct I/O skips the page cache — on the machines we measured,
/// copying into the page cache and writing it back ran at well under half the speed of
/// the disk itself — and needs aligned buffers, offsets and lengths: whole aligned
/// blocks go out directly, and the unaligned tail is written through the page cache.
/// Appends that start at an unaligned offset (a chunk after an odd-sized chunk) and
/// filesystems without direct I/O use the buffered path throughout.
enum FileSink {
    Direct(DirectWriter),
    Buffered(std::io::BufWriter<std::fs::File>),
}

struct DirectWriter {
    path: PathBuf,
    file: std::fs::File,
    /// Backing storage; the aligned window is `buf[start..start + cap]`.
    buf: Vec<u8>,
    start: usize,
    cap: usize,
    fill: usize,
    /// File offset where the window's first byte goes.
    offset: u64,
}

impl FileSink {
    fn open(path: &std::path::Path, expected_len: Option<u64>) -> std::io::Result<FileSink> {
        let existing = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if existing % DIRECT_ALIGN as u64 == 0 {
            if let Some(direct) = DirectWriter::open(path, existing, expected_len) {
                return Ok(FileSink::Direct(direct));
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileSink::Buffered(std::io::BufWriter::with_capacity(WRITE_BUFFER, file)))
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        crate::failpoints::io("blob-write")?;
        match self {
            FileSink::Direct(d) => d.write_all(data),
            FileSink::Buffered(b) => b.write_all(data),
        }
    }

    fn finish(self, sync: bool) -> std::io::Result<()> {
        if sync {
            crate::failpoints::io("blob-fsync")?;
        }
        match self {
            FileSink::Direct(d) => d.finish(sync),
            FileSink::Buffered(b) => {
                let file = b.into_inner().map_err(|e| e.into_error())?;
                if sync {
                    file.sync_data()?;
                }
                Ok(())
            }
        }
    }
}

impl DirectWriter {
    #[cfg(target_os = "linux")]
    fn open(path: &std::path::Path, offset: u64, expected_len: Option<u64>) -> Option<DirectWriter> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        let wanted = expected_len.map(|l| l as usize).unwrap_or(DIRECT_CHUNK).min(DIRECT_CHUNK);
        let cap = wanted.div_ceil(DIRECT_ALIGN).max(1) * DIRECT_ALIGN;
        let buf = vec![0u8; cap + DIRECT_ALIGN];
        let start = (DIRECT_ALIGN - (buf.as_ptr() as usize % DIRECT_ALIGN)) % DIRECT_ALIGN;
        Some(DirectWriter { path: path.to_path_buf(), file, buf, start, cap, fill: 0, offset })
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_path: &std::path::Path, _offset: u64, _expected_len: Option<u64>) -> Option<DirectWriter> {
        None
    }

    fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        while !data.is_empty() {
            let n = data.len().min(self.cap - self.fill);
            let at = self.start + self.fill;
            self.buf[at..at + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.cap {
                self.file.write_all_at(&self.buf[self.start..self.start + self.cap], self.offset)?;
                self.offset += self.cap as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    fn finish(self, sync: bool) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let aligned = self.fill / DIRECT_ALIGN * DIRECT_ALIGN;
        if aligned > 0 {
            self.file.write_all_at(&self.buf[self.start..self.start + aligned], self.offset)?;
        }
        // The unaligned tail goes through the page cache, on a second descriptor.
        let tail = std::fs::OpenOptions::new().write(true).open(&self.path)?;
        if self.fill > aligned {
            tail.write_all_at(&self.buf[self.start + aligned..self.start + self.fill], self.offset + aligned as u64)?;
        }
        if sync {
            // Flushes the tail, the file size and the device's write cache.
            tail.sync_data()?;
        }
        Ok(())
    }
}
