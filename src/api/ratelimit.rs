//! Per-client rate limits (`auth.rate_limit` requests per second, bursts of
//! `auth.rate_burst`): a token bucket per authenticated client, or per peer address for
//! anonymous callers. Over the limit: 429 with `Retry-After` (whole seconds) and an
//! OperationOutcome; nothing is done for the request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Buckets per client.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most clients tracked; beyond it the idlest half is forgotten (they start full again).
const MAX_CLIENTS: usize = 100_000;

impl RateLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: f64, burst: f64) -> Option<RateLimiter> {
        (per_second > 0.0).then(|| RateLimiter { per_second, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) })
    }

    /// `Ok` to go ahead, else the seconds to wait.
    pub fn check(&self, client: &str) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            let mut by_age: Vec<(String, Instant)> = buckets.iter().map(|(k, (_, t))| (k.clone(), *t)).collect();
            by_age.sort_by_key(|(_, t)| *t);
            for (k, _) in by_age.into_iter().take(MAX_CLIENTS / 2) {
                buckets.remove(&k);
            }
        }
        let (tokens, last) = buckets.entry(client.to_owned()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_per_client() {
        let limiter = RateLimiter::new(2.0, 3.0).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        assert_eq!(limiter.check_at("a", t0), Err(1));
        assert!(limiter.check_at("b", t0).is_ok(), "clients have their own buckets");
        assert!(limiter.check_at("a", t0 + Duration::from_millis(600)).is_ok(), "half a second refills one");
        assert!(RateLimiter::new(0.0, 10.0).is_none());
    }
}
