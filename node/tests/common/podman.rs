//! podman as a test client: rootful, daemonless, with its own storage (`vfs`, which needs
//! no overlay mounts), run root, auth file and events log under a temporary directory, so
//! a test never touches the machine's images or credentials. Installed by
//! `deploy/install-deps.sh --test`; a missing podman fails the test (never skipped).

use super::skopeo::command_path;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Podman {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// What a podman run printed.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Podman {
    pub fn new() -> Podman {
        let bin = command_path("podman").unwrap_or_else(|| {
            panic!("podman is not installed: run `deploy/install-deps.sh --test` (it installs podman); this test is required")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        // podman insists the auth file exists, logged in or not.
        std::fs::write(dir.path().join("auth.json"), "{\"auths\":{}}").expect("auth file");
        Podman { bin, dir }
    }

    /// The directory builds can use as their context.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// Runs `podman ARGS` (with `stdin` piped in when given).
    pub async fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        let d = self.dir.path();
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("TMPDIR", d)
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        println!("$ podman {}", args.join(" "));
        let mut child = cmd.spawn().expect("spawn podman");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            pipe.write_all(input.as_bytes()).await.expect("write podman stdin");
        }
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("podman timed out")
            .expect("podman output");
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// Runs `podman ARGS`, which must succeed; returns its stdout.
    pub async fn run(&self, args: &[&str]) -> String {
        let r = self.try_run(args, None).await;
        assert!(r.ok, "podman {} failed:\n{}\n{}", args.join(" "), r.stdout, r.stderr);
        r.stdout
    }

    /// `podman login --tls-verify=false -u USER --password-stdin HOST`, as the README shows.
    pub async fn login(&self, host: &str, user: &str, password: &str) {
        let r = self.try_run(&["login", "--tls-verify=false", "-u", user, "--password-stdin", host], Some(password)).await;
        assert!(r.ok, "podman login {host} as {user} failed:\n{}\n{}", r.stdout, r.stderr);
    }

    /// Builds `FROM scratch` + one `COPY` of `content` for `platform` as `tag` (no cache:
    /// podman's cache does not key on the platform); returns the image id.
    pub async fn build_scratch(&self, tag: &str, platform: &str, content: &[u8]) -> String {
        self.build_from(tag, "scratch", platform, content).await
    }

    /// Builds `FROM base` + one `COPY` of `content` (a file named after `tag`) as `tag`;
    /// returns the image id. A base in a registry is pulled without TLS.
    pub async fn build_from(&self, tag: &str, base: &str, platform: &str, content: &[u8]) -> String {
        let name = tag.replace(['/', ':'], "_");
        let ctx = self.dir.path().join(format!("ctx-{name}"));
        std::fs::create_dir_all(&ctx).expect("build context");
        std::fs::write(ctx.join("payload.bin"), content).expect("payload");
        let containerfile = format!("FROM {base}\nCOPY payload.bin /{name}.bin\n");
        std::fs::write(ctx.join("Containerfile"), containerfile).expect("Containerfile");
        let ctx_s = ctx.to_string_lossy().to_string();
        let args = ["build", "-q", "--no-cache", "--tls-verify=false", "--platform", platform, "-t", tag, &ctx_s];
        let out = self.run(&args).await;
        out.lines().last().unwrap_or_default().trim().to_string()
    }

    /// `podman push --tls-verify=false [EXTRA…] IMAGE`; returns the pushed manifest's digest.
    pub async fn push(&self, image: &str, extra: &[&str]) -> String {
        let file = self.dir.path().join(format!("{}.digest", image.replace(['/', ':'], "_")));
        let file_s = file.to_string_lossy().to_string();
        let mut args = vec!["push", "--tls-verify=false", "--digestfile", &file_s];
        args.extend_from_slice(extra);
        args.push(image);
        self.run(&args).await;
        std::fs::read_to_string(&file).expect("digest file").trim().to_string()
    }

    /// `podman image inspect --format FORMAT IMAGE`.
    pub async fn inspect(&self, image: &str, format: &str) -> String {
        self.run(&["image", "inspect", "--format", format, image]).await.trim().to_string()
    }
}
