//! The tunnel lifecycle: create (fresh or reclaimed with a recreate token), list,
//! show and delete, with the per-owner limits.

use netbore_codes::ErrorCode;
use std::net::IpAddr;
use std::time::Duration;

use axum::http::StatusCode;

use crate::api::{
    ApiError, CreateTunnelRequest, CreateTunnelResponse, EdgeCandidate, Protocol, TunnelInfo,
    TunnelState,
};
use crate::auth::{ANONYMOUS_PREFIX, Caller, loggable_owner};
use crate::limits::ipv6_48;
use crate::names::{normalize, random_name};
use crate::secrets::{hash_secret, new_recreate_token};
use crate::store::TunnelRecord;
use crate::tokens::unix_now;
use crate::{Control, DisconnectReason, PlaceRequest, Placed, PlacementError, TunnelStatus};

/// Random names tried before giving up (each collision is about 1 in 10^12).
const RANDOM_NAME_ATTEMPTS: usize = 5;

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

fn not_found_tunnel(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!(
            "you have no tunnel {:?}; list yours with GET /tunnels",
            id.chars().take(64).collect::<String>()
        ),
    )
}

fn name_taken(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::NameTaken,
        format!("the name {name} is reserved by another API key; pick another name"),
    )
}

fn limit_reached(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::LimitReached, message)
}

fn placement_error(e: PlacementError) -> ApiError {
    let status = match e.code {
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NoPortAvailable | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ProtocolNotServed => StatusCode::BAD_REQUEST,
        _ => StatusCode::CONFLICT,
    };
    ApiError::new(status, e.code, e.message)
}

/// The request after its shape was checked: a lowercase name only for HTTP, a port
/// only for TCP.
struct Checked {
    name: Option<String>,
    port: Option<u16>,
}

fn check_request(request: &CreateTunnelRequest) -> Result<Checked, ApiError> {
    match request.protocol {
        Protocol::Tcp => {
            if request.name.is_some() {
                return Err(bad_request(
                    "a name applies to http and tls tunnels only; drop it or ask for protocol http",
                ));
            }
            if request.remote_port == Some(0) {
                return Err(bad_request(
                    "remote_port must be between 1 and 65535; leave it out to get any free port",
                ));
            }
            Ok(Checked {
                name: None,
                port: request.remote_port,
            })
        }
        Protocol::Http | Protocol::Tls => {
            if request.remote_port.is_some() {
                return Err(bad_request(
                    "remote_port applies to tcp tunnels only; drop it or ask for protocol tcp",
                ));
            }
            let name = request
                .name
                .as_deref()
                .map(normalize)
                .transpose()
                .map_err(|e| bad_request(e.to_string()))?;
            Ok(Checked { name, port: None })
        }
    }
}

impl Control {
    /// Refuses a caller whose key was revoked since it authenticated.
    pub(crate) fn check_key_still_valid(&self, caller: &Caller) -> Result<(), ApiError> {
        let Caller::Key { id } = caller else {
            return Ok(());
        };
        match self.store.key_by_id(id).map_err(ApiError::store)? {
            Some(key) if !key.revoked => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "this API key was revoked; ask the server's operator for a new one ('netbore key create')",
            )),
        }
    }

    /// Refuses a name the operator keeps from tunnels (`--denied-names`).
    pub(crate) fn check_not_denied(&self, name: &str) -> Result<(), ApiError> {
        if self.config.denied_names.iter().any(|d| d == name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::NameTaken,
                format!("the name {name} is reserved by this server; pick another name"),
            ));
        }
        Ok(())
    }

    /// How long the Edge holds a placement for its agent: a little longer than the
    /// token lives, so a token that is still valid always finds it.
    fn hold(&self) -> Duration {
        self.config.token_ttl + Duration::from_secs(5)
    }

    fn is_live(&self, tunnel_id: &str) -> bool {
        !matches!(self.status(tunnel_id), TunnelStatus::Offline)
    }

    /// Refuses a new live tunnel for `caller` past its limit (`except` is the tunnel
    /// being reclaimed, which replaces itself).
    fn check_limit(&self, caller: &Caller, except: Option<&str>) -> Result<(), ApiError> {
        let max = match caller {
            Caller::Key { .. } => self.config.max_tunnels_per_key,
            Caller::Anonymous { .. } => self.config.max_tunnels_per_anonymous_ip,
        };
        let live = self
            .store
            .tunnels_of(&caller.owner())
            .map_err(ApiError::store)?
            .iter()
            .filter(|t| Some(t.tunnel_id.as_str()) != except && self.is_live(&t.tunnel_id))
            .count();
        if live < max {
            return Ok(());
        }
        let message = match caller {
            Caller::Key { .. } => format!(
                "this API key already holds {live} live tunnels, the most this server allows; stop or delete one (DELETE /tunnels/ID) first"
            ),
            Caller::Anonymous { .. } => format!(
                "anonymous agents at your address already hold {live} live tunnels, the most this server allows; stop one first or use an API key"
            ),
        };
        Err(limit_reached(message))
    }

    /// Refuses a new live anonymous tunnel past the limit of the caller's IPv6 /48 or
    /// the server's limit on anonymous tunnels (`except` as in [`Self::check_limit`]).
    fn check_anonymous_limits(
        &self,
        caller: &Caller,
        except: Option<&str>,
    ) -> Result<(), ApiError> {
        let Caller::Anonymous { ip } = caller else {
            return Ok(());
        };
        let count = self.anonymous.count(*ip, except, |id| self.is_live(id));
        if count.total >= self.config.max_anonymous_tunnels {
            return Err(limit_reached(format!(
                "this server already holds {} live anonymous tunnels, the most it allows; try again later or use an API key",
                count.total
            )));
        }
        if ipv6_48(*ip).is_some() && count.same_48 >= self.config.max_tunnels_per_anonymous_ipv6_48
        {
            return Err(limit_reached(format!(
                "anonymous agents in your IPv6 /48 already hold {} live tunnels, the most this server allows; stop one first or use an API key",
                count.same_48
            )));
        }
        Ok(())
    }

    /// Refuses a new tunnel record when the store holds the most the server allows.
    fn check_record_cap(&self) -> Result<(), ApiError> {
        let records = self.store.count_tunnels().map_err(ApiError::store)?;
        if usize::try_from(records).unwrap_or(usize::MAX) < self.config.max_tunnel_records {
            return Ok(());
        }
        tracing::warn!(
            records,
            max = self.config.max_tunnel_records,
            "tunnel records at --max-tunnel-records; creates are refused"
        );
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::LimitReached,
            "this server holds the most tunnel records it allows and cannot create more now; reclaim an existing tunnel with its recreate token or try again later",
        ))
    }

    /// Refuses `name` if a key other than `owner` reserved it (any reservation, for
    /// anonymous owners).
    fn check_reservation(&self, name: &str, owner: &str) -> Result<(), ApiError> {
        match self.store.name_reservation(name).map_err(ApiError::store)? {
            Some(r) if r.key_id != owner => Err(name_taken(name)),
            _ => Ok(()),
        }
    }

    /// Creates a tunnel for `caller`, or reclaims one with `request.recreate_token`.
    pub fn create_tunnel(
        &self,
        caller: &Caller,
        request: &CreateTunnelRequest,
    ) -> Result<CreateTunnelResponse, ApiError> {
        self.create_tunnel_from(caller, None, request)
    }

    /// [`Self::create_tunnel`] for a caller at address `client` (the API's peer, or
    /// the address a trusted proxy names): a draining node tells by it whether a
    /// reclaim comes from the agent it serves the tunnel to.
    pub fn create_tunnel_from(
        &self,
        caller: &Caller,
        client: Option<IpAddr>,
        request: &CreateTunnelRequest,
    ) -> Result<CreateTunnelResponse, ApiError> {
        let checked = check_request(request)?;
        // A poisoned lock guards no data; the store and the Edge keep their own state.
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        // The key was checked before the lock; a revocation (and its sweep, which
        // takes this lock) may have come in between. Checked again here, a create
        // racing a revocation either ends before it, and the sweep finds its tunnel,
        // or is refused.
        self.check_key_still_valid(caller)?;
        match &request.recreate_token {
            Some(token) => self.reclaim(caller, client, request.protocol, checked, token),
            None => self.create_fresh(caller, request.protocol, checked),
        }
    }

    fn create_fresh(
        &self,
        caller: &Caller,
        protocol: Protocol,
        checked: Checked,
    ) -> Result<CreateTunnelResponse, ApiError> {
        let owner = caller.owner();
        self.check_limit(caller, None)?;
        self.check_anonymous_limits(caller, None)?;
        // The owner's own oldest offline records make room first; only what is
        // still past the server's cap is refused.
        self.forget_old_records(&owner)?;
        self.check_record_cap()?;
        let tunnel_id = format!("tun_{}", self.signer.random_hex(10));
        let mut place = PlaceRequest {
            tunnel_id: tunnel_id.clone(),
            protocol,
            name: None,
            port: checked.port,
            hold: self.hold(),
        };
        let placed = match (protocol, checked.name) {
            (Protocol::Tcp, _) => self.placement.place(&place).map_err(placement_error)?,
            (Protocol::Http | Protocol::Tls, Some(name)) => {
                self.check_not_denied(&name)?;
                self.check_reservation(&name, &owner)?;
                place.name = Some(name);
                self.placement.place(&place).map_err(placement_error)?
            }
            (Protocol::Http | Protocol::Tls, None) => self.place_random_name(&mut place)?,
        };
        let recreate_token = new_recreate_token(&self.rng).map_err(ApiError::internal)?;
        let record = TunnelRecord {
            tunnel_id,
            owner,
            protocol,
            name: place.name,
            remote_port: placed.port,
            public_url: placed.public_url,
            recreate_hash: hash_secret(&recreate_token),
            created_at: unix_now(),
        };
        if let Err(e) = self.store.insert_tunnel(&record) {
            self.placement
                .disconnect(&record.tunnel_id, DisconnectReason::Deleted);
            return Err(ApiError::store(e));
        }
        if let Caller::Anonymous { ip } = caller {
            self.anonymous.insert(&record.tunnel_id, *ip);
        }
        tracing::info!(
            tunnel_id = %record.tunnel_id,
            owner = loggable_owner(&record.owner, self.config.mask_agent_ip),
            protocol = %protocol,
            "tunnel created"
        );
        self.answer(&record, Some(recreate_token))
    }

    /// Places an HTTP tunnel under a random name no key reserved and no tunnel holds.
    fn place_random_name(&self, place: &mut PlaceRequest) -> Result<Placed, ApiError> {
        for _ in 0..RANDOM_NAME_ATTEMPTS {
            let name = random_name(&self.rng).map_err(ApiError::internal)?;
            if self.check_not_denied(&name).is_err()
                || self
                    .store
                    .name_reservation(&name)
                    .map_err(ApiError::store)?
                    .is_some()
            {
                continue;
            }
            place.name = Some(name);
            match self.placement.place(place) {
                Ok(placed) => return Ok(placed),
                Err(e) if e.code == netbore_codes::ErrorCode::NameTaken => continue,
                Err(e) => return Err(placement_error(e)),
            }
        }
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "no free random name was found; try again",
        ))
    }

    fn reclaim(
        &self,
        caller: &Caller,
        client: Option<IpAddr>,
        protocol: Protocol,
        checked: Checked,
        token: &str,
    ) -> Result<CreateTunnelResponse, ApiError> {
        let record = self
            .store
            .tunnel_by_recreate_hash(&hash_secret(token))
            .map_err(ApiError::store)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    "this recreate token matches no tunnel (it was deleted or never issued); create a new tunnel without it",
                )
            })?;
        // The token is the secret for anonymous tunnels (their owners change
        // networks); a key's tunnel also needs that key, so revoking it ends recreation.
        if !record.owner.starts_with(ANONYMOUS_PREFIX) && record.owner != caller.owner() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "this recreate token belongs to a tunnel created with an API key; send the same key with it",
            ));
        }
        // The request contradicts the tunnel the token reclaims: a conflict with
        // stored state, not a malformed request.
        let mismatch = |message: String| {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::RecreateMismatch, message)
        };
        if record.protocol != protocol {
            let article = match record.protocol {
                Protocol::Http => "an",
                Protocol::Tcp | Protocol::Tls => "a",
            };
            return Err(mismatch(format!(
                "this recreate token belongs to {article} {} tunnel; ask for protocol {}",
                record.protocol, record.protocol
            )));
        }
        if checked.name.is_some() && checked.name != record.name {
            return Err(mismatch(
                "a recreated tunnel keeps its name; drop the name from the request".into(),
            ));
        }
        if checked.port.is_some() && checked.port != record.remote_port {
            return Err(mismatch(
                "a recreated tunnel keeps its port; drop remote_port from the request".into(),
            ));
        }
        if let Some(name) = &record.name {
            // A name the operator denied after the tunnel took it is not given back.
            self.check_not_denied(name)?;
            self.check_reservation(name, &record.owner)?;
        }
        let owner = match record.owner.strip_prefix(ANONYMOUS_PREFIX) {
            Some(_) => caller.clone(),
            None => Caller::Key {
                id: record.owner.clone(),
            },
        };
        self.check_limit(&owner, Some(&record.tunnel_id))?;
        self.check_anonymous_limits(&owner, Some(&record.tunnel_id))?;
        // A draining node hands its tunnels to the others: placing one it serves now
        // would cut the session its agent moves from, streams in flight and all. When
        // the reclaim comes from that agent's address, the answer names only the
        // other nodes, where the agent says hello, and this node's session serves
        // until the agent tells it the tunnel moved. Another agent's reclaim replaces
        // the session here as anywhere (the last reclaim wins).
        let serving_here = match self.placement.status(&record.tunnel_id) {
            TunnelStatus::Online { agent, .. } => {
                client.is_some_and(|c| c.to_canonical() == agent.ip().to_canonical())
            }
            _ => false,
        };
        if serving_here && let Some(others) = self.moving_to() {
            tracing::info!(tunnel_id = %record.tunnel_id, "tunnel reclaimed off this draining node");
            return self.answer_with(&record, None, others);
        }
        let placed = self
            .placement
            .place(&PlaceRequest {
                tunnel_id: record.tunnel_id.clone(),
                protocol,
                name: record.name.clone(),
                port: record.remote_port,
                hold: self.hold(),
            })
            .map_err(placement_error)?;
        match &owner {
            Caller::Anonymous { ip } => self.anonymous.insert(&record.tunnel_id, *ip),
            Caller::Key { .. } => self.anonymous.remove(&record.tunnel_id),
        }
        let mut record = record;
        if placed.public_url != record.public_url {
            self.store
                .set_public_url(&record.tunnel_id, &placed.public_url)
                .map_err(ApiError::store)?;
            record.public_url = placed.public_url;
        }
        tracing::info!(tunnel_id = %record.tunnel_id, "tunnel reclaimed with its recreate token");
        self.answer(&record, None)
    }

    /// Forgets the oldest offline records of `owner` past its quota.
    fn forget_old_records(&self, owner: &str) -> Result<(), ApiError> {
        let records = self.store.tunnels_of(owner).map_err(ApiError::store)?;
        let max = self.config.max_records_per_owner.max(1);
        let mut excess = (records.len() + 1).saturating_sub(max);
        for r in records {
            if excess == 0 {
                break;
            }
            if !self.is_live(&r.tunnel_id) {
                self.store
                    .delete_tunnel(&r.tunnel_id)
                    .map_err(ApiError::store)?;
                excess -= 1;
            }
        }
        Ok(())
    }

    fn answer(
        &self,
        record: &TunnelRecord,
        recreate_token: Option<String>,
    ) -> Result<CreateTunnelResponse, ApiError> {
        self.answer_with(record, recreate_token, self.candidates())
    }

    /// [`Self::answer`] with the Edges `edges`.
    fn answer_with(
        &self,
        record: &TunnelRecord,
        recreate_token: Option<String>,
        edges: Vec<EdgeCandidate>,
    ) -> Result<CreateTunnelResponse, ApiError> {
        let (token, _) = self
            .signer
            .mint(
                &record.owner,
                &record.tunnel_id,
                record.protocol.as_str(),
                record.remote_port,
                record.name.as_deref(),
                self.config.token_ttl,
            )
            .map_err(ApiError::internal)?;
        Ok(CreateTunnelResponse {
            tunnel_id: record.tunnel_id.clone(),
            protocol: record.protocol,
            name: record.name.clone(),
            public_url: record.public_url.clone(),
            edges,
            ephemeral_token: token,
            expires_in: self.config.token_ttl.as_secs(),
            recreate_token,
        })
    }

    /// The tunnel as the API shows it, with its state at the Edge.
    fn info(&self, record: TunnelRecord) -> TunnelInfo {
        let (status, agent, since) = match self.status(&record.tunnel_id) {
            TunnelStatus::Offline => (TunnelState::Offline, None, None),
            TunnelStatus::Pending => (TunnelState::Pending, None, None),
            TunnelStatus::Online { agent, since } => {
                (TunnelState::Online, Some(agent), Some(since))
            }
            TunnelStatus::Elsewhere { agent, .. } => (TunnelState::Online, agent, None),
        };
        TunnelInfo {
            tunnel_id: record.tunnel_id,
            protocol: record.protocol,
            name: record.name,
            public_url: record.public_url,
            status,
            agent_addr: agent
                .filter(|_| !self.config.mask_agent_ip)
                .map(|a| a.to_string()),
            online_since: since,
            created_at: record.created_at,
        }
    }

    /// The caller's tunnels (API keys only).
    pub fn list_tunnels(&self, caller: &Caller) -> Result<Vec<TunnelInfo>, ApiError> {
        let key = caller.require_key("listing tunnels")?;
        let records = self.store.tunnels_of(key).map_err(ApiError::store)?;
        Ok(records.into_iter().map(|r| self.info(r)).collect())
    }

    fn own_tunnel(&self, caller: &Caller, id: &str, what: &str) -> Result<TunnelRecord, ApiError> {
        let key = caller.require_key(what)?;
        match self.store.tunnel(id).map_err(ApiError::store)? {
            Some(r) if r.owner == key => Ok(r),
            _ => Err(not_found_tunnel(id)),
        }
    }

    /// One of the caller's tunnels (API keys only).
    pub fn tunnel(&self, caller: &Caller, id: &str) -> Result<TunnelInfo, ApiError> {
        let record = self.own_tunnel(caller, id, "showing a tunnel")?;
        Ok(self.info(record))
    }

    /// Takes one of the caller's tunnels offline and forgets it, so its recreate token
    /// stops working (API keys only).
    pub fn delete_tunnel(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        // A poisoned lock guards no data; the store and the Edge keep their own state.
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let record = self.own_tunnel(caller, id, "deleting a tunnel")?;
        self.store
            .delete_tunnel(&record.tunnel_id)
            .map_err(ApiError::store)?;
        self.placement
            .disconnect(&record.tunnel_id, DisconnectReason::Deleted);
        tracing::info!(tunnel_id = %record.tunnel_id, "tunnel deleted");
        Ok(())
    }
}
