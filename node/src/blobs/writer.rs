//! Streams a request body into a file while hashing it, off the async workers, with a
//! bounded channel in between so memory stays flat whatever the blob size.
//!
//! A large body is hashed on one thread while another copies it into aligned buffers and
//! writes them out: SHA-256 keeps a core busy, and a direct-I/O write waits on the disk,
//! so doing both in turn on one thread ran at about half of the slower of the two. A small
//! body (under `OVERLAP_FROM`) does both on one thread: a second thread costs more than
//! it saves there.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use meridian_replication::DigestHasher;
use std::io::Write;
use std::path::PathBuf;

/// Channel depth between the body reader and the hashing thread (chunks are typically
/// 16–64 KiB, so this bounds buffered memory to a few MiB per upload).
const CHANNEL_DEPTH: usize = 64;
/// Chunks hashed but not yet written (same bound, between the hashing and disk threads).
const DISK_QUEUE: usize = 64;
/// Bodies at least this long (or of unknown length) are hashed and written on two threads.
const OVERLAP_FROM: u64 = 8 << 20;
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
    hasher: DigestHasher,
    body: S,
    limit: Option<u64>,
    cap: Option<BlobCap>,
    sync: bool,
) -> Result<WriteOutcome, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let overlap = limit.is_none_or(|l| l >= OVERLAP_FROM);
    let writer = tokio::task::spawn_blocking(move || -> Result<(DigestHasher, u64), std::io::Error> {
        let sink = BlobFile::open(&path, limit)?;
        if overlap {
            hash_while_writing(rx, hasher, sink, sync)
        } else {
            hash_then_write(rx, hasher, sink, sync)
        }
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
                    // The writer failed (a full disk, say); its error is reported below.
                    // Most clients send the whole body before they read an answer: read
                    // on, discarding, so they get that answer instead of a reset
                    // connection (up to a bound; past it the connection closes anyway).
                    drain(&mut body).await;
                    break;
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

/// How much of a body is read and discarded after the disk refused it, and for how long.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let read_on = async {
        let mut read = 0u64;
        while read < DRAIN_BYTES {
            match body.next().await {
                Some(Ok(bytes)) => read += bytes.len() as u64,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read_on).await;
}

/// Hashes and writes each chunk in turn on the calling thread.
fn hash_then_write(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut hasher: DigestHasher,
    mut sink: BlobFile,
    sync: bool,
) -> std::io::Result<(DigestHasher, u64)> {
    let mut written = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        sink.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    sink.finish(sync)?;
    Ok((hasher, written))
}

/// Hashes on the calling thread while a scoped thread writes the same chunks (shared,
/// not copied) to disk. When the disk fails, the hashing side stops at its next chunk,
/// which in turn stops the body reader; the disk's error is the one reported.
fn hash_while_writing(
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut hasher: DigestHasher,
    mut sink: BlobFile,
    sync: bool,
) -> std::io::Result<(DigestHasher, u64)> {
    let (to_disk, from_hasher) = std::sync::mpsc::sync_channel::<Bytes>(DISK_QUEUE);
    std::thread::scope(|scope| {
        let disk = scope.spawn(move || -> std::io::Result<u64> {
            let mut written = 0u64;
            for chunk in from_hasher {
                sink.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
            sink.finish(sync)?;
            Ok(written)
        });
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            if to_disk.send(chunk).is_err() {
                break; // the disk thread failed: join it for its error
            }
        }
        drop(to_disk);
        let written = disk.join().map_err(|_| std::io::Error::other("blob disk writer panicked"))??;
        Ok((hasher, written))
    })
}

/// Where a body's bytes go. Direct I/O skips the page cache — on the machines we measured,
/// copying into the page cache and writing it back ran at well under half the speed of
/// the disk itself — and needs aligned buffers, offsets and lengths: whole aligned
/// blocks go out directly, and the unaligned tail is written through the page cache.
/// Appends that start at an unaligned offset (a chunk after an odd-sized chunk) and
/// filesystems without direct I/O use the buffered path throughout. Public so the
/// storage benchmark measures the disk through the very path uploads take.
pub enum BlobFile {
    Direct(DirectWriter),
    Buffered(std::io::BufWriter<std::fs::File>),
}

pub struct DirectWriter {
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

impl BlobFile {
    /// Opens `path` for appending; `expected_len` sizes the direct-I/O buffer.
    pub fn open(path: &std::path::Path, expected_len: Option<u64>) -> std::io::Result<BlobFile> {
        let existing = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if existing % DIRECT_ALIGN as u64 == 0 {
            if let Some(direct) = DirectWriter::open(path, existing, expected_len) {
                return Ok(BlobFile::Direct(direct));
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BlobFile::Buffered(std::io::BufWriter::with_capacity(WRITE_BUFFER, file)))
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        crate::failpoints::io("blob-write")?;
        match self {
            BlobFile::Direct(d) => d.write_all(data),
            BlobFile::Buffered(b) => b.write_all(data),
        }
    }

    /// Writes what is buffered; with `sync`, makes the data durable (fdatasync).
    pub fn finish(self, sync: bool) -> std::io::Result<()> {
        if sync {
            crate::failpoints::io("blob-fsync")?;
        }
        match self {
            BlobFile::Direct(d) => d.finish(sync),
            BlobFile::Buffered(b) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replication::Algorithm;

    fn body(data: &[u8], chunk: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        let chunks: Vec<_> = data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(chunks)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn sha256(data: &[u8]) -> meridian_replication::Digest {
        let mut h = Algorithm::Sha256.hasher();
        h.update(data);
        h.finish()
    }

    /// Both paths (one thread under `OVERLAP_FROM`, two above it or with no length), with
    /// odd chunk sizes that leave an unaligned tail, write exactly the body and hash it.
    #[tokio::test]
    async fn every_path_writes_and_hashes_the_whole_body() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [(100_000, Some(100_000u64)), (9 << 20 | 12_345, Some(9 << 20 | 12_345)), (300_001, None)];
        for (i, (len, limit)) in cases.into_iter().enumerate() {
            let data = pattern(len);
            let path = dir.path().join(format!("blob-{i}"));
            let out = stream_to_file(path.clone(), Algorithm::Sha256.hasher(), body(&data, 65_537), limit, None, true)
                .await
                .unwrap();
            assert_eq!(out.written, len as u64);
            assert_eq!(out.hasher.finish(), sha256(&data));
            assert_eq!(std::fs::read(&path).unwrap(), data, "case {i}");
        }
    }

    /// A second body appended after an odd-sized first (a chunked upload) lands after it.
    #[tokio::test]
    async fn an_append_at_an_unaligned_offset_continues_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        let first = pattern(5_000);
        let second = pattern(9 << 20);
        let out = stream_to_file(path.clone(), Algorithm::Sha256.hasher(), body(&first, 4_096), None, None, false)
            .await
            .unwrap();
        let out = stream_to_file(path.clone(), out.hasher, body(&second, 40_000), None, None, true).await.unwrap();
        let whole = [first, second].concat();
        assert_eq!(out.hasher.finish(), sha256(&whole));
        assert_eq!(std::fs::read(&path).unwrap(), whole);
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_or_allowed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(10 << 20);
        let err = stream_to_file(dir.path().join("a"), Algorithm::Sha256.hasher(), body(&data, 65_536), Some(9 << 20), None, true)
            .await
            .err();
        assert!(matches!(err, Some(WriteError::TooLong { limit }) if limit == 9 << 20), "{err:?}");
        let cap = BlobCap { room: 8 << 20, max: 8 << 20 };
        let err = stream_to_file(dir.path().join("b"), Algorithm::Sha256.hasher(), body(&data, 65_536), None, Some(cap), true)
            .await
            .err();
        assert!(matches!(err, Some(WriteError::OverCap { max }) if max == 8 << 20), "{err:?}");
    }
}
