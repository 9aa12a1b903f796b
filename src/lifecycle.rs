//! One Herald's start and stop, around the listener `herald::run` already serves.
//!
//! `start` brings the stages up in order: the store (with the search index checked, or
//! rebuilt when the configured set changed), the committer with the registry rebuilt from the
//! store, and a lane per subscription. The slow steps run on blocking threads so that
//! `/healthz` keeps answering; the index rebuild logs its progress and stops early when
//! shutdown begins (it resumes at the next start). `Running::stop` is the shutdown sequence,
//! every step bounded by one deadline: delivery stops (an attempt in flight is abandoned and
//! retried after restart), open requests finish, websockets close, the committer commits what
//! is queued, the store is flushed. Crash safety never depends on any of it: every
//! acknowledged write was flushed before its answer.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channels::guard::AddressPolicy;
use crate::channels::websocket::{Hub, WsConfig};
use crate::channels::{DeliveryConfig, Dispatcher, HandshakePolicy, RetryPolicy};
use crate::config::Config;
use crate::fhir::subscription::SubscriptionLimits;
use crate::ingest::CommitterConfig;
use crate::store::index::{RebuildProgress, RebuildStep};
use crate::store::Store;
use crate::{api, channels, fhir, ingest, RunError};

/// Least time between two progress lines of one rebuild step.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// Everything `stop` has to stop, and the state the full router serves.
pub(crate) struct Running {
    store: Store,
    state: api::Shared,
    /// A cluster follower's forwarding of writes to the writer (`cluster::forward`).
    forward: Option<Arc<crate::cluster::forward::Forwarder>>,
    /// A cluster writer stamps its answers with the log seq (`cluster::forward::stamp`).
    clustered: bool,
    dispatcher: Arc<Dispatcher>,
    max_body_bytes: usize,
    /// `server.max_body_memory_mib`, in bytes.
    body_memory_bytes: usize,
    /// Stops the delivery lanes.
    delivery: CancellationToken,
    /// Stops the committer once what is queued is committed.
    ingest_stop: CancellationToken,
    sockets: TaskTracker,
    lanes: TaskTracker,
    core: TaskTracker,
    /// Where `lanes` run; shut down once they have stopped.
    delivery_runtime: DeliveryRuntime,
}

/// The runtime the delivery lanes run on, apart from the one serving requests: a lane sends
/// one notification at a time, so its rate is the latency of each, which on the request
/// runtime was mostly spent queued behind the writers' connection tasks. Shut down without
/// blocking when dropped (dropping a runtime inside an async context would block).
struct DeliveryRuntime(Option<tokio::runtime::Runtime>);

impl DeliveryRuntime {
    /// `threads` workers, or one per CPU for 0.
    fn start(threads: usize) -> std::io::Result<DeliveryRuntime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.thread_name("herald-delivery").enable_all();
        if threads > 0 {
            builder.worker_threads(threads);
        }
        Ok(DeliveryRuntime(Some(builder.build()?)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only `drop` takes the runtime out.
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for DeliveryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Logs a rebuild: each step as it starts, then at most every `PROGRESS_LOG_EVERY`.
struct RebuildLog {
    step: Option<RebuildStep>,
    last: std::time::Instant,
}

impl RebuildLog {
    fn report(&mut self, p: RebuildProgress) {
        let new_step = self.step != Some(p.step);
        if !new_step && self.last.elapsed() < PROGRESS_LOG_EVERY {
            return;
        }
        self.step = Some(p.step);
        self.last = std::time::Instant::now();
        match p.step {
            RebuildStep::Clearing if new_step => tracing::info!(
                "search index: the configured index set is not the one the store holds; rebuilding it \
                 (live, not ready until done)"
            ),
            RebuildStep::Clearing => tracing::info!(removed = p.done, "search index rebuild: removing old entries"),
            RebuildStep::Writing => tracing::info!(done = p.done, total = p.total, "search index rebuild: writing entries"),
            RebuildStep::Checking => tracing::info!(done = p.done, total = p.total, "search index rebuild: checking"),
        }
    }
}

/// Opens the store (rebuilding the index if needed), starts the committer and the lanes.
/// `stop` interrupts an index rebuild (`StoreError::Interrupted`); `stop` also closes websockets.
/// `store_lost` is cancelled if the store fails to apply or flush after start.
pub(crate) async fn start(
    cfg: &Config,
    base_url: &str,
    stop: &CancellationToken,
    auth: Option<Arc<crate::auth::Authenticator>>,
    store_lost: &CancellationToken,
    role: Option<crate::cluster::Role>,
) -> Result<Running, RunError> {
    let index_set = cfg.search.index_set(cfg.fhir_version())?;
    let dir = cfg.store.data_dir.clone();
    let base = base_url.to_owned();
    let interrupt = stop.clone();
    // `store.dangerous_flush_delay` (crash tests) also stops sled's own timer, so that only
    // the group flush makes anything durable.
    let options = crate::store::OpenOptions {
        background_flush: cfg.duration("store.dangerous_flush_delay").is_zero(),
        cache_mib: cfg.store.cache_mib,
        compression: (cfg.store.compression_level > 0).then_some(i32::from(cfg.store.compression_level)),
    };
    let opened = tokio::task::spawn_blocking(move || -> Result<_, RunError> {
        fhir::search::SearchParams::current()?;
        let started = std::time::Instant::now();
        let mut log = RebuildLog { step: None, last: started };
        let mut progress = |p: RebuildProgress| {
            log.report(p);
            if interrupt.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let (store, rebuilt) = Store::open_indexed_opts(&dir, index_set, &base, Some(&mut progress), options)?;
        if let Some(check) = rebuilt {
            tracing::info!(
                resources = check.resources,
                entries = check.expected,
                secs = started.elapsed().as_secs_f64(),
                "search index rebuilt for the configured index set"
            );
        }
        Ok(store)
    });
    let store = opened.await??.with_scan_limit(cfg.search.max_scan);
    let policy =
        AddressPolicy { allow_all_private: cfg.delivery.allow_private_endpoints, allow_nets: cfg.delivery.allow_private_networks.clone() };
    let delivery_cfg = DeliveryConfig {
        default_timeout: cfg.duration("delivery.default_timeout"),
        retry: RetryPolicy {
            initial_interval: cfg.duration("delivery.initial_interval"),
            multiplier: cfg.delivery.multiplier,
            max_interval: cfg.duration("delivery.max_interval"),
            randomization_factor: cfg.delivery.randomization_factor,
            max_attempts: cfg.delivery.max_attempts,
            max_age: cfg.duration("delivery.max_age"),
        },
        handshake: HandshakePolicy { delay: cfg.duration("delivery.handshake_delay"), retries: cfg.handshake_retry_schedule()? },
        max_concurrent: cfg.delivery.max_concurrent,
        signing_keys: cfg.delivery.signing_secrets.keys()?,
    };
    let delivery = CancellationToken::new();
    let sockets = TaskTracker::new();
    let hub = Arc::new(Hub::new(
        WsConfig {
            url: cfg.websocket_url(base_url),
            token_lifetime: cfg.duration("websocket.token_lifetime"),
            max_message_bytes: cfg.websocket.max_message_bytes,
            send_buffer: cfg.websocket.send_buffer,
            send_timeout: cfg.duration("websocket.send_timeout"),
            max_connections: cfg.websocket.max_connections,
        },
        stop.clone(),
        sockets.clone(),
    ));
    let mut delivery_log = crate::ops::delivery_log::DeliveryLog::new(cfg.admin.delivery_log);
    let core = TaskTracker::new();
    let ingest_stop = CancellationToken::new();
    // On `core`, stopped with the committer: shutdown stores what was queued.
    let (audit, audit_task) = crate::ops::audit::AuditWriter::start(store.clone(), ingest_stop.clone());
    core.spawn(audit_task);
    let audit = Arc::new(audit);
    if cfg.admin.audit_deliveries {
        delivery_log = delivery_log.with_audit(audit.clone());
    }
    let delivery_log = Arc::new(delivery_log);
    let lanes = TaskTracker::new();
    let delivery_runtime = DeliveryRuntime::start(cfg.delivery.threads)?;
    let (ingest, queue) = ingest::channel(cfg.ingest.queue_depth);
    let client = channels::rest_hook::RestHookClient::new(policy.clone())?;
    // In a cluster: rest-hook lanes of the delivery shards this node holds, websocket lanes
    // on the writer (`cluster::shards`).
    let filter = role.as_ref().map(|r| {
        let shards = r.node().shards.clone();
        channels::LaneFilter {
            rest_hook: Box::new(move |sub: &str| shards.owns(sub)),
            websockets: matches!(r, crate::cluster::Role::Writer { .. }),
        }
    });
    let shard_changes = role.as_ref().map(|r| r.node().shards.held.clone());
    let dispatcher = Dispatcher::new(
        Arc::new(crate::outbox::SledOutbox::with_version_cache(store.clone(), cfg.delivery.version_cache_mib.saturating_mul(1024 * 1024))),
        ingest.clone(),
        client,
        delivery_cfg,
        base_url.to_owned(),
        delivery.clone(),
        lanes.clone(),
        hub.clone(),
        delivery_log.clone(),
        auth.clone(),
        delivery_runtime.handle(),
    );
    let dispatcher = Arc::new(match filter {
        Some(filter) => dispatcher.with_filter(filter),
        None => dispatcher,
    });
    let committer_cfg = CommitterConfig {
        base_url: base_url.to_owned(),
        limits: SubscriptionLimits {
            max_timeout_secs: cfg.duration("subscriptions.max_timeout").as_secs(),
            max_heartbeat_secs: cfg.duration("subscriptions.max_heartbeat_period").as_secs(),
            max_count: cfg.subscriptions.max_count,
            default_max_count: cfg.subscriptions.default_max_count,
        },
        enforce_task_state_machine: cfg.ingest.enforce_task_state_machine,
        retention: ingest::Retention {
            keep: cfg.subscriptions.events_keep,
            max_age: cfg.duration("subscriptions.events_max_age"),
            interval: cfg.duration("subscriptions.events_prune_interval"),
            batch: cfg.subscriptions.purge_batch,
        },
        entities: crate::auth::Entities::new(&cfg.auth.entities, &cfg.auth.jwt_as_api_key_clients),
        flush_delay: cfg.duration("store.dangerous_flush_delay"),
        store_lost: store_lost.clone(),
        data_dir: cfg.store.data_dir.clone(),
        flush_timeout: cfg.duration("store.flush_timeout"),
        ack_linger: cfg.duration("delivery.ack_linger"),
        min_free_bytes: cfg.store.min_free_mib.saturating_mul(1024 * 1024),
        record_commits: (!cfg.store.record_commits.is_empty()).then(|| std::path::PathBuf::from(&cfg.store.record_commits)),
    };
    // Loading the registry reads every topic and subscription (and installs the built-in
    // topics): blocking work. It starts the committer and the flusher on `core` and a lane per
    // subscription on `lanes`.
    let (load_store, sink, load_core, load_stop) = (store.clone(), dispatcher.clone(), core.clone(), ingest_stop.clone());
    let mut forward = None;
    let clustered = role.is_some();
    match role {
        None => {
            tokio::task::spawn_blocking(move || ingest::spawn(load_store, committer_cfg, queue, sink, &load_core, load_stop)).await??;
        }
        // A cluster's writer: the stream applied up to its end first, then the committer on it.
        Some(crate::cluster::Role::Writer { node, log, .. }) => {
            crate::cluster::follow::catch_up(&store, &node.reader, log.last_seq(), base_url, &committer_cfg.limits)
                .await
                .map_err(|e| RunError::Cluster(e.to_string()))?;
            load_core.spawn(crate::cluster::reports::receive(node.clone(), cfg.cluster.shards, ingest.clone(), load_stop.clone()));
            let log: Arc<dyn crate::commitlog::CommitLog> = log;
            tokio::task::spawn_blocking(move || ingest::spawn_with_log(load_store, log, committer_cfg, queue, sink, &load_core, load_stop))
                .await??;
        }
        // A follower: no committer (its queue carries only its lanes' reports, sent to the
        // writer; a write that reaches a handler answers 503); the stream applied up to its
        // end, then as it grows; writes forwarded to the writer.
        Some(crate::cluster::Role::Follower { node, ended }) => {
            load_core.spawn(crate::cluster::reports::send(node.clone(), node.shards.clone(), queue, load_stop.clone()));
            // Ready only once the stream as it is now is applied: a rejoining node does not
            // answer reads from a stale copy.
            let through = node.reader.last_seq().await.map_err(|e| RunError::Cluster(e.to_string()))?;
            crate::cluster::follow::catch_up(&store, &node.reader, through, base_url, &committer_cfg.limits)
                .await
                .map_err(|e| RunError::Cluster(e.to_string()))?;
            let (applied_tx, applied) = tokio::sync::watch::channel(store.log_seq());
            let client = reqwest::Client::builder().build()?;
            let tail = crate::cluster::follow::Tail {
                store: load_store,
                node: node.clone(),
                base_url: base_url.to_owned(),
                limits: committer_cfg.limits.clone(),
                sink,
            };
            load_core.spawn(crate::cluster::follow::tail(tail, applied_tx, load_stop, ended.clone()));
            forward = Some(Arc::new(crate::cluster::forward::Forwarder {
                node,
                client,
                applied,
                max_body_bytes: cfg.server.max_body_bytes,
                ended,
            }));
        }
    }
    lanes.spawn(crate::ops::audit::trim(store.clone(), cfg.admin.audit_keep, delivery.clone()));
    if let Some(mut changes) = shard_changes {
        let (d, until) = (dispatcher.clone(), delivery.clone());
        lanes.spawn(async move {
            loop {
                tokio::select! {
                    () = until.cancelled() => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        d.rebalance();
                    }
                }
            }
        });
    }
    let state = Arc::new(api::AppState {
        store: store.clone(),
        ingest,
        base_url: base_url.to_owned(),
        policy,
        max_bundle_entries: cfg.server.max_bundle_entries,
        search: api::search::plan::Limits {
            max_scan: cfg.search.max_scan,
            max_include: cfg.search.max_include,
            cheap_total: cfg.search.cheap_total,
            max_total: cfg.search.max_total,
            max_params: cfg.search.max_params,
        },
        hub,
        max_events_per_query: cfg.subscriptions.max_events_per_query,
        admin_token: (!cfg.admin.token.is_empty()).then(|| crate::secret::Secret::new(cfg.admin.token.clone())),
        top_subscriptions: cfg.admin.top_subscriptions,
        delivery_log,
        auth,
        rate_limit: api::ratelimit::RateLimiter::new(cfg.auth.rate_limit, cfg.auth.rate_burst),
        allow_plain_http: cfg.delivery.allow_plain_http,
        entities: crate::auth::Entities::new(&cfg.auth.entities, &cfg.auth.jwt_as_api_key_clients),
        audit,
        read_committed_timeout: cfg.duration("store.read_committed_timeout"),
    });
    Ok(Running {
        store,
        state,
        forward,
        clustered,
        dispatcher,
        max_body_bytes: cfg.server.max_body_bytes,
        body_memory_bytes: cfg.server.max_body_memory_mib.saturating_mul(1024 * 1024),
        delivery,
        ingest_stop,
        sockets,
        lanes,
        core,
        delivery_runtime,
    })
}

impl Running {
    /// The full router (`Gate::open` serves it).
    pub(crate) fn router(&self) -> axum::Router {
        let router = api::router(self.state.clone(), self.max_body_bytes);
        let router = match &self.forward {
            Some(f) => router.layer(axum::middleware::from_fn_with_state(f.clone(), crate::cluster::forward::forward)),
            None if self.clustered => {
                router.layer(axum::middleware::from_fn_with_state(self.store.clone(), crate::cluster::forward::stamp))
            }
            None => router,
        };
        // Outermost: a follower's forwarded writes hold their bodies in its memory too.
        api::with_body_budget(router, self.body_memory_bytes, self.max_body_bytes)
    }

    pub(crate) fn lane_count(&self) -> usize {
        self.dispatcher.lane_count()
    }

    /// The shutdown sequence; `server` is the HTTP server, already told to stop accepting.
    /// Each step gets what is left until `deadline`; a step that overruns is logged and left
    /// behind (whatever it had not finished was not acknowledged, or is retried after restart).
    /// `store_lost`: the store failed to write, so there is no final flush (what was
    /// acknowledged is durable already, and sled may never answer a flush after an IO error:
    /// the thread left waiting would keep the store's lock, and it could not be reopened).
    pub(crate) async fn stop(self, deadline: Instant, server: JoinHandle<std::io::Result<()>>, store_lost: bool) {
        // Delivery first: nothing it does must hold up the rest.
        self.delivery.cancel();
        // Open requests finish; the committer and flusher still run for them.
        let abort = server.abort_handle();
        if tokio::time::timeout_at(deadline, server).await.is_err() {
            abort.abort();
            tracing::warn!("requests still open at the end of server.shutdown_grace were cut off; their clients got no answer");
        }
        // Sockets saw `stop` and are closing with 1001.
        self.sockets.close();
        if tokio::time::timeout_at(deadline, self.sockets.wait()).await.is_err() {
            tracing::warn!("websockets did not close within server.shutdown_grace");
        }
        self.lanes.close();
        if tokio::time::timeout_at(deadline, self.lanes.wait()).await.is_err() {
            tracing::warn!("delivery lanes did not stop within server.shutdown_grace");
        }
        drop(self.state);
        drop(self.dispatcher);
        drop(self.delivery_runtime);
        // The committer commits what is queued (lane results included) and ends; the flusher
        // flushes that and ends. Waiting for both means the store is closed when `run` returns.
        self.ingest_stop.cancel();
        self.core.close();
        if tokio::time::timeout_at(deadline, self.core.wait()).await.is_err() {
            tracing::warn!("the committer did not stop within server.shutdown_grace");
        }
        let store = self.store;
        if store_lost {
            return;
        }
        // The last flush also records its count in herald.ack at once (not throttled), so a
        // store stopped cleanly is vouched for whole.
        match tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || store.flush_and_record())).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "final flush failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "final flush thread failed"),
            Err(_) => tracing::warn!("the final flush did not end within server.shutdown_grace"),
        }
    }
}
