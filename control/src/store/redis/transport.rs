//! Whether a Redis URL keeps the fleet's data off the network in clear text.

use std::net::IpAddr;

use redis::{ConnectionAddr, IntoConnectionInfo};

use super::redact_url;
use crate::store::StoreError;

/// Refuses a Redis URL that would carry the fleet's data (the link secret, key
/// hashes, certificate keys, a password) across a network without TLS, unless
/// `plaintext_allowed`: `rediss://` and Unix sockets always pass, `redis://` only to
/// a loopback host. A URL that does not parse passes here and fails when opened, with
/// the parser's own words.
pub fn check_transport(url: &str, plaintext_allowed: bool) -> Result<(), StoreError> {
    let Ok(info) = url.into_connection_info() else {
        return Ok(());
    };
    let safe = match info.addr() {
        ConnectionAddr::TcpTls { .. } | ConnectionAddr::Unix(_) => true,
        ConnectionAddr::Tcp(host, _) => is_loopback(host),
        _ => false,
    };
    if safe || plaintext_allowed {
        Ok(())
    } else {
        Err(StoreError::Plaintext {
            url: redact_url(url),
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_only_on_this_machine_unless_allowed() {
        for ok in [
            "rediss://:secret@10.0.0.9:6380/0",
            "redis://127.0.0.1:6379",
            "redis://:secret@localhost/2",
            "redis://[::1]:6379",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(check_transport(ok, false).is_ok(), "{ok}");
        }
        for refused in ["redis://10.0.0.9:6379", "redis://:hunter2@redis.internal/0"] {
            let e = check_transport(refused, false).unwrap_err().to_string();
            assert!(e.contains("rediss://") && !e.contains("hunter2"), "{e}");
            assert!(check_transport(refused, true).is_ok(), "{refused}");
        }
    }
}
