//! Reconnect delays: exponential with jitter, capped.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// First retry delay.
const BASE: Duration = Duration::from_millis(250);

/// The delay before reconnect attempt `attempt` (1-based): `BASE × 2^(attempt-1)`
/// capped at `max`, then drawn uniformly from its upper half so that many agents
/// cut off together do not return together.
pub fn delay(attempt: u32, max: Duration) -> Duration {
    let exp = BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(max);
    let mut b = [0u8; 2];
    let _ = SystemRandom::new().fill(&mut b);
    let frac = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    exp.mul_f64(0.5 + 0.5 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let max = Duration::from_secs(30);
        for attempt in 1..40 {
            let d = delay(attempt, max);
            let ceiling = BASE.saturating_mul(1u32 << (attempt - 1).min(16)).min(max);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
    }
}
