//! Retry policy: exponential back-off with jitter, a cap on `retry-after`, a total deadline.

use std::time::Duration;

/// How a call is retried. Retries happen for 5xx, network errors and rate limits only;
/// never for other 4xx.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total (first try included). At least 1.
    pub max_attempts: u32,
    /// Back-off base: attempt `n` (1-based) waits in `[b/2, b]` with
    /// `b = min(initial_backoff * 2^(n-1), max_backoff)` ("equal jitter").
    pub initial_backoff: Duration,
    /// Upper bound of one back-off.
    pub max_backoff: Duration,
    /// The longest `retry-after` / `x-ratelimit-reset` wait honoured; a longer one returns
    /// [`crate::Error::RateLimited`] at once so the caller can requeue.
    pub max_retry_after: Duration,
    /// Total time for one call, retries and waits included.
    pub deadline: Duration,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
            deadline: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// No retries (one attempt).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The ceiling of the back-off before attempt `attempt + 1` (attempt is 1-based).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// The back-off before attempt `attempt + 1`, jittered in `[ceiling/2, ceiling]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            rand::random_range(0..=span)
        };
        half + Duration::from_micros(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_millis(1000));
        assert_eq!(p.backoff_ceiling(60), Duration::from_millis(1000));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.backoff(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
            seen.insert(d);
        }
        assert!(seen.len() > 10, "back-off is jittered");
    }
}
