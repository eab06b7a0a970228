//! Reserved names: an API key holds a name so no other caller gets it, even while the
//! key's tunnel is offline.

use axum::http::StatusCode;
use netbore_codes::ErrorCode;

use crate::api::{ApiError, NameInfo};
use crate::auth::Caller;
use crate::names::normalize;
use crate::store::{Reserve, ReservedName};
use crate::tokens::unix_now;
use crate::{Control, TunnelStatus};

fn info(r: ReservedName) -> NameInfo {
    NameInfo {
        name: r.name,
        created_at: r.created_at,
    }
}

/// Whether [`Control::reserve_name`] made a new reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The name is newly held.
    New,
    /// The caller already held it.
    Existing,
}

impl Control {
    /// Reserves `name` for the caller's key.
    pub fn reserve_name(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(NameInfo, Reserved), ApiError> {
        let key = caller.require_key("reserving a name")?;
        let name = normalize(name).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.to_string(),
            )
        })?;
        self.check_not_denied(&name)?;
        // A poisoned lock guards no data; the store and the Edge keep their own state.
        let _guard = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        // Revoked since it authenticated? (A revocation sweep takes this lock too.)
        self.check_key_still_valid(caller)?;
        // A live tunnel of someone else keeps its name; reserving it would strand them.
        for t in self.store.tunnels_named(&name).map_err(ApiError::store)? {
            if t.owner != key && !matches!(self.status(&t.tunnel_id), TunnelStatus::Offline) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::NameTaken,
                    format!("the name {name} is in use by another tunnel; pick another name"),
                ));
            }
        }
        let outcome = self
            .store
            .reserve_name(&name, key, unix_now(), self.config.max_names_per_key)
            .map_err(ApiError::store)?;
        let reserved = match outcome {
            Reserve::Reserved => Reserved::New,
            Reserve::AlreadyYours => Reserved::Existing,
            Reserve::Taken => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::NameTaken,
                    format!("the name {name} is reserved by another API key; pick another name"),
                ));
            }
            Reserve::LimitReached => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::LimitReached,
                    format!(
                        "this API key already reserves {} names, the most this server allows; release one first",
                        self.config.max_names_per_key
                    ),
                ));
            }
        };
        let record = self
            .store
            .name_reservation(&name)
            .map_err(ApiError::store)?
            .ok_or_else(|| ApiError::internal("a reservation vanished right after it was made"))?;
        Ok((info(record), reserved))
    }

    /// The names the caller's key holds.
    pub fn list_names(&self, caller: &Caller) -> Result<Vec<NameInfo>, ApiError> {
        let key = caller.require_key("listing reserved names")?;
        let names = self.store.names_of(key).map_err(ApiError::store)?;
        Ok(names.into_iter().map(info).collect())
    }

    /// Releases one of the caller's names.
    pub fn release_name(&self, caller: &Caller, name: &str) -> Result<(), ApiError> {
        let key = caller.require_key("releasing a name")?;
        let released = match normalize(name) {
            Ok(name) => self
                .store
                .release_name(&name, key)
                .map_err(ApiError::store)?,
            Err(_) => false,
        };
        if released {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!(
                    "you have not reserved the name {:?}; list yours with GET /names",
                    name.chars().take(64).collect::<String>()
                ),
            ))
        }
    }
}
