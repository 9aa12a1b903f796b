//! The loop every lane runs, whatever its channel: take the newest published view, turn the
//! subscription `off` once its `end` has passed, do the channel's work ([`Lane::work`]), send
//! a heartbeat when the channel has been silent for `heartbeatPeriod`, then sleep until the
//! next thing is due, a new view arrives, the channel's own signal fires (a websocket bind) or
//! the server stops. What differs between channels is the [`Lane`] trait.
//!
//! **Invariant:** the lane stops before doing anything more once the dispatcher dropped it
//! (the subscription was deleted, or its id names another incarnation), and on shutdown it
//! abandons whatever it is doing: what was not acknowledged stays pending in the outbox.
//! Either way it then tells the committer what was accepted and not yet reported
//! ([`Lane::stop`]), so a clean stop sends again only an attempt that was in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::LaneContext;
use crate::fhir::instant::{now_millis, Millis};
use crate::ingest::{LaneCommand, LaneView};
use crate::store::SubStatus;

/// What a lane's work asks of the loop.
pub(super) enum Step {
    /// Something was done: take a fresh view and go again, without sleeping.
    Again,
    /// Nothing more now; wake at this time at the latest (`None`: only on a new view).
    Wait(Option<Instant>),
}

/// What one channel's lane does; the loop around it is [`run`].
pub(super) trait Lane {
    /// Something besides a new view that wakes the lane (the websocket's binds).
    type Signal;

    /// Takes in the newest view before any work (merging the lane's own cursor with it).
    fn observe(&mut self, view: &LaneView);

    /// Does what is due for `view`. `ended`: this generation was already turned `off` by
    /// the end check (nothing is started for it).
    async fn work(&mut self, view: &LaneView, ended: bool) -> Step;

    /// The heartbeat period when heartbeats are due in this state (active, and for a websocket
    /// with a socket bound); `None`: no heartbeat now.
    fn heartbeat_period(&self, view: &LaneView) -> Option<Duration>;

    /// When the channel last sent anything (a heartbeat is due `period` after it).
    fn last_sent(&self) -> Instant;

    /// Sends a heartbeat (and notes the time).
    async fn heartbeat(&mut self, view: &LaneView);

    /// Waits for the lane's own signal; `None`: its source is gone and the lane ends.
    async fn signal(&mut self) -> Option<Self::Signal>;

    /// Handles a signal (also called for signals already queued at the top of each turn).
    fn on_signal(&mut self, signal: Self::Signal, view: &LaneView);

    /// A signal already queued, if any.
    fn queued_signal(&mut self) -> Option<Self::Signal>;

    /// The lane stops (shutdown, or the dispatcher dropped it): reports what it did and has
    /// not told the committer yet. Sends nothing to the endpoint.
    async fn stop(&mut self) {}
}

pub(super) fn instant_in(ms: Millis) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
}

pub(super) fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Runs `lane` for `sub` until the dispatcher drops it or the server stops, in `span`.
pub(super) async fn run<L: Lane>(ctx: Arc<LaneContext>, sub: String, mut rx: watch::Receiver<LaneView>, mut lane: L, span: Span) {
    let shutdown = ctx.shutdown.clone();
    let driven = async {
        // The generation this lane last turned `off` at its end.
        let mut ended: Option<u64> = None;
        loop {
            while let Some(signal) = lane.queued_signal() {
                let view = rx.borrow().clone();
                lane.on_signal(signal, &view);
            }
            // The dispatcher dropped this lane: stop before sending anything more.
            if rx.has_changed().is_err() {
                return;
            }
            let view = rx.borrow_and_update().clone();
            lane.observe(&view);
            let state = &view.state;
            let now = now_millis();
            let mut wake: Option<Instant> = None;

            if let Some(end) = view.entry.spec.end {
                if end <= now && !matches!(state.status, SubStatus::Off | SubStatus::EnteredInError) {
                    if ended != Some(state.generation) {
                        ended = Some(state.generation);
                        tracing::info!("subscription end reached; turning it off");
                        let cmd =
                            LaneCommand::Status { sub: sub.clone(), generation: state.generation, status: SubStatus::Off, error: None };
                        ctx.ingest.lane(state.incarnation, cmd).await;
                    }
                } else if end > now {
                    wake = earliest(wake, instant_in(end - now));
                }
            }

            // Boxed: an idle lane (most of them, most of the time) then holds only this loop's
            // small state, not room for a whole delivery attempt (rendering, the HTTP request),
            // which a future reserves for its largest await point for as long as it lives.
            match Box::pin(lane.work(&view, ended == Some(state.generation))).await {
                Step::Again => continue,
                Step::Wait(Some(at)) => wake = earliest(wake, at),
                Step::Wait(None) => {}
            }

            if let Some(period) = lane.heartbeat_period(&view) {
                let due = lane.last_sent() + period;
                if due <= Instant::now() {
                    Box::pin(lane.heartbeat(&view)).await;
                    continue;
                }
                wake = earliest(wake, due);
            }

            let sleep = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                signal = lane.signal() => match signal {
                    Some(signal) => {
                        let view = rx.borrow().clone();
                        lane.on_signal(signal, &view);
                    }
                    None => return,
                },
                _ = sleep => {}
                _ = ctx.shutdown.cancelled() => return,
            }
        }
    }
    .instrument(span.clone());
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        () = driven => {}
    }
    // The turn in progress, if any, was dropped above; the lane's own state is intact.
    lane.stop().instrument(span).await;
}
