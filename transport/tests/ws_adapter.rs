//! The WebSocket byte-stream adapter against a plain WebSocket peer on loopback:
//! message payloads concatenate, pings get pongs, close reads as end of stream, text is
//! refused, and a gathered write is one message.

use futures_util::{SinkExt, StreamExt};
use netbore_transport::ws::{self, MAX_WRITE_MESSAGE, WS_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A raw WebSocket server end and the adapter's client end.
async fn pair() -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    ws::WsIo<TcpStream>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        tokio_tungstenite::accept_async(s).await.unwrap()
    });
    let client = TcpStream::connect(addr).await.unwrap();
    let client = ws::client_handshake(client, false, &addr.to_string())
        .await
        .unwrap();
    (server.await.unwrap(), client)
}

#[tokio::test]
async fn payloads_concatenate_pings_are_answered_and_close_is_eof() {
    let (mut server, mut client) = pair().await;
    server.send(Message::Ping("p".into())).await.unwrap();
    server.send(Message::Binary("abc".into())).await.unwrap();
    server.send(Message::Binary("".into())).await.unwrap();
    server.send(Message::Binary("defg".into())).await.unwrap();
    server.close(None).await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"abcdefg");
    // The adapter answered the ping on the way.
    match server.next().await {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"p"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn text_messages_are_refused() {
    let (mut server, mut client) = pair().await;
    server.send(Message::Text("hi".into())).await.unwrap();
    let mut buf = [0u8; 8];
    let err = client.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn writes_are_binary_messages_of_bounded_size() {
    let (mut server, mut client) = pair().await;
    let slices = [
        std::io::IoSlice::new(b"head"),
        std::io::IoSlice::new(b"payload"),
    ];
    let n = client.write_vectored(&slices).await.unwrap();
    assert_eq!(n, 11);
    let big = vec![3u8; MAX_WRITE_MESSAGE + 10];
    let n = client.write(&big).await.unwrap();
    assert_eq!(n, MAX_WRITE_MESSAGE, "a write is cut at the message bound");
    client.flush().await.unwrap();
    match server.next().await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"headpayload"),
        other => panic!("expected one gathered message, got {other:?}"),
    }
    match server.next().await {
        Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), MAX_WRITE_MESSAGE),
        other => panic!("expected a bounded message, got {other:?}"),
    }
    client.shutdown().await.unwrap();
    assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
}

#[test]
fn the_agent_path_is_fixed() {
    assert_eq!(WS_PATH, "/_netbore/agent");
}
