//! The node loop: connect to NATS, keep (or wait for) the writer lease, and run Herald in the
//! role the lease gives, on one listener, until shutdown.
//!
//! Decisions:
//! - **The lease keeper** (`keep`) is one task for the node's life: without the lease it tries
//!   to acquire it every third of the TTL; with it, it renews it as often, and gives it up when
//!   a renewal is refused (someone else holds it) or when its own clock passes the lease's end
//!   without a renewal (it stops acting for the role at that instant, whether or not NATS
//!   answers). `held` tells the node loop; a role ends when `held` changes.
//! - **A writer's store is discarded when it stops being the writer** (and at start when the
//!   marker file `cluster-writer` says it was one): it applied commits before JetStream
//!   acknowledged them, and a commit the stream refused must not stay. The node rebuilds the
//!   store from the stream (snapshots are not built yet, so from the first commit).
//! - A writer whose log broke (fenced, or NATS unreachable past the publish retry window) gives
//!   the lease up, so that another node can take over at once.
//! - Anything else that ends a role (NATS unreachable at start, an apply error) is retried
//!   after a pause that grows to 5 s, until shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::snapshot::Snapshots;
use super::{LeaseBucket, Node, Role, LEASE_BUCKET, WRITER_LEASE};
use crate::commitlog::{JetStreamLog, LogReader, LogStream};
use crate::config::Config;
use crate::{Ended, RunError};

/// The file that says this data directory was a writer's (module doc).
const WRITER_MARKER: &str = crate::store::CLUSTER_WRITER;

/// The log stream the configuration names.
pub fn log_stream(cfg: &Config) -> LogStream {
    LogStream::new(&cfg.cluster.stream, "herald.log", cfg.cluster.replicas)
}

fn failed(what: &str, e: impl std::fmt::Display) -> RunError {
    RunError::Cluster(format!("{what}: {e}"))
}

/// Connects to the NATS servers of `cfg`, retrying until `stop`.
async fn connect(cfg: &Config, stop: &CancellationToken) -> Result<Option<async_nats::Client>, RunError> {
    let urls: Vec<String> = cfg.cluster.nats.split(',').map(|u| u.trim().to_owned()).collect();
    let mut pause = Duration::from_millis(200);
    loop {
        let options = async_nats::ConnectOptions::new()
            .name(format!("herald-{}", cfg.cluster.node_id))
            .retry_on_initial_connect()
            .max_reconnects(None);
        let attempt = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            c = tokio::time::timeout(Duration::from_secs(10), options.connect(urls.clone())) => c,
        };
        match attempt {
            Ok(Ok(client)) => return Ok(Some(client)),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to NATS yet"),
            Err(_) => tracing::warn!("cannot connect to NATS yet (no answer in 10 s)"),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Removes everything in `dir` (the store of a former writer).
fn wipe(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn mark_writer(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join(WRITER_MARKER))?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Keeps the writer lease (module doc) until `stop`; `release` asks it to give the lease up.
async fn keep(
    leases: LeaseBucket,
    holder: String,
    held: watch::Sender<bool>,
    mut release: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
) {
    let every = leases.ttl() / 3;
    let mut lease = None;
    let mut hold_off_until = tokio::time::Instant::now();
    let mut first = true;
    loop {
        match lease.take() {
            None if tokio::time::Instant::now() >= hold_off_until => {
                match tokio::time::timeout(every, leases.acquire(WRITER_LEASE, &holder)).await {
                    Ok(Ok(Some(l))) => {
                        tracing::info!("won the writer lease");
                        lease = Some(l);
                        held.send_replace(true);
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot ask for the writer lease"),
                    Err(_) => tracing::warn!("asking for the writer lease timed out"),
                }
            }
            None => {}
            Some(mut l) => {
                let renewed = tokio::time::timeout(every, leases.renew(&mut l)).await;
                match renewed {
                    Ok(Ok(())) => lease = Some(l),
                    Ok(Err(super::LeaseError::Lost { .. })) => {
                        tracing::warn!("the writer lease was lost to another node");
                        held.send_replace(false);
                    }
                    Ok(Err(e)) if std::time::Instant::now() + every < l.valid_until() => {
                        tracing::warn!(error = %e, "cannot renew the writer lease yet");
                        lease = Some(l);
                    }
                    Ok(Err(_)) | Err(_) => {
                        tracing::warn!("the writer lease could not be renewed before it ends; leaving the writer role");
                        held.send_replace(false);
                    }
                }
            }
        }
        if std::mem::take(&mut first) && lease.is_none() {
            // The first answer decides the node's first role: tell it now, not after the TTL.
            held.send_replace(false);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
            Some(()) = release.recv() => {
                if let Some(l) = lease.take() {
                    held.send_replace(false);
                    let _ = leases.release(l).await;
                }
                // Let another node take it first.
                hold_off_until = tokio::time::Instant::now() + leases.ttl();
            }
        }
    }
    if let Some(l) = lease {
        let _ = leases.release(l).await;
    }
}

/// Restores the snapshot into `dir` when the store there is empty and a snapshot exists, or
/// when the stream no longer holds the commit after the store's last (`snapshot`).
async fn restore_if_needed(dir: &Path, node: &Node) -> Result<(), RunError> {
    let first = node.reader.first_seq().await.map_err(|e| failed("the commit log", e))?;
    let newest = node.snapshots.newest().await.map_err(|e| failed("the snapshot bucket", e))?;
    let at = dir.to_path_buf();
    let local = tokio::task::spawn_blocking(move || crate::store::Store::open(&at).map(|s| s.log_seq())).await??;
    let behind = local + 1 < first;
    if !(behind || (local == 0 && newest.is_some())) {
        return Ok(());
    }
    let Some(seq) = newest else {
        return Err(RunError::Cluster(format!(
            "the commit log starts at {first}, this store ends at {local}, and there is no snapshot to restore"
        )));
    };
    if seq + 1 < first {
        return Err(RunError::Cluster(format!("the newest snapshot ({seq}) is older than the commit log's start ({first})")));
    }
    tracing::info!(local, seq, first, "restoring this node's store from the newest snapshot");
    wipe(dir)?;
    let at = dir.to_path_buf();
    let store = tokio::task::spawn_blocking(move || crate::store::Store::open(&at)).await??;
    let restored = node.snapshots.restore(&store).await.map_err(|e| failed("restoring the snapshot", e))?;
    drop(store);
    tracing::info!(seq = restored, "store restored from the snapshot; the stream is applied from the next commit");
    Ok(())
}

/// Runs a cluster node on `listener` until `stop` (module doc).
pub async fn serve(cfg: Config, listener: std::net::TcpListener, stop: CancellationToken) -> Result<(), RunError> {
    crate::fhir::version::select(cfg.fhir_version())
        .map_err(|message| crate::config::ConfigError::Invalid { key: "fhir.version", message })?;
    let bound = listener.local_addr()?;
    let Some(client) = connect(&cfg, &stop).await? else { return Ok(()) };
    let js = async_nats::jetstream::new(client.clone());
    let ttl = cfg.duration("cluster.lease_ttl");
    let on = log_stream(&cfg);
    let (leases, reader, snapshots) = loop {
        let opened = async {
            let leases =
                LeaseBucket::open(&js, LEASE_BUCKET, ttl, cfg.cluster.replicas).await.map_err(|e| failed("the lease bucket", e))?;
            let reader = LogReader::open(client.clone(), &on).await.map_err(|e| failed("the commit log", e))?;
            let snapshots = Snapshots::open(&js, cfg.cluster.replicas).await.map_err(|e| failed("the snapshot bucket", e))?;
            Ok::<_, RunError>((leases, reader, snapshots))
        };
        match opened.await {
            Ok(parts) => break parts,
            // JetStream error 10074: the server is not clustered, and no retry changes that.
            Err(e) if e.to_string().contains("error code 10074") => {
                return Err(crate::config::ConfigError::Invalid {
                    key: "cluster.replicas",
                    message: format!(
                        "{} replicas need a JetStream cluster of at least as many NATS servers, and the NATS server is not clustered ({e}); set cluster.replicas = 1 (HERALD_CLUSTER__REPLICAS=1) for a single NATS server",
                        cfg.cluster.replicas
                    ),
                }
                .into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "JetStream is not ready yet");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let advertise = if cfg.cluster.advertise_url.is_empty() { format!("http://{bound}") } else { cfg.cluster.advertise_url.clone() };
    if cfg.cluster.advertise_url.is_empty() && bound.ip().is_unspecified() {
        tracing::warn!(%advertise, "cluster.advertise_url is empty and Herald listens on every address: other nodes cannot forward writes to it; set it");
    }
    let (shards_tx, shards_rx) = watch::channel(super::shards::Held::default());
    let shard_stop = CancellationToken::new();
    let shard_keeper =
        tokio::spawn(super::shards::keep(leases.clone(), cfg.cluster.node_id.clone(), cfg.cluster.shards, shards_tx, shard_stop.clone()));
    let node = Arc::new(Node {
        node_id: cfg.cluster.node_id.clone(),
        client: client.clone(),
        log_subject: on.subject.clone(),
        advertise_url: advertise.clone(),
        leases: leases.clone(),
        reader,
        forward_timeout: cfg.duration("cluster.forward_timeout"),
        snapshots,
        snapshot_every: cfg.cluster.snapshot_every,
        shards: super::shards::Shards { count: cfg.cluster.shards, held: shards_rx },
    });
    let dir = cfg.store.data_dir.clone();
    if dir.join(WRITER_MARKER).exists() {
        tracing::info!(dir = %dir.display(), "this data directory was a writer's: rebuilding it from the commit log");
        wipe(&dir)?;
    }
    let (held_tx, mut held) = watch::channel(false);
    let (release_tx, release_rx) = mpsc::unbounded_channel();
    let keeper_stop = CancellationToken::new();
    let keeper = tokio::spawn(keep(leases, format!("{} {advertise}", cfg.cluster.node_id), held_tx, release_rx, keeper_stop.clone()));
    // The keeper's first answer decides the first role.
    let _ = tokio::time::timeout(ttl, held.changed()).await;
    let mut pause = Duration::from_millis(500);
    let outcome = loop {
        if stop.is_cancelled() {
            break Ok(());
        }
        if let Err(e) = restore_if_needed(&dir, &node).await {
            tracing::warn!(error = %crate::error_chain(&e), "cannot bring this node's store up to the commit log yet");
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
            continue;
        }
        let writer = *held.borrow_and_update();
        let ended = CancellationToken::new();
        let role = if writer {
            let log = match JetStreamLog::open(client.clone(), &on).await {
                Ok(log) => Arc::new(log),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the commit log to write; giving the lease up");
                    let _ = release_tx.send(());
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            mark_writer(&dir)?;
            Role::Writer { node: node.clone(), log, ended: ended.clone() }
        } else {
            Role::Follower { node: node.clone(), ended: ended.clone() }
        };
        // The role ends when the lease changes hands.
        let mut watching = held.clone();
        let on_change = ended.clone();
        let watcher = tokio::spawn(async move {
            if watching.wait_for(|h| *h != writer).await.is_ok() {
                on_change.cancel();
            }
        });
        tracing::info!(node = %cfg.cluster.node_id, role = if writer { "writer" } else { "follower" }, "starting the role");
        let serving = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
        let result = crate::serve(cfg.clone(), serving, stop.clone().cancelled_owned(), Some(role)).await;
        watcher.abort();
        match result {
            Ok(Ended::Stopped) => break Ok(()),
            Ok(Ended::RoleChange) => pause = Duration::from_millis(500),
            Ok(Ended::StoreLost) => {
                tracing::warn!("the role's store or log failed; starting over");
                if writer {
                    let _ = release_tx.send(());
                }
            }
            // What no retry can fix (configuration, a data directory Herald must not serve)
            // stops the node, as it stops a single node.
            Err(
                e @ (RunError::Config(_)
                | RunError::Search(_)
                | RunError::Client(_)
                | RunError::Store(crate::store::StoreError::Refused(_))),
            ) => break Err(e),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "the role stopped with an error; starting over");
                if writer {
                    let _ = release_tx.send(());
                }
            }
        }
        if writer {
            wipe(&dir)?;
        }
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    };
    keeper_stop.cancel();
    shard_stop.cancel();
    let _ = keeper.await;
    let _ = shard_keeper.await;
    client.flush().await.ok();
    outcome
}
