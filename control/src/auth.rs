//! Who is calling: an API key from `Authorization: Bearer`, or an anonymous client
//! known only by its IP address.

use netbore_codes::ErrorCode;
use std::net::IpAddr;

use axum::http::StatusCode;

use crate::Control;
use crate::api::ApiError;
use crate::rate::client_key;
use crate::secrets::hash_secret;

/// How owner strings of anonymous callers start.
pub(crate) const ANONYMOUS_PREFIX: &str = "anonymous:";

/// The owner as logs may show it: anonymous owners are IP addresses, which stay out of
/// logs when agent addresses are masked.
pub(crate) fn loggable_owner(owner: &str, mask: bool) -> &str {
    if mask && owner.starts_with(ANONYMOUS_PREFIX) {
        "anonymous"
    } else {
        owner
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A caller holding a valid API key.
    Key {
        /// The key's id.
        id: String,
    },
    /// A caller without a key (only on servers that allow anonymous tunnels).
    Anonymous {
        /// The client's address as [`client_key`] files it (an IPv6 client by its /64,
        /// so rotating addresses inside one's own prefix gains nothing).
        ip: IpAddr,
    },
}

impl Caller {
    /// The owner string stored with the caller's tunnels: the key id, or
    /// `anonymous:<ip>`.
    pub fn owner(&self) -> String {
        match self {
            Caller::Key { id } => id.clone(),
            Caller::Anonymous { ip } => format!("{ANONYMOUS_PREFIX}{ip}"),
        }
    }

    /// The key id, or 401 saying that `what` needs an API key.
    pub fn require_key(&self, what: &str) -> Result<&str, ApiError> {
        match self {
            Caller::Key { id } => Ok(id),
            Caller::Anonymous { .. } => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                format!(
                    "{what} needs an API key; pass one as 'Authorization: Bearer KEY' (the server's operator creates keys with 'netbore key create')"
                ),
            )),
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
}

impl Control {
    /// Authenticates a request from `ip` carrying the `authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        ip: IpAddr,
    ) -> Result<Caller, ApiError> {
        let Some(value) = authorization else {
            return if self.config.allow_anonymous {
                Ok(Caller::Anonymous { ip: client_key(ip) })
            } else {
                Err(unauthorized(
                    "this server does not accept anonymous requests; pass an API key as 'Authorization: Bearer KEY' (its operator creates one with 'netbore key create') or ask the operator to start it with --allow-anonymous",
                ))
            };
        };
        let secret = std::str::from_utf8(value)
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "the Authorization header must read 'Bearer KEY'; pass your API key that way or leave the header out",
                )
            })?;
        let key = self
            .store
            .key_by_hash(&hash_secret(secret))
            .map_err(ApiError::store)?;
        match key {
            Some(k) if !k.revoked => Ok(Caller::Key { id: k.id }),
            _ => Err(unauthorized(
                "this API key is unknown or revoked; ask the server's operator for a new one ('netbore key create')",
            )),
        }
    }
}
