//! The committer task: the single writer. It drains its request queue in order; each request
//! becomes one atomic commit (a transaction's entries share one), applied to the store and then
//! handed to the flusher. Registry and subscription-state changes are planned on the side and
//! merged only when the commit applies, so a refused transaction leaves no trace in memory
//! either.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::builtin;
use super::flusher::{self, FlushItem};
use super::group::{self, Group};
use super::outputs;
use super::resolver::{CommitResolver, Pending, SeenChange};
use super::subscriptions::{self, RegistryOp};
use super::{
    EmitResult, EmittedEvent, EventFocus, ExternalChange, ExternalSummary, IngestError, IngestQueue, LaneCommand, LaneSink, LaneView,
    Request, ResendRange, ResendSummary, WriteEntry, WriteMethod, WriteResult,
};
use crate::fhir::instant::{format_millis, now_millis, Millis};
use crate::fhir::subscription::secrets::redacted;
use crate::fhir::subscription::SubscriptionLimits;
use crate::fhir::topic::stored as stored_topic;
use crate::fhir::topic::Interaction;
use crate::fhir::types::{is_resource_type, is_valid_id};
use crate::fhir::{Issue, IssueType};
use crate::matching::{self, match_change, match_event, TopicEvent};
use crate::ops::audit::{self, AuditEntry};
use crate::ops::metrics::metrics;
use crate::outbox::{EventDraft, Outbox, SledOutbox};
use crate::registry::Registry;
use crate::store::records::FORMAT;
use crate::store::{Commit, ContextRef, Resend, Store, StoredGrant, SubState, SubStatus, VersionRecord};

/// What the committer needs from configuration.
#[derive(Clone, Debug)]
pub struct CommitterConfig {
    pub base_url: String,
    pub limits: SubscriptionLimits,
    /// `ingest.enforce_task_state_machine`.
    pub enforce_task_state_machine: bool,
    /// Event retention (`subscriptions.events_*`).
    pub retention: Retention,
    /// `auth.entities`: who shares a subscription through its `managingEntity`.
    pub entities: crate::auth::Entities,
    /// `store.dangerous_flush_delay` (testing only): how long each group flush is held.
    pub flush_delay: std::time::Duration,
    /// `store.flush_timeout`: a flush that takes longer ends the process (`flusher`).
    pub flush_timeout: std::time::Duration,
    /// The store's directory and `store.min_free_mib` (0: no check), for the free-space guard.
    pub data_dir: std::path::PathBuf,
    pub min_free_bytes: u64,
    /// Cancelled when the store fails to apply or flush: sled keeps failing after an IO error
    /// (a full disk), so Herald reopens it from what is durable (`herald::run`).
    pub store_lost: CancellationToken,
}

/// How long delivered events are kept for `$events` and `$resend`.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Newest events kept per subscription.
    pub keep: u64,
    pub max_age: std::time::Duration,
    pub interval: std::time::Duration,
    /// Most events one commit removes (`subscriptions.purge_batch`).
    pub batch: u64,
}

/// Starts the committer and flusher on `tracker`; returns the handle to reach them. The
/// registry and states are rebuilt from the store first, and every subscription's lane is
/// published so that delivery resumes where it stopped.
pub fn spawn(
    store: Store,
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
    let committer = Committer::load(store.clone(), cfg, flush_tx)?;
    for (id, entry) in committer.registry.subscriptions().map(|e| (e.spec.id.clone(), e.clone())) {
        if let Some(state) = committer.states.get(&id) {
            sink.publish(&id, Some(LaneView { entry, state: state.clone() }));
        }
    }
    tracker.spawn(flusher::run(store, flush_rx, sink, flush_delay, lost, flush_timeout));
    tracker.spawn(committer.run(rx, stop));
    Ok(())
}

pub(super) type CommitterRef = Committer;

pub(super) struct Committer {
    store: Store,
    outbox: SledOutbox,
    registry: Registry,
    states: HashMap<String, SubState>,
    cfg: CommitterConfig,
    flush_tx: mpsc::UnboundedSender<FlushItem>,
    /// Commits planned and not yet applied (`ingest::group`).
    group: Group,
    /// `matching::any_change_reads_others` for the current registry, once asked.
    reads_others: Option<bool>,
    /// The last free-space check: when, and whether there was too little.
    space: Option<(std::time::Instant, bool)>,
    /// Deleted subscriptions whose events are still being removed, a bounded commit at a time
    /// while no request waits (`purge_step`); their ids cannot be created again until then.
    purges: std::collections::VecDeque<String>,
}

/// Side effects of one commit, merged into the committer only if the commit applies.
#[derive(Default)]
pub(super) struct Plan {
    pub commit: Commit,
    pub states: HashMap<String, SubState>,
    pub registry_ops: Vec<RegistryOp>,
    /// Subscriptions whose lane must be republished.
    pub touched: Vec<String>,
    /// Subscriptions removed.
    pub removed: Vec<String>,
    /// Resources of a multi-entry transaction (`Type/id` to their state in this commit), so
    /// that `resolve()` in topic criteria sees the transaction, not the store before it.
    pub pending: HashMap<String, Option<Value>>,
    /// The authenticated client making the writes (`None`: anonymous, or Herald itself).
    pub actor: Option<String>,
    /// What the actor is granted; recorded with the Subscriptions it creates or updates.
    pub grant: Option<StoredGrant>,
    /// Deleted subscriptions with events left to remove after this commit.
    pub purging: Vec<String>,
}

impl Plan {
    pub(super) fn touch(&mut self, sub: &str) {
        if !self.touched.iter().any(|s| s == sub) {
            self.touched.push(sub.to_string());
        }
    }
}

/// Counts a match report in the metrics: each topic that fired once, each event.
fn count_matches(report: &crate::matching::MatchReport) {
    if report.matches.is_empty() {
        return;
    }
    let m = metrics();
    let mut last: Option<&str> = None;
    for matched in &report.matches {
        let label = m.topic_label(&matched.topic_url);
        if last != Some(matched.topic_url.as_str()) {
            m.topic_triggers.get_or_create(&label).inc();
            last = Some(&matched.topic_url);
        }
        m.events.get_or_create(&label).inc();
    }
}

/// `entry` (an `X-Provenance` Provenance) with the version `target` wrote added to its
/// `target` (FHIR REST: the server sets the target to the resource version of the request).
fn with_target(mut entry: WriteEntry, target: &WriteResult) -> WriteEntry {
    let reference = format!("{}/{}/_history/{}", target.record.resource_type, target.record.id, target.record.version_id);
    if let Some(obj) = entry.resource.as_mut().and_then(Value::as_object_mut) {
        let list = obj.entry("target").or_insert_with(|| json!([]));
        match list.as_array_mut() {
            Some(list) => list.push(json!({ "reference": reference })),
            None => *list = json!([{ "reference": reference }]),
        }
    }
    entry
}

/// Whether a write of `ty` (its new content `resource`; `None` for a delete) can change the
/// registry: Subscriptions, SearchParameters and topics. In R4 a topic is a `Basic` coded
/// as one; a deleted `Basic` counts too, as its content is gone (a plain Basic's delete is
/// then audited as well, which is harmless).
pub(super) fn changes_registry(ty: &str, resource: Option<&Value>) -> bool {
    let version = crate::fhir::version::instance();
    match ty {
        "Subscription" | "SubscriptionTopic" | "SearchParameter" => true,
        _ => ty == stored_topic::topic_type(version) && resource.is_none_or(|r| stored_topic::is_topic(version, ty, r)),
    }
}

pub(super) fn meta_stamp(resource: &mut Value, id: &str, version_id: &str, last_updated: Millis) {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), json!(id));
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        if let Some(m) = meta.as_object_mut() {
            m.insert("versionId".into(), json!(version_id));
            m.insert("lastUpdated".into(), json!(format_millis(last_updated)));
        }
    }
}

impl Committer {
    fn load(store: Store, cfg: CommitterConfig, flush_tx: mpsc::UnboundedSender<FlushItem>) -> Result<Self, IngestError> {
        let mut registry = Registry::with_base_url(&cfg.base_url);
        subscriptions::load_search_params(&store)?;
        // Built-in topics first, so that the loop below loads them like any stored topic.
        if !builtin::install(&store, &cfg.base_url, now_millis())?.is_empty() {
            // Durable before anything is served (reads wait for what they saw to be flushed).
            store.flush()?;
        }
        // Topics in the instance version's form (R4: the Basic resources coded as topics).
        let version = crate::fhir::version::instance();
        let topic_type = stored_topic::topic_type(version);
        for (id, cur) in store.list_current(topic_type, None, usize::MAX)? {
            if cur.deleted {
                continue;
            }
            let Some(rec) = store.version(topic_type, &id, cur.seq)? else { continue };
            let Some(resource) = rec.resource else { continue };
            match stored_topic::parse_stored(version, topic_type, &id, &resource) {
                None => {}
                Some(Ok(topic)) => registry.put_topic(topic),
                Some(Err(issues)) => tracing::error!(topic.id = %id, issues = issues.len(), "stored topic no longer valid; not loaded"),
            }
        }
        let mut states: HashMap<String, SubState> = store.sub_states()?.into_iter().collect();
        let mut loaded = 0usize;
        for (id, cur) in store.list_current("Subscription", None, usize::MAX)? {
            if cur.deleted {
                continue;
            }
            let Some(rec) = store.version("Subscription", &id, cur.seq)? else { continue };
            let Some(resource) = rec.resource else { continue };
            // `end` is checked by the lane at run time, not here: a past end turns it off.
            match subscriptions::parse_stored(&registry, &id, &resource, &cfg.limits) {
                Ok(entry) => {
                    states.entry(id.clone()).or_insert_with(|| SubState::new(SubStatus::Requested));
                    registry.put_subscription(Arc::new(entry));
                    loaded += 1;
                }
                Err(issues) => {
                    let text = issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default();
                    tracing::error!(subscription.id = %id, reason = %text, "stored subscription no longer binds; not loaded");
                }
            }
        }
        states.retain(|id, _| registry.subscription(id).is_some());
        tracing::info!(topics = registry.topics().count(), subscriptions = loaded, "registry rebuilt from store");
        // Purges a restart interrupted resume where they stopped.
        let store_purges = store.purges()?.into_iter().collect();
        Ok(Committer {
            outbox: SledOutbox::new(store.clone()),
            store,
            registry,
            states,
            cfg,
            flush_tx,
            group: Group::default(),
            reads_others: None,
            space: None,
            purges: store_purges,
        })
    }

    /// Serve requests until every sender is gone or `stop` fires; on `stop`, what is already
    /// queued is still committed. (The delivery side holds a sender and the committer holds
    /// the delivery side, so without `stop` the channel would never close.)
    async fn run(mut self, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
        let mut prune = tokio::time::interval(self.cfg.retention.interval);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Nothing more queued (or the group is full): apply what was planned, so that the
            // flusher can make it durable and answer it.
            if rx.is_empty() || self.group.requests >= group::MAX_REQUESTS {
                self.apply_group();
            }
            let req = tokio::select! {
                biased;
                req = rx.recv() => req,
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
    }

    /// Applies the planned group (`ingest::group`); a refusal has been answered to its requests.
    fn apply_group(&mut self) {
        if self.group.is_empty() {
            self.group.requests = 0;
            return;
        }
        if let Err(e) = self.group.apply(&self.store, &mut self.states, &self.flush_tx) {
            tracing::error!(error = %e, "the store refused a group of commits; its requests are answered as failed");
            self.cfg.store_lost.cancel();
        }
    }

    /// What `resolve()` and notificationShape read before the store while `plan` is planned.
    fn pending<'p>(&'p self, plan: &'p Plan) -> Pending<'p> {
        Pending { commit: &plan.pending, group: &self.group.pending }
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
                match self.schedule_resend(&sub, range, dead_only, actor.as_deref()) {
                    Ok((plan, summary)) => self.finish(plan, summary, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Emit { event, reply } => {
                let mut plan = Plan::default();
                match self.apply_emit(&mut plan, &event, now_millis()) {
                    Ok(result) => self.finish(plan, result, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Request::Lane(incarnation, cmd) => self.handle_lane(incarnation, cmd),
        }
    }

    fn state(&self, plan: &Plan, sub: &str) -> Option<SubState> {
        plan.states.get(sub).or_else(|| self.states.get(sub)).cloned()
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
                    Some(target) => with_target(entry, target),
                    None => entry,
                };
                match self.apply_entry(&mut plan, entry, now) {
                    Ok(r) => results.push(r),
                    Err(e) => {
                        let _ = reply.send(Err(IngestError::Entry { index, source: Box::new(e) }));
                        return;
                    }
                }
            }
            self.count_writes(&results, actor.as_deref(), &mut plan.commit);
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
                let planned = self.apply_entry(&mut plan, entry, now);
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
            self.count_writes(&results, actor.as_deref(), &mut plan.commit);
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
        let Plan { commit, states, registry_ops, touched, removed, pending: _, actor: _, grant: _, purging } = plan;
        if let Err(e) = self.store.apply(commit) {
            if matches!(e, crate::store::StoreError::Engine(_)) {
                self.cfg.store_lost.cancel();
            }
            return Err(e.into());
        }
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

    /// Counts written versions in the metrics, and stages an audit entry for each Subscription,
    /// topic and SearchParameter change in `commit` (who, what, which version; never the body).
    fn count_writes(&self, results: &[WriteResult], actor: Option<&str>, commit: &mut Commit) {
        let m = metrics();
        for r in results.iter().filter(|r| r.changed && changes_registry(&r.record.resource_type, r.record.resource.as_ref())) {
            let action = if r.record.deleted {
                "delete"
            } else if r.created {
                "create"
            } else {
                "update"
            };
            let mut entry = AuditEntry::new(action, actor, "success")
                .entity(format!("{}/{}/_history/{}", r.record.resource_type, r.record.id, r.record.version_id));
            if r.record.resource_type == "Subscription" {
                entry = entry.subscription(r.record.id.clone());
            }
            audit::stage(&self.store, commit, &entry);
        }
        for r in results.iter().filter(|r| r.changed) {
            let interaction = if r.record.deleted {
                "delete"
            } else if r.created {
                "create"
            } else {
                "update"
            };
            m.write(&r.record.resource_type, interaction);
        }
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

    /// Plans one entry into `plan`: the version write, registry effects, matched events.
    fn apply_entry(&self, plan: &mut Plan, mut entry: WriteEntry, now: Millis) -> Result<WriteResult, IngestError> {
        let ty = entry.resource_type.as_str();
        if !is_resource_type(ty) {
            return Err(IngestError::NotFound(format!("resource type '{ty}'")));
        }
        if !is_valid_id(&entry.id) {
            return Err(IngestError::Invalid(vec![Issue::new(IssueType::Value, format!("'{}' is not a valid FHIR id", entry.id))]));
        }
        if ty == "SubscriptionStatus" && entry.method != WriteMethod::Delete {
            return Err(IngestError::Rejected(vec![Issue::new(
                IssueType::BusinessRule,
                "SubscriptionStatus resources are generated by the server in notifications and $status; they are not stored",
            )]));
        }
        if ty == stored_topic::topic_type(crate::fhir::version::instance()) {
            builtin::refuse_client_write(&entry.id, entry.method, entry.resource.as_ref())?;
        }
        // The previous version's pointer; its resource only when something will look at it
        // (decoding it was a fifth of planning a plain update): a delete (filters look at the
        // old state), the Task state machine, subscribed criteria (`%previous`), or a
        // Subscription update (it keeps the stored secrets sent back as `[redacted]`).
        let prev = self.store.current(ty, &entry.id)?;
        let live_prev = prev.as_ref().filter(|p| !p.deleted);
        let state_machine = ty == "Task" && self.cfg.enforce_task_state_machine;
        let bounded = super::compartment::bound(plan.grant.as_ref(), ty, entry.method)?;
        let previous = match live_prev {
            Some(p)
                if entry.method == WriteMethod::Delete
                    || state_machine
                    || bounded.is_some()
                    || ty == "Subscription"
                    || matching::change_reads(&self.registry, ty).previous =>
            {
                self.store.version(ty, &entry.id, p.seq)?.and_then(|v| v.resource)
            }
            _ => None,
        };
        if let Some(patient) = &bounded {
            super::compartment::check(patient, ty, &entry.id, previous.as_ref(), entry.resource.as_ref())?;
        }
        if let Some(expected) = &entry.if_match {
            let actual = live_prev.map(|p| p.version_id.clone()).unwrap_or_else(|| "none".into());
            if live_prev.map(|p| &p.version_id) != Some(expected) {
                return Err(IngestError::VersionMismatch { expected: expected.clone(), actual });
            }
        }
        let seq = prev.as_ref().map_or(1, |p| p.seq + 1);
        let version_id = seq.to_string();
        let (interaction, resource, method) = match entry.method {
            WriteMethod::Delete => {
                let Some(p) = prev.as_ref() else {
                    return Err(IngestError::NotFound(format!("{ty}/{}", entry.id)));
                };
                if p.deleted {
                    let Some(record) = self.store.version(ty, &entry.id, p.seq)? else {
                        return Err(IngestError::NotFound(format!("{ty}/{}", entry.id)));
                    };
                    return Ok(WriteResult { record, created: false, changed: false });
                }
                subscriptions::on_delete(self, plan, ty, &entry.id)?;
                (Interaction::Delete, None, "DELETE")
            }
            WriteMethod::Create | WriteMethod::Update => {
                if entry.method == WriteMethod::Create && prev.is_some() {
                    return Err(IngestError::Conflict(format!("{ty}/{} already exists", entry.id)));
                }
                let mut resource = entry.resource.take().unwrap_or_else(|| json!({ "resourceType": ty }));
                if state_machine {
                    super::workflow::check_task(previous.as_ref(), &resource)?;
                }
                meta_stamp(&mut resource, &entry.id, &version_id, now);
                subscriptions::on_write(self, plan, ty, &entry.id, &mut resource, previous.as_ref(), seq)?;
                let interaction = if live_prev.is_some() { Interaction::Update } else { Interaction::Create };
                (
                    interaction,
                    Some(resource),
                    if entry.method == WriteMethod::Create {
                        "POST"
                    } else if entry.patched {
                        "PATCH"
                    } else {
                        "PUT"
                    },
                )
            }
        };
        let record = VersionRecord {
            v: FORMAT,
            resource_type: ty.to_string(),
            id: entry.id.clone(),
            seq,
            version_id,
            last_updated: now,
            method: method.to_string(),
            deleted: resource.is_none(),
            resource,
            full_url: None,
        };
        plan.commit.put_version(&record)?;
        // Search index entries go in the same commit as the version (store::index).
        plan.commit.index_version(&self.store, &record, &self.cfg.base_url)?;
        if !plan.pending.is_empty() {
            plan.pending.insert(format!("{ty}/{}", record.id), record.resource.clone());
        }
        self.enqueue_matches(plan, &record, interaction, previous.as_ref(), now)?;
        if ty == "Provenance" {
            self.enqueue_output_modified(plan, &record, now)?;
        }
        Ok(WriteResult { record, created: interaction == Interaction::Create, changed: true })
    }

    /// The `output-modified` events a Provenance records (`ingest::outputs`).
    fn enqueue_output_modified(&self, plan: &mut Plan, provenance: &VersionRecord, now: Millis) -> Result<(), IngestError> {
        let Some(resource) = provenance.resource.as_ref() else { return Ok(()) };
        let found = outputs::detect(&self.store, self.pending(plan), &self.cfg.base_url, resource)?;
        for modified in found {
            let event = TopicEvent {
                system: outputs::EVENT_SYSTEM,
                code: outputs::EVENT_CODE,
                resource_type: &modified.resource_type,
                id: &modified.id,
                filter_subject: Some(&modified.first),
            };
            // The Provenance first, then the Tasks listing the output.
            let mut given = vec![ContextRef { resource_type: "Provenance".into(), id: provenance.id.clone(), seq: provenance.seq }];
            given.extend(modified.tasks.iter().cloned());
            let focus = (modified.resource_type.as_str(), modified.id.as_str(), modified.seq, &modified.focus);
            self.enqueue_event(plan, &event, focus, &given, now)?;
        }
        Ok(())
    }

    /// Emitted events: the focus (stored first if sent), the context, then as any event.
    fn apply_emit(&self, plan: &mut Plan, ev: &EmittedEvent, now: Millis) -> Result<EmitResult, IngestError> {
        let record = match &ev.focus {
            EventFocus::Write(entry) => {
                if entry.method == WriteMethod::Delete {
                    return Err(IngestError::Invalid(vec![Issue::at(IssueType::Invalid, "focus", "an event's focus cannot be a delete")]));
                }
                self.apply_entry(plan, entry.clone(), now)?.record
            }
            EventFocus::Stored { resource_type, id } => {
                let missing = || IngestError::NotFound(format!("{resource_type}/{id}"));
                let latest = self.store.latest(resource_type, id)?.filter(|l| !l.deleted).ok_or_else(missing)?;
                self.store.version(resource_type, id, latest.seq)?.ok_or_else(missing)?
            }
        };
        let Some(focus_value) = record.resource.as_ref() else {
            return Err(IngestError::NotFound(format!("{}/{}", record.resource_type, record.id)));
        };
        let mut given = Vec::with_capacity(ev.context.len());
        for (i, (ty, id)) in ev.context.iter().enumerate() {
            match self.store.latest(ty, id)? {
                Some(l) if !l.deleted => given.push(ContextRef { resource_type: ty.clone(), id: id.clone(), seq: l.seq }),
                _ if ty == &record.resource_type && id == &record.id => {}
                _ => {
                    return Err(IngestError::Invalid(vec![Issue::at(
                        IssueType::NotFound,
                        format!("Parameters.parameter[context][{i}]"),
                        format!("{ty}/{id} is not a resource Herald holds"),
                    )]))
                }
            }
        }
        let event = TopicEvent {
            system: &ev.system,
            code: &ev.code,
            resource_type: &record.resource_type,
            id: &record.id,
            filter_subject: Some(focus_value),
        };
        let focus = (record.resource_type.as_str(), record.id.as_str(), record.seq, focus_value);
        let (notified, topics) = self.enqueue_event(plan, &event, focus, &given, now)?;
        Ok(EmitResult { focus: record.clone(), notified, topics })
    }

    /// Enqueues an `eventTrigger` event for the subscriptions it matches; each event carries
    /// `given` then what its topic's shape adds. Returns how many were notified, and the topics.
    fn enqueue_event(
        &self,
        plan: &mut Plan,
        event: &TopicEvent<'_>,
        focus: (&str, &str, u64, &Value),
        given: &[ContextRef],
        now: Millis,
    ) -> Result<(usize, Vec<String>), IngestError> {
        let (focus_type, focus_id, focus_seq, focus_value) = focus;
        // Filters see a Subscription focus without its secrets, as changes are matched.
        let subject = event.filter_subject.map(redacted);
        let event = &TopicEvent { filter_subject: subject.as_deref(), ..*event };
        let report =
            match_event(event, &self.registry, &self.cfg.base_url, |sub| self.state(plan, sub).is_some_and(|s| s.status.counts_events()));
        for d in &report.diagnostics {
            tracing::warn!(resource.type = %focus_type, diagnostic = %d, "matching.filter_error");
        }
        count_matches(&report);
        let mut contexts: HashMap<String, Vec<ContextRef>> = HashMap::new();
        let mut topics: Vec<String> = Vec::new();
        let mut notified = 0;
        for m in report.matches {
            let Some(mut lane) = self.state(plan, &m.subscription_id) else { continue };
            if !contexts.contains_key(&m.topic_id) {
                let mut context = given.to_vec();
                if let Some(topic) = self.registry.topic(&m.topic_id) {
                    let shaped = super::context::event_context(
                        &self.store,
                        self.pending(plan),
                        &self.cfg.base_url,
                        topic,
                        (focus_type, focus_id, focus_value),
                    )?;
                    for c in shaped {
                        if !context.contains(&c) {
                            context.push(c);
                        }
                    }
                }
                contexts.insert(m.topic_id.clone(), context);
                topics.push(m.topic_url.clone());
            }
            let draft = EventDraft {
                timestamp: now,
                topic: &m.topic_url,
                interaction: "event",
                focus_type,
                focus_id,
                focus_seq,
                context: contexts.get(&m.topic_id).map(Vec::as_slice).unwrap_or_default(),
            };
            self.outbox.enqueue(&mut plan.commit, &m.subscription_id, &mut lane, draft)?;
            plan.states.insert(m.subscription_id.clone(), lane);
            plan.touch(&m.subscription_id);
            notified += 1;
        }
        Ok((notified, topics))
    }

    fn enqueue_matches(
        &self,
        plan: &mut Plan,
        record: &VersionRecord,
        interaction: Interaction,
        previous: Option<&Value>,
        now: Millis,
    ) -> Result<(), IngestError> {
        // Matched as seen: a Subscription without its secrets (`resolver` module doc).
        let seen = SeenChange::new(record, interaction, previous);
        let change = seen.change();
        let resolver = CommitResolver::new(&self.store, self.pending(plan), &self.cfg.base_url);
        let resolver_ref = &resolver;
        let report = match_change(&change, &self.registry, &self.cfg.base_url, Some(&resolver_ref), |sub| {
            self.state(plan, sub).is_some_and(|s| s.status.counts_events())
        });
        for d in &report.diagnostics {
            tracing::warn!(resource.type = %record.resource_type, diagnostic = %d, "matching.filter_error");
        }
        count_matches(&report);
        // Each topic's notificationShape context, resolved once per change.
        let mut contexts: HashMap<String, Vec<ContextRef>> = HashMap::new();
        for m in report.matches {
            let Some(mut lane) = self.state(plan, &m.subscription_id) else { continue };
            if !contexts.contains_key(&m.topic_id) {
                let found = match (self.registry.topic(&m.topic_id), record.resource.as_ref()) {
                    (Some(topic), Some(resource)) => super::context::event_context(
                        &self.store,
                        self.pending(plan),
                        &self.cfg.base_url,
                        topic,
                        (&record.resource_type, &record.id, resource),
                    )?,
                    _ => Vec::new(),
                };
                contexts.insert(m.topic_id.clone(), found);
            }
            let context = contexts.get(&m.topic_id).map(Vec::as_slice).unwrap_or_default();
            let draft = EventDraft {
                timestamp: now,
                topic: &m.topic_url,
                interaction: interaction.code(),
                focus_type: &record.resource_type,
                focus_id: &record.id,
                focus_seq: record.seq,
                context,
            };
            self.outbox.enqueue(&mut plan.commit, &m.subscription_id, &mut lane, draft)?;
            plan.states.insert(m.subscription_id.clone(), lane);
            plan.touch(&m.subscription_id);
        }
        Ok(())
    }

    fn handle_external(&mut self, changes: Vec<ExternalChange>, reply: oneshot::Sender<Result<ExternalSummary, IngestError>>) {
        let now = now_millis();
        let mut summary = ExternalSummary::default();
        for change in changes {
            let mut plan = Plan::default();
            let outcome = self.apply_external(&mut plan, &change, now);
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

    /// Plans one side-car change; `Ok(Some(reason))` when it is skipped.
    fn apply_external(&self, plan: &mut Plan, change: &ExternalChange, now: Millis) -> Result<Option<String>, IngestError> {
        let ty = change.resource_type.as_str();
        if !is_resource_type(ty) || !is_valid_id(&change.id) {
            return Ok(Some("not a known resource type and valid id".into()));
        }
        // Nor are topics (R4: Basic topics), nor a change that would overwrite a local topic.
        let version = crate::fhir::version::instance();
        let topic = ty == stored_topic::topic_type(version)
            && (change.resource.as_ref().is_some_and(|r| stored_topic::is_topic(version, ty, r))
                || self.registry.topic(&change.id).is_some());
        if topic || matches!(ty, "Subscription" | "SubscriptionTopic" | "SubscriptionStatus") {
            return Ok(Some("subscription resources of another server are not mirrored".into()));
        }
        let prev = self.store.latest(ty, &change.id)?;
        if let Some(vid) = &change.version_id {
            if prev.as_ref().is_some_and(|p| &p.version_id == vid)
                || self.store.history(ty, &change.id, 10_000)?.iter().any(|v| &v.version_id == vid)
            {
                return Ok(Some(format!("version {vid} already seen")));
            }
        }
        let live_prev = prev.as_ref().filter(|p| !p.deleted);
        if change.deleted && live_prev.is_none() {
            return Ok(Some("delete of a resource not present".into()));
        }
        let seq = prev.as_ref().map_or(1, |p| p.seq + 1);
        let interaction = match (change.deleted, live_prev.is_some()) {
            (true, _) => Interaction::Delete,
            (false, true) => Interaction::Update,
            (false, false) => Interaction::Create,
        };
        let resource = if change.deleted {
            None
        } else {
            let mut r = change.resource.clone().unwrap_or_else(|| json!({ "resourceType": ty }));
            if let Some(obj) = r.as_object_mut() {
                obj.insert("id".into(), json!(change.id));
            }
            Some(r)
        };
        let record = VersionRecord {
            v: FORMAT,
            resource_type: ty.to_string(),
            id: change.id.clone(),
            seq,
            version_id: change.version_id.clone().unwrap_or_else(|| seq.to_string()),
            last_updated: change.last_updated.unwrap_or(now),
            method: match interaction {
                Interaction::Create => "POST",
                Interaction::Update => "PUT",
                Interaction::Delete => "DELETE",
            }
            .to_string(),
            deleted: change.deleted,
            resource,
            full_url: change.full_url.clone(),
        };
        plan.commit.put_version(&record)?;
        plan.commit.index_version(&self.store, &record, &self.cfg.base_url)?;
        self.enqueue_matches(plan, &record, interaction, live_prev.and_then(|p| p.resource.as_ref()), now)?;
        Ok(None)
    }

    /// Retention: removes delivered event records past `keep` or `max_age` (never undelivered
    /// ones, dead letters, or those a resend still has to send).
    fn prune(&mut self, now: Millis) {
        let max_age = i64::try_from(self.cfg.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let oldest_kept = now.saturating_sub(max_age);
        let subs: Vec<String> = self.states.keys().cloned().collect();
        for sub in subs {
            let Some(mut lane) = self.states.get(&sub).cloned() else { continue };
            let mut limit = lane.delivered_through.min(lane.events_since_start.saturating_sub(0));
            if let Some(r) = &lane.resend {
                limit = limit.min(r.next.saturating_sub(1));
            }
            let by_count = lane.events_since_start.saturating_sub(self.cfg.retention.keep);
            let start = lane.pruned_through + 1;
            let mut cutoff = by_count.min(limit);
            // By age: events are numbered in commit order, so timestamps only grow.
            let scan_to = limit.min(lane.pruned_through + self.cfg.retention.batch);
            if cutoff < scan_to {
                match self.store.events(
                    &sub,
                    cutoff.max(lane.pruned_through) + 1,
                    usize::try_from(scan_to - cutoff.max(lane.pruned_through)).unwrap_or(0),
                ) {
                    Ok(events) => {
                        for e in events.iter().take_while(|e| e.timestamp < oldest_kept && e.number <= scan_to) {
                            cutoff = cutoff.max(e.number);
                        }
                    }
                    Err(e) => {
                        tracing::error!(subscription.id = %sub, error = %e, "retention could not read events");
                        continue;
                    }
                }
            }
            let cutoff = cutoff.min(lane.pruned_through + self.cfg.retention.batch);
            if cutoff < start {
                continue;
            }
            let dead: Vec<u64> = match self.store.dead_letters_in(&sub, start, cutoff, usize::MAX) {
                Ok(d) => d.into_iter().map(|d| d.number).collect(),
                Err(e) => {
                    tracing::error!(subscription.id = %sub, error = %e, "retention could not read dead letters");
                    continue;
                }
            };
            let mut plan = Plan::default();
            for number in start..=cutoff {
                if !dead.contains(&number) {
                    plan.commit.remove_event(&sub, number);
                }
            }
            lane.pruned_through = cutoff;
            if let Err(e) = plan.commit.put_sub_state(&sub, &lane) {
                tracing::error!(subscription.id = %sub, error = %e, "retention could not record its progress");
                continue;
            }
            plan.states.insert(sub.clone(), lane);
            if let Err(e) = self.apply_plan(plan) {
                tracing::error!(error = %e, "retention sweep not applied");
                return;
            }
            tracing::debug!(subscription.id = %sub, through = cutoff, "events past retention removed");
        }
    }

    /// Removes the next bounded batch of the oldest pending purge's events (its own commit,
    /// flushed like any other).
    fn purge_step(&mut self) {
        let Some(sub) = self.purges.front().cloned() else { return };
        let mut plan = Plan::default();
        let done = match plan.commit.purge_outbox(&self.store, &sub, self.purge_batch()) {
            Ok(done) => done,
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

    /// Most events one commit removes (`subscriptions.purge_batch`).
    pub(super) fn purge_batch(&self) -> usize {
        usize::try_from(self.cfg.retention.batch).unwrap_or(usize::MAX)
    }

    /// Whether `Subscription/{id}`'s events from a deleted incarnation are still being removed.
    pub(super) fn purging(&self, sub: &str) -> bool {
        self.purges.iter().any(|s| s == sub)
    }

    /// Plans a resend of stored events (`$resend`, dead-letter replay) for the lane to carry
    /// out. The lane never lets a resend overtake an event not yet accepted or dead-lettered
    /// (`channels::lane`): what lies beyond its cursor is resent once delivery got past it.
    fn schedule_resend(
        &mut self,
        sub: &str,
        range: ResendRange,
        dead_only: bool,
        actor: Option<&str>,
    ) -> Result<(Plan, ResendSummary), IngestError> {
        let mut lane = self.states.get(sub).cloned().ok_or_else(|| IngestError::NotFound(format!("Subscription/{sub}")))?;
        let (from, until) = match range {
            ResendRange::Numbers { since, until } => {
                (since.unwrap_or(1).max(1), until.unwrap_or(lane.events_since_start).min(lane.events_since_start))
            }
            ResendRange::Instants { since, until } => {
                let mut first = None;
                let mut last = None;
                let mut from = lane.pruned_through + 1;
                loop {
                    let page = self.store.events(sub, from, 1000)?;
                    let Some(end) = page.last().map(|e| e.number) else { break };
                    for e in &page {
                        let after = since.is_none_or(|s| e.timestamp >= s);
                        let before = until.is_none_or(|u| e.timestamp <= u);
                        if after && before {
                            first.get_or_insert(e.number);
                            last = Some(e.number);
                        }
                    }
                    if until.is_some_and(|u| page.last().is_some_and(|e| e.timestamp > u)) {
                        break;
                    }
                    from = end + 1;
                }
                match (first, last) {
                    (Some(f), Some(l)) => (f, l),
                    _ => (1, 0),
                }
            }
        };
        let first_kept = lane.pruned_through + 1;
        if from < first_kept && !dead_only {
            return Err(IngestError::Rejected(vec![Issue::at(
                IssueType::NotFound,
                "eventsSinceNumber",
                format!(
                    "events 1 to {} are past retention; events {first_kept} to {} are kept",
                    lane.pruned_through, lane.events_since_start
                ),
            )]));
        }
        let pending = (until > lane.delivered_through).then(|| (lane.delivered_through + 1).max(from));
        let count = if from > until {
            0
        } else if dead_only {
            self.store.dead_letters_in(sub, from, until, usize::MAX)?.len() as u64
        } else {
            until - from + 1
        };
        lane.resends += 1;
        let id = lane.resends;
        lane.resend = (count > 0).then_some(Resend { next: from, until, dead_only, id });
        let mut plan = Plan::default();
        plan.commit.put_sub_state(sub, &lane)?;
        audit::stage(
            &self.store,
            &mut plan.commit,
            &AuditEntry::new("resend", actor, "success")
                .subscription(sub)
                .detail("from", from)
                .detail("until", until)
                .detail("events", count)
                .detail("deadLettersOnly", dead_only),
        );
        plan.states.insert(sub.to_string(), lane);
        plan.touch(sub);
        Ok((plan, ResendSummary { from, until, events: count, pending_from: pending }))
    }

    fn handle_lane(&mut self, incarnation: u64, cmd: LaneCommand) {
        let sub = match &cmd {
            LaneCommand::Delivered { sub, .. }
            | LaneCommand::Retry { sub, .. }
            | LaneCommand::Dead { sub, .. }
            | LaneCommand::Resent { sub, .. }
            | LaneCommand::ResendAbandoned { sub, .. }
            | LaneCommand::Status { sub, .. }
            | LaneCommand::Withheld { sub, .. } => sub.clone(),
        };
        let Some(mut lane) = self.states.get(&sub).cloned() else {
            return; // deleted meanwhile
        };
        if lane.incarnation != incarnation {
            // A lane of a deleted incarnation of this id, reporting an attempt that was in
            // flight across the delete: it says nothing about the events numbered since.
            tracing::debug!(subscription.id = %sub, incarnation, current = lane.incarnation, "lane report for an older incarnation ignored");
            return;
        }
        let mut plan = Plan::default();
        let result = match cmd {
            LaneCommand::Delivered { through, at, .. } => self.outbox.ack(&mut plan.commit, &sub, &mut lane, through, at),
            LaneCommand::Retry { attempts, next_attempt_at, first_failure_at, .. } => {
                self.outbox.nack(&mut plan.commit, &sub, &mut lane, attempts, next_attempt_at, first_failure_at)
            }
            LaneCommand::Dead { generation, through, attempts, error, .. } => {
                metrics().dead_letters.inc_by(through.saturating_sub(lane.delivered_through));
                audit::stage(
                    &self.store,
                    &mut plan.commit,
                    &AuditEntry::herald("dead-letter", "failure")
                        .subscription(sub.clone())
                        .detail("from", lane.delivered_through + 1)
                        .detail("through", through)
                        .detail("attempts", attempts)
                        .detail("error", error.code.clone()),
                );
                let parked = self.outbox.park(&mut plan.commit, &sub, &mut lane, through, attempts, &error);
                // R5 §2.2: delivery failure puts the subscription in error; it stays there
                // (still counting events) until the client asks for a new handshake.
                if lane.generation == generation && lane.status == SubStatus::Active {
                    audit::stage(
                        &self.store,
                        &mut plan.commit,
                        &AuditEntry::herald("status", "failure").subscription(sub.clone()).detail("from", "active").detail("to", "error"),
                    );
                    lane.status = SubStatus::Error;
                    lane.error = Some(error);
                }
                plan.touch(&sub);
                parked.and_then(|()| plan.commit.put_sub_state(&sub, &lane))
            }
            LaneCommand::Resent { id, through, .. } => match lane.resend.clone() {
                Some(r) if r.id == id => {
                    if r.dead_only {
                        match self.store.dead_letters_in(&sub, r.next, through, usize::MAX) {
                            Ok(dead) => {
                                for d in dead {
                                    plan.commit.remove_dead(&sub, d.number);
                                    lane.dead_count = lane.dead_count.saturating_sub(1);
                                }
                            }
                            Err(e) => tracing::error!(subscription.id = %sub, error = %e, "could not read dead letters after a replay"),
                        }
                    }
                    lane.resend = (through < r.until).then_some(Resend { next: through + 1, ..r });
                    if lane.resend.is_none() {
                        tracing::info!(subscription.id = %sub, "resend finished");
                    }
                    plan.touch(&sub);
                    plan.commit.put_sub_state(&sub, &lane)
                }
                _ => Ok(()),
            },
            LaneCommand::ResendAbandoned { id, error, .. } => match &lane.resend {
                Some(r) if r.id == id => {
                    tracing::error!(subscription.id = %sub, reason = %error.text, "resend abandoned; the events stay stored (and dead letters stay dead)");
                    lane.resend = None;
                    plan.touch(&sub);
                    plan.commit.put_sub_state(&sub, &lane)
                }
                _ => Ok(()),
            },
            LaneCommand::Withheld { events, .. } => {
                // Counted once per number: retries and resends render the same events again.
                let mut changed = false;
                for (number, focus_type) in events {
                    if number <= lane.withheld_through {
                        continue;
                    }
                    lane.withheld += 1;
                    lane.withheld_through = number;
                    changed = true;
                    metrics().withheld(&focus_type);
                    // The focus id is left out: with the type and the event number an operator
                    // finds the resource, and the audit log need not hold what the subscriber
                    // was not allowed to see.
                    let client = lane.owner.as_deref().unwrap_or("anonymous");
                    audit::stage(
                        &self.store,
                        &mut plan.commit,
                        &AuditEntry::herald("withheld", "success")
                            .subscription(sub.clone())
                            .detail("client", client)
                            .detail("event", number)
                            .detail("resourceType", focus_type.clone())
                            .detail("reason", "not-authorized"),
                    );
                }
                if changed {
                    plan.commit.put_sub_state(&sub, &lane)
                } else {
                    Ok(())
                }
            }
            LaneCommand::Status { generation, status, error, .. } => {
                if lane.generation == generation && lane.status != status {
                    tracing::info!(subscription.id = %sub, from = lane.status.code(), to = status.code(), "subscription status changed");
                    audit::stage(
                        &self.store,
                        &mut plan.commit,
                        &AuditEntry::herald("status", "success")
                            .subscription(sub.clone())
                            .detail("from", lane.status.code())
                            .detail("to", status.code()),
                    );
                    lane.status = status;
                    lane.error = if status == SubStatus::Active { None } else { error };
                    plan.touch(&sub);
                    plan.commit.put_sub_state(&sub, &lane)
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(subscription.id = %sub, error = %e, "could not record a delivery result");
            return;
        }
        plan.states.insert(sub, lane);
        if let Err(e) = self.apply_plan(plan) {
            tracing::error!(error = %e, "could not apply a delivery result");
        }
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn current_state(&self, plan: &Plan, sub: &str) -> Option<SubState> {
        self.state(plan, sub)
    }

    pub(super) fn entities(&self) -> &crate::auth::Entities {
        &self.cfg.entities
    }

    pub(super) fn limits(&self) -> &SubscriptionLimits {
        &self.cfg.limits
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }
}
