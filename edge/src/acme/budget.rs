//! Each tunnel owner's hourly budget of ACME orders
//! (`--acme-orders-per-owner-per-hour`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The window of the budget.
pub(super) const OWNER_WINDOW: Duration = Duration::from_secs(3600);

/// One owner's orders of the last [`OWNER_WINDOW`].
#[derive(Debug, Default)]
struct OwnerOrders {
    starts: VecDeque<Instant>,
    /// A refusal was logged since the budget last had room (one line, not one a
    /// viewer).
    warned: bool,
}

/// Orders of the last hour, by owner (tokio's clock, so tests can pause it).
#[derive(Debug, Default)]
pub(super) struct OwnerBudget {
    owners: Mutex<HashMap<String, OwnerOrders>>,
}

impl OwnerBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnerOrders>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one order for `name` from `owner`'s budget of `limit` an hour (at least
    /// one); false, logged once while it lasts, when it is spent.
    pub(super) fn take(&self, owner: &str, name: &str, limit: u32) -> bool {
        let limit = limit.max(1) as usize;
        let now = Instant::now();
        let mut owners = self.lock();
        let orders = owners.entry(owner.to_string()).or_default();
        while orders
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= OWNER_WINDOW)
        {
            orders.starts.pop_front();
        }
        if orders.starts.len() < limit {
            orders.starts.push_back(now);
            orders.warned = false;
            return true;
        }
        if !orders.warned {
            orders.warned = true;
            // The owner string of an anonymous tunnel is an address: left out.
            tracing::warn!(%name, limit, "ACME order refused: the owner of this tunnel started the most orders an hour allows (--acme-orders-per-owner-per-hour); its new names get no certificate until the hour passes");
        }
        false
    }

    /// Forgets owners with no order in the last hour (bounds the table).
    pub(super) fn prune(&self) {
        let now = Instant::now();
        self.lock().retain(|_, o| {
            o.starts
                .back()
                .is_some_and(|t| now.duration_since(*t) < OWNER_WINDOW)
        });
    }

    /// Whether no owner is tracked.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_owner_has_an_hourly_budget() {
        let budget = OwnerBudget::default();
        assert!(budget.take("k_1", "a.example.test", 2));
        assert!(budget.take("k_1", "b.example.test", 2));
        assert!(!budget.take("k_1", "c.example.test", 2), "spent");
        assert!(
            budget.take("k_2", "d.example.test", 2),
            "another owner's own"
        );
        tokio::time::advance(OWNER_WINDOW).await;
        assert!(budget.take("k_1", "c.example.test", 2), "an hour later");
        budget.prune();
        assert_eq!(budget.lock().len(), 1, "k_2's hour is over");
    }
}
