//! Channels: delivery. The `Dispatcher` keeps one lane (a task) per subscription; the committer
//! publishes each subscription's durable state to its lane, and the lane pulls events from the
//! outbox, sends them on the subscription's channel and reports the result back to the
//! committer. Only this stage opens outbound connections, and only through the guarded client.
//!
//! - `driver`: the loop every lane runs (end, heartbeat, sleep until the next thing is due).
//! - `lane`: what a rest-hook subscription's lane does in that loop (handshake, events in
//!   order, retries, resends).
//! - `handshake`: when a rest-hook handshake goes out and how a refused one is retried.
//! - `rest_hook`: the HTTP POST itself.
//! - `render`: stored events (from the outbox) screened and shaped for `notify`.
//! - `signing`: Standard Webhooks signatures on rest-hook POSTs.
//! - `websocket`: the websocket channel: its lane, bound sockets, binding tokens.
//! - `retry`: the one classifier of outcomes and the backoff schedule.
//! - `guard`: which addresses delivery may connect to (SSRF defence).

mod driver;
pub mod guard;
mod handshake;
mod lane;
pub mod render;
pub mod rest_hook;
pub mod retry;
pub mod signing;
pub mod websocket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, SendGrant};
use crate::fhir::subscription::{ChannelType, SigningKey};
use crate::ingest::{Ingest, LaneCommand, LaneSink, LaneView};
use crate::ops::delivery_log::DeliveryLog;
use crate::outbox::{EventVersions, Outbox};
use crate::store::{EventRecord, SubState};

pub use retry::{HandshakePolicy, RetryPolicy};
use websocket::Hub;

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Per-attempt timeout when the subscription sets none.
    pub default_timeout: Duration,
    pub retry: RetryPolicy,
    /// When rest-hook handshakes go out and how refused ones are retried.
    pub handshake: HandshakePolicy,
    /// Outbound requests in flight at once, across all subscriptions.
    pub max_concurrent: usize,
    /// `delivery.signing_secrets`: the keys that sign rest-hook POSTs of subscriptions that
    /// have none of their own.
    pub signing_keys: Vec<SigningKey>,
}

/// What every lane shares.
pub(crate) struct LaneContext {
    /// Everything a lane reads (events, the versions they saw, dead letters); it reports
    /// through `ingest` only.
    pub outbox: Arc<dyn Outbox>,
    pub ingest: Ingest,
    pub client: rest_hook::RestHookClient,
    pub config: DeliveryConfig,
    pub base_url: String,
    pub shutdown: CancellationToken,
    pub permits: Semaphore,
    pub hub: Arc<Hub>,
    pub log: Arc<DeliveryLog>,
    /// The server's authenticator (`None`: no `[auth]`), for send-time grants.
    pub auth: Option<Arc<Authenticator>>,
}

impl LaneContext {
    /// The subscription's grant at send time; `None` (no grant recorded, or no `[auth]`):
    /// nothing to check, and nothing is decoded.
    pub(crate) fn send_grant(&self, state: &SubState) -> Option<SendGrant> {
        state.grant.as_ref()?;
        render::send_grant(state.owner.as_deref(), state.grant.as_ref(), self.auth.as_deref())
    }

    /// Records withheld events with the committer, which counts each once, audits it and
    /// counts it in the metrics.
    pub(crate) async fn report_withheld(&self, sub: &str, incarnation: u64, events: Vec<(u64, String)>) {
        if !events.is_empty() {
            self.ingest.lane(incarnation, LaneCommand::Withheld { sub: sub.to_owned(), events }).await;
        }
    }
}

/// Screens a batch against `grant`: which events are withheld (`render::screen`,
/// context versions the grant cannot read are cleared), and their numbers and focus types.
pub(crate) fn screen_batch(
    grant: Option<&SendGrant>,
    events: &[EventRecord],
    versions: &mut [EventVersions],
) -> (Vec<bool>, Vec<(u64, String)>) {
    let mut withheld = vec![false; events.len()];
    let mut report = Vec::new();
    let Some(grant) = grant else { return (withheld, report) };
    for ((event, (focus, context)), w) in events.iter().zip(versions.iter_mut()).zip(withheld.iter_mut()) {
        *w = render::screen(grant, event, focus.as_ref(), context);
        if *w {
            report.push((event.number, event.focus_type.clone()));
        }
    }
    (withheld, report)
}

/// Which lanes run on this node, in a cluster (`cluster::shards`); a single node runs all.
pub struct LaneFilter {
    /// Whether the lane of rest-hook subscription `id` runs here (its shard is held here).
    pub rest_hook: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Whether websocket lanes run here (the writer, where bound sockets are relayed).
    pub websockets: bool,
}

/// One lane per subscription, created on first publish, stopped on removal, and restarted
/// as the other kind when an update switches the subscription's channel. Lanes run on the
/// delivery runtime (`runtime`), apart from the tasks that serve requests. With a `filter`,
/// the views of subscriptions delivered elsewhere are kept (`parked`) and their lanes start
/// when `rebalance` finds them due here.
pub struct Dispatcher {
    lanes: Mutex<Lanes>,
    ctx: Arc<LaneContext>,
    tracker: TaskTracker,
    runtime: tokio::runtime::Handle,
    filter: Option<LaneFilter>,
}

#[derive(Default)]
struct Lanes {
    running: HashMap<String, (ChannelType, watch::Sender<LaneView>)>,
    parked: HashMap<String, LaneView>,
}

impl Dispatcher {
    #[expect(clippy::too_many_arguments, reason = "each is a distinct shared service that lanes hold; a struct would only rename them")]
    pub fn new(
        outbox: Arc<dyn Outbox>,
        ingest: Ingest,
        client: rest_hook::RestHookClient,
        config: DeliveryConfig,
        base_url: String,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        hub: Arc<Hub>,
        log: Arc<DeliveryLog>,
        auth: Option<Arc<Authenticator>>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let permits = Semaphore::new(config.max_concurrent.max(1));
        Dispatcher {
            lanes: Mutex::new(Lanes::default()),
            ctx: Arc::new(LaneContext { outbox, ingest, client, config, base_url, shutdown, permits, hub, log, auth }),
            tracker,
            runtime,
            filter: None,
        }
    }

    /// Runs only the lanes `filter` says are this node's.
    pub fn with_filter(mut self, filter: LaneFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Lanes running on this node.
    pub fn lane_count(&self) -> usize {
        self.lanes.lock().map(|l| l.running.len()).unwrap_or(0)
    }

    fn here(&self, sub: &str, channel: ChannelType) -> bool {
        match (&self.filter, channel) {
            (None, _) => true,
            (Some(f), ChannelType::RestHook) => (f.rest_hook)(sub),
            (Some(f), ChannelType::Websocket) => f.websockets,
        }
    }

    // A poisoned lock means a lane registry update panicked; keep serving with its data.
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        match self.lanes.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Stops the lanes that are no longer this node's (keeping their views) and starts those
    /// that now are: called when the delivery shards held here change. A stopped lane's
    /// attempt in flight may still finish; its report is refused if the shard moved on.
    pub fn rebalance(&self) {
        if self.ctx.shutdown.is_cancelled() {
            return;
        }
        let mut lanes = self.lock();
        let leaving: Vec<String> = lanes.running.iter().filter(|(sub, (c, _))| !self.here(sub, *c)).map(|(s, _)| s.clone()).collect();
        for sub in leaving {
            if let Some((channel, tx)) = lanes.running.remove(&sub) {
                if channel == ChannelType::Websocket {
                    self.ctx.hub.forget(&sub);
                }
                let view = tx.borrow().clone();
                lanes.parked.insert(sub, view);
            }
        }
        let arriving: Vec<String> =
            lanes.parked.iter().filter(|(sub, v)| self.here(sub, v.entry.spec.channel)).map(|(s, _)| s.clone()).collect();
        if !arriving.is_empty() {
            tracing::info!(lanes = arriving.len(), "starting the lanes of delivery shards taken over");
        }
        for sub in arriving {
            if let Some(view) = lanes.parked.remove(&sub) {
                self.start(&mut lanes, &sub, view);
            }
        }
    }

    /// Starts `sub`'s lane on `view`, replacing (ending) a running one.
    fn start(&self, lanes: &mut Lanes, sub: &str, view: LaneView) {
        let channel = view.entry.spec.channel;
        // Replacing the entry drops the old sender, which ends the old lane.
        if channel != ChannelType::Websocket && lanes.running.get(sub).is_some_and(|(c, _)| *c == ChannelType::Websocket) {
            self.ctx.hub.forget(sub);
        }
        let (tx, rx) = watch::channel(view);
        lanes.running.insert(sub.to_string(), (channel, tx));
        let ctx = self.ctx.clone();
        match channel {
            ChannelType::RestHook => self.tracker.spawn_on(lane::run(ctx, sub.to_string(), rx), &self.runtime),
            ChannelType::Websocket => {
                // Registered before the task runs, so a bind right after the subscription's
                // creation is answered finds the lane.
                let registration = self.ctx.hub.register(sub);
                self.tracker.spawn_on(websocket::lane::run(ctx, sub.to_string(), rx, registration), &self.runtime)
            }
        };
    }
}

impl LaneSink for Dispatcher {
    fn publish(&self, sub: &str, view: Option<LaneView>) {
        // Stopping: commits still finish, but no lane starts (it would stop at once anyway).
        if self.ctx.shutdown.is_cancelled() {
            return;
        }
        let mut lanes = self.lock();
        match view {
            None => {
                lanes.parked.remove(sub);
                // Dropping the sender ends the lane.
                if let Some((ChannelType::Websocket, _)) = lanes.running.remove(sub) {
                    self.ctx.hub.forget(sub);
                }
                self.ctx.log.forget(sub);
            }
            Some(view) if !self.here(sub, view.entry.spec.channel) => {
                // Delivered by another node: kept for when it is this node's.
                if let Some((channel, _)) = lanes.running.remove(sub) {
                    if channel == ChannelType::Websocket {
                        self.ctx.hub.forget(sub);
                    }
                }
                lanes.parked.insert(sub.to_string(), view);
            }
            Some(view) => {
                lanes.parked.remove(sub);
                let channel = view.entry.spec.channel;
                match lanes.running.get(sub) {
                    // The same channel and incarnation: the running lane takes the new view.
                    Some((running, tx))
                        if *running == channel && !tx.is_closed() && tx.borrow().state.incarnation == view.state.incarnation =>
                    {
                        tx.send_replace(view);
                    }
                    _ => self.start(&mut lanes, sub, view),
                }
            }
        }
    }
}
