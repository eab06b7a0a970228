//! The agent survives the server going away: it says so in one line, reconnects with
//! backoff, and comes back on the same public address.

mod common;

use std::time::Duration;

use common::{Agent, Server, public_addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_once(public: std::net::SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(public).await.unwrap();
    s.write_all(b"ping through the tunnel").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("echo answers")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_a_server_restart_and_keeps_its_address() {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = origin.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });

    let server = Server::start();
    let agent = Agent::start(&server, &origin_addr, &[]);
    assert_eq!(echo_once(agent.public).await, b"ping through the tunnel");

    // Take the server down: the agent notices and says it will retry.
    let (control, agent_addr) = (server.control.to_string(), server.agent.to_string());
    let Server {
        mut proc, data_dir, ..
    } = server;
    proc.kill();
    let ev = agent
        .proc
        .expect_event("reconnecting", Duration::from_secs(5));
    assert!(
        ev["reason"]
            .as_str()
            .unwrap()
            .contains("session to the Edge ended"),
        "{ev}"
    );
    assert!(ev["delay_ms"].as_u64().unwrap() <= 30_000);

    // Bring it back on the same addresses: the agent returns on the same public port.
    let server = Server::start_in(data_dir, &control, &agent_addr, &[]);
    let online = agent.proc.expect_event("online", Duration::from_secs(15));
    assert_eq!(
        public_addr(&online),
        agent.public,
        "the public address survived the restart"
    );
    assert_eq!(echo_once(agent.public).await, b"ping through the tunnel");
    drop(server);
}
