//! Liveness, readiness and the start-up gate.
//!
//! `herald::run` serves the listener from its first moment, before the store is open, with the
//! router `front`: `GET /healthz` (liveness) answers 200 for as long as the process serves
//! HTTP, also while the store opens and the search index is rebuilt (minutes on a large
//! store); `GET /readyz` answers 200 only once Herald is ready (store open, index checked or
//! rebuilt, registry loaded, lanes started) and 503 before that and once shutdown has begun.
//! Every other request answers 503 `transient` with `Retry-After` until ready, then goes to the
//! full router (`api::router`), which the gate holds from `Gate::open` on. It never writes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

use super::outcome::ApiError;
use crate::fhir::IssueType;

/// Where this process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Serving `/healthz` and `/readyz`; the store, index, registry or lanes are not up yet.
    Starting,
    /// Everything is served.
    Ready,
    /// Shutdown has begun: not ready; open requests still finish.
    Stopping,
}

/// The phase and, once ready, the full router.
pub struct Gate {
    phase: AtomicU8,
    app: OnceLock<Router>,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate { phase: AtomicU8::new(Phase::Starting as u8), app: OnceLock::new() })
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Stopping,
        }
    }

    /// Ready: requests go to `app` from now on (the first router given wins).
    pub fn open(&self, app: Router) {
        let _ = self.app.set(app);
        // Never back from Stopping: a stop during start-up stays a stop.
        let _ = self.phase.compare_exchange(Phase::Starting as u8, Phase::Ready as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown has begun: `/readyz` answers 503 from now on.
    pub fn stopping(&self) {
        self.phase.store(Phase::Stopping as u8, Ordering::Release);
    }
}

/// The router the listener serves: health endpoints, then the gated full router.
pub fn front(gate: Arc<Gate>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).fallback(forward).with_state(gate)
}

/// Liveness: the process is serving HTTP. 200 in every phase (the body names it).
async fn healthz(State(gate): State<Arc<Gate>>) -> Response {
    let body = match gate.phase() {
        Phase::Starting => "starting",
        Phase::Ready => "ok",
        Phase::Stopping => "stopping",
    };
    (StatusCode::OK, body).into_response()
}

/// Readiness: 200 only while ready.
async fn readyz(State(gate): State<Arc<Gate>>) -> Response {
    match gate.phase() {
        Phase::Ready => (StatusCode::OK, "ready").into_response(),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
        Phase::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response(),
    }
}

async fn forward(State(gate): State<Arc<Gate>>, req: Request) -> Response {
    match gate.app.get() {
        // Routers are infallible services; cloning one clones an `Arc`.
        Some(app) => match app.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            "Herald is starting (opening the store, checking the search index, loading subscriptions); retry shortly",
        )
        .into_response(),
    }
}
