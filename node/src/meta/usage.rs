//! Usage metering in the cluster state: traffic per repository and region in hourly
//! buckets, replication traffic per pair of regions, and what each region stores.
//!
//! Traffic arrives in `RecordUsage` entries, one per region per `usage.record_secs` at
//! most, each counted into the hour of its `at_unix`; applying one also drops buckets
//! older than the entry says to keep. Storage per region is counted exactly at apply,
//! whenever a verified copy is recorded or forgotten, so no scan is needed to report it.
//!
//! `sm_usage` keys: `t` hour (u64 BE) region `\0` repo → `Traffic`; `r` hour from `\0` to
//! → `Traffic` (bytes and blobs replicated); `s` region → `Stored` (two u64 BE).

use super::store::{Store, StoreError, CF_SM_USAGE};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters of one repository in one region (or of one pair of regions) over one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub pushed_bytes: u64,
    /// Manifests pushed (images, indexes, artifacts).
    pub pushed_count: u64,
    pub pulled_bytes: u64,
    /// Manifests pulled (GET).
    pub pulled_count: u64,
}

impl Traffic {
    pub fn add(&mut self, other: &Traffic) {
        self.pushed_bytes += other.pushed_bytes;
        self.pushed_count += other.pushed_count;
        self.pulled_bytes += other.pulled_bytes;
        self.pulled_count += other.pulled_count;
    }

    fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, v) in [self.pushed_bytes, self.pushed_count, self.pulled_bytes, self.pulled_count].iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Result<Traffic, StoreError> {
        let word = |i: usize| -> Result<u64, StoreError> {
            raw.get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt { cf: CF_SM_USAGE, reason: "traffic".into() })
        };
        Ok(Traffic { pushed_bytes: word(0)?, pushed_count: word(1)?, pulled_bytes: word(2)?, pulled_count: word(3)? })
    }
}

/// Bytes replicated from one region into another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicated {
    pub from: String,
    pub bytes: u64,
    pub blobs: u64,
}

/// What one region's verified copies take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub bytes: u64,
    pub blobs: u64,
}

pub const SECS_PER_HOUR: u64 = 3600;

fn traffic_key(hour: u64, region: &str, repo: &str) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(&hour.to_be_bytes());
    k.extend_from_slice(region.as_bytes());
    k.push(0);
    k.extend_from_slice(repo.as_bytes());
    k
}

fn replication_key(hour: u64, from: &str, to: &str) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&hour.to_be_bytes());
    k.extend_from_slice(from.as_bytes());
    k.push(0);
    k.extend_from_slice(to.as_bytes());
    k
}

fn stored_key(region: &str) -> Vec<u8> {
    let mut k = vec![b's'];
    k.extend_from_slice(region.as_bytes());
    k
}

/// The hour (since the epoch) a time falls in.
pub fn hour_of(unix: u64) -> u64 {
    unix / SECS_PER_HOUR
}

/// Changes to regions' stored bytes within one entry, written once at its end (reads in
/// an apply see the state before the entry, so several changes to one region in one
/// entry must be summed first).
#[derive(Debug, Default)]
pub struct StorageDeltas {
    deltas: BTreeMap<String, (i128, i128)>,
}

impl StorageDeltas {
    pub fn add(&mut self, region: &str, size: u64) {
        let d = self.deltas.entry(region.to_string()).or_default();
        d.0 += size as i128;
        d.1 += 1;
    }

    pub fn remove(&mut self, region: &str, size: u64) {
        let d = self.deltas.entry(region.to_string()).or_default();
        d.0 -= size as i128;
        d.1 -= 1;
    }

    /// Adds the summed changes to `batch`; returns the new figures (for the gauges).
    pub fn write(self, store: &Store, batch: &mut WriteBatch) -> Result<Vec<(String, Stored)>, StoreError> {
        let mut out = Vec::with_capacity(self.deltas.len());
        for (region, (bytes, blobs)) in self.deltas {
            if bytes == 0 && blobs == 0 {
                continue;
            }
            let before = store.stored_in(&region)?;
            let apply = |v: u64, d: i128| (v as i128 + d).clamp(0, u64::MAX as i128) as u64;
            let now = Stored { bytes: apply(before.bytes, bytes), blobs: apply(before.blobs, blobs) };
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&now.bytes.to_be_bytes());
            value[8..].copy_from_slice(&now.blobs.to_be_bytes());
            batch.put_cf(store.cf(CF_SM_USAGE)?, stored_key(&region), value);
            out.push((region, now));
        }
        Ok(out)
    }
}

/// Applies a region's batch of traffic, and drops buckets before `keep_from_unix`.
pub(super) fn apply_record(
    store: &Store,
    batch: &mut WriteBatch,
    region: &str,
    at_unix: u64,
    keep_from_unix: u64,
    repos: &[(String, Traffic)],
    replicated: &[Replicated],
) -> Result<(), StoreError> {
    let cf = store.cf(CF_SM_USAGE)?;
    let hour = hour_of(at_unix);
    for (repo, traffic) in repos {
        let key = traffic_key(hour, region, repo);
        let mut total = match store.get(CF_SM_USAGE, &key)? {
            Some(raw) => Traffic::decode(&raw)?,
            None => Traffic::default(),
        };
        total.add(traffic);
        batch.put_cf(cf, key, total.encode());
    }
    for r in replicated {
        let key = replication_key(hour, &r.from, region);
        let mut total = match store.get(CF_SM_USAGE, &key)? {
            Some(raw) => Traffic::decode(&raw)?,
            None => Traffic::default(),
        };
        // Replication traffic reuses the push counters: bytes and blobs landed.
        total.pushed_bytes += r.bytes;
        total.pushed_count += r.blobs;
        batch.put_cf(cf, key, total.encode());
    }
    let keep_hour = hour_of(keep_from_unix);
    if keep_hour > 0 {
        for kind in [b't', b'r'] {
            let mut end = vec![kind];
            end.extend_from_slice(&keep_hour.to_be_bytes());
            batch.delete_range_cf(cf, [kind].as_slice(), end.as_slice());
        }
    }
    Ok(())
}

/// One bucket of traffic as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficRow {
    pub hour: u64,
    pub region: String,
    pub repo: String,
    pub traffic: Traffic,
}

/// One bucket of replication as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRow {
    pub hour: u64,
    pub from: String,
    pub to: String,
    pub bytes: u64,
    pub blobs: u64,
}

fn split_hour(key: &[u8]) -> Option<(u64, &[u8])> {
    let hour = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    Some((hour, &key[9..]))
}

fn split_names(rest: &[u8]) -> Option<(String, String)> {
    let nul = rest.iter().position(|b| *b == 0)?;
    Some((String::from_utf8_lossy(&rest[..nul]).into_owned(), String::from_utf8_lossy(&rest[nul + 1..]).into_owned()))
}

impl Store {
    /// What one repository stores, deduplicated within it: its distinct blobs and its
    /// manifests (bytes, items).
    pub fn repo_stored(&self, repo: &str) -> Result<(u64, u64), StoreError> {
        let prefix = super::store::repo_prefix(repo);
        let (mut bytes, mut items) = (0u64, 0u64);
        for (_, v) in self.scan_prefix(super::store::CF_SM_BLOB_LINKS, &prefix, None, usize::MAX)? {
            bytes += super::records::BlobLink::decode(&v)?.size;
            items += 1;
        }
        for (_, v) in self.scan_prefix(super::store::CF_SM_MANIFESTS, &prefix, None, usize::MAX)? {
            bytes += super::records::StoredManifest::body_len(&v)?;
            items += 1;
        }
        Ok((bytes, items))
    }

    pub fn stored_in(&self, region: &str) -> Result<Stored, StoreError> {
        match self.get(CF_SM_USAGE, &stored_key(region))? {
            Some(raw) if raw.len() == 16 => Ok(Stored {
                bytes: u64::from_be_bytes(raw[..8].try_into().unwrap_or_default()),
                blobs: u64::from_be_bytes(raw[8..].try_into().unwrap_or_default()),
            }),
            Some(_) => Err(StoreError::Corrupt { cf: CF_SM_USAGE, reason: "stored".into() }),
            None => Ok(Stored::default()),
        }
    }

    /// Every region's stored figures.
    pub fn stored_by_region(&self) -> Result<Vec<(String, Stored)>, StoreError> {
        let keys = self.scan_prefix(CF_SM_USAGE, b"s", None, usize::MAX)?;
        keys.into_iter().map(|(k, _)| {
            let region = String::from_utf8_lossy(&k[1..]).into_owned();
            Ok((region.clone(), self.stored_in(&region)?))
        }).collect()
    }

    /// Every `kind` bucket (`t` or `r`) from `since_hour` on: its hour, the two names
    /// in its key, its counters.
    fn buckets_since(&self, kind: u8, since_hour: u64) -> Result<Vec<(u64, String, String, Traffic)>, StoreError> {
        let mut start = vec![kind];
        start.extend_from_slice(&since_hour.to_be_bytes());
        let mut out = Vec::new();
        let cf = self.cf(CF_SM_USAGE)?;
        for item in self.db().iterator_cf(cf, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if k.first() != Some(&kind) {
                break;
            }
            let Some((hour, rest)) = split_hour(&k) else { continue };
            let Some((a, b)) = split_names(rest) else { continue };
            out.push((hour, a, b, Traffic::decode(&v)?));
        }
        Ok(out)
    }

    /// Traffic buckets from `since_hour` on.
    pub fn traffic_since(&self, since_hour: u64) -> Result<Vec<TrafficRow>, StoreError> {
        Ok(self
            .buckets_since(b't', since_hour)?
            .into_iter()
            .map(|(hour, region, repo, traffic)| TrafficRow { hour, region, repo, traffic })
            .collect())
    }

    /// Replication buckets from `since_hour` on.
    pub fn replication_since(&self, since_hour: u64) -> Result<Vec<ReplicationRow>, StoreError> {
        Ok(self
            .buckets_since(b'r', since_hour)?
            .into_iter()
            .map(|(hour, from, to, t)| ReplicationRow { hour, from, to, bytes: t.pushed_bytes, blobs: t.pushed_count })
            .collect())
    }
}
