//! HTTPS on the registry listener: a node started with `tls_cert_file` / `tls_key_file`
//! (a test CA and server certificates made with the openssl CLI) serves the API over TLS
//! only, names an `https://` token realm in its challenges, lets skopeo push and pull over
//! TLS with credentials (trusting only the test CA), and after the files are replaced and
//! SIGHUP is sent, serves the new certificate — a broken pair on reload is refused and the
//! previous one kept.

mod common;

use common::certs::{make_ca, make_cert};
use common::free_port;
use common::skopeo::{build_layout, ensure_skopeo, read_layout_blobs, run_skopeo};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "tls-admin-password";

/// `curl` over HTTPS trusting only the test CA: (status, the served certificate's subject line).
fn curl(ca: &Path, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let subject = stderr.lines().find(|l| l.contains("subject:")).unwrap_or_default().to_string();
    (status, subject)
}

fn header_of(ca: &Path, url: &str, name: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "-D", "-", "-o", "/dev/null", "--max-time", "5", "--cacert"]).arg(ca).arg(url).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .map(|l| l.split_once(':').map(|x| x.1).unwrap_or_default().trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_serves_https_and_reloads_its_certificate_on_sighup() {
    let skopeo = ensure_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "ca");
    make_cert(d, "ca", "first");
    make_cert(d, "ca", "second");
    std::fs::copy(d.join("first.crt"), d.join("server.crt")).unwrap();
    std::fs::copy(d.join("first.key"), d.join("server.key")).unwrap();

    let port = free_port();
    let log = std::fs::File::create(d.join("node.log")).unwrap();
    let mut child = KillOnDrop(Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(d.join("data"))
        .env("MERIDIAN_TLS_CERT_FILE", d.join("server.crt"))
        .env("MERIDIAN_TLS_KEY_FILE", d.join("server.key"))
        .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PW)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn meridian"));
    let ca = d.join("ca.crt");
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&ca, &format!("{base}/readyz")).0 != 200 {
        assert!(Instant::now() < deadline, "no HTTPS /readyz: {}", std::fs::read_to_string(d.join("node.log")).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // TLS only, with the configured certificate; the challenge names an https realm.
    let (status, subject) = curl(&ca, &format!("{base}/v2/"));
    assert_eq!(status, 401);
    assert!(subject.contains("CN=first"), "served certificate: {subject}");
    let challenge = header_of(&ca, &format!("{base}/v2/"), "www-authenticate").expect("challenge");
    assert!(challenge.contains(&format!("realm=\"{base}/token\"")), "{challenge}");
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/v2/")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain HTTP answered on the TLS port");

    // skopeo pushes and pulls over TLS, trusting only the test CA.
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let certs = certs.to_string_lossy().to_string();
    let layout = build_layout(&d.join("src"), 5_000);
    let src = format!("oci:{}:v1", d.join("src").display());
    let dst = format!("oci:{}:v1", d.join("dst").display());
    let remote = format!("docker://127.0.0.1:{port}/secure/app:v1");
    let creds = format!("admin:{ADMIN_PW}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(d.join("node.log")).unwrap_or_default().contains("created the admin user") {
        assert!(Instant::now() < deadline, "no admin user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-cert-dir", &certs, "--dest-creds", &creds, &src, &remote]).await;
    run_skopeo(&skopeo, &["--insecure-policy", "copy", "--all", "--preserve-digests", "--src-cert-dir", &certs, "--src-creds", &creds, &remote, &dst]).await;
    let pulled = read_layout_blobs(&d.join("dst"));
    assert!(pulled.contains_key(&common::oci::sha256_digest(&layout.index)), "the index came back over TLS");

    // New files + SIGHUP: new connections get the new certificate.
    std::fs::copy(d.join("second.crt"), d.join("server.crt")).unwrap();
    std::fs::copy(d.join("second.key"), d.join("server.key")).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, subject) = curl(&ca, &format!("{base}/v2/"));
        if subject.contains("CN=second") {
            assert_eq!(status, 401);
            break;
        }
        assert!(Instant::now() < deadline, "still serving {subject} after SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken pair on reload is refused; the node keeps serving the previous certificate.
    std::fs::write(d.join("server.key"), "not a key").unwrap();
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(d.join("node.log")).unwrap_or_default().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "the failed reload was not logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, subject) = curl(&ca, &format!("{base}/v2/"));
    assert_eq!(status, 401);
    assert!(subject.contains("CN=second"), "after a failed reload: {subject}");
    assert!(child.0.try_wait().unwrap().is_none(), "the node exited");
}

/// The node process, killed when the test ends — also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
