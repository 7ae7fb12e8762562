//! A real headless Chromium, driven from the tests over the Chrome DevTools Protocol (a
//! WebSocket of JSON commands), with nothing but the WebSocket client the harness already has.
//!
//! Chromium is Debian's (`apt-get install chromium`; `.ci/run` installs it), started with
//! `--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
//! --disable-component-update --disable-sync` and a throwaway profile. Readiness is polled,
//! never slept on: Chromium writes its DevTools port into the profile once it listens, and
//! page conditions are JavaScript expressions evaluated until they hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PATIENCE;

/// A running Chromium.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: SocketAddr,
}

/// One page (tab), driven over its DevTools WebSocket.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
}

/// The Chromium binary: `WARDLINK_CHROMIUM` or Debian's.
pub fn chromium() -> PathBuf {
    std::env::var_os("WARDLINK_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

impl Browser {
    /// Starts Chromium headless and waits until its DevTools endpoint listens.
    pub async fn launch() -> anyhow::Result<Browser> {
        let exe = chromium();
        if !exe.exists() {
            bail!(
                "Chromium not found at {} (apt-get install chromium, or set WARDLINK_CHROMIUM)",
                exe.display()
            );
        }
        let profile = tempfile::tempdir()?;
        let child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut browser = Browser {
            child,
            devtools: SocketAddr::from(([127, 0, 0, 1], 0)),
            _profile: profile,
        };
        let port_file = browser._profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(port) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u16>().ok())
            {
                browser.devtools.set_port(port);
                return Ok(browser);
            }
            if let Some(status) = browser.child.try_wait()? {
                bail!("Chromium exited at start: {status}");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("Chromium did not open its DevTools port");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens a new tab at `url`.
    pub async fn page(&self, url: &str) -> anyhow::Result<Page> {
        let (status, body) = devtools_put(self.devtools, &format!("/json/new?{url}")).await?;
        if status != 200 {
            bail!("DevTools /json/new: {status} {body}");
        }
        let target: Value = serde_json::from_str(&body)?;
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .context("no webSocketDebuggerUrl")?;
        let (socket, _) = tokio_tungstenite::connect_async(ws).await?;
        let mut page = Page { socket, next: 1 };
        page.call("Page.enable", json!({})).await?;
        page.call("Runtime.enable", json!({})).await?;
        Ok(page)
    }
}

/// A `PUT` to the DevTools HTTP endpoint, which keeps connections open: the body is read by
/// its Content-Length, not to the end of the stream.
async fn devtools_put(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .context("no HTTP status")?;
                return Ok((status, body.to_owned()));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .context("DevTools HTTP: no answer")??;
        if n == 0 {
            bail!("DevTools HTTP: connection closed early");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
        && v.as_str() != Some("")
        && v.as_f64() != Some(0.0)
}

impl Page {
    /// Sends one DevTools command and returns its result (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next;
        self.next += 1;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(text)).await?;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .with_context(|| format!("{method}: no answer"))?
                .context("DevTools connection closed")??;
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expression` until it is truthy (the page reached that state); returns it.
    /// An exception (the page still loading) counts as not yet.
    pub async fn wait_for(&mut self, expression: &str) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v = match self.eval(expression).await {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => v.to_string(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() > deadline {
                bail!("the page never satisfied: {expression} (last: {v})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets the viewport (a tablet, a wall screen).
    pub async fn viewport(&mut self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the page.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

/// Where tests leave artefacts (screenshots): `target/test-artefacts/`.
pub fn artefacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artefacts")
}
