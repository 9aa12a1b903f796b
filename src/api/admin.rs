//! Operator surfaces: `GET /metrics` (Prometheus) and the dashboard with its API under
//! `/admin`.
//!
//! Protected separately from the FHIR API: with `admin.token` set, every request needs
//! `Authorization: Bearer <token>` (compared in constant time); without one, only clients on a
//! loopback address are served. Anyone else gets 401 or 403 and nothing else.

use std::net::SocketAddr;

use std::collections::HashMap;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use serde_json::{json, Value};

use crate::fhir::instant::{format_millis, now_millis};
use crate::fhir::subscription::{fields, ContentLevel};
use crate::fhir::types::is_valid_id;
use crate::ingest::{IngestError, ResendRange};
use crate::matching::criteria_errors_total;
use crate::ops::delivery_log::DeliveryLog;
use crate::ops::metrics::{metrics, StatusLabels, SubscriptionLabels};
use crate::secret::Secret;
use crate::store::{StoreError, SubState, SubStatus};

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a request with `headers` from `peer` may use the operator surfaces.
fn allowed(token: Option<&Secret<String>>, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), StatusCode> {
    match token {
        Some(token) => {
            let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if same(g.trim().as_bytes(), token.expose().as_bytes()) => Ok(()),
                _ => Err(StatusCode::UNAUTHORIZED),
            }
        }
        None if peer.is_some_and(|p| p.ip().is_loopback()) => Ok(()),
        None => Err(StatusCode::FORBIDDEN),
    }
}

/// Middleware for every operator route.
pub(super) async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    match allowed(state.admin_token.as_ref(), req.headers(), peer) {
        Ok(()) => next.run(req).await,
        Err(StatusCode::UNAUTHORIZED) => {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer realm=\"herald-admin\"")], "admin token required")
                .into_response()
        }
        Err(status) => (status, "operator endpoints answer loopback clients only unless admin.token is set").into_response(),
    }
}

/// Sets the gauges that describe stored state.
fn refresh(state: &Shared) {
    let m = metrics();
    let errors = criteria_errors_total();
    let counted = m.criteria_errors.get();
    if errors > counted {
        m.criteria_errors.inc_by(errors - counted);
    }
    if let Ok(size) = state.store.size_on_disk() {
        m.store_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
    let Ok(states) = state.store.sub_states() else { return };
    let mut by_status = [0i64; 5];
    let (mut pending, mut dead) = (0u64, 0u64);
    for (_, s) in &states {
        let i = match s.status {
            SubStatus::Requested => 0,
            SubStatus::Active => 1,
            SubStatus::Error => 2,
            SubStatus::Off => 3,
            SubStatus::EnteredInError => 4,
        };
        if let Some(n) = by_status.get_mut(i) {
            *n += 1;
        }
        pending += s.pending();
        dead += s.dead_count;
    }
    for (i, code) in ["requested", "active", "error", "off", "entered-in-error"].iter().enumerate() {
        m.subscriptions.get_or_create(&StatusLabels { status: (*code).to_owned() }).set(by_status.get(i).copied().unwrap_or(0));
    }
    m.pending_events.set(i64::try_from(pending).unwrap_or(i64::MAX));
    m.dead_letters_held.set(i64::try_from(dead).unwrap_or(i64::MAX));
    // The deepest queues, labelled by subscription; others drop out of the series.
    m.queue_depth.clear();
    m.oldest_pending_age.clear();
    let mut deepest: Vec<(&String, u64, u64)> =
        states.iter().filter(|(_, s)| s.pending() > 0).map(|(id, s)| (id, s.pending(), s.delivered_through)).collect();
    deepest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let now = now_millis();
    for (id, depth, through) in deepest.into_iter().take(state.top_subscriptions) {
        let label = SubscriptionLabels { subscription: id.clone() };
        m.queue_depth.get_or_create(&label).set(i64::try_from(depth).unwrap_or(i64::MAX));
        if let Ok(events) = state.store.events(id, through + 1, 1) {
            if let Some(e) = events.first() {
                m.oldest_pending_age.get_or_create(&label).set(((now - e.timestamp).max(0)) as f64 / 1000.0);
            }
        }
    }
}

pub(super) async fn metrics_text(State(state): State<Shared>) -> Response {
    let body = tokio::task::spawn_blocking(move || {
        refresh(&state);
        metrics().render()
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// The dashboard page: one embedded file, no build step.
pub(super) async fn dashboard() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], include_str!("dashboard.html"))
        .into_response()
}

/// Where a rest-hook endpoint points, without path, query or credentials (which may carry
/// secrets).
fn endpoint_host(resource: &Value) -> Option<String> {
    let url = url::Url::parse(fields::endpoint(resource)?).ok()?;
    Some(format!("{}://{}{}", url.scheme(), url.host_str()?, url.port().map(|p| format!(":{p}")).unwrap_or_default()))
}

fn subscription_row(id: &str, resource: &Value, s: &SubState, log: &DeliveryLog) -> Value {
    let (attempts, failures) = log.counts(id);
    json!({
        "id": id,
        "topic": fields::topic(resource),
        "channel": fields::channel_code(resource),
        "endpoint": endpoint_host(resource),
        "content": fields::content(resource).map(ContentLevel::code),
        "status": s.status.code(),
        "events": s.events_since_start,
        "deliveredThrough": s.delivered_through,
        "pending": s.pending(),
        "dead": s.dead_count,
        "withheld": s.withheld,
        "lastDeliveryAt": s.last_delivery_at.map(format_millis),
        "error": s.error.as_ref().map(|e| json!({ "code": e.code, "text": e.text, "at": format_millis(e.at) })),
        "recentAttempts": attempts,
        "recentFailures": failures,
        "resending": s.resend.is_some(),
    })
}

fn summary(state: &Shared) -> Result<Value, StoreError> {
    let states: HashMap<String, SubState> = state.store.sub_states()?.into_iter().collect();
    let mut subscriptions = Vec::new();
    let mut per_topic: HashMap<String, usize> = HashMap::new();
    for (id, cur) in state.store.list_current("Subscription", None, usize::MAX)? {
        if cur.deleted {
            continue;
        }
        let Some(rec) = state.store.version("Subscription", &id, cur.seq)? else { continue };
        let Some(resource) = rec.resource else { continue };
        let Some(s) = states.get(&id) else { continue };
        if let Some(t) = fields::topic_url(&resource) {
            *per_topic.entry(t.to_owned()).or_default() += 1;
        }
        subscriptions.push(subscription_row(&id, &resource, s, &state.delivery_log));
    }
    let mut topics = Vec::new();
    let version = crate::fhir::version::instance();
    let topic_type = crate::fhir::topic::stored::topic_type(version);
    for (id, cur) in state.store.list_current(topic_type, None, usize::MAX)? {
        if cur.deleted {
            continue;
        }
        let Some(stored) = state.store.version(topic_type, &id, cur.seq)?.and_then(|r| r.resource) else { continue };
        // In the R5 shape (R4: only the Basic resources that are topics).
        let Some(Ok(resource)) = crate::fhir::topic::stored::to_r5(version, topic_type, &stored) else { continue };
        let url = resource.get("url").and_then(Value::as_str).unwrap_or_default().to_owned();
        topics.push(json!({
            "id": id,
            "url": url,
            "title": resource.get("title").or_else(|| resource.get("name")),
            "status": resource.get("status"),
            "version": resource.get("version"),
            "subscribers": per_topic.get(&url).copied().unwrap_or(0),
        }));
    }
    let m = metrics();
    let sum = |f: &dyn Fn(&str) -> bool| -> u64 {
        let text = m.render();
        text.lines()
            .filter(|l| !l.starts_with('#') && f(l))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .map(|v| v as u64)
            .sum()
    };
    let totals = json!({
        "writes": sum(&|l| l.starts_with("herald_writes_total{")),
        "events": sum(&|l| l.starts_with("herald_events_total{")),
        "delivered": sum(&|l| l.starts_with("herald_deliveries_total{") && l.contains("outcome=\"delivered\"")),
        "failed": sum(&|l| l.starts_with("herald_deliveries_total{") && l.contains("outcome=\"failed\"")),
        "dead": sum(&|l| l.starts_with("herald_dead_letters_total")),
        "websocketConnections": m.websocket_connections.get(),
    });
    Ok(json!({ "at": format_millis(now_millis()), "totals": totals, "subscriptions": subscriptions, "topics": topics }))
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "operator API could not read the store");
    (StatusCode::INTERNAL_SERVER_ERROR, "store error").into_response()
}

pub(super) async fn summary_json(State(state): State<Shared>) -> Response {
    match tokio::task::spawn_blocking(move || summary(&state)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => internal(&e),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "summary failed").into_response(),
    }
}

fn subscription_detail(state: &Shared, id: &str) -> Result<Option<Value>, StoreError> {
    let Some(rec) = state.store.latest("Subscription", id)?.filter(|r| !r.deleted) else { return Ok(None) };
    let (Some(resource), Some(s)) = (rec.resource, state.store.sub_state(id)?) else { return Ok(None) };
    let event_row = |e: &crate::store::EventRecord| {
        json!({
            "number": e.number,
            "timestamp": format_millis(e.timestamp),
            "interaction": e.interaction,
            "focus": format!("{}/{}/_history/{}", e.focus_type, e.focus_id, e.focus_seq),
        })
    };
    let pending: Vec<Value> = state.store.events(id, s.delivered_through + 1, 20)?.iter().map(event_row).collect();
    let mut dead = Vec::new();
    for d in state.store.dead_letters(id, 100)? {
        let event = state.store.events(id, d.number, 1)?.into_iter().find(|e| e.number == d.number);
        dead.push(json!({
            "number": d.number,
            "parkedAt": format_millis(d.parked_at),
            "attempts": d.attempts,
            "reason": d.reason,
            "event": event.as_ref().map(event_row),
        }));
    }
    let deliveries: Vec<Value> = state
        .delivery_log
        .recent(id, 50)
        .into_iter()
        .map(|a| {
            json!({
                "at": format_millis(a.at),
                "kind": a.kind,
                "events": a.events.map(|(f, l)| if f == l { f.to_string() } else { format!("{f}-{l}") }),
                "channel": a.channel,
                "status": a.status,
                "error": a.error,
                "outcome": a.outcome,
                "millis": a.millis,
            })
        })
        .collect();
    let mut row = subscription_row(id, &resource, &s, &state.delivery_log);
    if let Some(obj) = row.as_object_mut() {
        obj.insert("deliveries".into(), Value::Array(deliveries));
        obj.insert("pendingEvents".into(), Value::Array(pending));
        obj.insert("deadLetters".into(), Value::Array(dead));
    }
    Ok(Some(row))
}

pub(super) async fn subscription_json(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    if !is_valid_id(&id) {
        return (StatusCode::BAD_REQUEST, "not a valid id").into_response();
    }
    match tokio::task::spawn_blocking(move || subscription_detail(&state, &id)).await {
        Ok(Ok(Some(v))) => axum::Json(v).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "no such subscription").into_response(),
        Ok(Err(e)) => internal(&e),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "detail failed").into_response(),
    }
}

/// Replays the subscription's dead letters (the dashboard's button).
pub(super) async fn replay(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    if !is_valid_id(&id) {
        return (StatusCode::BAD_REQUEST, "not a valid id").into_response();
    }
    match state.ingest.resend(&id, ResendRange::Numbers { since: None, until: None }, true, Some("operator".to_owned())).await {
        Ok(summary) => axum::Json(json!({ "deadLetters": summary.events, "from": summary.from, "until": summary.until })).into_response(),
        Err(IngestError::NotFound(_)) => (StatusCode::NOT_FOUND, "no such subscription").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard replay refused");
            (StatusCode::UNPROCESSABLE_ENTITY, "replay refused").into_response()
        }
    }
}

/// The audit trail: `?after=SEQ` for entries after a sequence number (oldest first; without
/// it, the newest), `limit` (at most 1000), and filters `subscription`, `action`, `actor`.
pub(super) async fn audit_json(
    State(state): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<crate::ops::audit::AuditQuery>,
) -> Response {
    let store = state.store.clone();
    let after = q.after;
    match tokio::task::spawn_blocking(move || crate::ops::audit::query(&store, &q)).await {
        Ok(Ok(entries)) => {
            let next = entries.last().map(|e| e.seq).or(after).unwrap_or(0);
            axum::Json(json!({ "entries": entries, "next": next })).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not read the audit trail");
            (StatusCode::INTERNAL_SERVER_ERROR, "could not read the audit trail").into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "could not read the audit trail").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn without_a_token_only_loopback_clients_are_served() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(allowed(None, &headers(None), Some(local)), Ok(()));
        assert_eq!(allowed(None, &headers(None), Some(local6)), Ok(()));
        assert_eq!(allowed(None, &headers(Some("Bearer x")), Some(remote)), Err(StatusCode::FORBIDDEN));
        assert_eq!(allowed(None, &headers(None), None), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn with_a_token_everyone_needs_it_even_on_loopback() {
        let token = Secret::new("s3cret-admin".to_string());
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(allowed(Some(&token), &headers(None), Some(local)), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(allowed(Some(&token), &headers(Some("Bearer wrong")), Some(remote)), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(allowed(Some(&token), &headers(Some("Bearer s3cret-admin")), Some(remote)), Ok(()));
        assert_eq!(allowed(Some(&token), &headers(Some("s3cret-admin")), Some(remote)), Err(StatusCode::UNAUTHORIZED));
    }
}
