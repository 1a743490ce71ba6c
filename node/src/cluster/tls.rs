//! Mutual TLS on the gRPC links (Raft, forwarding, blob transfer, admin): every node
//! presents a certificate signed by the cluster's CA and accepts only peers that do.
//! Configured with `grpc_tls_cert_file`, `grpc_tls_key_file` and `grpc_tls_ca_file`
//! (all three, or none for plain h2c on a private network).

use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct GrpcTlsError {
    path: PathBuf,
    source: std::io::Error,
}

/// The node's TLS material for both directions of its gRPC links.
#[derive(Clone, Debug)]
pub struct GrpcTls {
    identity: Identity,
    ca: Certificate,
}

fn read(path: &Path) -> Result<Vec<u8>, GrpcTlsError> {
    std::fs::read(path).map_err(|source| GrpcTlsError { path: path.to_path_buf(), source })
}

impl GrpcTls {
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<GrpcTls, GrpcTlsError> {
        Ok(GrpcTls { identity: Identity::from_pem(read(cert)?, read(key)?), ca: Certificate::from_pem(read(ca)?) })
    }

    /// Serve only to clients whose certificate the CA signed.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Dial peers whose certificate the CA signed, presenting ours.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }
}
