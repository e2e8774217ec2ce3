//! Values layer: a histogram with fixed bucket bounds, for `/metrics` (heartbeat round trips,
//! webhook durations, event-loop turns).
//!
//! Owns per-bucket counts, a sum and a count; nothing else. The bounds are constants given at
//! each observation and at rendering, so a histogram costs a fixed 136 bytes however many
//! observations it takes, and no series grows with the number of connections. Invariants:
//! counts only grow (a valid Prometheus histogram); a value above the last bound lands in the
//! `+Inf` bucket.

/// The most bounds a histogram may have.
pub const MAX_BOUNDS: usize = 14;

/// Heartbeat round trips (µs): 100 µs to 5 s.
pub const RTT_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];
/// Webhook request durations (µs): 1 ms to 30 s.
pub const WEBHOOK_US: &[u64] = &[
    1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
/// Event-loop turns (µs): 10 µs to 1 s.
pub const TURN_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); index `bounds.len()` is `+Inf`.
    counts: [u64; MAX_BOUNDS + 1],
    sum_us: u64,
    count: u64,
}

impl Histogram {
    /// Count one observation of `us` microseconds against `bounds` (ascending, at most
    /// [`MAX_BOUNDS`]; always the same constant for one histogram).
    pub fn observe(&mut self, bounds: &[u64], us: u64) {
        let bounds = &bounds[..bounds.len().min(MAX_BOUNDS)];
        let i = bounds.partition_point(|&b| b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// Cumulative counts per bound of `bounds`, in seconds, then `+Inf` (`None`).
    pub fn cumulative<'a>(
        &'a self,
        bounds: &'a [u64],
    ) -> impl Iterator<Item = (Option<f64>, u64)> + 'a {
        let bounds = &bounds[..bounds.len().min(MAX_BOUNDS)];
        let mut acc = 0;
        (0..=bounds.len()).map(move |i| {
            acc += self.counts[i];
            (bounds.get(i).map(|&b| b as f64 / 1e6), acc)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = Histogram::default();
        for us in [5, 10, 11, 100, 2_000_000] {
            h.observe(&[10, 100], us);
        }
        let c: Vec<_> = h.cumulative(&[10, 100]).collect();
        assert_eq!(c, [(Some(1e-5), 2), (Some(1e-4), 4), (None, 5)]);
        assert_eq!(h.count(), 5);
        assert!((h.sum_seconds() - 2.000126).abs() < 1e-9);
    }

    #[test]
    fn every_bucket_list_fits() {
        for b in [RTT_US, WEBHOOK_US, TURN_US] {
            assert!(b.len() <= MAX_BOUNDS);
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
