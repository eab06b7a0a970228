//! A real `redis-server` for the store and fleet tests: one process per test, on a Unix socket
//! in its own temporary directory (no port to race for), no persistence, killed on
//! drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long `redis-server` may take to say it accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// `redis+unix:///…/redis.sock`.
    pub url: String,
    /// What it printed so far (for failure messages).
    log: Arc<Mutex<String>>,
    /// Arguments beyond the defaults (TLS), kept for restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a fresh, empty `redis-server`; fails the test if it is not installed.
    pub fn start() -> RedisServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("netbore-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_in(dir)
    }

    fn start_in(dir: PathBuf) -> RedisServer {
        let (child, log) = Self::spawn(&dir, &[]);
        RedisServer {
            child,
            url: format!("redis+unix://{}", dir.join("redis.sock").display()),
            dir,
            log,
            extra: Vec::new(),
        }
    }

    /// Starts a fresh `redis-server` that also speaks TLS on `127.0.0.1:port` with the
    /// certificate `cert` and key `key` (PEM files; clients are not asked for one);
    /// [`Self::url`] is then `rediss://127.0.0.1:PORT`.
    pub fn start_tls(port: u16, cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let mut server = Self::start();
        server.kill();
        let _ = std::fs::remove_file(server.dir.join("redis.sock"));
        let extra = vec![
            "--tls-port".to_string(),
            port.to_string(),
            "--bind".to_string(),
            "127.0.0.1".to_string(),
            "--tls-cert-file".to_string(),
            cert.display().to_string(),
            "--tls-key-file".to_string(),
            key.display().to_string(),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        let (child, log) = Self::spawn(&server.dir, &extra);
        server.child = child;
        server.log = log;
        server.extra = extra;
        server.url = format!("rediss://127.0.0.1:{port}");
        server
    }

    /// Runs redis-server in `dir` and waits until it accepts connections.
    fn spawn(dir: &std::path::Path, extra: &[String]) -> (Child, Arc<Mutex<String>>) {
        let socket = dir.join("redis.sock");
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(dir);
                panic!(
                    "redis-server is not installed, and the Redis store tests need a real one: install it (apt-get install redis-server) or run scripts/test.sh, which does"
                )
            }
            Err(e) => panic!("could not run redis-server: {e}"),
        };
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            // Keeps reading to the end, so redis-server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // "Ready to accept connections tcp", or "… now ready to accept
                // connections at PATH" (the Unix socket), by version.
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    let _ = ready_tx.send(());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        if ready.recv_timeout(START_TIMEOUT).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(dir);
            panic!(
                "redis-server did not accept connections within {START_TIMEOUT:?}; it said:\n{}",
                log.lock().unwrap()
            );
        }
        (child, log)
    }

    /// What redis-server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A plain client connection, to look at or change the raw data.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Kills the server (its data is gone: it has no persistence).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts an empty one on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.join("redis.sock"));
        let (child, log) = Self::spawn(&self.dir, &self.extra);
        self.child = child;
        self.log = log;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
