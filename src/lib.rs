//! Herald: a FHIR R5 topic-based subscription broker.
//!
//! A change enters through `api` (FHIR REST, transaction/batch Bundles, side-car `$ingest`),
//! `ingest` commits it with its matched events in one atomic, flushed store commit, and only
//! then answers; `channels` lanes pull the events from the `outbox` and deliver them, in order,
//! per subscription:
//!
//! ```text
//! api ─▶ ingest ─▶ matching ─▶ outbox (store) ─▶ channels ─▶ rest-hook endpoint / bound websockets
//!          │  (registry: topics, subscriptions)        ▲
//!          └──────────── notify (bundle shapes) ───────┘
//! ```
//!
//! - `fhir`: shared vocabulary (types, ids, topics, subscriptions, search parameters); no IO.
//! - `store`: the only code that names sled.
//! - `registry`: topics and subscriptions bound for matching.
//! - `ingest`: the single-writer committer and group-commit flusher.
//! - `matching`, `notify`: pure stages.
//! - `outbox`: per-subscription durable lanes.
//! - `channels`: delivery lanes, rest-hook, websocket (bound sockets, binding tokens), retry
//!   policy, address guard.
//! - `api`: axum routes. `config`: layered settings. `ops`: telemetry.

pub mod api;
pub mod channels;
pub mod cli;
pub mod config;
pub mod fhir;
pub mod ingest;
pub mod matching;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod registry;
pub mod secret;
pub mod store;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channels::guard::AddressPolicy;
use crate::channels::websocket::{Hub, WsConfig};
use crate::channels::{DeliveryConfig, Dispatcher, RetryPolicy};
use crate::config::Config;
use crate::fhir::subscription::SubscriptionLimits;
use crate::ingest::CommitterConfig;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the store")]
    Store(#[from] store::StoreError),
    #[error("cannot start the write path")]
    Ingest(#[from] ingest::IngestError),
    #[error("cannot build the delivery client")]
    Client(#[from] reqwest::Error),
    #[error("cannot load search parameters")]
    Search(#[from] fhir::search::SearchError),
    #[error("invalid configuration")]
    Config(#[from] config::ConfigError),
    #[error("server failed")]
    Io(#[from] std::io::Error),
}

/// Runs Herald on `listener` until `shutdown` completes: stops accepting, lets open requests
/// finish, stops delivery (in-flight attempts are retried after restart), flushes, returns.
/// Crash safety never depends on this path.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let bound = listener.local_addr()?;
    let base_url = cfg.base_url(bound);
    fhir::search::SearchParams::r5()?;
    let index_set = cfg.search.index_set()?;
    let (store, rebuilt) = store::Store::open_indexed(&cfg.store.data_dir, index_set, &base_url)?;
    let store = store.with_scan_limit(cfg.search.max_scan);
    if let Some(check) = rebuilt {
        tracing::info!(resources = check.resources, entries = check.expected, "search index rebuilt for the configured index set");
    }
    let policy =
        AddressPolicy { allow_all_private: cfg.delivery.allow_private_endpoints, allow_nets: cfg.delivery.allow_private_networks.clone() };
    let delivery = DeliveryConfig {
        default_timeout: cfg.duration("delivery.default_timeout"),
        retry: RetryPolicy {
            initial_interval: cfg.duration("delivery.initial_interval"),
            multiplier: cfg.delivery.multiplier,
            max_interval: cfg.duration("delivery.max_interval"),
            randomization_factor: cfg.delivery.randomization_factor,
            max_attempts: cfg.delivery.max_attempts,
            max_age: cfg.duration("delivery.max_age"),
        },
        max_concurrent: cfg.delivery.max_concurrent,
        signing_keys: cfg.delivery.signing_secrets.keys()?,
    };
    let cancel = CancellationToken::new();
    // `stop` fires when shutdown starts: the server stops accepting and websockets close.
    let stop = CancellationToken::new();
    let sockets = TaskTracker::new();
    let hub = Arc::new(Hub::new(
        WsConfig {
            url: cfg.websocket_url(&base_url),
            token_lifetime: cfg.duration("websocket.token_lifetime"),
            max_message_bytes: cfg.websocket.max_message_bytes,
            send_buffer: cfg.websocket.send_buffer,
            send_timeout: cfg.duration("websocket.send_timeout"),
            max_connections: cfg.websocket.max_connections,
        },
        stop.clone(),
        sockets.clone(),
    ));
    let delivery_log = Arc::new(ops::delivery_log::DeliveryLog::new(cfg.admin.delivery_log));
    let lanes = TaskTracker::new();
    let core = TaskTracker::new();
    let (ingest, queue) = ingest::channel(cfg.ingest.queue_depth);
    let client = channels::rest_hook::RestHookClient::new(policy.clone())?;
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        ingest.clone(),
        client,
        delivery,
        base_url.clone(),
        cancel.clone(),
        lanes.clone(),
        hub.clone(),
        delivery_log.clone(),
    ));
    let committer_cfg = CommitterConfig {
        base_url: base_url.clone(),
        limits: SubscriptionLimits {
            max_timeout_secs: cfg.duration("subscriptions.max_timeout").as_secs(),
            max_heartbeat_secs: cfg.duration("subscriptions.max_heartbeat_period").as_secs(),
            max_count: cfg.subscriptions.max_count,
        },
        enforce_task_state_machine: cfg.ingest.enforce_task_state_machine,
        retention: ingest::Retention {
            keep: cfg.subscriptions.events_keep,
            max_age: cfg.duration("subscriptions.events_max_age"),
            interval: cfg.duration("subscriptions.events_prune_interval"),
        },
    };
    let ingest_stop = CancellationToken::new();
    ingest::spawn(store.clone(), committer_cfg, queue, dispatcher.clone(), &core, ingest_stop.clone())?;
    let state = Arc::new(api::AppState {
        store: store.clone(),
        ingest,
        base_url: base_url.clone(),
        policy,
        max_bundle_entries: cfg.server.max_bundle_entries,
        search: api::search::plan::Limits {
            max_scan: cfg.search.max_scan,
            max_include: cfg.search.max_include,
            cheap_total: cfg.search.cheap_total,
        },
        ready: AtomicBool::new(false),
        hub,
        max_events_per_query: cfg.subscriptions.max_events_per_query,
        admin_token: (!cfg.admin.token.is_empty()).then(|| secret::Secret::new(cfg.admin.token.clone())),
        top_subscriptions: cfg.admin.top_subscriptions,
        delivery_log: delivery_log.clone(),
    });
    let app = api::router(state.clone(), cfg.server.max_body_bytes);
    state.ready.store(true, Ordering::Release);
    tracing::info!(listen = %bound, base_url = %base_url, data_dir = %cfg.store.data_dir.display(), lanes = dispatcher.lane_count(), "Herald ready");
    let stop_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_signal.cancel();
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await?;
    tracing::info!("shutting down: delivery stopping, store flushing");
    let grace = cfg.duration("server.shutdown_grace");
    // Sockets saw `stop` and are closing (1001); give them the grace period too.
    sockets.close();
    if tokio::time::timeout(grace, sockets.wait()).await.is_err() {
        tracing::warn!("websockets did not close within the grace period");
    }
    cancel.cancel();
    lanes.close();
    if tokio::time::timeout(grace, lanes.wait()).await.is_err() {
        tracing::warn!("delivery lanes did not stop within the grace period");
    }
    drop(state);
    drop(dispatcher);
    // No request can arrive any more: the committer commits what is queued and ends, the
    // flusher flushes and ends; wait for both so that returning from `run` means the store is
    // closed (a new server may open it at once).
    ingest_stop.cancel();
    core.close();
    if tokio::time::timeout(grace, core.wait()).await.is_err() {
        tracing::warn!("ingest did not stop within the grace period");
    }
    let flush_store = store.clone();
    match tokio::task::spawn_blocking(move || flush_store.flush()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
        Err(e) => tracing::error!(error = %e, "final flush thread failed"),
    }
    Ok(())
}
