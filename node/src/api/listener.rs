//! The registry's listener: plain TCP, or TLS (rustls) when a certificate and key are
//! configured. TLS handshakes run in their own tasks with a deadline, so a slow or silent
//! client never holds up the accept loop; SIGHUP reloads the certificate and key (a bad
//! pair is logged and the previous one kept), and new connections use the new pair.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

/// A TLS handshake that has not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificate chain {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error("reading private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(String),
}

/// The client's address, as the API sees it (`ConnectInfo<PeerAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, RegistryListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, RegistryListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

pub enum RegistryListener {
    Plain(TcpListener),
    Tls { local: SocketAddr, ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> },
}

/// Reads a PEM certificate chain and private key into a rustls acceptor offering h2 and
/// HTTP/1.1.
pub fn load_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates { path: cert.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates { path: cert.to_path_buf(), reason: "no certificate in the file".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.to_path_buf(), reason: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl RegistryListener {
    /// TLS when `tls` names a certificate and key, plain TCP otherwise. With TLS, a task
    /// accepts connections and runs handshakes; another reloads the pair on SIGHUP.
    /// `hup`: the SIGHUP stream, taken as the node starts — until then the signal's
    /// default action (ending the process) would apply, and `systemctl reload` during a
    /// long start (a log to replay) must not stop the node.
    pub fn new(
        listener: TcpListener,
        tls: Option<(PathBuf, PathBuf)>,
        hup: Option<tokio::signal::unix::Signal>,
    ) -> Result<RegistryListener, TlsError> {
        let Some((cert, key)) = tls else {
            // Nothing to reload, but the signal must still be taken (see above).
            tokio::spawn(ignore_sighup(hup));
            return Ok(RegistryListener::Plain(listener));
        };
        let acceptor = Arc::new(RwLock::new(load_acceptor(&cert, &key)?));
        let local = listener.local_addr().map_err(|e| TlsError::Config(e.to_string()))?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_tls(listener, acceptor.clone(), tx));
        tokio::spawn(reload_on_sighup(acceptor, cert, key, hup));
        Ok(RegistryListener::Tls { local, ready })
    }
}

impl Listener for RegistryListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            RegistryListener::Plain(l) => {
                let (io, addr) = Listener::accept(l).await;
                no_delay(&io);
                (Either::Left(io), addr)
            }
            RegistryListener::Tls { ready, .. } => match ready.recv().await {
                Some((io, addr)) => (Either::Right(io), addr),
                // The acceptor task ended (its listener failed for good): serve nothing more.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self {
            RegistryListener::Plain(l) => l.local_addr(),
            RegistryListener::Tls { local, .. } => Ok(*local),
        }
    }
}

/// Responses go out as headers then body in separate writes; with Nagle's algorithm on,
/// the body of a small response waits for the client's delayed ACK (measured: ~12 ms per
/// sequential manifest or blob GET on one connection, against ~0.3 ms without).
fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// Named background task: accepts TCP connections and completes each TLS handshake in
/// its own task, handing finished ones to the server.
async fn accept_tls(
    listener: TcpListener,
    acceptor: Arc<RwLock<TlsAcceptor>>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a TLS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ready.is_closed() {
            return;
        }
        no_delay(&tcp);
        let acceptor = acceptor.read().unwrap_or_else(|p| p.into_inner()).clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Named background task: takes SIGHUP on a node without TLS (nothing to reload).
async fn ignore_sighup(hup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hup else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: no TLS certificate to reload (the registry listener is plain HTTP)");
    }
}

/// Named background task: reloads the certificate and key on every SIGHUP.
async fn reload_on_sighup(acceptor: Arc<RwLock<TlsAcceptor>>, cert: PathBuf, key: PathBuf, hup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hup else {
        tracing::warn!("cannot listen for SIGHUP; TLS certificates will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match load_acceptor(&cert, &key) {
            Ok(new) => {
                *acceptor.write().unwrap_or_else(|p| p.into_inner()) = new;
                tracing::info!(cert = %cert.display(), "reloaded the TLS certificate and key");
            }
            Err(e) => tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate"),
        }
    }
}
