//! Retry decisions in one place: the classifier (`classify`) maps each attempt's outcome to a
//! verdict and a `subscription-error` code, and `RetryPolicy` turns the attempt count into the
//! next delay (exponential backoff with jitter, computed with the `backoff` crate) and decides
//! when to give up. The schedule is data (configuration); the attempt count and next-attempt
//! time are stored state, so a retry survives a restart.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

use super::rest_hook::{Attempt, FailureKind};
use crate::fhir::instant::Millis;

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again; `code` is the `subscription-error` code to report if we give up.
    Retry {
        code: &'static str,
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// R5 §2.7: success for rest-hook is any 2xx. Everything else is retried on the schedule:
/// network errors and timeouts (`no-response`), DNS failures (`dns-resolution-error`), and
/// non-2xx answers (`error-response`), 4xx included, since a receiver being redeployed often
/// answers 404 for a minute.
pub fn classify(attempt: &Attempt) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(status) => Verdict::Delivered,
        Attempt::Answered { status, retry_after } => {
            Verdict::Retry { code: "error-response", reason: format!("endpoint answered HTTP {status}"), retry_after: *retry_after }
        }
        Attempt::Failed { kind, detail } => {
            let (code, what) = match kind {
                FailureKind::Dns => ("dns-resolution-error", "DNS resolution failed"),
                FailureKind::Timeout => ("no-response", "no response before the timeout"),
                FailureKind::Connect => ("no-response", "connection failed"),
                FailureKind::Blocked => ("no-response", "address refused by the server's endpoint policy"),
                FailureKind::Other => ("no-response", "request failed"),
            };
            Verdict::Retry { code, reason: format!("{what}: {detail}"), retry_after: None }
        }
    }
}

/// The delivery retry schedule.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// ±fraction of jitter, e.g. 0.2.
    pub randomization_factor: f64,
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a still-failing event is dead-lettered whatever the attempt count.
    pub max_age: Duration,
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`, given `attempts` failures so far (>= 1). A
    /// `Retry-After` from the endpoint is honoured between the scheduled delay and twice it.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let mut schedule = ExponentialBackoff {
            current_interval: self.initial_interval,
            initial_interval: self.initial_interval,
            randomization_factor: self.randomization_factor.clamp(0.0, 1.0),
            multiplier: self.multiplier.max(1.0),
            max_interval: self.max_interval,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = self.initial_interval;
        for _ in 0..attempts.max(1) {
            delay = schedule.next_backoff().unwrap_or(self.max_interval);
        }
        match retry_after {
            Some(hint) => hint.clamp(delay, delay.saturating_mul(2)),
            None => delay,
        }
    }

    /// True when an event that has failed `attempts` times, first at `first_failure_at`, should
    /// be given up on.
    pub fn exhausted(&self, attempts: u32, first_failure_at: Millis, now: Millis) -> bool {
        let age = Duration::from_millis(u64::try_from(now.saturating_sub(first_failure_at)).unwrap_or(0));
        attempts >= self.max_attempts || age >= self.max_age
    }
}

/// Handshakes (`delivery.handshake_delay`, `delivery.handshake_retry_schedule`): a receiver
/// not ready for the handshake of a subscription it has just created (its test session
/// waits only after it parsed the 201) gets a few quick retries before the subscription goes
/// to `error`. Not stored: a restart starts a `requested` subscription's handshakes over.
#[derive(Clone, Debug, Default)]
pub struct HandshakePolicy {
    /// Wait between the creating write's acknowledgement and the first handshake.
    pub delay: Duration,
    /// Delay before each retry, in order; empty: the first refusal is final.
    pub retries: Vec<Duration>,
}

impl HandshakePolicy {
    /// Delay before the next attempt after `failures` refused handshakes (>= 1); `None`:
    /// give up.
    pub fn retry_after(&self, failures: u32) -> Option<Duration> {
        let index = usize::try_from(failures.checked_sub(1)?).ok()?;
        self.retries.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Attempt {
        Attempt::Answered { status, retry_after: None }
    }

    #[test]
    fn classifier_table() {
        let cases: &[(Attempt, Option<&str>)] = &[
            (answered(200), None),
            (answered(201), None),
            (answered(204), None),
            (answered(299), None),
            (answered(301), Some("error-response")),
            (answered(400), Some("error-response")),
            (answered(404), Some("error-response")),
            (answered(408), Some("error-response")),
            (answered(429), Some("error-response")),
            (answered(500), Some("error-response")),
            (answered(503), Some("error-response")),
            (Attempt::Failed { kind: FailureKind::Timeout, detail: String::new() }, Some("no-response")),
            (Attempt::Failed { kind: FailureKind::Connect, detail: String::new() }, Some("no-response")),
            (Attempt::Failed { kind: FailureKind::Dns, detail: String::new() }, Some("dns-resolution-error")),
            (Attempt::Failed { kind: FailureKind::Blocked, detail: String::new() }, Some("no-response")),
        ];
        for (attempt, want) in cases {
            match (classify(attempt), want) {
                (Verdict::Delivered, None) => {}
                (Verdict::Retry { code, .. }, Some(w)) => assert_eq!(code, *w, "{attempt:?}"),
                (got, want) => panic!("{attempt:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(1),
            randomization_factor: 0.2,
            max_attempts: 5,
            max_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_cap() {
        let p = policy();
        for _ in 0..50 {
            let d1 = p.delay(1, None).as_millis();
            let d3 = p.delay(3, None).as_millis();
            let d10 = p.delay(10, None).as_millis();
            assert!((80..=120).contains(&d1), "{d1}");
            assert!((320..=480).contains(&d3), "{d3}");
            assert!(d10 <= 1200, "{d10}");
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = RetryPolicy { randomization_factor: 0.0, ..policy() };
        assert_eq!(p.delay(1, Some(Duration::from_millis(150))), Duration::from_millis(150));
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), Duration::from_millis(200));
        assert_eq!(p.delay(1, Some(Duration::ZERO)), Duration::from_millis(100));
    }

    #[test]
    fn gives_up_on_attempts_or_age() {
        let p = policy();
        assert!(!p.exhausted(4, 0, 1_000));
        assert!(p.exhausted(5, 0, 1_000));
        assert!(p.exhausted(1, 0, 60_000));
    }

    #[test]
    fn handshakes_retry_on_their_own_short_schedule_then_give_up() {
        let ms = Duration::from_millis;
        let p = HandshakePolicy { delay: ms(250), retries: vec![ms(1000), ms(2000), ms(4000)] };
        assert_eq!([1, 2, 3, 4].map(|n| p.retry_after(n)), [Some(ms(1000)), Some(ms(2000)), Some(ms(4000)), None]);
        assert_eq!(p.retry_after(0), None);
        assert_eq!(HandshakePolicy::default().retry_after(1), None, "no schedule: the first refusal is final");
    }
}
