//! The fault proxy forwards, delays, caps bandwidth and partitions a real TCP link.

use chaos_tests::proxy::FaultProxy;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn roundtrip(addr: std::net::SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(payload).await?;
    let mut out = vec![0u8; payload.len()];
    s.read_exact(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn forwards_delays_limits_and_partitions() {
    let upstream = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    assert_eq!(roundtrip(proxy.listen_addr, b"hello").await.unwrap(), b"hello");

    proxy.set_delay(Duration::from_millis(100));
    let t = Instant::now();
    roundtrip(proxy.listen_addr, b"x").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200), "two one-way delays: {:?}", t.elapsed());

    // Jitter varies the delay per chunk: over a few round trips the times spread.
    proxy.set_delay(Duration::ZERO);
    proxy.set_jitter(Duration::from_millis(100));
    let mut times = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        roundtrip(proxy.listen_addr, b"y").await.unwrap();
        times.push(t.elapsed());
    }
    assert!(times.iter().any(|t| *t >= Duration::from_millis(20)), "no jitter seen: {times:?}");

    proxy.heal();
    proxy.set_bandwidth(100_000);
    let t = Instant::now();
    roundtrip(proxy.listen_addr, &vec![7u8; 50_000]).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(900), "50 kB each way at 100 kB/s: {:?}", t.elapsed());

    proxy.heal();
    proxy.partition(true, true);
    let r = tokio::time::timeout(Duration::from_millis(300), roundtrip(proxy.listen_addr, b"lost")).await;
    assert!(r.is_err(), "a partitioned link must not deliver");
    proxy.heal();
    assert_eq!(roundtrip(proxy.listen_addr, b"back").await.unwrap(), b"back");

    // A connection open across a partition stalls, then delivers everything intact and
    // in order (a partitioned TCP link loses no bytes, it only delays them).
    let mut s = TcpStream::connect(proxy.listen_addr).await.unwrap();
    s.write_all(b"before ").await.unwrap();
    let mut first = [0u8; 7];
    s.read_exact(&mut first).await.unwrap();
    proxy.partition(true, true);
    s.write_all(b"during the partition").await.unwrap();
    let mut rest = vec![0u8; 20];
    let stalled = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut rest)).await;
    assert!(stalled.is_err(), "nothing crosses a partition");
    proxy.heal();
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut rest)).await.unwrap().unwrap();
    assert_eq!(&rest, b"during the partition");
}

#[tokio::test]
async fn refuses_non_loopback_upstreams() {
    assert!(FaultProxy::start("192.0.2.1:80".parse().unwrap()).await.is_err());
}
