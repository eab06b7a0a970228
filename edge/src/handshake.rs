//! The Edge side of the hello: read it with a size cap and a deadline, verify every
//! token, claim each tunnel's reserved port, answer with the bound tunnels or a typed
//! error.

use std::sync::Arc;

use netbore_control::tokens::{Claims, TokenError};
use netbore_transport::proto::{
    self, BoundTunnel, ErrorBody, ErrorCode, Hello, HelloReply, PROTOCOL_VERSION,
};
use netbore_transport::{Session, Stream};
use tokio::io::AsyncWriteExt;

use crate::Edge;
use crate::fleet::Directory;
use crate::registry::{Claimed, SessionHandle};

/// A tunnel the hello bound.
#[derive(Debug)]
pub struct ClaimedTunnel {
    /// Control-plane id.
    pub tunnel_id: String,
    /// Public URL.
    pub public_url: String,
    /// Slot written in each stream header.
    pub slot: u32,
    /// What the session serves for it.
    pub claimed: Claimed,
    /// The registry generation to release when the session ends.
    pub generation: u64,
}

/// The result of a successful hello.
#[derive(Debug)]
pub struct Bound {
    /// The tunnels, in token order.
    pub tunnels: Vec<ClaimedTunnel>,
    /// The hello stream, kept open for later control messages.
    pub hello_stream: Stream,
    /// Set when the hello opened a fleet link from this node (no tunnels then).
    pub link_from: Option<String>,
}

/// Waits for the agent's hello and answers it. On error the reply has been sent (when
/// the stream still worked) and the caller closes the session.
pub async fn accept_hello(
    edge: &Edge,
    session: &Session,
    handle: &SessionHandle,
) -> Result<Bound, ErrorBody> {
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
    if let Some(link) = &hello.link {
        let accepted = hello.tokens.is_empty()
            && edge
                .registry
                .directory()
                .is_some_and(|d| crate::fleet::link::accepts(d.as_ref(), link));
        if !accepted {
            let body = ErrorBody {
                code: ErrorCode::Unauthorized,
                message:
                    "this fleet link's proof is not valid here; give every node the same --redis"
                        .into(),
            };
            return Err(reply_error(&mut stream, body).await);
        }
        session.hello_accepted();
        // A link's streams are viewers, many at once, not an agent's one hello.
        session.set_accept_backlog(crate::fleet::link::LINK_ACCEPT_BACKLOG);
        proto::write_message(
            &mut stream,
            &HelloReply::Ok {
                tunnels: Vec::new(),
            },
        )
        .await
        .map_err(|e| protocol_error(format!("could not answer the hello: {e}")))?;
        return Ok(Bound {
            tunnels: Vec::new(),
            hello_stream: stream,
            link_from: Some(link.from.clone()),
        });
    }
    match check_hello(edge, &hello, handle).await {
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
            session.hello_accepted();
            proto::write_message(&mut stream, &reply)
                .await
                .map_err(|e| protocol_error(format!("could not answer the hello: {e}")))?;
            Ok(Bound {
                tunnels,
                hello_stream: stream,
                link_from: None,
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

async fn check_hello(
    edge: &Edge,
    hello: &Hello,
    handle: &SessionHandle,
) -> Result<Vec<ClaimedTunnel>, ErrorBody> {
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
    // Check every token before using any up, and use them up together, so a bad or
    // reused one costs the others nothing.
    let token_error = |e: TokenError| ErrorBody {
        code: match e {
            TokenError::Expired => ErrorCode::TokenExpired,
            TokenError::Reused => ErrorCode::TokenReused,
            TokenError::TooMany => ErrorCode::LimitReached,
            _ => ErrorCode::BadToken,
        },
        message: e.to_string(),
    };
    let mut verified = Vec::with_capacity(hello.tokens.len());
    for token in &hello.tokens {
        verified.push(edge.verifier.check(token).map_err(token_error)?);
    }
    let all: Vec<&_> = verified.iter().collect();
    edge.verifier.consume(&all).map_err(token_error)?;
    // In a fleet a token verifies at every node: its id is used up at all of them.
    let directory = edge.registry.directory().cloned();
    if let Some(directory) = &directory
        && let Err(body) = use_fleet_wide(edge, directory, &verified).await
    {
        edge.verifier.release(&all);
        return Err(body);
    }
    let ids: Vec<String> = verified.iter().map(|c| c.jti.clone()).collect();
    // Tunnels another node placed are placed here first (off the runtime: placing
    // reserves the name or port in the fleet's store).
    for claims in verified.iter().filter(|c| c.minted_elsewhere) {
        let (registry, owned) = (edge.registry.clone(), claims.clone());
        let adopted = tokio::task::spawn_blocking(move || registry.adopt(&owned))
            .await
            .unwrap_or_else(|_| {
                Err(ErrorBody {
                    code: ErrorCode::Internal,
                    message: "placing the tunnel failed inside the server; try again".into(),
                })
            });
        if let Err(body) = adopted {
            edge.verifier.release(&all);
            give_back(directory, ids).await;
            return Err(body);
        }
    }
    let mut tunnels: Vec<ClaimedTunnel> = Vec::with_capacity(verified.len());
    for (slot, claims) in verified.iter().enumerate() {
        match edge.registry.claim(claims, slot as u32, handle) {
            Ok((claimed, public_url, generation)) => tunnels.push(ClaimedTunnel {
                tunnel_id: claims.tid.clone(),
                public_url,
                slot: slot as u32,
                claimed,
                generation,
            }),
            Err(e) => {
                for t in &tunnels {
                    edge.registry.release(&t.tunnel_id, t.generation);
                }
                // The tunnels were not claimed: their tokens may be presented again.
                edge.verifier.release(&all);
                give_back(directory, ids).await;
                return Err(e);
            }
        }
    }
    Ok(tunnels)
}

/// Gives back token ids recorded in the fleet's store for a hello that failed after.
async fn give_back(directory: Option<Arc<dyn Directory>>, ids: Vec<String>) {
    if let Some(directory) = directory {
        let _ = tokio::task::spawn_blocking(move || directory.give_back_tokens(&ids)).await;
    }
}

/// Records the ids of `verified` as used in the fleet's store. When the store does
/// not answer, a hello whose tokens are all this node's own, for tunnels pending
/// here, is still let through on this node's own record of used ids: agents keep
/// reconnecting to the node that placed their tunnels through a Redis outage (the
/// price: such a token could also be adopted once at a node that still reaches
/// Redis, within its minute of life).
async fn use_fleet_wide(
    edge: &Edge,
    directory: &Arc<dyn Directory>,
    verified: &[Claims],
) -> Result<(), ErrorBody> {
    let ids: Vec<(String, u64)> = verified
        .iter()
        .map(|c| (c.jti.clone(), c.forget_after()))
        .collect();
    let fleet = directory.clone();
    match tokio::task::spawn_blocking(move || fleet.use_tokens(&ids)).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(ErrorBody {
            code: ErrorCode::TokenReused,
            message: TokenError::Reused.to_string(),
        }),
        Ok(Err(_))
            if verified
                .iter()
                .all(|c| !c.minted_elsewhere && edge.registry.is_pending(&c.tid)) =>
        {
            tracing::warn!(
                "the fleet's store did not answer a hello; this node's own tokens were checked against its own record only"
            );
            Ok(())
        }
        Ok(Err(e)) => Err(ErrorBody {
            code: ErrorCode::StoreUnavailable,
            message: e.to_string(),
        }),
        Err(_) => Err(ErrorBody {
            code: ErrorCode::Internal,
            message: "checking the tokens failed inside the server; try again".into(),
        }),
    }
}
