//! The HTTP API (axum): FHIR REST at `/fhir`, operations, health. Handlers parse and check the
//! request, then hand writes to `ingest` and read from `store`; none writes the store itself.
//!
//! - `health`: `/healthz` (liveness), `/readyz` (readiness) and the start-up `Gate` in front
//!   of the full router.
//! - `rest`: create, read, vread, update, delete, history.
//! - `conditional`: conditional create, update, delete and read, and the gate that makes a
//!   condition and its write atomic.
//! - `search`: type-level search (`GET /fhir/{type}?...`, `POST /fhir/{type}/_search`).
//! - `patch`: PATCH (JSON Patch and FHIRPath Patch), alone and in Bundles.
//! - `bundle`: batch and transaction Bundles at `POST /fhir`.
//! - `status`: `$status` (instance and type level).
//! - `events`: `$events` (instance level): stored events as the versions they saw.
//! - `ws`: `$get-ws-binding-token` and the websocket endpoint (`/fhir/$subscription-ws`).
//! - `sidecar`: `POST /fhir/$ingest`, changes fed by another FHIR server.
//! - `capability`: `GET /fhir/metadata`.
//! - `outcome`, `extract`: errors as OperationOutcomes, request bodies.
//! - `mime`: the `fhirVersion` MIME-type parameter (415 / 406 for another FHIR version).
//! - `edge`, `tls`: the listener itself: TLS (rustls) and connections per client.

mod access;
mod admin;
mod budget;
mod bundle;
mod capability;
mod committed;
mod conditional;
pub mod edge;
mod emit;
mod events;
mod extract;
mod health;
mod mime;
pub mod outcome;
mod patch;
pub mod ratelimit;
pub mod redact;
mod resend;
mod rest;
pub mod search;
mod sidecar;
mod status;
pub mod tls;
mod ws;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tracing::Instrument;

use crate::auth::Perm;
use crate::channels::guard::AddressPolicy;
use crate::channels::websocket::Hub;
use crate::fhir::IssueType;
use crate::ingest::Ingest;
use crate::store::Store;
pub use health::{front, Gate, Phase};
use outcome::ApiError;

/// What handlers share.
pub struct AppState {
    pub store: Store,
    pub ingest: Ingest,
    pub base_url: String,
    pub policy: AddressPolicy,
    pub max_bundle_entries: usize,
    pub search: search::plan::Limits,
    /// Websocket binding tokens and the websocket lanes sockets bind to.
    pub hub: Arc<Hub>,
    /// `subscriptions.max_events_per_query`: the most events one `$events` returns.
    pub max_events_per_query: usize,
    /// `admin.token`; `None`: operator surfaces answer loopback clients only.
    pub admin_token: Option<crate::secret::Secret<String>>,
    /// `admin.top_subscriptions`.
    pub top_subscriptions: usize,
    pub delivery_log: Arc<crate::ops::delivery_log::DeliveryLog>,
    /// `[auth]`; `None`: anonymous access (loopback only, unless allowed).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// `auth.rate_limit`; `None`: no limit.
    pub rate_limit: Option<ratelimit::RateLimiter>,
    /// `delivery.allow_plain_http`: full-resource over plain http to public endpoints.
    pub allow_plain_http: bool,
    /// `auth.entities`: who shares a subscription through its `managingEntity`.
    pub entities: crate::auth::Entities,
    /// The audit trail's writer, for what requests record outside any commit.
    pub audit: Arc<crate::ops::audit::AuditWriter>,
    /// `store.read_committed_timeout`: how long a read waits for what it saw to be durable.
    pub read_committed_timeout: std::time::Duration,
}

pub type Shared = Arc<AppState>;

/// What a route needs before it touches data. The handler enforces it on the target it
/// resolved (after decoding path, query and body), through `access::Access`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the CapabilityStatement, and the websocket endpoint (its binding token is the
    /// credential, checked again at bind time).
    Nothing,
    /// A scope granting the permission on every resource type (side-car feeds, `$emit`).
    Everything(Perm),
    /// The permission on the path's resource type; a search returns, counts and includes
    /// only what the caller may see, a create must land in the caller's patient compartment.
    Type(Perm),
    /// The permission on the type, and the stored version the interaction reads or replaces:
    /// in the caller's patient compartment (for `patient/`-only scopes), one of the caller's
    /// Subscriptions. Otherwise 404, as if it did not exist.
    Instance(Perm),
    /// An operation on Subscriptions, named in the path, in an `id` list in the query, or in
    /// a `Parameters` body: every one must be the caller's (404 otherwise); a type-level
    /// listing shows only the caller's.
    Subscriptions(Perm),
    /// A batch or transaction: every entry is checked as the route it stands for.
    Entries,
}

/// One FHIR route: its path template, its methods with what each needs, and its handlers.
/// `HEAD` is answered wherever `GET` is, by the same handler, with the same checks.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [(&'static str, Needs)],
    handler: fn() -> MethodRouter<Shared>,
}

/// Every FHIR route. The router is built from this table, so a route cannot exist without a
/// row saying what it needs (`tests/it/access.rs` walks it).
pub static ROUTES: &[Route] = &[
    Route { path: "/fhir", methods: &[("POST", Needs::Entries)], handler: || post(bundle::batch_or_transaction) },
    Route { path: "/fhir/", methods: &[("POST", Needs::Entries)], handler: || post(bundle::batch_or_transaction) },
    Route { path: "/fhir/metadata", methods: &[("GET", Needs::Nothing)], handler: || get(capability::metadata) },
    Route { path: "/fhir/$subscription-ws", methods: &[("GET", Needs::Nothing)], handler: || get(ws::upgrade) },
    Route { path: "/fhir/$ingest", methods: &[("POST", Needs::Everything(Perm::Create))], handler: || post(sidecar::ingest) },
    Route { path: "/fhir/SubscriptionTopic/$emit", methods: &[("POST", Needs::Everything(Perm::Create))], handler: || post(emit::emit) },
    Route {
        path: "/fhir/Subscription/$status",
        methods: &[("GET", Needs::Subscriptions(Perm::Search)), ("POST", Needs::Subscriptions(Perm::Search))],
        handler: || get(status::type_level).post(status::type_level_post),
    },
    Route {
        path: "/fhir/Subscription/{id}/$status",
        methods: &[("GET", Needs::Subscriptions(Perm::Read)), ("POST", Needs::Subscriptions(Perm::Read))],
        handler: || get(status::instance).post(status::instance),
    },
    Route {
        path: "/fhir/Subscription/{id}/$resend",
        methods: &[("POST", Needs::Subscriptions(Perm::Read))],
        handler: || post(resend::resend_post),
    },
    Route {
        path: "/fhir/Subscription/{id}/$dead-letters",
        methods: &[("GET", Needs::Subscriptions(Perm::Read))],
        handler: || get(resend::dead_letters),
    },
    Route {
        path: "/fhir/Subscription/{id}/$events",
        methods: &[("GET", Needs::Subscriptions(Perm::Read)), ("POST", Needs::Subscriptions(Perm::Read))],
        handler: || get(events::instance).post(events::instance_post),
    },
    Route {
        path: "/fhir/Subscription/$get-ws-binding-token",
        methods: &[("GET", Needs::Subscriptions(Perm::Read)), ("POST", Needs::Subscriptions(Perm::Read))],
        handler: || get(ws::token_type_level).post(ws::token_type_level_post),
    },
    Route {
        path: "/fhir/Subscription/{id}/$get-ws-binding-token",
        methods: &[("GET", Needs::Subscriptions(Perm::Read)), ("POST", Needs::Subscriptions(Perm::Read))],
        handler: || get(ws::token_instance).post(ws::token_instance),
    },
    Route {
        path: "/fhir/{type}",
        methods: &[
            ("GET", Needs::Type(Perm::Search)),
            ("POST", Needs::Type(Perm::Create)),
            ("PUT", Needs::Type(Perm::Update)),
            ("DELETE", Needs::Type(Perm::Delete)),
        ],
        handler: || get(search::search).post(rest::create).put(conditional::update).delete(conditional::delete),
    },
    Route { path: "/fhir/{type}/_search", methods: &[("POST", Needs::Type(Perm::Search))], handler: || post(search::search_post) },
    Route {
        path: "/fhir/{type}/{id}",
        methods: &[
            ("GET", Needs::Instance(Perm::Read)),
            ("PUT", Needs::Instance(Perm::Update)),
            ("PATCH", Needs::Instance(Perm::Update)),
            ("DELETE", Needs::Instance(Perm::Delete)),
        ],
        handler: || get(rest::read).put(rest::update).patch(patch::patch).delete(rest::delete),
    },
    Route { path: "/fhir/{type}/{id}/_history", methods: &[("GET", Needs::Instance(Perm::Read))], handler: || get(rest::history) },
    Route { path: "/fhir/{type}/{id}/_history/{vid}", methods: &[("GET", Needs::Instance(Perm::Read))], handler: || get(rest::vread) },
];

impl Route {
    /// What `method` needs on this route (`HEAD` as `GET`); `None`: the route does not
    /// answer it.
    pub fn needs(&self, method: &axum::http::Method) -> Option<Needs> {
        let method = if method == axum::http::Method::HEAD { "GET" } else { method.as_str() };
        self.methods.iter().find(|(m, _)| *m == method).map(|(_, n)| *n)
    }
}

/// The row of `ROUTES` whose template is `matched` (axum's `MatchedPath`).
pub fn route_for(matched: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == matched)
}

/// The full router, served through the `Gate` once Herald is ready (see `health`); the
/// caller puts [`with_body_budget`] around it and around whatever else it layers on (a
/// follower's forwarding reads bodies too).
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    let mut fhir = Router::new();
    for route in ROUTES {
        fhir = fhir.route(route.path, (route.handler)());
    }
    // Authentication only: what each request may touch is decided in its handler. The
    // `fhirVersion` MIME parameter is checked first (415/406 say nothing about any data).
    let fhir = fhir
        .route_layer(middleware::from_fn_with_state(state.clone(), committed::read_committed))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::authenticate))
        .route_layer(middleware::from_fn(mime::fhir_version));
    let operator = Router::new()
        .route("/metrics", get(admin::metrics_text))
        .route("/admin/api/summary", get(admin::summary_json))
        .route("/admin/api/subscriptions/{id}", get(admin::subscription_json))
        .route("/admin/api/subscriptions/{id}/replay", post(admin::replay))
        .route("/admin/api/audit", get(admin::audit_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin::guard));
    Router::new()
        .merge(operator)
        // The page holds no data; its API calls are guarded (the page asks for the token).
        .route("/admin/", get(admin::dashboard))
        .merge(fhir)
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(fhir_errors))
        .layer(middleware::from_fn(request_span))
        .with_state(state)
}

/// `router` (and any layer around it) with request bodies bounded by `server.max_body_memory_mib`
/// (`budget`): the outermost layer, so that every body read in this process is counted.
pub fn with_body_budget(router: Router, body_memory_bytes: usize, max_body_bytes: usize) -> Router {
    router.layer(middleware::from_fn_with_state(budget::BodyBudget::new(body_memory_bytes, max_body_bytes), budget::body_budget))
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, IssueType::NotFound, format!("no FHIR interaction at {} {}", req.method(), req.uri().path()))
}

/// Under `/fhir`, an error the router or an extractor answered itself (405 with an `Allow`
/// header, a path it could not parse, ...) in plain text becomes an OperationOutcome with the
/// same status and headers, so that FHIR clients always get one.
async fn fhir_errors(req: Request, next: Next) -> Response {
    let fhir = req.uri().path() == "/fhir" || req.uri().path().starts_with("/fhir/");
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("json"));
    if !fhir || !(status.is_client_error() || status.is_server_error()) || json || status == StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = parts.headers.get(axum::http::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                format!("method not allowed here; allowed: {allow}")
            }
            other => other.canonical_reason().unwrap_or("request failed").to_owned(),
        },
    };
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => IssueType::NotSupported,
        StatusCode::NOT_FOUND => IssueType::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => IssueType::TooCostly,
        s if s.is_server_error() => IssueType::Exception,
        _ => IssueType::Invalid,
    };
    let mut oo = ApiError::new(status, code, text).into_response();
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in parts.headers.iter() {
        oo.headers_mut().insert(name.clone(), value.clone());
    }
    oo
}

/// One span per request, named by its matched route; logs the outcome at `debug`.
async fn request_span(req: Request, next: Next) -> Response {
    // The field values are computed only when the span is enabled (debug), not per request.
    let span = tracing::debug_span!(
        "http.request",
        request_id = %uuid::Uuid::new_v4().simple(),
        method = %req.method(),
        route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()),
        http.status = tracing::field::Empty
    );
    async move {
        let started = std::time::Instant::now();
        let method = req.method().as_str().to_owned();
        let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let resp = next.run(req).await;
        tracing::Span::current().record("http.status", resp.status().as_u16());
        let m = crate::ops::metrics::metrics();
        let status = format!("{}xx", resp.status().as_u16() / 100);
        m.http_requests.get_or_create(&crate::ops::metrics::HttpLabels { method, route, status }).inc();
        m.http_duration.get_or_create(&crate::ops::metrics::Metrics::channel("api")).observe(started.elapsed().as_secs_f64());
        tracing::debug!(micros = started.elapsed().as_micros() as u64, "request done");
        resp
    }
    .instrument(span)
    .await
}
