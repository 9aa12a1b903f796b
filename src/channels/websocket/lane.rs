//! A websocket subscription's lane, run by the shared loop (`channels::driver`; binds are
//! its signal). It owns the list of sockets bound to its
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

use super::protocol::info_frame;
use super::{Control, Frame, Hub, SocketHandle};
use crate::channels::driver::{self, Step};
use crate::channels::render::{error_view, status as status_view, Replayed};
use crate::channels::LaneContext;
use crate::fhir::instant::now_millis;
use crate::fhir::subscription::ContentLevel;
use crate::ingest::{LaneCommand, LaneView};
use crate::notify::{notification_bytes, NotificationType, StatusContext};
use crate::store::SubStatus;

/// Leaves the hub when the lane ends, however it ends.
struct Registration {
    hub: Arc<Hub>,
    sub: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(&self.sub, self.id);
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
    /// Binds and unbinds from the hub.
    control: mpsc::Receiver<Control>,
    /// The generation this lane last asked to make `active`.
    activated: Option<u64>,
    _registered: Registration,
}

fn status_context<'a>(base_url: &'a str, view: &'a LaneView) -> StatusContext<'a> {
    StatusContext {
        version: crate::fhir::version::instance(),
        base_url,
        subscription_id: &view.entry.spec.id,
        identifier: view.entry.spec.identifier.as_ref(),
        topic_url: &view.entry.topic_url,
        status: status_view(view.state.status),
        events_since_start: view.state.events_since_start,
        error: view.state.error.as_ref().map(error_view),
        content: view.entry.spec.content,
    }
}

fn render(base_url: &str, view: &LaneView, kind: NotificationType, events: &[Replayed]) -> Frame {
    let full = view.entry.spec.content == ContentLevel::FullResource;
    let with_versions: Vec<_> = events.iter().map(|e| e.as_notify(full)).collect();
    Frame::from(notification_bytes(&status_context(base_url, view), kind, &with_versions, now_millis()))
}

/// Runs the lane of `sub`; `registration` is its entry in the hub (`Hub::register`).
pub(crate) async fn run(ctx: Arc<LaneContext>, sub: String, rx: watch::Receiver<LaneView>, registration: (u64, mpsc::Receiver<Control>)) {
    let hub = ctx.hub.clone();
    let (registration, control) = registration;
    let span = tracing::info_span!("channels.lane", subscription.id = %sub, channel = "websocket");
    // Shutdown abandons whatever the lane is doing: events not yet acknowledged stay pending
    // and are sent after restart.
    let (through, incarnation) = {
        let first = rx.borrow();
        (first.state.delivered_through, first.state.incarnation)
    };
    let lane = Lane {
        ctx: ctx.clone(),
        hub: hub.clone(),
        sub: sub.clone(),
        sockets: Vec::new(),
        through,
        last_sent: Instant::now(),
        incarnation,
        control,
        activated: None,
        _registered: Registration { hub, sub: sub.clone(), id: registration },
    };
    driver::run(ctx, sub, rx, lane, span).await;
}

impl driver::Lane for Lane {
    type Signal = Control;

    fn observe(&mut self, view: &LaneView) {
        self.through = self.through.max(view.state.delivered_through);
        self.sockets.retain(|s| !s.is_closed());
    }

    async fn work(&mut self, view: &LaneView, ended: bool) -> Step {
        let state = &view.state;
        match state.status {
            SubStatus::Requested if self.activated != Some(state.generation) && !ended => {
                self.activated = Some(state.generation);
                let cmd =
                    LaneCommand::Status { sub: self.sub.clone(), generation: state.generation, status: SubStatus::Active, error: None };
                self.ctx.ingest.lane(self.incarnation, cmd).await;
                Step::Wait(None)
            }
            SubStatus::Active if !self.sockets.is_empty() && self.through < state.events_since_start => {
                if self.push_next(view).await {
                    Step::Again
                } else {
                    Step::Wait(Some(Instant::now() + Duration::from_secs(1)))
                }
            }
            _ => Step::Wait(None),
        }
    }

    fn heartbeat_period(&self, view: &LaneView) -> Option<Duration> {
        let active = view.state.status == SubStatus::Active && !self.sockets.is_empty();
        view.entry.spec.heartbeat_period_secs.filter(|_| active).map(Duration::from_secs)
    }

    fn last_sent(&self) -> Instant {
        self.last_sent
    }

    async fn heartbeat(&mut self, view: &LaneView) {
        let frame = render(&self.ctx.base_url, view, NotificationType::Heartbeat, &[]);
        self.fan_out(&frame).await;
        self.last_sent = Instant::now();
    }

    async fn signal(&mut self) -> Option<Control> {
        self.control.recv().await
    }

    fn on_signal(&mut self, signal: Control, view: &LaneView) {
        self.apply(signal, view);
    }

    fn queued_signal(&mut self) -> Option<Control> {
        self.control.try_recv().ok()
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
