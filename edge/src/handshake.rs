//! The Edge side of the hello: read it with a size cap and a deadline, verify every
//! token, claim each tunnel's reserved port, answer with the bound tunnels or a typed
//! error.

use std::net::TcpListener;

use netbore_control::tokens::TokenError;
use netbore_transport::proto::{
    self, BoundTunnel, ErrorBody, ErrorCode, Hello, HelloReply, PROTOCOL_VERSION,
};
use netbore_transport::{Session, Stream};
use tokio::io::AsyncWriteExt;

use crate::Edge;

/// A tunnel the hello bound: its public listener and routing slot.
#[derive(Debug)]
pub struct ClaimedTunnel {
    /// Control-plane id.
    pub tunnel_id: String,
    /// Public URL.
    pub public_url: String,
    /// Slot written in each stream header.
    pub slot: u32,
    /// The public port's listener.
    pub listener: TcpListener,
}

/// The result of a successful hello.
#[derive(Debug)]
pub struct Bound {
    /// The tunnels, in token order.
    pub tunnels: Vec<ClaimedTunnel>,
    /// The hello stream, kept open for later control messages.
    pub hello_stream: Stream,
}

/// Waits for the agent's hello and answers it. On error the reply has been sent (when
/// the stream still worked) and the caller closes the session.
pub async fn accept_hello(edge: &Edge, session: &Session) -> Result<Bound, ErrorBody> {
    let timeout = edge.config.hello_timeout;
    let protocol_error = |message: String| ErrorBody {
        code: ErrorCode::ProtocolError,
        message,
    };
    let mut stream = match tokio::time::timeout(timeout, session.accept()).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let reason = session.closed().await;
            return Err(protocol_error(format!(
                "the connection ended before a hello: {reason}"
            )));
        }
        Err(_) => return Err(protocol_error(format!("no hello within {timeout:?}"))),
    };
    let hello = match tokio::time::timeout(timeout, proto::read_message::<Hello>(&mut stream)).await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(reply_error(&mut stream, protocol_error(e.to_string())).await),
        Err(_) => {
            return Err(protocol_error(format!(
                "the hello did not arrive within {timeout:?}"
            )));
        }
    };
    match check_hello(edge, &hello) {
        Ok(tunnels) => {
            let reply = HelloReply::Ok {
                tunnels: tunnels
                    .iter()
                    .map(|t| BoundTunnel {
                        tunnel_id: t.tunnel_id.clone(),
                        public_url: t.public_url.clone(),
                        slot: t.slot,
                    })
                    .collect(),
            };
            proto::write_message(&mut stream, &reply)
                .await
                .map_err(|e| protocol_error(format!("could not answer the hello: {e}")))?;
            Ok(Bound {
                tunnels,
                hello_stream: stream,
            })
        }
        Err(body) => Err(reply_error(&mut stream, body).await),
    }
}

async fn reply_error(stream: &mut Stream, body: ErrorBody) -> ErrorBody {
    let _ = proto::write_message(stream, &HelloReply::Error(body.clone())).await;
    let _ = stream.shutdown().await;
    body
}

fn check_hello(edge: &Edge, hello: &Hello) -> Result<Vec<ClaimedTunnel>, ErrorBody> {
    if hello.version != PROTOCOL_VERSION {
        return Err(ErrorBody {
            code: ErrorCode::ProtocolError,
            message: format!(
                "the agent speaks protocol version {} but this Edge speaks {PROTOCOL_VERSION}; update netbore",
                hello.version
            ),
        });
    }
    if hello.tokens.is_empty() || hello.tokens.len() > 64 {
        return Err(ErrorBody {
            code: ErrorCode::BadRequest,
            message: "a hello must carry between 1 and 64 tunnel tokens".into(),
        });
    }
    let mut tunnels = Vec::with_capacity(hello.tokens.len());
    for (slot, token) in hello.tokens.iter().enumerate() {
        let claims = edge.verifier.verify(token).map_err(|e| ErrorBody {
            code: match e {
                TokenError::Expired => ErrorCode::TokenExpired,
                TokenError::Reused => ErrorCode::TokenReused,
                _ => ErrorCode::BadToken,
            },
            message: e.to_string(),
        })?;
        let (Some(port), "tcp") = (claims.port, claims.proto.as_str()) else {
            return Err(ErrorBody {
                code: ErrorCode::BadToken,
                message: format!(
                    "this Edge cannot serve {} tunnels yet; use a tcp tunnel",
                    claims.proto
                ),
            });
        };
        let listener = edge.ports.claim(&claims.tid).ok_or_else(|| ErrorBody {
            code: ErrorCode::UnknownTunnel,
            message: format!(
                "tunnel {} is no longer reserved on this Edge (its agent came too late); reconnect to get a new one",
                claims.tid
            ),
        })?;
        tunnels.push(ClaimedTunnel {
            public_url: format!("tcp://{}:{port}", edge.config.domain),
            tunnel_id: claims.tid,
            slot: slot as u32,
            listener,
        });
    }
    Ok(tunnels)
}
