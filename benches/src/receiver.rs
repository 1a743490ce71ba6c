//! `meridian-bench receiver`: a webhook receiver for the events benchmark. It answers every
//! POST with 200 (or, with `--hang`, reads the request and never answers), and appends
//! one line per event received to `--record`: the delivery latency in milliseconds, from
//! the event's `timestamp` (when the registry took the push) to its arrival here. Both
//! clocks are this machine's.
//!
//! HTTP/1.1 by hand on a `TcpListener` (keep-alive, `Content-Length` bodies): the
//! benchmark crate has no server framework, and a receiver needs no more.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Args, Debug)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// Never answer (a receiver that hangs).
    #[arg(long)]
    hang: bool,
    /// Append each event's delivery latency (ms) to this file.
    #[arg(long)]
    record: Option<PathBuf>,
}

pub async fn run(args: &ReceiverArgs) -> Result<()> {
    let listener = TcpListener::bind(&args.listen).await.with_context(|| format!("listen on {}", args.listen))?;
    let record = match &args.record {
        Some(path) => Some(Arc::new(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))),
        None => None,
    };
    loop {
        let (stream, _) = listener.accept().await?;
        let record = record.clone();
        let hang = args.hang;
        tokio::spawn(async move {
            let _ = serve(stream, hang, record).await;
        });
    }
}

/// Requests on one connection, until the client closes it.
async fn serve(stream: TcpStream, hang: bool, record: Option<Arc<Mutex<std::fs::File>>>) -> Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        if hang {
            // Hold the connection: the sender's timeout is what ends it.
            std::future::pending::<()>().await;
        }
        let arrived = now_ms();
        if let Some(file) = &record {
            let latencies = event_latencies(&body, arrived);
            if let Ok(mut f) = file.lock() {
                for ms in latencies {
                    let _ = writeln!(f, "{ms}");
                }
            }
        }
        reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await?;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `arrived` minus each event's `timestamp`, for the events of a Distribution envelope.
fn event_latencies(body: &[u8], arrived: i64) -> Vec<i64> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return Vec::new() };
    v["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["action"] != "ping")
                .filter_map(|e| e["timestamp"].as_str().and_then(parse_timestamp_ms))
                .map(|at| arrived - at)
                .collect()
        })
        .unwrap_or_default()
}

/// `2026-12-03T14:00:00.123Z` in milliseconds since the epoch.
fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    Some(((days_from_civil(y, m, day) * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_millis() {
        assert_eq!(parse_timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_timestamp_ms("2000-03-01T00:00:01.5Z"), Some(951_868_801_500));
        assert_eq!(parse_timestamp_ms("2026-12-03T14:00:00Z"), Some(1_796_306_400_000));
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }
}
