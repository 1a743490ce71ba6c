//! Test certificates made with the openssl CLI (installed by `deploy/install-deps.sh --test`):
//! a CA and certificates it signs, valid for 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed CA: `<name>.crt`, `<name>.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key, "-out", &crt, "-subj", &format!("/CN={name}"), "-days", "2"]);
    dir.join(crt)
}

/// A certificate named `cn` for IP 127.0.0.1 (server and client use), signed by CA `ca`:
/// returns (`<cn>.crt`, `<cn>.key`).
pub fn make_cert(dir: &Path, ca: &str, cn: &str) -> (PathBuf, PathBuf) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
    let (key, csr, crt) = (format!("{cn}.key"), format!("{cn}.csr"), format!("{cn}.crt"));
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]);
    openssl(dir, &["x509", "-req", "-in", &csr, "-CA", &format!("{ca}.crt"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", "san.ext"]);
    (dir.join(crt), dir.join(key))
}
