//! The committer task: the single writer. It drains its request queue in order; each request
//! is planned (`plan`, `write`, `emit`, `events`, `lanes`, `retention`) into one atomic commit
//! (a transaction's entries share one), which goes through one door, `append`: it becomes
//! the commit log's next entry (`commitlog::LogCommit`), applied to the store and appended to
//! the log, and the flusher answers it once the log says it is durable. Registry and
//! subscription-state changes are planned on the side and merged only when the commit
//! applies, so a refused transaction leaves no trace in memory either.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::flusher::{self, FlushItem};
use super::group::{self, Group};
use super::plan::{Plan, View};
use super::settings::CommitterConfig;
use super::{builtin, emit, lanes, materialize, retention, write};
use super::{ExternalChange, ExternalSummary, IngestError, IngestQueue, LaneSink, LaneView, Request, WriteEntry, WriteMethod, WriteResult};
use crate::commitlog::{CommitLog, Effect, LogCommit, RecordingLog, SledLog};
use crate::fhir::instant::now_millis;
use crate::matching;
use crate::outbox::SledOutbox;
use crate::registry::Registry;
use crate::store::{Commit, Store, StoredGrant, SubState};

/// Starts the committer and flusher on `tracker` over the store's own log (`SledLog`, copied
/// to `record_commits` when set); returns once the registry is loaded. The registry and
/// states are rebuilt from the store first, and every subscription's lane is published so
/// that delivery resumes where it stopped.
pub fn spawn(
    store: Store,
    cfg: CommitterConfig,
    queue: IngestQueue,
    sink: Arc<dyn LaneSink>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let sled: Box<dyn CommitLog> = Box::new(SledLog::new(store.clone()));
    let log: Arc<dyn CommitLog> = match &cfg.record_commits {
        Some(path) => Arc::new(RecordingLog::new(sled, path)?),
        None => Arc::from(sled),
    };
    spawn_with_log(store, log, cfg, queue, sink, tracker, stop)
}

/// `spawn` over any commit log (the tests run it on a `MemoryLog`).
pub fn spawn_with_log(
    store: Store,
    log: Arc<dyn CommitLog>,
    cfg: CommitterConfig,
    queue: IngestQueue,
    sink: Arc<dyn LaneSink>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let rx = queue.0;
    let (flush_tx, flush_rx) = mpsc::unbounded_channel();
    let flush_delay = cfg.flush_delay;
    let lost = cfg.store_lost.clone();
    let flush_timeout = cfg.flush_timeout;
    let committer = Committer::load(store.clone(), log.clone(), cfg, flush_tx)?;
    for (id, entry) in committer.registry.subscriptions().map(|e| (e.spec.id.clone(), e.clone())) {
        if let Some(state) = committer.states.get(&id) {
            sink.publish(&id, Some(LaneView { entry, state: state.clone() }));
        }
    }
    let flusher = flusher::Flusher { store, log, sink, delay: flush_delay, lost, timeout: flush_timeout };
    tracker.spawn(flusher.run(flush_rx));
    tracker.spawn(committer.run(rx, stop));
    Ok(())
}

pub(super) struct Committer {
    store: Store,
    outbox: SledOutbox,
    registry: Registry,
    states: HashMap<String, SubState>,
    cfg: CommitterConfig,
    /// Where commits become durable.
    log: Arc<dyn CommitLog>,
    /// The last sequence appended to `log`.
    seq: u64,
    flush_tx: mpsc::UnboundedSender<FlushItem>,
    /// Commits planned and not yet applied (`ingest::group`).
    group: Group,
    /// `matching::any_change_reads_others` for the current registry, once asked.
    reads_others: Option<bool>,
    /// The last free-space check: when, and whether there was too little.
    space: Option<(std::time::Instant, bool)>,
    /// Deleted subscriptions whose events are still being removed, a bounded commit at a time
    /// while no request waits (`purge_step`); their ids cannot be created again until then.
    purges: VecDeque<String>,
}

impl Committer {
    fn load(
        store: Store,
        log: Arc<dyn CommitLog>,
        cfg: CommitterConfig,
        flush_tx: mpsc::UnboundedSender<FlushItem>,
    ) -> Result<Self, IngestError> {
        let mut committer = Committer {
            outbox: SledOutbox::new(store.clone()),
            seq: store.log_seq(),
            store,
            registry: Registry::with_base_url(&cfg.base_url),
            states: HashMap::new(),
            cfg,
            log,
            flush_tx,
            group: Group::default(),
            reads_others: None,
            space: None,
            purges: VecDeque::new(),
        };
        // Built-in topics first, as commits of the log like any other, so that the rebuild
        // below loads them like any stored topic.
        let builtins = builtin::install(&committer.store, &committer.cfg.base_url, now_millis())?;
        if !builtins.is_empty() {
            for (id, commit) in builtins {
                committer.append(commit, vec![Effect::Topic(id)], Vec::new())?;
            }
            // Durable before anything is served (reads wait for what they saw to be durable).
            let mark = committer.store.applied_mark();
            committer.log.make_durable()?;
            committer.store.mark_durable(mark);
        }
        let (registry, states) = materialize::rebuild(&committer.store, &committer.cfg.base_url, &committer.cfg.limits)?;
        committer.registry = registry;
        committer.states = states;
        // Purges a restart interrupted resume where they stopped.
        committer.purges = committer.store.purges()?.into_iter().collect();
        Ok(committer)
    }

    /// What planning reads (`plan::View`).
    fn view(&self) -> View<'_> {
        View {
            store: &self.store,
            outbox: &self.outbox,
            registry: &self.registry,
            states: &self.states,
            group_pending: &self.group.pending,
            purges: &self.purges,
            cfg: &self.cfg,
        }
    }

    /// The one door to the store: `commit` becomes the log's next entry, applied to the store,
    /// then appended to the log. Durable only once the flusher's `make_durable` covers it. A
    /// failure here leaves the store unusable in place (`store_lost`): Herald reopens it.
    fn append(&mut self, commit: Commit, effects: Vec<Effect>, lanes: Vec<String>) -> Result<(), IngestError> {
        if commit.is_empty() && effects.is_empty() {
            return Ok(());
        }
        let seq = self.seq + 1;
        let record = LogCommit { seq, ops: commit.into_ops(), effects, lanes };
        if let Err(e) = self.store.apply_logged(seq, &record.ops) {
            if matches!(e, crate::store::StoreError::Engine(_)) {
                self.cfg.store_lost.cancel();
            }
            return Err(e.into());
        }
        self.seq = seq;
        if let Err(e) = self.log.append(&record) {
            tracing::error!(error = %e, seq, "the commit log refused a commit the store applied");
            self.cfg.store_lost.cancel();
            return Err(e.into());
        }
        Ok(())
    }

    /// Serve requests until every sender is gone or `stop` fires; on `stop`, what is already
    /// queued is still committed. (The delivery side holds a sender and the committer holds
    /// the delivery side, so without `stop` the channel would never close.)
    async fn run(mut self, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
        let mut prune = tokio::time::interval(self.cfg.retention.interval);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Nothing more queued (or the group is full): apply what was planned, so that the
            // flusher can make it durable and answer it. A group of delivery results alone
            // waits up to `delivery.ack_linger` for more: one lane's acknowledgements then cost
            // one batch and one flush per linger, not one each.
            if (rx.is_empty() && self.lingers_until().is_none()) || self.group.requests >= group::MAX_REQUESTS {
                self.apply_group();
            }
            let linger = self.lingers_until();
            let req = tokio::select! {
                biased;
                req = rx.recv() => req,
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(linger.unwrap_or_else(std::time::Instant::now))), if linger.is_some() => {
                    self.apply_group();
                    continue;
                }
                _ = prune.tick() => {
                    self.apply_group();
                    self.prune(now_millis());
                    continue;
                }
                // Idle, with a deleted subscription's events left to remove: one bounded step.
                () = std::future::ready(()), if !self.purges.is_empty() => {
                    self.apply_group();
                    self.purge_step();
                    continue;
                }
                () = stop.cancelled() => {
                    rx.close();
                    while let Ok(req) = rx.try_recv() {
                        self.handle(req);
                    }
                    break;
                }
            };
            match req {
                Some(req) => self.handle(req),
                None => break,
            }
        }
        self.apply_group();
        tracing::debug!("committer stopped");
    }

    /// Until when the open group may wait for more: only a group nobody waits for (delivery
    /// results), only for `delivery.ack_linger` from its first item. `None`: apply it when
    /// the queue is empty.
    fn lingers_until(&self) -> Option<std::time::Instant> {
        if self.cfg.ack_linger.is_zero() || self.group.is_empty() || self.group.awaited() {
            return None;
        }
        let due = self.group.since? + self.cfg.ack_linger;
        (due > std::time::Instant::now()).then_some(due)
    }

    fn handle(&mut self, req: Request) {
        let joins = group::joins(&req);
        let provenance = matches!(&req, Request::Write { entries, .. } if entries.iter().any(|e| e.resource_type == "Provenance"));
        if !joins || (self.group.partial && provenance) {
            // It reads stored state while planning, or changes the registry, or reads the
            // resources of a group that does not hold them (`output-modified`): after the group.
            self.apply_group();
        }
        self.group.open = joins;
        self.group.requests += usize::from(joins);
        self.dispatch(req);
        self.group.open = false;
        if self.group.since.is_none() && !self.group.is_empty() {
            self.group.since = Some(std::time::Instant::now());
        }
    }

    /// Applies the planned group (`ingest::group`); a refusal has been answered to its requests.
    fn apply_group(&mut self) {
        if self.group.is_empty() {
            self.group.requests = 0;
            return;
        }
        let (commit, settle) = self.group.take();
        let lanes = settle.lanes();
        let applied = self.append(commit, Vec::new(), lanes);
        if let Err(e) = settle.settle(applied, &mut self.states, &self.flush_tx) {
            tracing::error!(error = %e, "the store refused a group of commits; its requests are answered as failed");
            self.cfg.store_lost.cancel();
        }
    }

    /// Whether the filesystem holding the store has less than `store.min_free_mib` free
    /// (`store::space`), asked at most every 250 ms.
    fn storage_full(&mut self) -> bool {
        if self.cfg.min_free_bytes == 0 {
            return false;
        }
        if let Some((at, full)) = self.space {
            if at.elapsed() < std::time::Duration::from_millis(250) {
                return full;
            }
        }
        let full = crate::store::space::free_bytes(&self.cfg.data_dir).is_some_and(|free| free < self.cfg.min_free_bytes);
        if full && !self.space.is_some_and(|(_, was)| was) {
            tracing::error!(
                min_free_bytes = self.cfg.min_free_bytes,
                "the disk holding the store is nearly full; refusing writes until space is freed"
            );
        } else if !full && self.space.is_some_and(|(_, was)| was) {
            tracing::info!("space was freed; writes accepted again");
        }
        self.space = Some((std::time::Instant::now(), full));
        full
    }

    fn dispatch(&mut self, req: Request) {
        // Before sled runs out of space: writes are refused, nothing is applied. Delivery
        // results still are (small, and they free the outbox of nothing but keep it moving).
        if !matches!(req, Request::Lane(..)) && self.storage_full() {
            req.refuse(IngestError::StorageFull);
            return;
        }
        match req {
            Request::Write { entries, atomic, actor, grant, reply } => self.handle_write(entries, atomic, actor, grant, reply),
            Request::External { changes, reply } => self.handle_external(changes, reply),
            Request::Resend { sub, range, dead_only, actor, reply } => {
                // Answered once durable, like every acknowledged change.
                match lanes::plan_resend(&self.view(), &sub, range, dead_only, actor.as_deref()) {
                    Ok((plan, summary)) => self.finish(plan, summary, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Emit { event, reply } => {
                let mut plan = Plan::default();
                match emit::plan_emit(&self.view(), &mut plan, &event, now_millis()) {
                    Ok(result) => self.finish(plan, result, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Lane(incarnation, cmd) => {
                if let Some(plan) = lanes::plan_lane_result(&self.view(), incarnation, cmd) {
                    if let Err(e) = self.apply_plan(plan) {
                        tracing::error!(error = %e, "could not apply a delivery result");
                    }
                }
            }
        }
    }

    fn handle_write(
        &mut self,
        entries: Vec<WriteEntry>,
        atomic: bool,
        actor: Option<String>,
        grant: Option<StoredGrant>,
        reply: oneshot::Sender<Result<Vec<WriteResult>, IngestError>>,
    ) {
        let now = now_millis();
        if atomic {
            // Each resource at most once per group: its stored latest is then the one before.
            if entries.iter().any(|e| self.group.holds(&e.resource_type, &e.id)) {
                self.apply_group();
            }
            let mut plan = Plan { actor: actor.clone(), grant: grant.clone(), ..Plan::default() };
            if entries.len() > 1 {
                // Later entries may be referenced by earlier ones: start from what was sent.
                for e in &entries {
                    let state = if e.method == WriteMethod::Delete { None } else { e.resource.clone() };
                    plan.pending.insert(format!("{}/{}", e.resource_type, e.id), state);
                }
            }
            let mut results = Vec::with_capacity(entries.len());
            for (index, entry) in entries.into_iter().enumerate() {
                let entry = match entry.provenance_for.and_then(|i| results.get(i)) {
                    Some(target) => write::with_target(entry, target),
                    None => entry,
                };
                match write::plan_entry(&self.view(), &mut plan, entry, now) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        let _ = reply.send(Err(IngestError::Entry { index, source: Box::new(e) }));
                        return;
                    }
                }
            }
            write::count_writes(&self.store, &results, actor.as_deref(), &mut plan.commit);
            self.keep_pending(&mut plan, &results);
            self.finish(plan, results, reply);
        } else {
            // Each entry its own commit; answered together once all are durable.
            let mut results = Vec::with_capacity(entries.len());
            for entry in entries {
                if self.group.holds(&entry.resource_type, &entry.id) {
                    self.apply_group();
                }
                let mut plan = Plan { actor: actor.clone(), grant: grant.clone(), ..Plan::default() };
                let planned = write::plan_entry(&self.view(), &mut plan, entry, now);
                if let Ok(r) = &planned {
                    self.keep_pending(&mut plan, std::slice::from_ref(r));
                }
                match planned.and_then(|r| self.apply_plan(plan).map(|()| r)) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        // Earlier entries are applied; they become durable with the next flush.
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
            }
            let mut plan = Plan::default();
            write::count_writes(&self.store, &results, actor.as_deref(), &mut plan.commit);
            self.finish(plan, results, reply);
        }
    }

    /// While grouping, the resources a planned write wrote become readable by the requests
    /// planned after it (`Group::pending`), when some subscribed topic can make planning read
    /// other resources; otherwise only their keys are kept and the group is partial.
    fn keep_pending(&mut self, plan: &mut Plan, results: &[WriteResult]) {
        if !self.group.open {
            return;
        }
        let overlay = *self.reads_others.get_or_insert_with(|| matching::any_change_reads_others(&self.registry));
        for r in results.iter().filter(|r| r.changed) {
            let key = format!("{}/{}", r.record.resource_type, r.record.id);
            self.group.written.insert(key.clone());
            if overlay {
                plan.pending.entry(key).or_insert_with(|| r.record.resource.clone());
            }
        }
        if !overlay {
            self.group.partial |= results.iter().any(|r| r.changed);
            plan.pending.clear();
        }
    }

    /// Merges a plan into the open group, or applies it at once (with what the group held
    /// before it) when no group is open or it changes the registry. An error means nothing of
    /// the plan was applied, in the store or in memory.
    fn apply_plan(&mut self, plan: Plan) -> Result<(), IngestError> {
        if self.group.open && plan.registry_ops.is_empty() && plan.removed.is_empty() {
            let Plan { commit, states, touched, pending, .. } = plan;
            for (sub, state) in states {
                let before = self.states.insert(sub.clone(), state);
                self.group.remember(&sub, before);
            }
            self.group.commit.append(commit);
            self.group.pending.extend(pending);
            let lanes = self.lane_views(Vec::new(), touched);
            if !lanes.is_empty() {
                self.group.push(FlushItem { reply: None, lanes });
            }
            return Ok(());
        }
        self.apply_group();
        let (effects, lane_ids) = (plan.effects(), plan.lanes());
        let Plan { commit, states, registry_ops, touched, removed, pending: _, actor: _, grant: _, purging } = plan;
        self.append(commit, effects, lane_ids)?;
        if !registry_ops.is_empty() {
            self.reads_others = None;
        }
        for op in registry_ops {
            op.apply(&mut self.registry);
        }
        self.states.extend(states);
        for sub in &removed {
            self.states.remove(sub);
        }
        self.purges.extend(purging);
        // Always to the flusher, lanes or not: what was applied is readable only once a flush
        // made it durable (`api::committed`), so every apply must be followed by one.
        let lanes = self.lane_views(removed, touched);
        let _ = self.flush_tx.send(FlushItem { reply: None, lanes });
        Ok(())
    }

    /// The lane publications for `removed` and `touched` subscriptions, as they are now.
    fn lane_views(&self, removed: Vec<String>, touched: Vec<String>) -> Vec<(String, Option<LaneView>)> {
        let mut lanes: Vec<(String, Option<LaneView>)> = removed.into_iter().map(|s| (s, None)).collect();
        for sub in touched {
            if let (Some(entry), Some(state)) = (self.registry.subscription(&sub), self.states.get(&sub)) {
                lanes.push((sub, Some(LaneView { entry: entry.clone(), state: state.clone() })));
            }
        }
        lanes
    }

    fn finish<T: Send + 'static>(&mut self, plan: Plan, value: T, reply: oneshot::Sender<Result<T, IngestError>>) {
        if let Err(e) = self.apply_plan(plan) {
            let _ = reply.send(Err(e));
            return;
        }
        let item = FlushItem {
            reply: Some(Box::new(move |durable| {
                let _ = reply.send(if durable { Ok(value) } else { Err(IngestError::Unavailable) });
            })),
            lanes: Vec::new(),
        };
        if self.group.open {
            self.group.push(item);
        } else {
            let _ = self.flush_tx.send(item);
        }
    }

    fn handle_external(&mut self, changes: Vec<ExternalChange>, reply: oneshot::Sender<Result<ExternalSummary, IngestError>>) {
        let now = now_millis();
        let mut summary = ExternalSummary::default();
        for change in changes {
            let mut plan = Plan::default();
            let outcome = write::plan_external(&self.view(), &mut plan, &change, now);
            match outcome {
                Ok(None) => {
                    let events = plan.touched.len();
                    if let Err(e) = self.apply_plan(plan) {
                        let _ = reply.send(Err(e));
                        return;
                    }
                    summary.applied += 1;
                    summary.events += events;
                }
                Ok(Some(reason)) => summary.skipped.push(format!("{}/{}: {reason}", change.resource_type, change.id)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        self.finish(Plan::default(), summary, reply);
    }

    /// Retention (`retention::prune`): one commit per subscription with events to remove.
    fn prune(&mut self, now: crate::fhir::instant::Millis) {
        for plan in retention::prune(&self.view(), now) {
            if let Err(e) = self.apply_plan(plan) {
                tracing::error!(error = %e, "retention sweep not applied");
                return;
            }
        }
    }

    /// Removes the next bounded batch of the oldest pending purge's events (its own commit,
    /// flushed like any other).
    fn purge_step(&mut self) {
        let Some(sub) = self.purges.front().cloned() else { return };
        let (plan, done) = match retention::purge_step(&self.view(), &sub) {
            Ok(planned) => planned,
            Err(e) => {
                tracing::error!(error = %e, subscription.id = %sub, "cannot list a deleted subscription's events; retrying later");
                return;
            }
        };
        if let Err(e) = self.apply_plan(plan) {
            tracing::error!(error = %e, subscription.id = %sub, "purge step not applied; retrying later");
            return;
        }
        if done {
            self.purges.pop_front();
            tracing::debug!(subscription.id = %sub, "deleted subscription's events removed");
        }
    }
}
