//! A single-node Garage (the S3-compatible object store `deploy/install-deps.sh --test`
//! builds into `target/test-tools/bin`) on loopback, with one bucket and one key, for a
//! test that needs an object store. Stopped (and its data dropped) when dropped.
//!
//! Which binary: `GARAGE_BIN`, else `target/test-tools/bin/garage` of this workspace, else
//! `garage` on `PATH`.

use super::free_ports;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Garage {
    child: Child,
    config: PathBuf,
    /// The S3 API, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Garage's own region name, which requests must be signed for.
    pub region: String,
    dir: tempfile::TempDir,
}

pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(p);
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/bin/garage");
    if built.exists() {
        return built;
    }
    PathBuf::from("garage")
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

impl Garage {
    /// Starts Garage and waits until its bucket answers.
    pub async fn start() -> Garage {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = free_ports(3);
        let config = dir.path().join("garage.toml");
        let text = format!(
            "metadata_dir = {meta:?}\n\
             data_dir = {data:?}\n\
             db_engine = \"sqlite\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{secret}\"\n\
             [s3_api]\n\
             s3_region = \"garage\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             root_domain = \".s3.garage.localhost\"\n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n",
            meta = dir.path().join("meta"),
            data = dir.path().join("data"),
            rpc = ports[0],
            s3 = ports[1],
            admin = ports[2],
            secret = random_hex(32),
        );
        std::fs::write(&config, text).expect("garage config");
        let access_key_id = format!("GK{}", random_hex(12));
        let secret_access_key = random_hex(32);
        let bucket = "meridian-test".to_string();
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("garage log");
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &access_key_id)
            .env("GARAGE_DEFAULT_SECRET_KEY", &secret_access_key)
            .env("GARAGE_DEFAULT_BUCKET", &bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} (deploy/install-deps.sh --test builds it): {e}", garage_bin().display()));
        let garage = Garage {
            child,
            config,
            endpoint: format!("http://127.0.0.1:{}", ports[1]),
            bucket,
            access_key_id,
            secret_access_key,
            region: "garage".to_string(),
            dir,
        };
        garage.wait_ready().await;
        garage
    }

    /// Ready once the bucket is known through the admin CLI (the layout is applied and
    /// the tables answer) and the S3 port accepts connections.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let known = self.cli(&["bucket", "info", &self.bucket]);
            let port = self.endpoint.trim_start_matches("http://");
            if known && tokio::net::TcpStream::connect(port).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("garage did not become ready; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The `garage` CLI pointed at this instance.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c").arg(&self.config).args(args);
        cmd
    }

    /// Runs the `garage` CLI against this instance (e.g. `key deny`), returning success.
    pub fn cli(&self, args: &[&str]) -> bool {
        self.command(args).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
    }

    /// What `garage bucket info` says of the bucket (objects, size, unfinished uploads).
    pub fn bucket_info(&self) -> String {
        let out = self.command(&["bucket", "info", &self.bucket]).output().expect("garage bucket info");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The `MERIDIAN_STORAGE_*` settings a node uses to keep its blobs here, under `prefix`.
    pub fn node_env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("MERIDIAN_STORAGE_KIND".into(), "s3".into()),
            ("MERIDIAN_STORAGE_BUCKET".into(), self.bucket.clone()),
            ("MERIDIAN_STORAGE_PREFIX".into(), prefix.to_string()),
            ("MERIDIAN_STORAGE_ENDPOINT".into(), self.endpoint.clone()),
            ("MERIDIAN_STORAGE_REGION".into(), self.region.clone()),
            ("MERIDIAN_STORAGE_PATH_STYLE".into(), "true".into()),
            ("MERIDIAN_STORAGE_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            ("MERIDIAN_STORAGE_SECRET_ACCESS_KEY".into(), self.secret_access_key.clone()),
        ]
    }

    /// A client's view of the bucket under `prefix`, for assertions on what is stored.
    pub fn listing(&self, prefix: &str) -> S3Listing {
        S3Listing {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            prefix: prefix.to_string(),
        }
    }

    /// Every key under `prefix` in the bucket.
    pub fn list_keys(&self, prefix: &str) -> Vec<String> {
        self.listing(prefix).keys()
    }

    /// Stops the server (for tests of a store that goes away mid-run).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where a node keeps its blobs in a test's Garage: lists them without owning the server.
#[derive(Clone, Debug)]
pub struct S3Listing {
    endpoint: String,
    bucket: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    prefix: String,
}

impl S3Listing {
    /// Runs `request` against the bucket on a small runtime of its own, so sync assertions
    /// can call it from any test (blocking).
    fn run<T: Send>(&self, request: impl AsyncFnOnce(&object_store::aws::AmazonS3) -> T + Send) -> T {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(&self.region)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .build()
            .expect("S3 client for the test's Garage");
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    runtime.block_on(request(&store))
                })
                .join()
                .expect("S3 request thread")
        })
    }

    /// Every key under the prefix.
    pub fn keys(&self) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(self.prefix.as_str());
        self.run(async |store: &object_store::aws::AmazonS3| {
            let listed: Vec<object_store::ObjectMeta> =
                store.list(Some(&prefix)).try_collect().await.expect("listing the test's bucket");
            listed.into_iter().map(|m| m.location.to_string()).collect()
        })
    }

    /// The bytes of the object `<prefix>/<algorithm>/<hex>` for `digest`, if there is one.
    pub fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        let key = object_store::path::Path::from(format!("{}/{algorithm}/{hex}", self.prefix));
        self.run(async |store: &object_store::aws::AmazonS3| match store.get(&key).await {
            Ok(got) => Some(got.bytes().await.expect("reading an object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        })
    }
}
