//! A TLS (passthrough) tunnel in a fleet: three `netbore server` nodes with HTTPS
//! listeners on 127.0.0.2–4 sharing one real `redis-server`. A viewer's TLS reaches
//! the origin, with the origin's own certificate, through every node: the holder's
//! own listener and the other nodes' links.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{IPS, start_node};
use common::redis::RedisServer;
use common::tls_origin::tls_echo_origin;
use common::{Proc, free_port};
use netbore_test_support::{tls_client_config, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_tunnel_held_by_one_node_passes_through_all_three() {
    let (origin, origin_ca, origin_leaf) = tls_echo_origin("secure.localhost").await;
    let redis = RedisServer::start();
    let (control, agent, http, https) = (free_port(), free_port(), free_port(), free_port());
    let nodes: Vec<_> = IPS
        .iter()
        .map(|ip| {
            let https_addr = format!("{ip}:{https}");
            start_node(
                &redis.url,
                ip,
                control,
                agent,
                http,
                &["--https-addr", &https_addr],
            )
        })
        .collect();
    let url = nodes[0].url();
    let mut tunnel = Proc::spawn(&[
        "tls",
        &origin.to_string(),
        "--server",
        &url,
        "--name",
        "secure",
        "--ha",
        "1",
    ]);
    let online = tunnel.expect_event("online", Duration::from_secs(20));
    assert_eq!(
        online["public_url"],
        format!("tls://secure.localhost:{https}")
    );
    let trust = std::sync::Arc::new(tls_client_config(origin_ca.as_bytes(), &[]));
    for ip in IPS {
        let addr = format!("{ip}:{https}").parse().unwrap();
        // The other nodes learn the route from the directory within moments.
        let start = Instant::now();
        let mut stream = loop {
            match tls_connect(addr, "secure.localhost", trust.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "no TLS through {addr}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        assert_eq!(
            presented, origin_leaf,
            "the origin's own certificate via {ip}"
        );
        let message = format!("through {ip}");
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echo = vec![0; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
            .await
            .expect("the echo came back in time")
            .unwrap();
        assert_eq!(echo, message.as_bytes());
    }
    tunnel.kill();
}
