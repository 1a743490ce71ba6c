//! A real browser for the console tests: Debian's headless `chromium`, driven through
//! `chromedriver` with the W3C WebDriver protocol (JSON over HTTP on loopback, spoken
//! here directly with reqwest — a few endpoints, no extra crates).
//!
//! `Browser::start(test)` runs a chromedriver of its own on a free loopback port, opens a
//! session with a fresh profile, and keeps each screenshot under
//! `target/test-output/console/<test>/`. Dropping it ends the session and kills the
//! driver's whole process group (chromium included). Nothing is downloaded: without
//! `/usr/bin/chromedriver` the test fails with the command that installs it.

use reqwest::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client,
    /// Where screenshots go.
    pub out: PathBuf,
    shots: AtomicU32,
    _profile: tempfile::TempDir,
}

/// The directory a test's artifacts (screenshots, driver log) go to.
pub fn output_dir(suite: &str, test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-output").join(suite).join(test)
}

impl Browser {
    /// A headless chromium with a fresh profile, for test `test`.
    pub async fn start(test: &str) -> Browser {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install the browser the console tests use with `deploy/install-deps.sh --test`"
            );
        }
        let out = output_dir("console", test);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("test output directory");
        let profile = tempfile::tempdir().expect("browser profile");
        let http = Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = super::free_port();
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", out.join("chromedriver.log").display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Its own process group: Drop kills chromium with it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut driver = cmd.spawn().expect("spawn chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(r) = http.get(format!("{base}/status")).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["value"]["ready"] == true {
                            ready = true;
                            break;
                        }
                    }
                }
                if let Ok(Some(status)) = driver.try_wait() {
                    last_error = format!("chromedriver exited: {status}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if !ready {
                kill_group(&mut driver);
                continue;
            }
            let caps = json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}});
            let created: Value = match http.post(format!("{base}/session")).json(&caps).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(e) => {
                    last_error = e.to_string();
                    kill_group(&mut driver);
                    continue;
                }
            };
            let Some(session) = created["value"]["sessionId"].as_str().map(String::from) else {
                kill_group(&mut driver);
                panic!("chromedriver would not start chromium: {created}");
            };
            let version = created["value"]["capabilities"]["browserVersion"].as_str().unwrap_or("?").to_string();
            eprintln!("[browser] chromium {version} via {base}; screenshots in {}", out.display());
            return Browser { driver, base, session, http, out, shots: AtomicU32::new(0), _profile: profile };
        }
        panic!("chromedriver never became ready: {last_error}");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!("{path}: {}", v["value"]))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("webdriver {e}"))
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The address the browser shows now.
    pub async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await.unwrap_or_else(|e| panic!("webdriver {e}"));
        v.as_str().unwrap_or_default().to_string()
    }

    /// The element `css` selects, if the page has one.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await.ok()?;
        v[ELEMENT].as_str().map(String::from)
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        let v = self.post("/elements", json!({ "using": "css selector", "value": css })).await;
        v.as_array().map(Vec::len).unwrap_or(0)
    }

    /// Waits up to `timeout` for an element `css` selects.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let shot = self.shot(&format!("missing-{}", css.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))).await;
                panic!("no {css} on {} within {timeout:?} (screenshot {})", self.url().await, shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of the element `css` selects (waiting up to 10 s for it). An
    /// element that went stale between finding and reading it (the page was replaced) is
    /// looked up again.
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.wait_for(css, Duration::from_secs(10)).await;
            match self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None).await {
                Ok(v) => return v.as_str().unwrap_or_default().to_string(),
                Err(err) if err.contains("stale element") && Instant::now() < deadline => continue,
                Err(err) => panic!("webdriver {err}"),
            }
        }
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.post(&format!("/element/{e}/click"), json!({})).await;
    }

    /// Clicks the element `css` selects and waits until the page it leads to (a form's
    /// POST and the redirect after it) has replaced this one: read at once, the old page's
    /// elements — an earlier notice — could answer instead.
    pub async fn click_through(&self, css: &str) {
        self.js("window.__meridianOldPage = true;", json!([])).await;
        self.click(css).await;
        self.wait_for_next_page(&format!("clicking {css}")).await;
    }

    /// Runs `script` (e.g. a form's `submit()`) and waits, as [`Self::click_through`]
    /// does, until the page it leads to has replaced this one.
    pub async fn js_through(&self, script: &str) {
        self.js("window.__meridianOldPage = true;", json!([])).await;
        self.js(script, json!([])).await;
        self.wait_for_next_page(&format!("running {script:?}")).await;
    }

    /// Waits until the page marked `__meridianOldPage` is gone and its successor loaded.
    async fn wait_for_next_page(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let script = json!({ "script": "return window.__meridianOldPage === undefined && document.readyState === 'complete';", "args": [] });
            // While the page changes, the script may fail; that is not an answer yet.
            if let Ok(Value::Bool(true)) = self.call(reqwest::Method::POST, "/execute/sync", Some(script)).await {
                return;
            }
            if Instant::now() > deadline {
                let shot = self.shot("click-through-stuck").await;
                panic!("{what} on {} led nowhere within 10 s (screenshot {})", self.url().await, shot.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.post(&format!("/element/{e}/clear"), json!({})).await;
        self.post(&format!("/element/{e}/value"), json!({ "text": text })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// The cookies the browser holds for the current page, as WebDriver reports them
    /// (with `httpOnly`, `secure`, `sameSite`).
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self.call(reqwest::Method::GET, "/cookie", None).await.unwrap_or_else(|e| panic!("webdriver {e}"));
        v.as_array().cloned().unwrap_or_default()
    }

    /// Saves a screenshot as `<NN>-<name>.png` in the test's output directory.
    pub async fn shot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let n = self.shots.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.out.join(format!("{n:02}-{name}.png"));
        if let Ok(v) = self.call(reqwest::Method::GET, "/screenshot", None).await {
            if let Ok(png) = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()) {
                let _ = std::fs::write(&path, png);
            }
        }
        path
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group our own child leads.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
