//! Logging a failure that repeats every tick without flooding the log.
//!
//! The shard's maintenance loop runs every 10 ms; a store whose directory
//! vanished or whose disk is full fails every one of them. Logged each
//! time, that was 100 identical lines a second per shard (seen when a
//! benchmark script removed a running server's data directory).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A failure repeating within this is counted, not logged again.
pub const REPEAT_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The logging state of one kind of failure.
#[derive(Debug, Default)]
pub struct Repeated {
    /// When it was last logged; `None` while it is not failing.
    logged_at: Cell<Option<Instant>>,
    /// Failures since then that were not logged.
    unlogged: Cell<u64>,
}

impl Repeated {
    /// A failure at `now`: `log` is called with the count of failures left
    /// unlogged since the last line, for the first failure and then at
    /// most once a `REPEAT_LOG_PERIOD`.
    pub fn failed(&self, now: Instant, log: impl FnOnce(u64)) {
        match self.logged_at.get() {
            Some(at) if now.saturating_duration_since(at) < REPEAT_LOG_PERIOD => {
                self.unlogged.set(self.unlogged.get() + 1);
            }
            _ => {
                log(self.unlogged.replace(0));
                self.logged_at.set(Some(now));
            }
        }
    }

    /// A success: if it had been failing, `log` is called once with the
    /// failures left unlogged, and the next failure is logged at once.
    pub fn succeeded(&self, log: impl FnOnce(u64)) {
        if self.logged_at.take().is_some() {
            log(self.unlogged.replace(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_logged_then_one_a_period_with_the_count_between() {
        let repeated = Repeated::default();
        let start = Instant::now();
        let mut lines = Vec::new();
        for ms in (0..25_000).step_by(10) {
            repeated.failed(start + Duration::from_millis(ms), |unlogged| lines.push((ms, unlogged)));
        }
        assert_eq!(lines, vec![(0, 0), (10_000, 999), (20_000, 999)]);
        let mut recovered = Vec::new();
        repeated.succeeded(|unlogged| recovered.push(unlogged));
        repeated.succeeded(|unlogged| recovered.push(unlogged));
        assert_eq!(recovered, vec![499], "once, with what the last period left unlogged");
        let mut again = Vec::new();
        repeated.failed(start + Duration::from_millis(25_010), |unlogged| again.push(unlogged));
        assert_eq!(again, vec![0], "a new run of failures is logged at once");
    }

    #[test]
    fn a_success_without_failures_logs_nothing() {
        let repeated = Repeated::default();
        repeated.succeeded(|_| panic!("nothing failed"));
    }
}
