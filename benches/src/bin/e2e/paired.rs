//! Two contenders compared round by round. Both run in every round, next to each
//! other, so a host that speeds up or slows down between rounds moves both alike;
//! the ratio of their rates in each round is one paired sample, and the median of
//! those samples, with a bootstrap interval, says how sure one run is of it.

/// Contenders compared round by round: what the ratio says, and the two whose rates
/// it divides.
pub(crate) const PAIRS: [(&str, &str, &str); 4] = [
    (
        "inspector on ÷ off",
        "netbore http",
        "netbore http, inspector off",
    ),
    (
        "baseline inspector on ÷ off",
        "baseline netbore http",
        "baseline netbore http, inspector off",
    ),
    (
        "hop: via another node ÷ via the holder",
        "netbore http via another node",
        "netbore http via the holder",
    ),
    (
        "baseline hop: via another node ÷ via the holder",
        "baseline netbore http via another node",
        "baseline netbore http via the holder",
    ),
];

/// Which of [`PAIRS`] is this build's hop, the one `--hop-limits` checks.
pub(crate) const HOP: usize = 2;

/// `--hop-limits FLOOR,MS`: the most the fleet's hop may cost (issue 18 asks 0.85
/// and 0.3): the median of the per-round ratios (via another node ÷ via the
/// holder) at least FLOOR, and the median of the per-round differences of the p50
/// (through the other node less through the holder) at most MS milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HopLimits {
    pub(crate) floor: f64,
    pub(crate) added_p50_ms: f64,
}

impl HopLimits {
    /// `FLOOR,MS`, both positive numbers.
    pub(crate) fn parse(text: &str) -> Option<HopLimits> {
        let (floor, ms) = text.split_once(',')?;
        let (floor, added_p50_ms) = (floor.trim().parse().ok()?, ms.trim().parse().ok()?);
        (f64::is_finite(floor)
            && floor > 0.0
            && f64::is_finite(added_p50_ms)
            && added_p50_ms >= 0.0)
            .then_some(HopLimits {
                floor,
                added_p50_ms,
            })
    }

    /// What the hop of figure `name` breaks, given its [`Paired`] ratio and what it
    /// adds to the p50 (in seconds, [`median_added`]).
    pub(crate) fn broken(&self, name: &str, hop: Paired, added_p50: f64) -> Vec<String> {
        let mut broken = Vec::new();
        if hop.median < self.floor {
            broken.push(format!(
                "{name}: the hop serves {:.3}× the requests per second of the holder (median of rounds), below {}×",
                hop.median, self.floor
            ));
        }
        let added_ms = added_p50 * 1e3;
        if added_ms > self.added_p50_ms {
            broken.push(format!(
                "{name}: the hop adds {added_ms:.2} ms to the p50, above {} ms",
                self.added_p50_ms
            ));
        }
        broken
    }
}

/// Resamples drawn for the interval.
const RESAMPLES: usize = 2000;

/// The median of per-round ratios, and the 2.5th and 97.5th percentiles of that
/// median over bootstrap resamples of the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Paired {
    pub(crate) median: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

/// `f` of `a`'s and `b`'s figure in each round; `None` when they do not have the
/// same rounds.
fn by_round(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Option<Vec<f64>> {
    (a.len() == b.len() && !a.is_empty()).then(|| a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect())
}

/// The per-round ratios of `a` to `b`; `None` when they do not have the same rounds.
pub(crate) fn ratios(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    by_round(a, b, |x, y| x / y)
}

/// The median over rounds of `a`'s figure less `b`'s (a p50 each, say); `None`
/// when they do not have the same rounds.
pub(crate) fn median_added(a: &[f64], b: &[f64]) -> Option<f64> {
    by_round(a, b, |x, y| x - y).map(median)
}

/// [`Paired`] of the per-round ratios `by_round`.
pub(crate) fn paired(by_round: &[f64]) -> Paired {
    // A fixed seed: the same rounds give the same interval.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let n = by_round.len();
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .map(|_| median((0..n).map(|_| by_round[next(n)]).collect()))
        .collect();
    medians.sort_by(f64::total_cmp);
    Paired {
        median: median(by_round.to_vec()),
        low: medians[RESAMPLES * 25 / 1000],
        high: medians[RESAMPLES * 975 / 1000 - 1],
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_that_agree_give_a_narrow_interval_around_their_ratio() {
        let a = [96.0, 48.0, 72.0, 60.0, 84.0];
        let b = [100.0, 50.0, 75.0, 62.5, 87.5];
        let p = paired(&ratios(&a, &b).unwrap());
        assert!((p.median - 0.96).abs() < 1e-9, "{p:?}");
        assert!(
            (p.low - 0.96).abs() < 1e-9 && (p.high - 0.96).abs() < 1e-9,
            "{p:?}"
        );
    }

    #[test]
    fn the_interval_holds_the_median_and_widens_with_spread() {
        let by_round: Vec<f64> = (0..41).map(|i| 0.9 + f64::from(i) * 0.005).collect();
        let p = paired(&by_round);
        assert!((p.median - 1.0).abs() < 1e-9, "{p:?}");
        assert!(p.low < p.median && p.median < p.high, "{p:?}");
        assert!(p.low > 0.95 && p.high < 1.05, "{p:?}");
    }

    #[test]
    fn hop_limits_parse_and_name_what_a_hop_breaks() {
        assert_eq!(
            HopLimits::parse("0.85,0.3"),
            Some(HopLimits {
                floor: 0.85,
                added_p50_ms: 0.3
            })
        );
        for bad in ["0.85", "x,0.3", "0.85,-1", "0,0.3", "NaN,0.3"] {
            assert_eq!(HopLimits::parse(bad), None, "{bad}");
        }
        let limits = HopLimits::parse("0.85,0.3").unwrap();
        let hop = |median| Paired {
            median,
            low: median - 0.02,
            high: median + 0.02,
        };
        assert!(limits.broken("f", hop(0.90), 0.00025).is_empty());
        let slow = limits.broken("f", hop(0.80), 0.00025);
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(slow[0].contains("0.800×"), "{slow:?}");
        let late = limits.broken("f", hop(0.90), 0.0004);
        assert_eq!(late.len(), 1, "{late:?}");
        assert!(late[0].contains("0.40 ms"), "{late:?}");
        // The p50 added is paired by round: a round where the host slowed both
        // contenders moves the difference, not the median.
        let holder = [0.0020, 0.0021, 0.0060, 0.0019, 0.0020];
        let hop_p50 = [0.0022, 0.0023, 0.0065, 0.0021, 0.0022];
        let added = median_added(&hop_p50, &holder).unwrap();
        assert!((added - 0.0002).abs() < 1e-9, "{added}");
        assert_eq!(median_added(&[1.0], &[]), None);
    }

    #[test]
    fn rounds_that_do_not_pair_give_nothing() {
        assert_eq!(ratios(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(ratios(&[], &[]), None);
    }
}
