//! A rest-hook subscription's lane: what it does in each turn of the shared loop
//! (`driver`, which also owns `end`, heartbeat timing and sleeping).
//!
//! The lane reacts to the durable state the committer publishes (`LaneView`) and to its own
//! timers (retry, heartbeat, `end`). Per R5 and Herald's ordering invariant, at most one
//! request is in flight per subscription and event n+1 is never sent before n was accepted or
//! dead-lettered. The lane keeps a local cursor that runs ahead of the published state (its
//! own acks are not republished), merged with every publication.
//!
//! - `requested`: handshake once per status generation (`handshake`: after
//!   `delivery.handshake_delay`, refusals retried on `delivery.handshake_retry_schedule`); 2xx
//!   makes the subscription `active`, a refusal past the schedule `error`.
//! - `active`: deliver pending events in batches of `maxCount`; on failure, retry per the
//!   schedule; when exhausted, dead-letter the batch and ask for `error`.
//! - `error`, `off`, `entered-in-error`: send nothing; events keep accumulating.
//! - `heartbeatPeriod`: when active, never stay silent longer than the period.
//! - `end`: once past, ask for `off`.
//! - signing: with signing keys (the subscription's, else `delivery.signing_secrets`) every
//!   POST is signed (`signing`); an event batch keeps its `webhook-id` on every attempt.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{field, Instrument};

use super::driver::{self, earliest, instant_in, Step};
use super::handshake::{self, Handshakes};
use super::render::{error_view, event_view, status as status_view};
use super::rest_hook::{Attempt, FailureKind};
use super::retry::{classify, Verdict};
use super::signing::{self, Signing};
use super::{screen_batch, LaneContext};
use crate::fhir::instant::{now_millis, Millis};
use crate::fhir::subscription::ContentLevel;
use crate::ingest::{LaneCommand, LaneView};
use crate::notify::{notification_bytes, EventView, NotificationType, StatusContext};
use crate::ops::delivery_log::AttemptEntry;
use crate::ops::metrics::{metrics, Metrics};
use crate::store::{EventRecord, StoreError, StoredError, SubState, SubStatus};

/// Accepted events a lane may leave unreported to the committer while it keeps delivering
/// (it reports at once when it runs out of pending events, before any other result, whenever
/// it waits, and when it stops). A crash loses at most these reports: the events are sent
/// again.
const REPORT_EVERY: u64 = 64;

/// Events read from the outbox in one go, ahead of the one being sent (never past the
/// published, durable event count).
const READ_AHEAD: usize = 32;

/// The lane's view of its own progress; ahead of the published state between publications.
struct Cursor {
    through: u64,
    /// What the committer was last told was accepted (`LaneCommand::Delivered`).
    reported: u64,
    attempts: u32,
    next_attempt_at: Option<Millis>,
    first_failure_at: Option<Millis>,
    /// Events after `through` already read from the outbox, in order.
    ahead: VecDeque<EventRecord>,
}

impl Cursor {
    fn merge(&mut self, state: &SubState) {
        if state.delivered_through > self.through {
            self.through = state.delivered_through;
            self.reported = state.delivered_through;
            self.attempts = state.attempts;
            self.next_attempt_at = state.next_attempt_at;
            self.first_failure_at = state.first_failure_at;
        }
    }

    /// Tells the committer what was accepted and not yet reported.
    /// Marked reported once sent: a report cut off by a stop is made again by `Lane::stop`.
    async fn report(&mut self, ctx: &LaneContext, sub: &str, incarnation: u64) {
        let through = self.through;
        if through > self.reported {
            ctx.ingest.lane(incarnation, LaneCommand::Delivered { sub: sub.to_string(), through, at: now_millis() }).await;
            self.reported = self.reported.max(through);
        }
    }

    /// The next batch of at most `max` events after `through`, none past `durable` (the
    /// published event count): from what was read ahead, reading more when that runs short.
    fn next_batch(
        &mut self,
        ctx: &LaneContext,
        sub: &str,
        incarnation: u64,
        max: usize,
        durable: u64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let through = self.through;
        self.ahead.retain(|e| e.number > through && e.incarnation == incarnation);
        if self.ahead.front().is_some_and(|e| e.number != through + 1) {
            self.ahead.clear();
        }
        if self.ahead.len() < max {
            let room = usize::try_from(durable.saturating_sub(through)).unwrap_or(usize::MAX);
            self.ahead = ctx.outbox.claim(sub, incarnation, through, max.max(READ_AHEAD).min(room).max(1))?.into();
        }
        let take = self.ahead.iter().take(max).take_while(|e| e.number <= durable).count();
        Ok(self.ahead.drain(..take).collect())
    }
}

/// The lane's progress on a resend (`SubState.resend`), ahead of the published state.
struct ResendCursor {
    id: u64,
    next: u64,
    attempts: u32,
    next_attempt_at: Option<Millis>,
    first_failure_at: Option<Millis>,
}

/// A rest-hook lane: the state the driver's turns share.
struct RestHook {
    ctx: Arc<LaneContext>,
    sub: String,
    cursor: Cursor,
    handshakes: Handshakes,
    /// After a dead letter the lane pauses until the committer's `error` (or a client's new
    /// generation) arrives.
    paused: Option<u64>,
    last_sent: Instant,
    resend: Option<ResendCursor>,
    /// The incarnation of the newest view (what a report at the stop names).
    incarnation: u64,
}

pub(super) async fn run(ctx: Arc<LaneContext>, sub: String, rx: watch::Receiver<LaneView>) {
    let span = tracing::info_span!("channels.lane", subscription.id = %sub);
    // Shutdown abandons whatever the lane is doing, an attempt in flight included: the event
    // is still pending in the outbox and is sent again after restart (at least once).
    let first = rx.borrow().state.clone();
    let lane = RestHook {
        ctx: ctx.clone(),
        sub: sub.clone(),
        cursor: Cursor {
            through: first.delivered_through,
            reported: first.delivered_through,
            attempts: first.attempts,
            next_attempt_at: first.next_attempt_at,
            first_failure_at: first.first_failure_at,
            ahead: VecDeque::new(),
        },
        handshakes: Handshakes::default(),
        paused: None,
        last_sent: Instant::now(),
        resend: None,
        incarnation: first.incarnation,
    };
    driver::run(ctx, sub, rx, lane, span).await;
}

impl RestHook {
    /// One turn's work (`driver::Lane::work` reports acceptances before a wait).
    async fn step(&mut self, view: &LaneView, ended: bool) -> Step {
        let (ctx, sub) = (&*self.ctx, self.sub.as_str());
        let state = &view.state;
        let now = now_millis();
        let mut wake: Option<Instant> = None;
        match state.status {
            SubStatus::Requested if self.handshakes.unsettled(state.generation) && !ended => {
                match self.handshakes.step(ctx, sub, view).await {
                    handshake::Step::Wait(due) => Step::Wait(Some(due)),
                    handshake::Step::Attempted { accepted } => {
                        if accepted {
                            self.last_sent = Instant::now();
                        }
                        Step::Again
                    }
                }
            }
            SubStatus::Active if self.paused != Some(state.generation) => {
                // A resend asked for by an operator or the client goes before new events.
                if let Some(r) = &state.resend {
                    let rc = match self.resend.take() {
                        Some(rc) if rc.id == r.id && rc.next >= r.next => rc,
                        _ => ResendCursor { id: r.id, next: r.next, attempts: 0, next_attempt_at: None, first_failure_at: None },
                    };
                    let rc = self.resend.insert(rc);
                    // Never ahead of the delivery cursor: an event not yet accepted (or
                    // dead-lettered) is first delivered in order, and resent after.
                    if rc.next <= r.until && rc.next <= self.cursor.through {
                        match rc.next_attempt_at {
                            Some(at) if at > now => wake = earliest(wake, instant_in(at - now)),
                            _ => {
                                if resend_next(ctx, sub, view, rc, self.cursor.through).await {
                                    self.last_sent = Instant::now();
                                }
                                return Step::Again;
                            }
                        }
                    }
                }
                if self.cursor.through < state.events_since_start {
                    match self.cursor.next_attempt_at {
                        Some(at) if at > now => wake = earliest(wake, instant_in(at - now)),
                        _ => {
                            if deliver_next(ctx, sub, view, &mut self.cursor, &mut self.paused).await {
                                self.last_sent = Instant::now();
                            }
                            return Step::Again;
                        }
                    }
                }
                Step::Wait(wake)
            }
            _ => Step::Wait(None),
        }
    }
}

impl driver::Lane for RestHook {
    type Signal = Infallible;

    fn observe(&mut self, view: &LaneView) {
        self.cursor.merge(&view.state);
        self.incarnation = view.state.incarnation;
    }

    async fn stop(&mut self) {
        // Acceptances since the last report (up to REPORT_EVERY) would otherwise be sent again
        // after a restart, or on the new channel after a switch to websocket. A stale
        // incarnation's report is refused by the committer.
        self.cursor.report(&self.ctx, &self.sub, self.incarnation).await;
    }

    async fn work(&mut self, view: &LaneView, ended: bool) -> Step {
        let step = self.step(view, ended).await;
        if matches!(step, Step::Wait(_)) {
            // Nothing more to send now: what was accepted is reported before the lane sleeps.
            self.cursor.report(&self.ctx, &self.sub, view.state.incarnation).await;
        }
        step
    }

    fn heartbeat_period(&self, view: &LaneView) -> Option<Duration> {
        let active = view.state.status == SubStatus::Active && self.paused != Some(view.state.generation);
        view.entry.spec.heartbeat_period_secs.filter(|_| active).map(Duration::from_secs)
    }

    fn last_sent(&self) -> Instant {
        self.last_sent
    }

    async fn heartbeat(&mut self, view: &LaneView) {
        if let Err(err) = send_control(&self.ctx, view, NotificationType::Heartbeat).await {
            tracing::warn!(reason = %err.text, "heartbeat not accepted");
        }
        self.last_sent = Instant::now();
    }

    async fn signal(&mut self) -> Option<Infallible> {
        std::future::pending().await
    }

    fn on_signal(&mut self, signal: Infallible, _view: &LaneView) {
        match signal {}
    }

    fn queued_signal(&mut self) -> Option<Infallible> {
        None
    }
}

fn status_context<'a>(ctx: &'a LaneContext, view: &'a LaneView, status: SubStatus) -> StatusContext<'a> {
    StatusContext {
        version: crate::fhir::version::instance(),
        base_url: &ctx.base_url,
        subscription_id: &view.entry.spec.id,
        identifier: view.entry.spec.identifier.as_ref(),
        topic_url: &view.entry.topic_url,
        status: status_view(status),
        events_since_start: view.state.events_since_start,
        error: view.state.error.as_ref().map(error_view),
        content: view.entry.spec.content,
    }
}

fn timeout_of(ctx: &LaneContext, view: &LaneView) -> Duration {
    view.entry.spec.timeout_secs.map_or(ctx.config.default_timeout, Duration::from_secs)
}

/// Sends a bundle, signed as message `message_id` when there are signing keys (the
/// subscription's, else the operator's); `Ok` on a 2xx.
async fn post(
    ctx: &LaneContext,
    view: &LaneView,
    body: Vec<u8>,
    kind: NotificationType,
    events: Option<(u64, u64)>,
    attempt: u32,
    message_id: &str,
) -> (Verdict, Attempt) {
    let spec = &view.entry.spec;
    let keys = if spec.signing_keys.is_empty() { &ctx.config.signing_keys } else { &spec.signing_keys };
    let signing = Signing { keys, message_id };
    let first_event = events.map(|(first, _)| first);
    // Per attempt, so `debug` (STYLE §9): at `info` the span is not even built.
    let span = tracing::debug_span!(
        "channels.deliver",
        channel = spec.channel.code(),
        kind = kind.code(),
        event.number = first_event,
        attempt,
        http.status = field::Empty,
        outcome = field::Empty,
        millis = field::Empty,
    );
    async {
        let _permit = ctx.permits.acquire().await;
        let (attempt, took) = match &spec.endpoint {
            Some(endpoint) => {
                ctx.client.post(endpoint, &spec.headers, Some(signing), &spec.content_type, body, timeout_of(ctx, view)).await
            }
            // Only rest-hook subscriptions get this lane, and they always have an endpoint.
            None => (Attempt::Failed { kind: FailureKind::Other, detail: "the subscription has no endpoint".into() }, Duration::ZERO),
        };
        let verdict = classify(&attempt);
        let current = tracing::Span::current();
        if let Attempt::Answered { status, .. } = &attempt {
            current.record("http.status", status);
        }
        current.record("millis", took.as_millis() as u64);
        let outcome = if verdict == Verdict::Delivered { "delivered" } else { "failed" };
        current.record("outcome", outcome);
        tracing::debug!("attempt finished");
        let channel = spec.channel.code();
        let m = metrics();
        m.attempt_duration.get_or_create(&Metrics::channel(channel)).observe(took.as_secs_f64());
        if kind == NotificationType::EventNotification {
            m.delivery(channel, outcome);
        }
        let (status, error) = match &attempt {
            Attempt::Answered { status, .. } => (Some(*status), None),
            Attempt::Failed { kind, .. } => (None, Some(kind.code().to_owned())),
        };
        ctx.log.record(
            &spec.id,
            AttemptEntry {
                at: now_millis(),
                kind: kind.code().to_owned(),
                events,
                channel: channel.to_owned(),
                status,
                error,
                outcome: outcome.to_owned(),
                millis: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            },
        );
        (verdict, attempt)
    }
    .instrument(span)
    .await
}

/// The event-notification body for `events`: their versions read, screened against the
/// subscription's grant (withheld ones reported to the committer), written as bytes.
async fn event_body(ctx: &LaneContext, sub: &str, view: &LaneView, events: &[EventRecord], status: SubStatus) -> Vec<u8> {
    let grant = ctx.send_grant(&view.state);
    // Screening a grant reads the resources; otherwise only full-resource needs them.
    let full = view.entry.spec.content == ContentLevel::FullResource;
    let mut versions = ctx.outbox.versions(events, full || grant.is_some());
    let (withheld, report) = screen_batch(grant.as_ref(), events, &mut versions);
    ctx.report_withheld(sub, view.state.incarnation, report).await;
    let with_versions: Vec<EventView<'_>> = events
        .iter()
        .zip(&versions)
        .zip(withheld)
        .map(|((event, (v, context)), withheld)| event_view(event, v.as_ref(), context, withheld, full))
        .collect();
    notification_bytes(&status_context(ctx, view, status), NotificationType::EventNotification, &with_versions, now_millis())
}

/// The Standard Webhooks id of a batch: the same on every attempt and every resend of it.
fn batch_message_id(sub: &str, events: &[EventRecord], last: u64) -> String {
    let (first, committed_at) = events.first().map_or((last, 0), |e| (e.number, e.timestamp));
    signing::event_message_id(sub, first, last, committed_at)
}

/// Handshake or heartbeat, one attempt: not numbered (the lane retries refused handshakes on
/// `delivery.handshake_retry_schedule`; heartbeats are not retried).
pub(super) async fn send_control(ctx: &LaneContext, view: &LaneView, kind: NotificationType) -> Result<(), StoredError> {
    let status = match kind {
        NotificationType::Handshake => SubStatus::Requested,
        _ => view.state.status,
    };
    let body = notification_bytes(&status_context(ctx, view, status), kind, &[], now_millis());
    match post(ctx, view, body, kind, None, 1, &signing::fresh_message_id()).await.0 {
        Verdict::Delivered => Ok(()),
        Verdict::Retry { code, reason, .. } => {
            Err(StoredError { code: code.to_string(), text: format!("{} failed: {reason}", kind.code()), at: now_millis() })
        }
    }
}

/// Delivers the next batch; returns true when something was accepted.
async fn deliver_next(ctx: &LaneContext, sub: &str, view: &LaneView, cursor: &mut Cursor, paused: &mut Option<u64>) -> bool {
    let spec = &view.entry.spec;
    let state = &view.state;
    let pending = state.events_since_start.saturating_sub(cursor.through);
    let max = usize::try_from(spec.max_count.min(pending)).unwrap_or(1).max(1);
    let events = match cursor.next_batch(ctx, sub, view.state.incarnation, max, state.events_since_start) {
        Ok(events) => events,
        Err(err) => {
            tracing::error!(error = %err, "cannot read the outbox; retrying in a second");
            cursor.next_attempt_at = Some(now_millis() + 1000);
            return false;
        }
    };
    let Some(last) = events.last().map(|e| e.number) else {
        tracing::error!(
            through = cursor.through,
            events = state.events_since_start,
            "outbox has no records for pending events; skipping to the counter"
        );
        cursor.through = state.events_since_start;
        cursor.report(ctx, sub, view.state.incarnation).await;
        return false;
    };
    let body = event_body(ctx, sub, view, &events, state.status).await;
    let attempt_no = cursor.attempts + 1;
    let first = events.first().map(|e| e.number);
    let message_id = batch_message_id(sub, &events, last);
    let (verdict, _) = post(ctx, view, body, NotificationType::EventNotification, first.map(|f| (f, last)), attempt_no, &message_id).await;
    let now = now_millis();
    match verdict {
        Verdict::Delivered => {
            {
                let latency = metrics().delivery_latency.get_or_create(&Metrics::channel(spec.channel.code()));
                for e in &events {
                    latency.observe(Duration::from_millis(u64::try_from(now - e.timestamp).unwrap_or(0)).as_secs_f64());
                }
            }
            cursor.through = last;
            cursor.attempts = 0;
            cursor.next_attempt_at = None;
            cursor.first_failure_at = None;
            // Reported in batches while more is pending (`REPORT_EVERY`), at once when caught up.
            if last >= state.events_since_start || last - cursor.reported >= REPORT_EVERY {
                cursor.report(ctx, sub, view.state.incarnation).await;
            }
            true
        }
        Verdict::Retry { code, reason, retry_after } => {
            // The committer learns of what was accepted before it hears of this failure.
            cursor.report(ctx, sub, view.state.incarnation).await;
            let first_failure = *cursor.first_failure_at.get_or_insert(now);
            cursor.attempts = attempt_no;
            if ctx.config.retry.exhausted(attempt_no, first_failure, now) {
                metrics().delivery(spec.channel.code(), "dead");
                tracing::error!(events = %format!("{}..={last}", first.unwrap_or(last)), attempts = attempt_no, reason = %reason, "giving up; events dead-lettered, subscription goes to error");
                let error = StoredError {
                    code: code.to_string(),
                    text: format!("delivery of events through {last} failed {attempt_no} times: {reason}"),
                    at: now,
                };
                // Parked through `last` by the committer: nothing left to report up to it.
                cursor.through = last;
                cursor.reported = last;
                cursor.ahead.clear();
                cursor.attempts = 0;
                cursor.next_attempt_at = None;
                cursor.first_failure_at = None;
                *paused = Some(state.generation);
                ctx.ingest
                    .lane(
                        view.state.incarnation,
                        LaneCommand::Dead {
                            sub: sub.to_string(),
                            generation: state.generation,
                            through: last,
                            attempts: attempt_no,
                            error,
                        },
                    )
                    .await;
            } else {
                metrics().delivery_retries.get_or_create(&Metrics::channel(spec.channel.code())).inc();
                let delay = ctx.config.retry.delay(attempt_no, retry_after);
                let at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                tracing::warn!(attempts = attempt_no, retry_in_ms = delay.as_millis() as u64, reason = %reason, "delivery failed; retry scheduled");
                cursor.next_attempt_at = Some(at);
                ctx.ingest
                    .lane(
                        view.state.incarnation,
                        LaneCommand::Retry {
                            sub: sub.to_string(),
                            attempts: attempt_no,
                            next_attempt_at: at,
                            first_failure_at: first_failure,
                        },
                    )
                    .await;
            }
            false
        }
    }
}

/// Sends the next batch of a resend: stored events from the cursor on (for a dead-letter
/// replay, the dead letters only), with their original numbers, up to `accepted` (the
/// delivery cursor: nothing after it is resent yet). Returns true when accepted.
async fn resend_next(ctx: &LaneContext, sub: &str, view: &LaneView, rc: &mut ResendCursor, accepted: u64) -> bool {
    let Some(r) = view.state.resend.as_ref() else { return false };
    let until = r.until.min(accepted);
    let max = usize::try_from(view.entry.spec.max_count).unwrap_or(1).max(1);
    let incarnation = Some(view.state.incarnation);
    let events = if r.dead_only {
        match ctx.outbox.dead_letters(sub, rc.next, until, max) {
            Ok(dead) => {
                let mut events = Vec::with_capacity(dead.len());
                for d in dead {
                    match ctx.outbox.events(sub, incarnation, d.number, d.number, 1) {
                        Ok(mut e) if !e.is_empty() => events.append(&mut e),
                        Ok(_) => tracing::warn!(event.number = d.number, "dead letter has no stored event; skipped"),
                        Err(err) => {
                            tracing::error!(error = %err, "cannot read a dead letter's event; retrying in a second");
                            rc.next_attempt_at = Some(now_millis() + 1000);
                            return false;
                        }
                    }
                }
                events
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read dead letters; retrying in a second");
                rc.next_attempt_at = Some(now_millis() + 1000);
                return false;
            }
        }
    } else {
        match ctx.outbox.events(sub, incarnation, rc.next, until, max) {
            Ok(events) => events,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the outbox; retrying in a second");
                rc.next_attempt_at = Some(now_millis() + 1000);
                return false;
            }
        }
    };
    let Some(last) = events.last().map(|e| e.number) else {
        if until < r.until {
            // Nothing up to the cursor; the rest of the range waits for delivery to pass it.
            rc.next = until + 1;
            return false;
        }
        // Nothing (left) to send in the range.
        rc.next = r.until + 1;
        ctx.ingest.lane(view.state.incarnation, LaneCommand::Resent { sub: sub.to_string(), id: r.id, through: r.until }).await;
        return false;
    };
    let body = event_body(ctx, sub, view, &events, view.state.status).await;
    let attempt_no = rc.attempts + 1;
    let message_id = batch_message_id(sub, &events, last);
    let (verdict, _) =
        post(ctx, view, body, NotificationType::EventNotification, events.first().map(|e| (e.number, last)), attempt_no, &message_id).await;
    let now = now_millis();
    match verdict {
        Verdict::Delivered => {
            rc.next = last + 1;
            rc.attempts = 0;
            rc.next_attempt_at = None;
            rc.first_failure_at = None;
            ctx.ingest.lane(view.state.incarnation, LaneCommand::Resent { sub: sub.to_string(), id: r.id, through: last }).await;
            true
        }
        Verdict::Retry { code, reason, retry_after } => {
            let first_failure = *rc.first_failure_at.get_or_insert(now);
            rc.attempts = attempt_no;
            if ctx.config.retry.exhausted(attempt_no, first_failure, now) {
                let error = StoredError { code: code.to_string(), text: format!("resend failed {attempt_no} times: {reason}"), at: now };
                rc.next = r.until + 1;
                ctx.ingest.lane(view.state.incarnation, LaneCommand::ResendAbandoned { sub: sub.to_string(), id: r.id, error }).await;
            } else {
                let delay = ctx.config.retry.delay(attempt_no, retry_after);
                tracing::warn!(attempts = attempt_no, retry_in_ms = delay.as_millis() as u64, reason = %reason, "resend failed; retry scheduled");
                rc.next_attempt_at = Some(now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
            }
            false
        }
    }
}
