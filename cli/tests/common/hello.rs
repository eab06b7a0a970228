//! Speaking to the Edge's agent port as an agent would, one step at a time: create a
//! tunnel's token, open a session, say hello with any tokens; or as another node of
//! a fleet would, with a link's hello.

use std::time::Duration;

use netbore_transport::link::LinkHello;
use netbore_transport::proto::{self, Hello, HelloReply, PROTOCOL_VERSION};

use super::Server;

/// Creates a tunnel through the control API and returns its ephemeral token.
pub async fn create_token(server: &Server) -> String {
    let url = server.url().parse().unwrap();
    let request = netbore_control::api::CreateTunnelRequest::tcp(None);
    netbore_agent::control_client::create_tunnel(&url, None, false, None, &request)
        .await
        .unwrap()
        .ephemeral_token
}

/// Opens a session, says hello with `tokens`, and returns the session, the hello
/// stream and the Edge's answer.
pub async fn open_hello(
    server: &Server,
    tokens: Vec<String>,
) -> (
    netbore_transport::Session,
    netbore_transport::Stream,
    HelloReply,
) {
    let session = netbore_transport::tcp::connect(server.agent, Default::default())
        .await
        .unwrap();
    hello_on(session, tokens).await
}

/// Says hello with `tokens` on `session`; returns it, the hello stream and the answer.
pub async fn hello_on(
    session: netbore_transport::Session,
    tokens: Vec<String>,
) -> (
    netbore_transport::Session,
    netbore_transport::Stream,
    HelloReply,
) {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        tokens,
        agent: "test".into(),
        link: None,
    };
    say(session, hello).await
}

/// Opens a session to `server`'s agent port as fleet node `from` would open a link to
/// it, proving membership with `proof` (hex); returns the session, the hello stream
/// and the Edge's answer.
pub async fn link_hello(
    server: &Server,
    from: &str,
    proof: String,
) -> (
    netbore_transport::Session,
    netbore_transport::Stream,
    HelloReply,
) {
    let to = server.listening["node"]
        .as_str()
        .expect("a fleet node says its id")
        .to_string();
    let session = netbore_transport::tcp::connect(server.agent, Default::default())
        .await
        .unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        tokens: Vec::new(),
        agent: from.into(),
        link: Some(LinkHello {
            from: from.into(),
            to,
            proof,
        }),
    };
    say(session, hello).await
}

/// Says `hello` on a new stream of `session` and reads the answer.
async fn say(
    session: netbore_transport::Session,
    hello: Hello,
) -> (
    netbore_transport::Session,
    netbore_transport::Stream,
    HelloReply,
) {
    let mut stream = session.open().await.unwrap();
    proto::write_message(&mut stream, &hello).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), proto::read_message(&mut stream))
        .await
        .expect("the Edge answers the hello")
        .expect("the answer is a hello reply");
    (session, stream, reply)
}

/// Says hello with `tokens` and returns the Edge's answer; a refusal must also close
/// the session.
pub async fn hello(server: &Server, tokens: Vec<String>) -> HelloReply {
    let (session, _stream, reply) = open_hello(server, tokens).await;
    if matches!(reply, HelloReply::Error(_)) {
        tokio::time::timeout(Duration::from_secs(2), session.closed())
            .await
            .expect("session closed after refusal");
    }
    reply
}
