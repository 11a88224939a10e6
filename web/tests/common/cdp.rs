//! Just enough of the Chrome DevTools protocol to drive a headless
//! Chromium from a test: open a page, evaluate JavaScript, take a
//! screenshot. Commands are JSON over the browser's WebSocket; a page's
//! commands carry the session id of the target they attach to.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The Chromium to use: `TIDELINE_CHROMIUM`, else `chromium` on the path
/// (Debian's package, which `scripts/setup.sh` installs).
pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("TIDELINE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A headless Chromium with one page open; killed on drop.
pub(crate) struct Browser {
    process: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub(crate) struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub(crate) type CdpResult<T> = Result<T, String>;

impl Browser {
    /// Starts `chromium` headless with a `width`×`height` page.
    pub(crate) fn launch(chromium: &std::path::Path, width: u32, height: u32) -> CdpResult<Self> {
        let profile =
            std::env::temp_dir().join(format!("tideline-chromium-{}", std::process::id()));
        std::fs::create_dir_all(&profile).map_err(|e| e.to_string())?;
        let mut process = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
        let stderr = process.stderr.take().ok_or("no stderr")?;
        // Chromium says where its DevTools listen on stderr; a reader
        // thread hands the line over, so a Chromium that hangs fails the
        // test instead of hanging it.
        let (found, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(u.trim().to_string());
                }
            }
        });
        let url = match listening.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = process.kill();
                return Err("Chromium did not open DevTools within 30 s".into());
            }
        };
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("unexpected DevTools URL {url}"))?;
        let stream = TcpStream::connect(host).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let (socket, _) = tungstenite::client(url.as_str(), stream).map_err(|e| e.to_string())?;
        let mut browser = Self {
            process,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: tempfile_dir::Dir(profile),
        };
        let target = browser.command(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("no targetId")?
            .to_string();
        let attached = browser.command(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_string();
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(browser)
    }

    /// Sends `method` (to the page's session, or the browser) and waits
    /// for its result; events in between are skipped.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> CdpResult<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .map_err(|e| format!("{method}: {e}"))?;
        loop {
            let reply = self.socket.read().map_err(|e| format!("{method}: {e}"))?;
            let Message::Text(text) = reply else { continue };
            let value: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
            if value["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = value.get("error") {
                return Err(format!("{method} failed: {error}"));
            }
            return Ok(value["result"].clone());
        }
    }

    fn page(&mut self, method: &str, params: Value) -> CdpResult<Value> {
        let session = self.session.clone();
        self.command(Some(&session), method, params)
    }

    /// Loads `url` in the page.
    pub(crate) fn navigate(&mut self, url: &str) -> CdpResult<()> {
        let result = self.page("Page.navigate", json!({"url": url}))?;
        match result.get("errorText") {
            Some(e) => Err(format!("cannot load {url}: {e}")),
            None => Ok(()),
        }
    }

    /// The value of `expression`, evaluated in the page.
    pub(crate) fn eval(&mut self, expression: &str) -> CdpResult<Value> {
        let result = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )?;
        if let Some(e) = result.get("exceptionDetails") {
            return Err(format!("{expression} threw: {e}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// A PNG of the whole page.
    pub(crate) fn screenshot(&mut self) -> CdpResult<Vec<u8>> {
        let shot = self.page(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| e.to_string())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
