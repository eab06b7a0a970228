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

/// The per-round ratios of `a` to `b`; `None` when they do not have the same rounds.
pub(crate) fn ratios(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    (a.len() == b.len() && !a.is_empty()).then(|| a.iter().zip(b).map(|(x, y)| x / y).collect())
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
    fn rounds_that_do_not_pair_give_nothing() {
        assert_eq!(ratios(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(ratios(&[], &[]), None);
    }
}
