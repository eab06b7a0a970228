//! Wire types of the node-to-node link of a fleet (`docs/protocols/fleet.md`).
//!
//! A node that receives a viewer for a tunnel another node holds opens a session to
//! that node's agent listener (the `tls` transport, the certificate pinned by the
//! fingerprint the holder published in the node list) and says a [`Hello`] whose
//! `link` proves it belongs to the fleet ([`LinkHello`]). Every stream it opens then
//! starts with a [`LinkRoute`] (which tunnel) followed by the usual
//! [`StreamHeader`](crate::proto::StreamHeader) (who the viewer is); the holder opens
//! a stream to its agent and relays the bytes both ways, unopened.
//!
//! [`Hello`]: crate::proto::Hello

use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a node says in place of tunnel tokens when it opens a link to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHello {
    /// The id of the node opening the link.
    pub from: String,
    /// The id of the node it means to reach.
    pub to: String,
    /// [`link_proof`] of the fleet secret for `from` and `to`, lowercase hex.
    pub proof: String,
}

/// HMAC-SHA-256 of the fleet secret over the two node ids, lowercase hex. The proof
/// travels inside TLS to a certificate the dialer pinned, so only the node it was
/// made for ever reads it; it names both ends, so it opens no link elsewhere.
pub fn link_proof(secret: &[u8], from: &str, to: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    for part in ["netbore-link", from, to] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `proof` is [`link_proof`] of `secret` for `from` and `to` (compared in
/// constant time).
pub fn check_link_proof(secret: &[u8], from: &str, to: &str, proof: &str) -> bool {
    let Some(tag) = decode_hex(proof) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::new();
    for part in ["netbore-link", from, to] {
        message.extend_from_slice(&(part.len() as u32).to_be_bytes());
        message.extend_from_slice(part.as_bytes());
    }
    hmac::verify(&key, &message, &tag).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Longest route key a [`LinkRoute`] carries (bytes).
pub const MAX_ROUTE_LEN: usize = 255;

/// Version byte of [`LinkRoute`].
pub const LINK_ROUTE_VERSION: u8 = 1;

/// The first bytes of every stream on a link: the route key of the tunnel the
/// stream is for (`http:NAME`, `tls:NAME` or `tcp:PORT`).
///
/// Layout: version `u8` (=1), length `u8`, that many bytes of ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRoute(pub String);

impl LinkRoute {
    /// The encoded preamble; `None` when the key is longer than [`MAX_ROUTE_LEN`].
    pub fn encode(&self) -> Option<Vec<u8>> {
        let key = self.0.as_bytes();
        let len = u8::try_from(key.len()).ok()?;
        let mut out = Vec::with_capacity(2 + key.len());
        out.push(LINK_ROUTE_VERSION);
        out.push(len);
        out.extend_from_slice(key);
        Some(out)
    }

    /// Reads a preamble from the front of a stream (exactly its bytes).
    pub async fn read(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<LinkRoute> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        if head[0] != LINK_ROUTE_VERSION {
            return Err(invalid("unsupported link route version"));
        }
        let mut key = vec![0u8; usize::from(head[1])];
        io.read_exact(&mut key).await?;
        let key = String::from_utf8(key).map_err(|_| invalid("a link route is not UTF-8"))?;
        if !key.is_ascii() || key.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(invalid("a link route has a space or control character"));
        }
        Ok(LinkRoute(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_opens_only_the_link_it_was_made_for() {
        let proof = link_proof(b"secret", "a", "b");
        assert!(check_link_proof(b"secret", "a", "b", &proof));
        assert!(!check_link_proof(b"secret", "b", "a", &proof));
        assert!(!check_link_proof(b"other", "a", "b", &proof));
        assert!(!check_link_proof(b"secret", "a", "b", "zz"));
        // Lengths are framed: ("ab", "c") is not ("a", "bc").
        assert!(!check_link_proof(
            b"secret",
            "ab",
            "c",
            &link_proof(b"secret", "a", "bc")
        ));
    }

    #[tokio::test]
    async fn routes_round_trip_and_bad_ones_are_refused() {
        let encoded = LinkRoute("http:shop".into()).encode().unwrap();
        let mut io = &encoded[..];
        assert_eq!(LinkRoute::read(&mut io).await.unwrap().0, "http:shop");
        let mut bad = &[2u8, 1, b'x'][..];
        assert!(LinkRoute::read(&mut bad).await.is_err());
        let mut spaced = &[1u8, 3, b'a', b' ', b'b'][..];
        assert!(LinkRoute::read(&mut spaced).await.is_err());
        assert!(LinkRoute("x".repeat(256)).encode().is_none());
    }
}
