//! A rest-hook subscription's handshakes, per status generation (issue #19, docs/decisions.md
//! "Handshakes a receiver is not ready for"). The lane asks [`Handshakes::step`] while the
//! subscription is `requested`:
//!
//! - the first attempt is due `delivery.handshake_delay` after the lane learnt of the
//!   generation, which is after the write that asked for it was durable and answered;
//! - a 2xx settles it: the committer is asked for `active`;
//! - a refusal (no 2xx, no answer, a timeout) is retried after each delay of
//!   `delivery.handshake_retry_schedule` in turn, the subscription still `requested`; once
//!   the schedule is used up the committer is asked for `error`, with the last attempt's code.
//!
//! The attempts live here, in the lane, not in the store: `requested` is the durable state, so
//! a restart starts a generation's handshakes over. A new generation (the client set the
//! subscription to `requested` again) starts over too.

use tokio::time::Instant;

use super::lane::send_control;
use super::LaneContext;
use crate::ingest::{LaneCommand, LaneView};
use crate::notify::NotificationType;
use crate::store::SubStatus;

/// The handshake under way for one generation.
struct Attempts {
    generation: u64,
    failures: u32,
    due: Instant,
}

/// What the lane does next.
pub(super) enum Step {
    /// Nothing before this instant.
    Wait(Instant),
    /// A handshake was sent; `accepted`: the endpoint took it.
    Attempted { accepted: bool },
}

/// The lane's handshake state: the generation settled last (accepted or given up on), and the
/// attempts of the one under way.
#[derive(Default)]
pub(super) struct Handshakes {
    settled: Option<u64>,
    current: Option<Attempts>,
}

impl Handshakes {
    /// Whether `generation` still needs its handshake.
    pub fn unsettled(&self, generation: u64) -> bool {
        self.settled != Some(generation)
    }

    /// Sends the handshake of the view's generation if it is due, and settles it when accepted
    /// or when the retries are used up.
    pub async fn step(&mut self, ctx: &LaneContext, sub: &str, view: &LaneView) -> Step {
        let generation = view.state.generation;
        let attempts = match &mut self.current {
            Some(a) if a.generation == generation => a,
            _ => self.current.insert(Attempts { generation, failures: 0, due: Instant::now() + ctx.config.handshake.delay }),
        };
        if attempts.due > Instant::now() {
            return Step::Wait(attempts.due);
        }
        let (status, error) = match send_control(ctx, view, NotificationType::Handshake).await {
            Ok(()) => (SubStatus::Active, None),
            Err(mut err) => {
                attempts.failures += 1;
                if let Some(delay) = ctx.config.handshake.retry_after(attempts.failures) {
                    tracing::warn!(attempt = attempts.failures, retry_in_ms = delay.as_millis() as u64, reason = %err.text, "handshake refused; retry scheduled");
                    attempts.due = Instant::now() + delay;
                    return Step::Attempted { accepted: false };
                }
                tracing::warn!(attempts = attempts.failures, reason = %err.text, "handshake failed; subscription goes to error");
                if attempts.failures > 1 {
                    err.text = format!("{} (after {} attempts)", err.text, attempts.failures);
                }
                (SubStatus::Error, Some(err))
            }
        };
        self.settled = Some(generation);
        self.current = None;
        let accepted = status == SubStatus::Active;
        ctx.ingest.lane(view.state.incarnation, LaneCommand::Status { sub: sub.to_owned(), generation, status, error }).await;
        Step::Attempted { accepted }
    }
}
