//! A real `redis-server` for fleet tests (scripts/test.sh installs it): on a loopback
//! port from [`free_port`], no persistence, killed on drop. A test that needs it fails,
//! never skips, when it is missing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{TempDir, free_port};

/// How long `redis-server` may take to say it accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts a fresh, empty `redis-server`.
    pub fn start() -> RedisServer {
        let dir = TempDir::new("redis");
        let mut said = String::new();
        // A port free when chosen may be taken before redis-server binds it: try again.
        for _ in 0..5 {
            let port = free_port();
            match Self::spawn(&dir, port) {
                Ok(child) => {
                    return RedisServer {
                        child,
                        url: format!("redis://127.0.0.1:{port}/0"),
                        _dir: dir,
                    };
                }
                Err(log) => said = log,
            }
        }
        panic!("redis-server did not start; it said:\n{said}");
    }

    /// Runs redis-server on `port` and waits until it accepts connections; on failure
    /// answers what it printed.
    fn spawn(dir: &TempDir, port: u16) -> Result<Child, String> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and the fleet tests need a real one: install it (apt-get install redis-server) or run scripts/test.sh, which does"
            ),
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading to the end, so redis-server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut log = String::new();
        loop {
            match lines.recv_timeout(START_TIMEOUT) {
                Ok(line) => {
                    let ready = line
                        .to_ascii_lowercase()
                        .contains("ready to accept connections");
                    log.push_str(&line);
                    log.push('\n');
                    if ready {
                        return Ok(child);
                    }
                }
                // Exited (its output ended) or silent for too long.
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(log);
                }
            }
        }
    }

    /// The string at `key` (`redis-cli GET`), `None` when there is none.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-u", &self.url, "--raw", "GET", key])
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(out.status.success(), "redis-cli GET {key}: {out:?}");
        let value = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        (!value.is_empty()).then_some(value)
    }

    /// Kills the server.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts an empty one on the same port, as a restart
    /// without persistence does.
    #[allow(dead_code)] // Not every test binary restarts Redis.
    pub fn restart(&mut self) {
        self.kill();
        let port: u16 = self
            .url
            .trim_start_matches("redis://127.0.0.1:")
            .trim_end_matches("/0")
            .parse()
            .expect("the URL start() wrote");
        self.child = Self::spawn(&self._dir, port)
            .unwrap_or_else(|log| panic!("redis-server did not start again; it said:\n{log}"));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
