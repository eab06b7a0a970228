//! `netbore demo`: a server and an agent in one process, exposing a built-in hello
//! origin (or `--port N`), then fetching once through the tunnel to show it works.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netbore_agent::{AgentConfig, AgentEvent, TunnelSpec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::output::Printer;
use crate::server::{self, ServerArgs};

/// The hello origin's answer body.
pub(crate) const HELLO: &str = "Hello from Netbore! This reply came through your tunnel.\n";

/// Flags of `netbore demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Expose this local port instead of the built-in hello service.
    #[arg(long)]
    pub(crate) port: Option<u16>,
}

/// Serves a tiny HTTP/1.1 answer to every connection (works with curl and nc).
async fn hello_origin() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Take the request if one comes quickly; answer either way.
                let _ =
                    tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HELLO}",
                    HELLO.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// Fetches `/` through HTTP ingress at `ingress` with `Host: host` and returns the
/// body and the time it took.
async fn self_check(ingress: SocketAddr, host: &str) -> std::io::Result<(String, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(ingress).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5 s"))??;
    let text = String::from_utf8_lossy(&out);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or(&text)
        .trim()
        .to_string();
    Ok((body, started.elapsed()))
}

/// Runs the demo until interrupted.
pub(crate) async fn run(args: DemoArgs, printer: Printer) -> anyhow::Result<()> {
    let local = match args.port {
        Some(p) => format!("127.0.0.1:{p}"),
        None => hello_origin().await?.to_string(),
    };
    let data_dir = std::env::temp_dir().join(format!("netbore-demo-{}", std::process::id()));
    // The server's own flags and defaults, with every address on loopback and
    // anonymous agents allowed: no setting is defined a second time here.
    let server_args = ServerArgs::for_demo(&data_dir)?;
    let bound = server::start(&server_args).await?;
    printer.event(
        "listening",
        json!({ "control": bound.control.to_string(), "agent": bound.agent.to_string(), "http": bound.http.to_string() }),
        &format!(
            "Netbore demo: server on http://{} (agents on {}, viewers on {})",
            bound.control, bound.agent, bound.http
        ),
    );
    let mut config = AgentConfig::new(
        format!("http://{}", bound.control)
            .parse()
            .map_err(anyhow::Error::msg)?,
        vec![TunnelSpec::http(local.clone(), None)],
    );
    // The demo's agent trusts the demo server's development CA and picks its transport
    // as every agent does (`auto`): QUIC, or WSS where UDP is blocked.
    config.trust = netbore_transport::tls::TrustOptions {
        extra_ca: bound.dev_ca.clone(),
        insecure_skip_verify: false,
    };
    let with_hello = args.port.is_none();
    let ingress = bound.http;
    let agent = netbore_agent::run(config, move |event| {
        if let AgentEvent::Online { public_url, .. } = &event {
            let host = public_url.trim_start_matches("http://").to_string();
            crate::agent_cmd::print_event(printer, event);
            let curl = format!("curl http://{host}/");
            printer.event(
                "hint",
                json!({ "try": curl }),
                &format!("Try it: {curl}   (*.localhost resolves to this machine; or: curl -H 'Host: {host}' http://{ingress}/)"),
            );
            if with_hello {
                tokio::spawn(async move {
                    match self_check(ingress, &host).await {
                        Ok((body, took)) if body == HELLO.trim() => printer.event(
                            "self_check",
                            json!({ "ok": true, "body": body, "ms": took.as_secs_f64() * 1e3 }),
                            &format!("Self-check: fetched {body:?} through the tunnel in {:.1} ms. Press Ctrl-C to stop.", took.as_secs_f64() * 1e3),
                        ),
                        Ok((body, _)) => printer.error("self_check_failed", &format!("the demo fetched {body:?} through its own tunnel instead of the hello page; please report this")),
                        Err(e) => printer.error("self_check_failed", &format!("the demo could not fetch through its own tunnel: {e}")),
                    }
                });
            }
            return;
        }
        crate::agent_cmd::print_event(printer, event);
    });
    tokio::select! {
        error = agent => {
            printer.error(error.code(), &error.to_string());
            let _ = std::fs::remove_dir_all(&data_dir);
            std::process::exit(1);
        }
        () = crate::platform::stop_signal() => {}
    };
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
