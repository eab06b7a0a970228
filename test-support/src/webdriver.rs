//! A minimal W3C WebDriver client driving a headless Chromium through a real
//! `chromedriver`, for tests of the web pages Netbore serves.
//!
//! Blocking on purpose: a browser test reads as a script (open, click, wait, read), and
//! each command is one HTTP/1.1 request over a fresh loopback connection to the
//! driver. `chromedriver` binds port 0 and prints the port it got, so no port is
//! guessed. The driver and the browser end with the [`Browser`]: its session is
//! deleted, then the driver's process group (the browser included) killed. Like the
//! rest of this crate, anything unexpected panics with what was asked and what came
//! back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one driver command may take (a navigation waits for the page's load).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the driver may take to start and say which port it bound.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often [`Browser::wait_until`] asks again.
const POLL: Duration = Duration::from_millis(50);

/// Why no browser could be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// `chromium` or `chromedriver` is not installed where Debian puts it.
    Missing(&'static str),
    /// The driver ran but did not start, or refused the session.
    Driver(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Missing(path) => write!(
                f,
                "{path} is missing: the browser tests need Debian's chromium and \
                 chromium-driver packages (apt-get install chromium chromium-driver)"
            ),
            StartError::Driver(why) => write!(f, "chromedriver did not start a browser: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A headless Chromium session through a `chromedriver` child process.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

/// An element of the current page, as the driver refers to it.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    /// Starts `chromedriver` on a port of its choosing and a headless Chromium session
    /// with a 1280×900 window.
    pub fn start() -> Result<Browser, StartError> {
        for path in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(path).exists() {
                return Err(StartError::Missing(path));
            }
        }
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // The driver leads a process group of its own, which the browser it starts
        // joins: ending the group ends a browser the driver could not close.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut driver = command
            .spawn()
            .map_err(|e| StartError::Driver(format!("{CHROMEDRIVER}: {e}")))?;
        let port = match driver_port(&mut driver) {
            Ok(port) => port,
            Err(why) => {
                stop(&mut driver);
                return Err(StartError::Driver(why));
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to
                // start; --disable-dev-shm-usage: containers give /dev/shm 64 MiB.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let answer = call(addr, "POST", "/session", Some(&capabilities));
        let session = match answer {
            Ok(v) => v["sessionId"].as_str().map(str::to_string),
            Err(e) => {
                stop(&mut driver);
                return Err(StartError::Driver(e));
            }
        };
        let Some(session) = session else {
            stop(&mut driver);
            return Err(StartError::Driver("no sessionId in its answer".into()));
        };
        Ok(Browser {
            driver,
            addr,
            session,
        })
    }

    /// Runs one command of this session (`path` after `/session/ID`) and returns its
    /// `value`; panics on a WebDriver error.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let path = format!("/session/{}{path}", self.session);
        call(self.addr, method, &path, body)
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Reloads the page.
    pub fn refresh(&self) {
        self.command("POST", "/refresh", Some(&json!({})));
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        string(self.command("GET", "/url", None))
    }

    /// The first element matching CSS selector `css`; panics when there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?}"))
    }

    /// The first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let by = json!({"using": "css selector", "value": css});
        match self.try_command("POST", "/element", Some(&by)) {
            Ok(v) => Some(self.element(&v)),
            Err(e) if e.starts_with("no such element") => None,
            Err(e) => panic!("WebDriver find {css:?}: {e}"),
        }
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let by = json!({"using": "css selector", "value": css});
        match self.command("POST", "/elements", Some(&by)) {
            Value::Array(found) => found.iter().map(|v| self.element(v)).collect(),
            other => panic!("WebDriver find all {css:?}: not a list: {other}"),
        }
    }

    fn element(&self, reference: &Value) -> Element<'_> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {reference}"));
        Element {
            browser: self,
            id: id.to_string(),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and
    /// returns what it returns. A returned promise is awaited.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Writes a PNG of the window to `path`.
    pub fn screenshot(&self, path: impl AsRef<Path>) {
        let png = base64_decode(&string(self.command("GET", "/screenshot", None)))
            .expect("the driver sends a screenshot as base64");
        std::fs::write(path.as_ref(), png)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.as_ref().display()));
    }

    /// Asks `check` every 50 ms until it gives a value, for `timeout` at most; then
    /// panics naming `what`, with the page's text to show where it stood.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self
                    .try_command(
                        "POST",
                        "/execute/sync",
                        Some(&json!({"script": "return document.body.innerText", "args": []})),
                    )
                    .map(string)
                    .unwrap_or_else(|e| format!("(no page text: {e})"));
                panic!("waited {timeout:?} for {what}; the page reads:\n{text}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until an element matches `css` and returns it.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        self.wait_until(&format!("an element matching {css:?}"), timeout, |b| {
            b.try_find(css).map(|e| e.id)
        });
        self.find(css)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes the browser, then ends the driver and whatever it left.
        let _ = self.try_command("DELETE", "", None);
        stop(&mut self.driver);
    }
}

/// Ends the driver and its process group (the browser, if it still runs).
fn stop(driver: &mut Child) {
    #[cfg(unix)]
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", driver.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Element<'_> {
    fn command(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        self.browser
            .command(method, &format!("/element/{}{what}", self.id), body)
    }

    /// Clicks it (scrolled into view first, as a person would).
    pub fn click(&self) {
        self.command("POST", "/click", Some(&json!({})));
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) {
        self.command("POST", "/value", Some(&json!({ "text": text })));
    }

    /// Empties an input or text area.
    pub fn clear(&self) {
        self.command("POST", "/clear", Some(&json!({})));
    }

    /// Its rendered text (empty when it is hidden).
    pub fn text(&self) -> String {
        string(self.command("GET", "/text", None))
    }

    /// Its attribute `name`, if set.
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.command("GET", &format!("/attribute/{name}"), None)
            .as_str()
            .map(str::to_string)
    }

    /// Its DOM property `name` (`value` of an input, say).
    pub fn property(&self, name: &str) -> Value {
        self.command("GET", &format!("/property/{name}"), None)
    }

    /// Whether it is shown.
    pub fn is_displayed(&self) -> bool {
        self.command("GET", "/displayed", None)
            .as_bool()
            .unwrap_or(false)
    }

    /// Whether it can be used (not `disabled`).
    pub fn is_enabled(&self) -> bool {
        self.command("GET", "/enabled", None)
            .as_bool()
            .unwrap_or(false)
    }
}

fn string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads the driver's stdout until it says which port it bound; keeps draining it
/// afterwards so the driver never blocks on a full pipe.
fn driver_port(driver: &mut Child) -> Result<u16, String> {
    let stdout = driver.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.split("started successfully on port ").nth(1) {
                let port = rest.trim_end_matches('.').trim().parse::<u16>().ok();
                sent = tx.send(port).is_ok();
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(port)) => Ok(port),
        Ok(None) => Err("it printed a port that is not a number".into()),
        Err(_) => Err(format!("it did not say its port within {START_TIMEOUT:?}")),
    }
}

/// One WebDriver request: its `value`, or the driver's `error: message`.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(COMMAND_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(COMMAND_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .map_err(|e| format!("send: {e}"))?;
    // The driver keeps the connection open whatever the request says: the answer
    // ends where its Content-Length (or last chunk) says, not at EOF.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the driver closed the connection before answering".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let read_more = |s: &mut TcpStream, payload: &mut Vec<u8>| -> Result<bool, String> {
        let mut buf = [0u8; 16 * 1024];
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        payload.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    };
    if let Some(len) = field("content-length") {
        let len: usize = len.parse().map_err(|_| format!("Content-Length {len:?}"))?;
        while payload.len() < len {
            if !read_more(&mut s, &mut payload)? {
                return Err("the answer ended early".into());
            }
        }
        payload.truncate(len);
    } else if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while !payload.ends_with(b"0\r\n\r\n") {
            if !read_more(&mut s, &mut payload)? {
                break;
            }
        }
        payload = dechunk(&payload).ok_or("a broken chunked body")?;
    } else {
        while read_more(&mut s, &mut payload)? {}
    }
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let v: Value = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "status {status}, body not JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status != 200 {
        let error = value["error"].as_str().unwrap_or("unknown error");
        let message = value["message"].as_str().unwrap_or("");
        return Err(format!("{error}: {message}"));
    }
    Ok(value)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Standard base64 (with padding, whitespace ignored), as screenshots and the
/// inspector's `raw` fields come; also its URL-safe alphabet without padding, as
/// JWT segments come.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b'\r' | b'\n' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aGk=\n").unwrap(), b"hi");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn chunked_bodies_join() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
    }
}
