//! The agent's live console: the real `netbore` binary in a pseudo-terminal (util-linux
//! `script`), against a real `netbore server` and a real origin. Off a terminal, in a
//! dumb one or with `--json`, the agent prints lines as before.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Server, TempDir, bin};

/// What the console writes when it takes the terminal and when it gives it back.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?1049l\x1b[?25h";
const WAIT: Duration = Duration::from_secs(20);
/// The inspector on a port of the system's choosing, not in the default range that
/// tests running at once would share.
const INSPECT: &str = "127.0.0.1:0";

/// `netbore ARGS` in a pseudo-terminal of a given size, its screen output collected.
struct Pty {
    script: Child,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    dir: TempDir,
}

impl Pty {
    fn spawn(args: &[&str], term: &str, cols: u16, rows: u16) -> Pty {
        let dir = TempDir::new("console");
        let path = |name: &str| dir.0.join(name).to_str().unwrap().to_string();
        let quoted: Vec<String> = std::iter::once(bin())
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect();
        // The shell sizes the terminal, notes its device and its pid (which `exec`
        // hands to netbore), then becomes netbore; stderr (logs) goes to a file.
        let command = format!(
            "stty cols {cols} rows {rows} && tty > '{}' && echo $$ > '{}' && exec {} 2> '{}'",
            path("tty"),
            path("pid"),
            quoted.join(" "),
            path("stderr"),
        );
        let mut script = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("TERM", term)
            .env("NETBORE_STATE_DIR", path("state"))
            .env(
                "RUST_LOG",
                "warn,netbore=info,netbore_edge=info,netbore_agent=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux script runs");
        let mut stdout = script.stdout.take().unwrap();
        let out = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        Pty { script, out, dir }
    }

    /// Everything written to the terminal so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.0.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr")).unwrap_or_default()
    }

    /// Waits until the output satisfies `done`, failing the test after [`WAIT`].
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut out = self.out.0.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if done(&text) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(out);
                panic!(
                    "no {what} within {WAIT:?}; output:\n{text:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            out = self.out.1.wait_timeout(out, left).unwrap().0;
        }
    }

    /// Waits until the last screen drawn satisfies `done`; returns its lines.
    fn wait_for_screen(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let text = self.wait_for(what, |t| last_screen(t).is_some_and(|s| done(&s)));
        last_screen(&text).unwrap()
    }

    /// A file the shell wrote before it became netbore.
    fn note(&self, name: &str) -> String {
        let file = self.dir.0.join(name);
        self.wait_for(name, |_| file.exists());
        std::fs::read_to_string(&file).unwrap().trim().to_string()
    }

    /// Sends netbore the signal `signal` by name (`INT`, `TERM`).
    fn signal(&self, signal: &str) {
        let pid = self.note("pid");
        common::signal(pid.trim().parse().expect("a pid"), signal);
    }

    /// Sets the terminal's size from outside, as a window being resized does: the
    /// kernel sends SIGWINCH to netbore.
    fn resize(&self, cols: u16, rows: u16) {
        let tty = self.note("tty");
        let ok = Command::new("stty")
            .args([
                "-F",
                &tty,
                "cols",
                &cols.to_string(),
                "rows",
                &rows.to_string(),
            ])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// netbore's exit code (`script -e` passes it on), failing after [`WAIT`].
    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.script.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("netbore did not exit within {WAIT:?}");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if matches!(self.script.try_wait(), Ok(None)) {
            if let Ok(pid) = std::fs::read_to_string(self.dir.0.join("pid")) {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
            let _ = self.script.kill();
            let _ = self.script.wait();
        }
    }
}

/// The lines of the last complete screen in `output`: what follows the last
/// cursor-home up to its clear-below, without the clear-to-end-of-line codes.
fn last_screen(output: &str) -> Option<Vec<String>> {
    let start = output.rfind("\x1b[H")? + 3;
    let end = start + output[start..].find("\x1b[J")?;
    Some(
        output[start..end]
            .split('\n')
            .map(|l| l.replace("\x1b[K", "").trim_end_matches('\r').to_string())
            .collect(),
    )
}

/// The value column of the screen line labelled `label`.
fn field<'a>(screen: &'a [String], label: &str) -> Option<&'a str> {
    screen
        .iter()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
}

/// A TCP origin echoing every connection until it ends.
fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                let mut back = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut back);
            });
        }
    });
    addr
}

/// An HTTP origin answering every request with 200 and `ok`.
fn http_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                loop {
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        line.clear();
                    }
                    if line != "\r\n" {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if writer.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn the_console_shows_the_session_and_its_connections_and_gives_the_terminal_back() {
    let origin = echo_origin();
    let server = Server::start();
    let url = server.url();
    let local = origin.to_string();
    let mut pty = Pty::spawn(
        &["tcp", &local, "--server", &url, "--inspect", INSPECT],
        "xterm",
        100,
        30,
    );

    let tunnel = format!(" -> {local}");
    let screen = pty.wait_for_screen("online screen", |s| {
        field(s, "Session Status") == Some("online")
            && field(s, "Forwarding").is_some_and(|f| f.starts_with("tcp://"))
    });
    assert!(pty.text().contains(ENTER), "{:?}", pty.text());
    assert_eq!(
        screen[0].chars().count(),
        100,
        "the title spans the terminal: {screen:#?}"
    );
    assert_eq!(field(&screen, "Version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(field(&screen, "Edge"), Some(url.as_str()));
    assert_ne!(field(&screen, "Transport"), Some("-"), "{screen:#?}");
    let forwarding = field(&screen, "Forwarding").unwrap();
    let public: SocketAddr = forwarding
        .strip_suffix(&tunnel)
        .and_then(|p| p.strip_prefix("tcp://"))
        .unwrap_or_else(|| panic!("{forwarding:?} is not PUBLIC_URL{tunnel}"))
        .parse()
        .unwrap();

    // One viewer through the tunnel; the console counts it, then sees it closed.
    let mut viewer = TcpStream::connect(public).unwrap();
    viewer.set_read_timeout(Some(WAIT)).unwrap();
    viewer.write_all(b"ping").unwrap();
    let mut echoed = [0u8; 4];
    viewer.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping");
    drop(viewer);
    // The inspector lists it with what it carried.
    pty.wait_for_screen("one closed connection", |s| {
        field(s, "Connections").is_some_and(|c| c.split_whitespace().take(2).eq(["1", "0"]))
            && s.iter().any(|l| {
                l.starts_with("127.0.0.1 ")
                    && l.contains("closed")
                    && l.contains("4 B in")
                    && l.contains("4 B out")
            })
    });

    // A smaller window: the next screen is drawn for it.
    pty.resize(50, 16);
    let screen = pty.wait_for_screen("a redraw at 50 columns", |s| s[0].chars().count() == 50);
    assert!(screen.len() <= 16, "{screen:#?}");
    for line in &screen {
        assert!(line.chars().count() <= 50, "{line:?}");
    }

    // Ctrl-C: the agent stops cleanly and the terminal is as it was.
    pty.signal("INT");
    assert_eq!(pty.wait_exit(), 0, "stderr:\n{}", pty.stderr());
    let out = pty.text();
    assert!(
        out.ends_with(LEAVE),
        "output ends with {:?}",
        &out[out.len().saturating_sub(80)..]
    );
}

#[test]
fn the_console_lists_http_requests_with_their_status() {
    let origin = http_origin();
    let server = Server::start_with(&["--domain", "localhost"]);
    let url = server.url();
    let local = origin.to_string();
    let mut pty = Pty::spawn(
        &[
            "http",
            &local,
            "--name",
            "app",
            "--server",
            &url,
            "--inspect",
            INSPECT,
        ],
        "xterm",
        120,
        40,
    );
    let screen = pty.wait_for_screen("online screen", |s| {
        field(s, "Session Status") == Some("online") && field(s, "Forwarding").is_some()
    });
    let forwarding = field(&screen, "Forwarding").unwrap();
    let host = forwarding
        .strip_suffix(&format!(" -> {local}"))
        .and_then(|p| p.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("{forwarding:?} is not PUBLIC_URL -> {local}"))
        .to_string();

    let mut viewer = TcpStream::connect(server.http).unwrap();
    viewer.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        viewer,
        "GET /hello?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    viewer.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let screen = pty.wait_for_screen("the request listed", |s| {
        s.iter()
            .any(|l| l.starts_with("GET") && l.contains("/hello?x=1") && l.contains("200 OK"))
    });
    assert!(field(&screen, "Web Interface").is_some(), "{screen:#?}");
    pty.signal("INT");
    assert_eq!(pty.wait_exit(), 0, "stderr:\n{}", pty.stderr());
    assert!(pty.text().ends_with(LEAVE));
}

/// A child process killed (and reaped) on drop, even when an assertion fails first.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn off_a_terminal_the_agent_prints_its_plain_lines() {
    let origin = echo_origin();
    let server = Server::start();
    let dir = TempDir::new("console-plain");
    let local = origin.to_string();
    let mut agent = Reaped(
        Command::new(bin())
            .args([
                "tcp",
                &local,
                "--server",
                &server.url(),
                "--inspect",
                INSPECT,
            ])
            .env("TERM", "xterm")
            .env("NETBORE_STATE_DIR", dir.0.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = agent.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        // The lines up to the tunnel's.
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let online = line.starts_with("Tunnel online:");
            lines.push(line);
            if online {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(WAIT).expect("lines within 20 s");
    let online = lines.last().expect("an online line");
    assert!(
        online.starts_with("Tunnel online: tcp://")
            && online.contains(&format!(" -> {local} (over ")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "{lines:?}");

    // The inspector's address has a line of its own, and this agent's inspector
    // answers there.
    let inspector: SocketAddr = lines
        .iter()
        .find_map(|l| l.strip_prefix("Inspector: http://"))
        .unwrap_or_else(|| panic!("no Inspector: line in {lines:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert!(
        inspector.ip().is_loopback() && inspector.port() != 0,
        "{lines:?}"
    );
    let public = online
        .strip_prefix("Tunnel online: ")
        .and_then(|l| l.split(" -> ").next())
        .unwrap();
    let tunnels = common::http_request(inspector, "GET", "/api/tunnels", None, None);
    assert_eq!(tunnels.status, 200, "{tunnels:?}");
    assert_eq!(
        tunnels.body["tunnels"][0]["public_url"], public,
        "{tunnels:?}"
    );
    drop(agent);
}

#[test]
fn a_dumb_terminal_and_json_get_lines_in_a_terminal_too() {
    let origin = echo_origin();
    let server = Server::start();
    let url = server.url();
    let local = origin.to_string();
    let args = ["tcp", &local, "--server", &url, "--inspect", INSPECT];
    let mut dumb = Pty::spawn(&args, "dumb", 80, 24);
    let mut json = Pty::spawn(&[&args[..], &["--json"]].concat(), "xterm", 80, 24);

    dumb.wait_for("the online line", |t| t.contains("Tunnel online: tcp://"));
    json.wait_for("the online event", |t| t.contains(r#""event":"online""#));
    for pty in [&mut dumb, &mut json] {
        pty.signal("INT");
        assert_eq!(pty.wait_exit(), 0, "stderr:\n{}", pty.stderr());
        let out = pty.text();
        assert!(!out.contains('\x1b'), "{out:?}");
    }
    for line in json.text().lines() {
        let v: serde_json::Value = serde_json::from_str(line.trim_end_matches('\r'))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["event"].is_string(), "{v}");
    }
}
