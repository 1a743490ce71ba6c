//! A bandwidth cap per source region, shared by every transfer from that region.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token bucket per source region. `bytes_per_sec == 0` means unlimited.
pub struct RegionThrottle {
    bytes_per_sec: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    /// Bytes that may be sent without waiting (negative: debt).
    tokens: f64,
    refilled: Instant,
}

impl RegionThrottle {
    pub fn new(bytes_per_sec: u64) -> RegionThrottle {
        RegionThrottle { bytes_per_sec, buckets: Mutex::new(HashMap::new()) }
    }

    /// Accounts for `bytes` received from `region`, sleeping as long as the cap requires.
    pub async fn consume(&self, region: &str, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let rate = self.bytes_per_sec as f64;
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // At most one second of burst.
            let b = buckets.entry(region.to_string()).or_insert(Bucket { tokens: rate, refilled: now });
            b.tokens = (b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate).min(rate);
            b.refilled = now;
            b.tokens -= bytes as f64;
            if b.tokens < 0.0 {
                Duration::from_secs_f64(-b.tokens / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_the_rate_per_region() {
        let t = RegionThrottle::new(1_000_000);
        let start = Instant::now();
        // 1 s of burst, then 1 MB more must take about a second.
        for _ in 0..20 {
            t.consume("eu", 100_000).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(900), "2 MB at 1 MB/s with 1 s burst took {took:?}");
        // Another region has its own budget.
        let start = Instant::now();
        t.consume("ap", 500_000).await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
