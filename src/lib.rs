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
//! - `commitlog`: the commit format and the durability seam (`CommitLog`).
//! - `ingest`: the single-writer committer and group-commit flusher.
//! - `matching`, `notify`: pure stages.
//! - `outbox`: per-subscription durable lanes.
//! - `channels`: delivery lanes, rest-hook, websocket (bound sockets, binding tokens), retry
//!   policy, address guard.
//! - `api`: axum routes, and the `Gate` that answers `/healthz` and `/readyz` from the
//!   first moment. `config`: layered settings. `ops`: telemetry.
//! - `cluster`: cluster mode on NATS JetStream (elected writer, followers applying the log).
//! - `lifecycle`: start-up (store, search index, registry, lanes) and the shutdown sequence.

pub mod api;
pub mod auth;
pub mod channels;
pub mod cli;
pub mod cluster;
pub mod commitlog;
pub mod config;
pub mod fhir;
pub mod ingest;
mod lifecycle;
pub mod matching;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod registry;
pub mod secret;
pub mod store;
mod watchdog;
pub use watchdog::EXIT_STORE_STUCK;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testdata;

use std::future::{Future, IntoFuture};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

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
    #[error("a start-up task failed")]
    Task(#[from] tokio::task::JoinError),
    /// The store failed to apply or flush while serving (a full disk): what was acknowledged
    /// is durable; the store must be opened again from disk.
    #[error("the store failed to write")]
    StoreLost,
    /// A cluster node could not reach or use NATS JetStream.
    #[error("cluster: {0}")]
    Cluster(String),
}

/// An error and its sources, `: `-separated, for one log line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// After the shutdown grace, how long a failed store may take to be released (its handles
/// dropped) before the process exits for a restart (`watchdog`).
const STORE_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How a `serve` run ended (its shutdown sequence ran in every case).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `shutdown` completed.
    Stopped,
    /// The store (or, in a cluster, the commit log) failed while serving.
    StoreLost,
    /// A cluster role ended (`cluster::Role::ended`).
    RoleChange,
}

/// Runs Herald on `listener` until `shutdown` completes.
///
/// With `server.tls_cert` and `server.tls_key` it serves HTTPS (and wss) on `listener`; an
/// unreadable or unusable certificate or key is an error before anything is served.
/// The listener is served at once: `/healthz` answers 200 while the store opens and the search
/// index is checked or rebuilt, `/readyz` and every FHIR request answer 503 until Herald is
/// ready (`api::Gate`). When `shutdown` completes, Herald stops accepting, stops delivery (an
/// attempt in flight is retried after restart), lets open requests finish, closes websockets,
/// commits what is queued and flushes, all within `server.shutdown_grace`; when this returns
/// the store is closed. Crash safety never depends on this path.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    match serve(cfg, listener, shutdown, None).await? {
        Ended::StoreLost => Err(RunError::StoreLost),
        Ended::Stopped | Ended::RoleChange => Ok(()),
    }
}

/// `run`, in a cluster role when `role` is given (`cluster::node` runs it once per role).
pub(crate) async fn serve(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    role: Option<cluster::Role>,
) -> Result<Ended, RunError> {
    // Armed if the store fails while serving; disarmed here, once everything `serve_with`
    // held (every handle on the store) has been dropped.
    let watchdog = watchdog::Watchdog::default();
    let ended = serve_with(cfg, listener, shutdown, role, &watchdog).await;
    drop(watchdog);
    ended
}

async fn serve_with(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    role: Option<cluster::Role>,
    watchdog: &watchdog::Watchdog,
) -> Result<Ended, RunError> {
    let role_ended = role.as_ref().map(|r| r.ended().clone()).unwrap_or_default();
    let bound = listener.local_addr()?;
    // Before anything reads the model, the search parameters or the store.
    fhir::version::select(cfg.fhir_version()).map_err(|message| config::ConfigError::Invalid { key: "fhir.version", message })?;
    let base_url = cfg.base_url(bound);
    let authenticator = auth::Authenticator::from_config(&auth::AuthConfig {
        issuer: &cfg.auth.issuer,
        audience: &cfg.auth.audience,
        jwks_file: &cfg.auth.jwks_file,
        hs256_secrets: &cfg.auth.hs256_secrets,
        leeway: cfg.duration("auth.leeway"),
        api_keys: &cfg.auth.api_keys.iter().map(|k| (k.client.clone(), k.sha256.clone(), k.scopes.clone())).collect::<Vec<_>>(),
        jwt_as_api_key_clients: &cfg.auth.jwt_as_api_key_clients,
    })
    .map_err(|message| config::ConfigError::Invalid { key: "auth", message })?;
    if authenticator.is_none() {
        if !bound.ip().is_loopback() && !cfg.auth.allow_anonymous {
            return Err(config::ConfigError::Invalid {
                key: "auth",
                message: format!(
                    "no authentication is configured and Herald would listen on {bound}, beyond this machine; configure [auth] or pass --allow-anonymous"
                ),
            }
            .into());
        }
        tracing::warn!(listen = %bound, "NO AUTHENTICATION: every request is served anonymously with full access ([auth] is empty)");
    }
    let authenticator = authenticator.map(std::sync::Arc::new);
    // Read before anything is served, so that a bad certificate or key stops startup.
    let tls = match cfg.tls_files()? {
        Some((cert, key)) => Some(api::tls::server_config(cert, key)?),
        None => None,
    };
    let grace = cfg.duration("server.shutdown_grace");
    if cfg.server.base_url.is_empty() && bound.ip().is_unspecified() {
        tracing::warn!(%base_url, "server.base_url is empty, so notifications and Location headers name the bound address; set it to the URL clients use");
    }
    // `stop` fires when shutdown starts: the server stops accepting, websockets close, and an
    // index rebuild in progress is interrupted.
    let stop = CancellationToken::new();
    let stop_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop_signal.cancel();
    });
    let gate = api::Gate::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let edge = api::edge::Edge::spawn(listener, tls, cfg.server.max_connections_per_client)?;
    // `tap_io` with nothing to do: axum provides `ConnectInfo<SocketAddr>` (the peer address
    // the rate limits and loopback checks read) for a `TapIo` over any listener, not for ours.
    let server = tokio::spawn(
        axum::serve(edge.tap_io(|_| ()), api::front(gate.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    let began = Instant::now();
    tracing::info!(listen = %bound, scheme, "listening; starting (GET /readyz answers 200 once ready)");
    let store_lost = CancellationToken::new();
    let running = match lifecycle::start(&cfg, &base_url, &stop, authenticator, &store_lost, role).await {
        Ok(running) => running,
        Err(RunError::Store(store::StoreError::Interrupted)) => {
            tracing::info!("stopped during start-up; the search index rebuild starts again at the next start");
            let _ = tokio::time::timeout(grace, server).await;
            return Ok(Ended::Stopped);
        }
        Err(e) => {
            stop.cancel();
            let _ = tokio::time::timeout(grace, server).await;
            return Err(e);
        }
    };
    if !stop.is_cancelled() {
        gate.open(running.router());
        tracing::info!(
            listen = %bound,
            base_url = %base_url,
            data_dir = %cfg.store.data_dir.display(),
            lanes = running.lane_count(),
            startup_ms = began.elapsed().as_millis() as u64,
            "Herald ready"
        );
    }
    let ended = tokio::select! {
        () = stop.cancelled() => Ended::Stopped,
        () = store_lost.cancelled() => Ended::StoreLost,
        () = role_ended.cancelled() => Ended::RoleChange,
    };
    let lost = ended == Ended::StoreLost;
    if ended == Ended::RoleChange {
        tracing::info!("the cluster role changes; stopping this one");
        stop.cancel();
    }
    if lost {
        // sled keeps failing after an IO error (a full disk, a failing device): stop, and let
        // the caller open the store again from what is durable (`main` does, after a pause).
        tracing::error!("the store failed to write; stopping to reopen it from what is durable");
        stop.cancel();
        watchdog.arm(grace + STORE_RELEASE_TIMEOUT, "the failed store was not released");
    }
    let stopping = Instant::now();
    gate.stopping();
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: no new connections, delivery stopped, open requests finishing");
    running.stop(stopping + grace, server, lost).await;
    tracing::info!(millis = stopping.elapsed().as_millis() as u64, "Herald stopped");
    Ok(ended)
}
