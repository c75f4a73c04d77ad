//! Duration histograms with power-of-two bucket bounds, for latency and
//! flush times: bucket `i` counts durations of at most `2^i` microseconds,
//! the last one everything longer. Cheap to record (a leading-zeros count)
//! and to merge, and the bounds map directly onto Prometheus `le` labels.

use std::time::Duration;

/// Buckets with a finite bound: 1 µs to 2^24 µs (about 16.8 s).
pub const HISTOGRAM_BOUNDED_BUCKETS: usize = 25;
/// All buckets, the unbounded one included.
pub const HISTOGRAM_BUCKETS: usize = HISTOGRAM_BOUNDED_BUCKETS + 1;

/// The bucket a duration of `micros` falls in.
pub fn histogram_bucket(micros: u64) -> usize {
    if micros <= 1 {
        return 0;
    }
    // The smallest i with micros <= 2^i.
    let i = (64 - (micros - 1).leading_zeros()) as usize;
    i.min(HISTOGRAM_BOUNDED_BUCKETS)
}

/// The upper bound of bucket `i` in seconds; `None` for the last.
pub fn histogram_bound_seconds(i: usize) -> Option<f64> {
    (i < HISTOGRAM_BOUNDED_BUCKETS).then(|| (1u64 << i) as f64 / 1e6)
}

/// A histogram owned by one thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket (not cumulative).
    pub buckets: [u64; HISTOGRAM_BUCKETS],
    pub count: u64,
    pub sum_micros: u64,
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[histogram_bucket(micros)] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    pub fn add(&mut self, other: &Histogram) {
        self.buckets.iter_mut().zip(other.buckets).for_each(|(a, b)| *a += b);
        self.count += other.count;
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bounds_in_powers_of_two() {
        assert_eq!(histogram_bucket(0), 0);
        assert_eq!(histogram_bucket(1), 0);
        assert_eq!(histogram_bucket(2), 1);
        assert_eq!(histogram_bucket(3), 2);
        assert_eq!(histogram_bucket(4), 2);
        assert_eq!(histogram_bucket(5), 3);
        assert_eq!(histogram_bucket(1 << 24), 24);
        assert_eq!(histogram_bucket((1 << 24) + 1), HISTOGRAM_BOUNDED_BUCKETS);
        assert_eq!(histogram_bucket(u64::MAX), HISTOGRAM_BOUNDED_BUCKETS);
        for micros in [1u64, 7, 1000, 123_456] {
            let i = histogram_bucket(micros);
            assert!(micros as f64 / 1e6 <= histogram_bound_seconds(i).unwrap());
            assert!(i == 0 || micros as f64 / 1e6 > histogram_bound_seconds(i - 1).unwrap());
        }
        let mut h = Histogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(100));
        assert_eq!((h.buckets[2], h.buckets[HISTOGRAM_BOUNDED_BUCKETS], h.count), (1, 1, 2));
    }
}
