//! What the ACME source asks before it orders or renews a name's certificate: whether
//! an agent serves the name now, and who owns its tunnel (whose order budget pays).

use std::sync::Arc;

use netbore_control::store::Store;

use crate::Registry;
use crate::fleet::RouteKey;
use crate::registry::Route;

/// Whether a tunnel serves a name now, and whose it is.
pub trait TunnelLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The owner of the tunnel an agent serves under `name` (one of the Edge's full
    /// DNS names, lowercase) right now, or `None` when no agent serves it: the name
    /// is unknown, pending or offline. Called on tokio's blocking pool (it may read a
    /// store).
    fn online_owner(&self, name: &str) -> Option<String>;
}

/// The lookup of an Edge with its control plane in the same process: online from the
/// [`Registry`]'s routes, the owner from the control plane's store.
#[derive(Clone)]
pub struct RegistryLookup {
    registry: Registry,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for RegistryLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLookup")
            .field("domain", &self.registry.domain())
            .finish_non_exhaustive()
    }
}

impl RegistryLookup {
    /// A lookup in `registry`, with owners from `store`.
    pub fn new(registry: Registry, store: Arc<dyn Store>) -> Self {
        RegistryLookup { registry, store }
    }
}

impl TunnelLookup for RegistryLookup {
    fn online_owner(&self, name: &str) -> Option<String> {
        let label = crate::http::host::tunnel_name(name, self.registry.domain())?;
        // Served here, or in a fleet at another node (a viewer here still needs the
        // certificate).
        let tunnel_id = match self.registry.route(&label) {
            Some(Route::Online(tunnel)) => tunnel.tunnel_id().to_string(),
            _ => {
                self.registry
                    .directory()?
                    .holder(&RouteKey::Http(label.clone()))?
                    .tunnel_id
            }
        };
        // A tunnel the store does not know (it cannot happen with one process, but a
        // store error can) is its own owner: the budget is then per name.
        let owner = match self.store.tunnel(&tunnel_id) {
            Ok(Some(record)) => record.owner,
            _ => format!("name:{label}"),
        };
        Some(owner)
    }
}
