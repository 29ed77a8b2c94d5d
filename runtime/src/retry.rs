//! Every retry loop's schedule, in one place: exponential backoff with jitter (the `backon` crate), so
//! nodes that lost the same server do not come back to it in step. Callers say how often and for how
//! long; `backon::Retryable` runs the attempts.

use backon::ExponentialBuilder;
use std::time::Duration;

/// Delays from `first`, doubling up to `max_delay`, jittered; at most `attempts` tries in all.
pub fn attempts(attempts: usize, first: Duration, max_delay: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(first).with_max_delay(max_delay).with_jitter().with_max_times(attempts.saturating_sub(1))
}

/// Delays from `first`, doubling up to `max_delay`, jittered, until the delays add up to `total`.
pub fn for_about(total: Duration, first: Duration, max_delay: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(first).with_max_delay(max_delay).with_jitter().with_max_times(usize::MAX).with_total_delay(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn attempts_counts_tries_not_retries_and_delays_grow_within_bounds() {
        let delays: Vec<Duration> = attempts(4, Duration::from_millis(100), Duration::from_millis(300)).build().collect();
        assert_eq!(delays.len(), 3, "4 tries: 3 waits");
        assert!(delays.iter().all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_millis(600)), "{delays:?}");
        let total: Duration = for_about(Duration::from_secs(2), Duration::from_millis(100), Duration::from_millis(500)).build().sum();
        assert!(total <= Duration::from_secs(2), "{total:?}");
        assert!(total >= Duration::from_millis(1_000), "{total:?}");
    }
}
