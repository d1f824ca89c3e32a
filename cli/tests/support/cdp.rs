//! Headless Chromium for the web page test, driven through the Chrome
//! DevTools Protocol (CDP): JSON calls (`{"id","method","params"}`) and
//! their answers over one WebSocket per page.
//!
//! Why a client of our own instead of `headless_chrome`: the test needs
//! five calls (navigate, evaluate, set the viewport, take a screenshot),
//! and this file is all of it over `tungstenite` (sync, no TLS, a handful
//! of small dependencies), while `headless_chrome` brings a much larger
//! tree and a browser downloader that cannot work offline. Everything a
//! test does on the page is `Runtime.evaluate` of a JS expression, so the
//! test reads like what a person does: fill, click, read the text.
//!
//! The browser is Debian's `chromium` (`$CHROMIUM` overrides): a missing
//! binary is an error, never a skip. It gets a temp `--user-data-dir` and
//! `--remote-debugging-port=0`; the port it picked is read from
//! `DevToolsActivePort` in that dir, so no port can be taken in between.
//! Every wait is bounded and its error says what was awaited, with the
//! page's text and the browser's log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value as Json};
use tungstenite::{Message, WebSocket};

/// The longest any single step may take.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The browser binary: `$CHROMIUM`, else `chromium` on `PATH` or in `/usr/bin`.
pub fn find_chromium() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").map(PathBuf::from) {
        if !path.is_file() {
            bail!("$CHROMIUM is {}, which is not a file", path.display());
        }
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "chromium is not installed: the web page test needs a real browser \
                 (`apt-get install chromium`, as .ci/run does) or `$CHROMIUM`"
            )
        })
}

/// A headless Chromium process with its own profile, killed on drop.
pub struct Chromium {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Chromium {
    pub fn start() -> Result<Chromium> {
        let binary = find_chromium()?;
        let dir = tempfile::Builder::new()
            .prefix("relay-chromium-")
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("chromium.log"))?;
        let child = Command::new(&binary)
            // The sandbox needs an unprivileged user (tests and CI run as
            // root); the only page loaded is the hub's, on loopback.
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .args(["--disable-dev-shm-usage", "--no-first-run"])
            .args(["--no-default-browser-check", "--disable-extensions"])
            .args(["--disable-background-networking", "--disable-sync"])
            .args(["--disable-component-update", "--hide-scrollbars"])
            .args([
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg("--remote-debugging-port=0")
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut chromium = Chromium {
            child,
            dir,
            port: 0,
        };
        chromium.port = chromium.wait_for_port()?;
        Ok(chromium)
    }

    /// The browser's own log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }

    fn wait_for_port(&mut self) -> Result<u16> {
        let file = self.dir.path().join("profile").join("DevToolsActivePort");
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return Ok(port);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "chromium exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            if started.elapsed() > LIMIT {
                bail!(
                    "chromium did not open its DevTools port within {LIMIT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first tab, through its DevTools WebSocket.
    pub fn page(&self) -> Result<Page> {
        let targets = get_json(self.port, "/json/list")?;
        let url = targets
            .as_array()
            .and_then(|all| all.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .ok_or_else(|| anyhow!("no page target in {targets}"))?;
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(LIMIT))?;
        stream.set_write_timeout(Some(LIMIT))?;
        let (socket, _) = tungstenite::client::client(url, stream)
            .map_err(|e| anyhow!("DevTools WebSocket handshake with {url}: {e}"))?;
        Ok(Page { socket, next: 0 })
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://127.0.0.1:<port><path>` as JSON (DevTools' HTTP endpoints,
/// which keep the connection open: the body is read by its length).
fn get_json(port: u16, path: &str) -> Result<Json> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(LIMIT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| anyhow!("no Content-Length from DevTools {path}: {head:?}"))?;
            if body.len() >= length {
                return serde_json::from_str(&body[..length])
                    .with_context(|| format!("DevTools {path}: {body:?}"));
            }
        }
        let n = stream
            .read(&mut chunk)
            .with_context(|| format!("reading DevTools {path}"))?;
        if n == 0 {
            bail!("DevTools closed {path} early: {text:?}");
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// One tab.
pub struct Page {
    socket: WebSocket<TcpStream>,
    next: u64,
}

impl Page {
    /// One CDP call; its `result`, or an error with CDP's message.
    pub fn call(&mut self, method: &str, params: Json) -> Result<Json> {
        self.next += 1;
        let id = self.next;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(request.to_string()))
            .with_context(|| format!("sending {method}"))?;
        loop {
            let message = self
                .socket
                .read()
                .with_context(|| format!("no answer to {method} within {LIMIT:?}"))?;
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Json = serde_json::from_str(text.as_str())?;
            if answer["id"] != id {
                continue; // an event, or an answer to an abandoned call
            }
            if !answer["error"].is_null() {
                bail!("{method}: {}", answer["error"]);
            }
            return Ok(answer["result"].clone());
        }
    }

    /// Loads `url` and waits until the document is complete.
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        let result = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = result["errorText"].as_str() {
            bail!("loading {url}: {error}");
        }
        let expected = Json::from(url.trim_end_matches('/'));
        self.wait_for(
            &format!("{url} to load"),
            &format!(
                "location.href.replace(/\\/$/, '') === {expected} && document.readyState === 'complete'"
            ),
        )?;
        Ok(())
    }

    /// Evaluates a JS expression in the page (promises awaited); its value.
    pub fn eval(&mut self, expression: &str) -> Result<Json> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("an exception");
            bail!("evaluating {expression:?}: {text}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it is neither false, null
    /// nor empty, for at most [`LIMIT`]; its value then.
    pub fn wait_for(&mut self, what: &str, expression: &str) -> Result<Json> {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            // A page between two documents cannot evaluate: try again.
            match self.eval(expression) {
                Ok(value) => {
                    let done = !matches!(&value, Json::Null | Json::Bool(false))
                        && value != json!("")
                        && value != json!(0);
                    if done {
                        return Ok(value);
                    }
                }
                Err(e) => last_error = Some(e),
            }
            if started.elapsed() > LIMIT {
                let text = self
                    .eval("document.body ? document.body.innerText : ''")
                    .unwrap_or_default();
                let error = last_error.map(|e| format!(" (last error: {e:#})"));
                bail!(
                    "waited {LIMIT:?} for {what}: `{expression}`{}; the page shows:\n{}",
                    error.unwrap_or_default(),
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page at `width` CSS pixels.
    pub fn screenshot_png(&mut self, width: u32) -> Result<Vec<u8>> {
        let mut height = 900;
        // Twice: the page's height at this width, then the whole of it.
        for _ in 0..2 {
            self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
            )?;
            height = self
                .eval("document.documentElement.scrollHeight")?
                .as_u64()
                .unwrap_or(900)
                .clamp(600, 4000);
        }
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data in {shot}"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }
}

/// Writes `png` under `<workspace>/target/test-artifacts/`; its path.
pub fn save_artifact(name: &str, png: &[u8]) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("the cli crate sits in the workspace"))?;
    let dir = workspace.join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `(width, height)` from a PNG's IHDR, checking the signature.
pub fn png_size(png: &[u8]) -> Result<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        bail!("not a PNG ({} bytes)", png.len());
    }
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    Ok((be(16), be(20)))
}
