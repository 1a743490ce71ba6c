//! `meridian admin usage`: the cluster's usage figures, grouped by repository, region or
//! day, from this node's applied state.

use crate::meta::patterns::pattern_matches;
use crate::meta::store::StoreError;
use crate::meta::usage::{hour_of, Traffic, SECS_PER_HOUR};
use crate::meta::Store;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Repo,
    Region,
    Day,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "repo" | "" => Some(GroupBy::Repo),
            "region" => Some(GroupBy::Region),
            "day" => Some(GroupBy::Day),
            _ => None,
        }
    }
}

pub struct UsageQuery {
    /// Repositories matching this pattern (`None`: all).
    pub repo: Option<String>,
    /// Traffic in this region only (`None`: all).
    pub region: Option<String>,
    /// Traffic from this time on (Unix seconds; buckets are whole hours).
    pub since_unix: u64,
    pub by: GroupBy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    /// The repository, region or day (`YYYY-MM-DD`, UTC).
    pub key: String,
    /// By repository: logical bytes (deduplicated within it); by region: physical bytes
    /// its disk holds. None by day.
    pub stored: Option<(u64, u64)>,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRow {
    pub from: String,
    pub to: String,
    pub bytes: u64,
    pub blobs: u64,
}

pub struct UsageReport {
    pub rows: Vec<UsageRow>,
    pub replication: Vec<PairRow>,
}

/// `YYYY-MM-DD` (UTC) of an hour since the epoch.
fn day_of_hour(hour: u64) -> String {
    crate::auth::rfc3339(hour.saturating_mul(SECS_PER_HOUR)).chars().take(10).collect()
}

pub fn usage(store: &Store, q: &UsageQuery) -> Result<UsageReport, StoreError> {
    let repo_ok = |r: &str| q.repo.as_deref().is_none_or(|p| pattern_matches(p, r));
    let region_ok = |r: &str| q.region.as_deref().is_none_or(|want| want == r);
    let since_hour = hour_of(q.since_unix);
    let mut rows: BTreeMap<String, UsageRow> = BTreeMap::new();
    fn row<'a>(rows: &'a mut BTreeMap<String, UsageRow>, key: &str) -> &'a mut UsageRow {
        rows.entry(key.to_string()).or_insert_with(|| UsageRow { key: key.to_string(), ..Default::default() })
    }
    match q.by {
        GroupBy::Repo => {
            store.for_each_repository(|repo| {
                if repo_ok(repo) {
                    row(&mut rows, repo).stored = Some(store.repo_stored(repo)?);
                }
                Ok(())
            })?;
        }
        GroupBy::Region => {
            for (region, stored) in store.stored_by_region()? {
                if region_ok(&region) {
                    row(&mut rows, &region).stored = Some((stored.bytes, stored.blobs));
                }
            }
        }
        GroupBy::Day => {}
    }
    for t in store.traffic_since(since_hour)? {
        if !repo_ok(&t.repo) || !region_ok(&t.region) {
            continue;
        }
        let key = match q.by {
            GroupBy::Repo => t.repo.clone(),
            GroupBy::Region => t.region.clone(),
            GroupBy::Day => day_of_hour(t.hour),
        };
        row(&mut rows, &key).traffic.add(&t.traffic);
    }
    let mut pairs: BTreeMap<(String, String), PairRow> = BTreeMap::new();
    for r in store.replication_since(since_hour)? {
        if q.region.as_deref().is_some_and(|want| want != r.from && want != r.to) {
            continue;
        }
        let p = pairs
            .entry((r.from.clone(), r.to.clone()))
            .or_insert_with(|| PairRow { from: r.from.clone(), to: r.to.clone(), bytes: 0, blobs: 0 });
        p.bytes += r.bytes;
        p.blobs += r.blobs;
    }
    Ok(UsageReport { rows: rows.into_values().collect(), replication: pairs.into_values().collect() })
}

#[cfg(test)]
mod tests {
    use super::day_of_hour;

    #[test]
    fn days() {
        assert_eq!(day_of_hour(0), "1970-01-01");
        // 2026-12-02T10:00:00Z
        assert_eq!(day_of_hour(1_796_205_600 / 3600), "2026-12-02");
        assert_eq!(day_of_hour(951_782_400 / 3600), "2000-02-29");
    }
}
