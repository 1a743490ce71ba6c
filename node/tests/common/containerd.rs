//! containerd as a test client: a `containerd` daemon of the test's own (root, state,
//! socket and config under a temporary directory; the CRI plugin off), driven with `ctr`,
//! stopped when the value is dropped. Installed by `deploy/install-deps.sh --test`; a
//! missing containerd fails the test (never skipped).

use super::skopeo::command_path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Containerd {
    ctr: PathBuf,
    socket: PathBuf,
    daemon: std::process::Child,
    dir: tempfile::TempDir,
}

pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Containerd {
    pub async fn start() -> Containerd {
        let missing = |what: &str| -> PathBuf {
            command_path(what).unwrap_or_else(|| {
                panic!("{what} is not installed: run `deploy/install-deps.sh --test` (it installs containerd); this test is required")
            })
        };
        let (daemon_bin, ctr) = (missing("containerd"), missing("ctr"));
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = d.join("root"),
            state = d.join("state"),
            sock = socket,
            ttrpc = d.join("containerd.sock.ttrpc"),
        );
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config).expect("containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("containerd log");
        let daemon = std::process::Command::new(daemon_bin)
            .arg("--config")
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let me = Containerd { ctr, socket, daemon, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.try_run(&["version"]).await.ok {
                return me;
            }
            assert!(Instant::now() < deadline, "containerd did not start:\n{}", me.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCKET ARGS`.
    pub async fn try_run(&self, args: &[&str]) -> Ran {
        let out = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::process::Command::new(&self.ctr)
                .arg("--address")
                .arg(&self.socket)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("ctr timed out")
        .expect("spawn ctr");
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// `ctr ARGS`, which must succeed (printed without the `--user` password).
    pub async fn run(&self, args: &[&str]) -> String {
        let shown: Vec<&str> = args
            .iter()
            .enumerate()
            .map(|(i, a)| if i > 0 && args[i - 1] == "--user" { "<user:password>" } else { *a })
            .collect();
        println!("$ ctr {}", shown.join(" "));
        let r = self.try_run(args).await;
        assert!(r.ok, "ctr {} failed:\n{}\n{}", shown.join(" "), r.stdout, r.stderr);
        r.stdout
    }

    /// The target digest of image `name` in containerd's image store.
    pub async fn image_digest(&self, name: &str) -> String {
        let out = self.run(&["images", "ls"]).await;
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().find(|f| f.starts_with("sha256:")))
            .unwrap_or_else(|| panic!("{name} not in `ctr images ls`:\n{out}"))
            .to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}
