//! Raft snapshots on disk, as files that are streamed rather than held in memory.
//!
//! `<data_dir>/snapshots/` holds the data file of the current snapshot (the state machine
//! dump, `<random>.data`), `current.json` naming it together with the snapshot's meta, and
//! `receiving.data` while a leader streams one in. `current.json` is the commit point: a
//! new data file is written and fsynced first, then `current.json` is replaced (temp file,
//! fsync, rename), and only then are older data files removed. A crash leaves the old
//! snapshot or the new one, never a name without its data. A data file being sent to a
//! follower while a newer snapshot replaces it stays readable through its open handle.
//!
//! The data file is the dump alone, from offset 0: openraft streams `SnapshotData` from
//! its start to its end, and a follower receives exactly those bytes.
//!
//! Before this layout a snapshot was one file, `<data_dir>/snapshot` (meta length, meta,
//! dump); a data directory that still has one is converted on first use.

use super::super::types::SnapshotMeta;
use serde::{Deserialize, Serialize};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const CURRENT: &str = "current.json";
const RECEIVING: &str = "receiving.data";
const LEGACY_FILE: &str = "snapshot";

#[derive(Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    /// The data file's name in the snapshot directory.
    data: String,
}

#[derive(Clone, Debug)]
pub(crate) struct SnapshotFiles {
    data_dir: PathBuf,
    dir: PathBuf,
}

impl SnapshotFiles {
    pub(crate) fn new(data_dir: &Path) -> SnapshotFiles {
        SnapshotFiles {
            data_dir: data_dir.to_path_buf(),
            dir: data_dir.join("snapshots"),
        }
    }

    /// The current snapshot's meta and the path of its data, if there is one.
    pub(crate) fn current(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        self.convert_legacy()?;
        let json = match std::fs::read(self.dir.join(CURRENT)) {
            Ok(json) => json,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let current: Current =
            serde_json::from_slice(&json).map_err(|e| invalid(format!("{CURRENT}: {e}")))?;
        Ok(Some((current.meta, self.dir.join(current.data))))
    }

    /// Writes a new snapshot: `fill` writes the dump, which is fsynced before `meta` names
    /// it as current. Returns the data file's path.
    pub(crate) fn write(
        &self,
        meta: &SnapshotMeta,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        crate::failpoints::io("snapshot-write")?;
        std::fs::create_dir_all(&self.dir)?;
        let name = format!("{:016x}.data", rand::random::<u64>());
        let path = self.dir.join(&name);
        let result = (|| {
            let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            fill(&mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            self.commit(meta, &name)
        })();
        if result.is_err() {
            // A half-written data file no `current.json` names would only waste the disk.
            let _ = std::fs::remove_file(&path);
        }
        result.map(|()| path)
    }

    /// Where a snapshot streamed in by the leader is written: `receiving.data`, emptied.
    pub(crate) fn begin_receiving(&self) -> io::Result<std::fs::File> {
        std::fs::create_dir_all(&self.dir)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(RECEIVING))
    }

    pub(crate) fn receiving_path(&self) -> PathBuf {
        self.dir.join(RECEIVING)
    }

    /// Makes the snapshot received (flushed and fsynced by the caller) the current one.
    pub(crate) fn adopt_received(&self, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        crate::failpoints::io("snapshot-write")?;
        let name = format!("{:016x}.data", rand::random::<u64>());
        let path = self.dir.join(&name);
        std::fs::rename(self.dir.join(RECEIVING), &path)?;
        self.commit(meta, &name)?;
        Ok(path)
    }

    /// Names `data` as the current snapshot, then removes every other data file.
    fn commit(&self, meta: &SnapshotMeta, data: &str) -> io::Result<()> {
        let json = serde_json::to_vec(&Current {
            meta: meta.clone(),
            data: data.to_string(),
        })
        .map_err(io::Error::other)?;
        let tmp = self.dir.join("current.json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(CURRENT))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".data") && name != data && name != RECEIVING {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Converts `<data_dir>/snapshot` (meta length u32 BE, meta JSON, dump) into this
    /// layout, copying the dump through a buffer.
    fn convert_legacy(&self) -> io::Result<()> {
        let legacy = self.data_dir.join(LEGACY_FILE);
        if !legacy.is_file() {
            return Ok(());
        }
        let mut file = std::fs::File::open(&legacy)?;
        let mut len = [0u8; 4];
        file.read_exact(&mut len)
            .map_err(|_| invalid("legacy snapshot: truncated".into()))?;
        let mut meta_json = vec![0u8; u32::from_be_bytes(len) as usize];
        file.read_exact(&mut meta_json)
            .map_err(|_| invalid("legacy snapshot: truncated".into()))?;
        let meta: SnapshotMeta = serde_json::from_slice(&meta_json)
            .map_err(|e| invalid(format!("legacy snapshot: {e}")))?;
        self.write(&meta, |out| io::copy(&mut file, out).map(|_| ()))?;
        std::fs::remove_file(&legacy)?;
        tracing::info!(snapshot = %meta.snapshot_id, "converted the snapshot file to the snapshots/ layout");
        Ok(())
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}
