//! When a stream output is retried and when it is given up, from its history alone (sans-IO: time is
//! an argument). A URL that never worked fails fast, after [`FIRST_TRIES`] quick tries, with the
//! server's reason; one that was live is retried with backoff (up to [`MAX_BACKOFF`]) until it has been
//! down for the retry window.

use std::time::{Duration, Instant};

/// Tries a URL gets before it is given up when it has never been live.
pub const FIRST_TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Short enough that a restarted server has the stream back within a couple of seconds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    RetryAt(Instant),
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct Reconnect {
    retry_window: Duration,
    ever_live: bool,
    /// Failures since it was last live (or since it began).
    failures: u32,
    /// When the current outage began.
    down_since: Option<Instant>,
    /// Reconnections made, for the job's report.
    pub retries: u32,
}

impl Reconnect {
    /// `patient`: retry for the whole window even before it was ever live here (a recorder taking a stream
    /// over, whose server may still hold the previous recorder's connection for a while).
    pub fn new(retry_window: Duration, patient: bool) -> Reconnect {
        Reconnect { retry_window, ever_live: patient, failures: 0, down_since: None, retries: 0 }
    }

    pub fn on_live(&mut self) {
        self.ever_live = true;
        self.failures = 0;
        self.down_since = None;
    }

    pub fn on_failure(&mut self, now: Instant) -> Decision {
        self.failures += 1;
        let down_since = *self.down_since.get_or_insert(now);
        let give_up = if self.ever_live { now.duration_since(down_since) >= self.retry_window } else { self.failures >= FIRST_TRIES };
        if give_up {
            return Decision::GiveUp;
        }
        self.retries += 1;
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (self.failures - 1).min(8)).min(MAX_BACKOFF);
        Decision::RetryAt(now + backoff)
    }

    pub fn ever_live(&self) -> bool {
        self.ever_live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_never_worked_fails_after_its_first_tries() {
        let t0 = Instant::now();
        let mut policy = Reconnect::new(Duration::from_secs(60), false);
        assert_eq!(policy.on_failure(t0), Decision::RetryAt(t0 + Duration::from_millis(500)));
        assert_eq!(policy.on_failure(t0), Decision::RetryAt(t0 + Duration::from_secs(1)));
        assert_eq!(policy.on_failure(t0), Decision::GiveUp);
        assert_eq!(policy.retries, 2);
    }

    #[test]
    fn a_dropped_stream_is_retried_with_capped_backoff_until_the_window_passes() {
        let t0 = Instant::now();
        let mut policy = Reconnect::new(Duration::from_secs(10), false);
        policy.on_live();
        let mut at = t0;
        let mut waits = Vec::new();
        while let Decision::RetryAt(next) = policy.on_failure(at) {
            waits.push(next - at);
            at = next;
        }
        assert_eq!(waits[..3], [Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)]);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert!(at.duration_since(t0) >= Duration::from_secs(10) && at.duration_since(t0) < Duration::from_secs(12));
        // Live again: a new outage starts a new window.
        policy.on_live();
        assert!(matches!(policy.on_failure(at), Decision::RetryAt(_)));
        // A taker is patient from the start.
        let mut taker = Reconnect::new(Duration::from_secs(10), true);
        assert!((0..5).all(|_| matches!(taker.on_failure(t0), Decision::RetryAt(_))));
    }
}
