//! A websocket subscription's delivery loop. It owns the list of sockets bound to its
//! subscription, so binds, pushes and replays for one subscription happen one at a time, in
//! order: per socket, a subscription's frames go out as handshake, replayed events, then live
//! events in event-number order.
//!
//! - `active` with sockets bound: claim up to `maxCount` events after the cursor, render one
//!   Bundle, queue it on every socket, acknowledge when at least one socket took it. No socket
//!   took it (all gone or too slow): the events stay pending for the next bind.
//! - no socket bound, or not `active`: events wait; nothing is sent, nothing goes to `error`.
//! - `requested` (a subscription switched to websocket mid-handshake): asks for `active`.
//! - `heartbeatPeriod`: while active with sockets bound, a heartbeat whenever the sockets
//!   would otherwise have been silent that long. `end`: once past, asks for `off`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::protocol::info_frame;
use super::{Control, Frame, Hub, SocketHandle};
use crate::channels::render::Replayed;
use crate::channels::LaneContext;
use crate::fhir::instant::{now_millis, Millis};
use crate::ingest::{LaneCommand, LaneView};
use crate::notify::{notification_bytes, NotificationType, StatusContext};
use crate::store::SubStatus;

/// Leaves the hub when the lane ends, however it ends.
struct Registration<'a> {
    hub: &'a Hub,
    sub: &'a str,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.hub.unregister(self.sub, self.id);
    }
}

struct Lane {
    ctx: Arc<LaneContext>,
    hub: Arc<Hub>,
    sub: String,
    sockets: Vec<SocketHandle>,
    /// Last event queued on a socket (or dead-lettered before the switch to websocket).
    through: u64,
    /// When every bound socket last got a frame.
    last_sent: Instant,
    /// The subscription incarnation this lane serves (`SubState.incarnation`).
    incarnation: u64,
}

fn instant_in(ms: Millis) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn status_context<'a>(base_url: &'a str, view: &'a LaneView) -> StatusContext<'a> {
    StatusContext {
        version: crate::fhir::version::instance(),
        base_url,
        subscription_id: &view.entry.spec.id,
        identifier: view.entry.spec.identifier.as_ref(),
        topic_url: &view.entry.topic_url,
        status: view.state.status,
        events_since_start: view.state.events_since_start,
        error: view.state.error.as_ref(),
        content: view.entry.spec.content,
    }
}

fn render(base_url: &str, view: &LaneView, kind: NotificationType, events: &[Replayed]) -> Frame {
    let with_versions: Vec<_> = events.iter().map(Replayed::as_notify).collect();
    Frame::from(notification_bytes(&status_context(base_url, view), kind, &with_versions, now_millis()))
}

/// Runs the lane of `sub`; `registration` is its entry in the hub (`Hub::register`).
pub(crate) async fn run(
    ctx: Arc<LaneContext>,
    sub: String,
    mut rx: watch::Receiver<LaneView>,
    registration: (u64, mpsc::Receiver<Control>),
) {
    let hub = ctx.hub.clone();
    let (registration, mut control) = registration;
    let span = tracing::info_span!("channels.lane", subscription.id = %sub, channel = "websocket");
    // Shutdown abandons whatever the lane is doing: events not yet acknowledged stay pending
    // and are sent after restart.
    let shutdown = ctx.shutdown.clone();
    let lane = async move {
        let _registered = Registration { hub: &hub, sub: &sub, id: registration };
        let (through, incarnation) = {
            let first = rx.borrow();
            (first.state.delivered_through, first.state.incarnation)
        };
        let mut lane = Lane {
            ctx: ctx.clone(),
            hub: hub.clone(),
            sub: sub.clone(),
            sockets: Vec::new(),
            through,
            last_sent: Instant::now(),
            incarnation,
        };
        let mut activated: Option<u64> = None;
        let mut ended: Option<u64> = None;
        loop {
            while let Ok(msg) = control.try_recv() {
                let view = rx.borrow().clone();
                lane.apply(msg, &view);
            }
            // Dropped by the dispatcher (deleted, or the id reused): stop.
            if rx.has_changed().is_err() {
                return;
            }
            let view = rx.borrow_and_update().clone();
            lane.through = lane.through.max(view.state.delivered_through);
            lane.sockets.retain(|s| !s.is_closed());
            let spec = &view.entry.spec;
            let state = &view.state;
            let now = now_millis();
            let mut wake: Option<Instant> = None;

            if let Some(end) = spec.end {
                if end <= now && !matches!(state.status, SubStatus::Off | SubStatus::EnteredInError) {
                    if ended != Some(state.generation) {
                        ended = Some(state.generation);
                        tracing::info!("subscription end reached; turning it off");
                        let cmd =
                            LaneCommand::Status { sub: sub.clone(), generation: state.generation, status: SubStatus::Off, error: None };
                        ctx.ingest.lane(incarnation, cmd).await;
                    }
                } else if end > now {
                    wake = earliest(wake, instant_in(end - now));
                }
            }

            match state.status {
                SubStatus::Requested if activated != Some(state.generation) && ended != Some(state.generation) => {
                    activated = Some(state.generation);
                    let cmd =
                        LaneCommand::Status { sub: sub.clone(), generation: state.generation, status: SubStatus::Active, error: None };
                    ctx.ingest.lane(incarnation, cmd).await;
                }
                SubStatus::Active if !lane.sockets.is_empty() => {
                    if lane.through < state.events_since_start {
                        if !lane.push_next(&view).await {
                            wake = earliest(wake, Instant::now() + Duration::from_secs(1));
                        } else {
                            continue;
                        }
                    }
                    if let Some(period) = spec.heartbeat_period_secs {
                        let due = lane.last_sent + Duration::from_secs(period);
                        if due <= Instant::now() {
                            let frame = render(&ctx.base_url, &view, NotificationType::Heartbeat, &[]);
                            lane.fan_out(&frame).await;
                            lane.last_sent = Instant::now();
                            continue;
                        }
                        wake = earliest(wake, due);
                    }
                }
                _ => {}
            }

            let sleep = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                msg = control.recv() => match msg {
                    Some(msg) => {
                        let view = rx.borrow().clone();
                        lane.apply(msg, &view);
                    }
                    None => return,
                },
                _ = sleep => {}
                _ = ctx.shutdown.cancelled() => return,
            }
        }
    }
    .instrument(span);
    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        () = lane => {}
    }
}

impl Lane {
    fn apply(&mut self, msg: Control, view: &LaneView) {
        match msg {
            Control::Unbind { socket } => self.sockets.retain(|s| s.id != socket),
            Control::Bind { socket, since } => {
                // A renewal on the same socket replaces its binding: one stream per socket.
                self.sockets.retain(|s| s.id != socket.id && !s.is_closed());
                let handshake = render(&self.ctx.base_url, view, NotificationType::Handshake, &[]);
                if socket.tx.try_send(handshake).is_err() {
                    socket.kick(&self.sub, "send queue full at bind");
                    return;
                }
                tracing::debug!(socket = socket.id, "socket bound");
                if self.sockets.is_empty() {
                    self.last_sent = Instant::now();
                }
                if let Some(since) = since {
                    self.replay(&socket, since, view);
                }
                self.sockets.push(socket);
            }
        }
    }

    /// Queues the stored events `since..=through` on one newly bound socket, while its queue
    /// has room (one slot is kept for the note that says where the replay stopped).
    fn replay(&self, socket: &SocketHandle, since: u64, view: &LaneView) {
        let max_count = usize::try_from(view.entry.spec.max_count).unwrap_or(1).max(1);
        let mut next = since.max(1);
        while next <= self.through {
            if socket.tx.capacity() < 2 {
                let note = format!(
                    "replay stopped before event {next}: the send queue is full; read events {next} to {} with $events",
                    self.through
                );
                let _ = socket.tx.try_send(Frame::from(info_frame(note)));
                return;
            }
            let events = match self.ctx.outbox.events_with_versions(&self.sub, Some(self.incarnation), next, self.through, max_count) {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => return,
                Err(err) => {
                    tracing::error!(error = %err, "cannot read stored events for a replay");
                    return;
                }
            };
            next = events.last().map_or(self.through, |e| e.event.number).saturating_add(1);
            // A replay renders events the lane already pushed (and reported): screen, no report.
            let grant = self.ctx.send_grant(&view.state);
            let events: Vec<Replayed> = events
                .into_iter()
                .map(|e| {
                    let mut e = Replayed::from(e);
                    e.screen(grant.as_ref());
                    e
                })
                .collect();
            let frame = render(&self.ctx.base_url, view, NotificationType::EventNotification, &events);
            if socket.tx.try_send(frame).is_err() {
                return;
            }
        }
    }

    /// Queues the next batch on every socket; true when at least one took it (then acked).
    async fn push_next(&mut self, view: &LaneView) -> bool {
        let pending = view.state.events_since_start.saturating_sub(self.through);
        let max = usize::try_from(view.entry.spec.max_count.min(pending)).unwrap_or(1).max(1);
        let mut events: Vec<Replayed> = match self.ctx.outbox.events_with_versions(
            &self.sub,
            Some(self.incarnation),
            self.through.saturating_add(1),
            view.state.events_since_start,
            max,
        ) {
            Ok(events) => events.into_iter().map(Replayed::from).collect(),
            Err(err) => {
                tracing::error!(error = %err, "cannot read the outbox; retrying in a second");
                return false;
            }
        };
        let Some(last) = events.last().map(Replayed::number) else {
            tracing::error!(
                through = self.through,
                events = view.state.events_since_start,
                "outbox has no records for pending events; skipping to the counter"
            );
            self.through = view.state.events_since_start;
            self.ack().await;
            return true;
        };
        if let Some(grant) = self.ctx.send_grant(&view.state) {
            let report =
                events.iter_mut().filter_map(|e| e.screen(Some(&grant)).then(|| (e.number(), e.stored.event.focus_type.clone()))).collect();
            self.ctx.report_withheld(&self.sub, self.incarnation, report).await;
        }
        let frame = render(&self.ctx.base_url, view, NotificationType::EventNotification, &events);
        if self.fan_out(&frame).await == 0 {
            return false;
        }
        {
            let m = crate::ops::metrics::metrics();
            let now = now_millis();
            let latency = m.delivery_latency.get_or_create(&crate::ops::metrics::Metrics::channel("websocket"));
            for e in &events {
                m.delivery("websocket", "delivered");
                latency.observe(u64::try_from(now - e.stored.event.timestamp).unwrap_or(0) as f64 / 1000.0);
            }
        }
        self.through = last;
        self.last_sent = Instant::now();
        self.ack().await;
        true
    }

    async fn ack(&self) {
        let cmd = LaneCommand::Delivered { sub: self.sub.clone(), through: self.through, at: now_millis() };
        self.ctx.ingest.lane(self.incarnation, cmd).await;
    }

    /// Queues `frame` on every bound socket, waiting at most `send_timeout` in all for room;
    /// a socket still full then is disconnected. Returns how many sockets took it.
    async fn fan_out(&mut self, frame: &Frame) -> usize {
        let deadline = Instant::now() + self.hub.config().send_timeout;
        let mut taken = 0;
        for socket in &self.sockets {
            let reserve = tokio::time::timeout_at(deadline, socket.tx.reserve());
            let outcome = tokio::select! {
                r = reserve => r,
                _ = socket.kicked.cancelled() => continue,
                _ = self.ctx.shutdown.cancelled() => return taken,
            };
            match outcome {
                Ok(Ok(permit)) => {
                    permit.send(frame.clone());
                    taken += 1;
                }
                Ok(Err(_closed)) => {}
                Err(_elapsed) => socket.kick(&self.sub, "send queue full for send_timeout"),
            }
        }
        self.sockets.retain(|s| !s.is_closed());
        taken
    }
}
