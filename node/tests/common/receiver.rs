//! A webhook receiver on loopback for the events tests: a real HTTP server (axum) that
//! records every request (headers, body, when, what it answered), checks the
//! `Meridian-Signature`, and behaves as told: answer, fail, hang.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Ok,
    /// Answers 500 to the next n requests, then 200.
    FailFirst(u32),
    /// Answers this status to everything.
    Always(u16),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
    /// What the receiver answered (0: it hung).
    pub answered: u16,
    /// The signature header matched the body under the receiver's secret.
    pub signature_ok: bool,
    /// The check given to `start_checking` held for every event, at arrival.
    pub check_ok: bool,
}

/// A check run on each event as it arrives, before the receiver answers.
pub type Check = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

struct Inner {
    behaviour: Behaviour,
    secret: Option<String>,
    received: Vec<Received>,
    check: Option<Check>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn hook(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (answer, hang) = {
        let mut g = inner.lock().unwrap();
        let signature_ok = match &g.secret {
            Some(secret) => headers.get("meridian-signature").and_then(|v| v.to_str().ok()) == Some(sign(secret, &body).as_str()),
            None => headers.get("meridian-signature").is_none(),
        };
        let (answer, hang) = match g.behaviour {
            Behaviour::Ok => (200, false),
            Behaviour::FailFirst(0) => (200, false),
            Behaviour::FailFirst(n) => {
                g.behaviour = Behaviour::FailFirst(n - 1);
                (500, false)
            }
            Behaviour::Always(s) => (s, false),
            Behaviour::Hang => (0, true),
        };
        let check_ok = match &g.check {
            Some(check) => serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["events"].as_array().cloned())
                .is_some_and(|events| events.iter().all(|e| check(e))),
            None => true,
        };
        g.received.push(Received { headers, body: body.to_vec(), at: Instant::now(), answered: answer, signature_ok, check_ok });
        (answer, hang)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    StatusCode::from_u16(answer).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Receiver {
    /// Listens on 127.0.0.1 (an ephemeral port); `secret` is what signatures are checked with.
    pub async fn start(secret: Option<&str>) -> Receiver {
        Receiver::start_with(secret, None).await
    }

    /// A receiver that runs `check` on every event as it arrives (see `Received::check_ok`).
    pub async fn start_checking(check: Check) -> Receiver {
        Receiver::start_with(None, Some(check)).await
    }

    async fn start_with(secret: Option<&str>, check: Option<Check>) -> Receiver {
        let inner =
            Arc::new(Mutex::new(Inner { behaviour: Behaviour::Ok, secret: secret.map(str::to_string), received: Vec::new(), check }));
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.inner.lock().unwrap().behaviour = behaviour;
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// The events of every request it answered with 2xx, in arrival order (duplicates kept).
    pub fn accepted(&self) -> Vec<Value> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .flat_map(|r| {
                let v: Value = serde_json::from_slice(&r.body).expect("a JSON envelope");
                v["events"].as_array().expect("an events array").clone()
            })
            .collect()
    }

    /// The accepted events, each id once, in order of first receipt.
    pub fn distinct(&self) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.accepted().into_iter().filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_string())).collect()
    }

    /// Waits until at least `n` distinct events were accepted.
    pub async fn wait_distinct(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.distinct();
            if got.len() >= n {
                return got;
            }
            if Instant::now() > deadline {
                panic!("the receiver got {} of {n} events within {timeout:?}: {got:#?}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
