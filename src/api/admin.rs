//! Operator surfaces: `GET /metrics` (Prometheus) and the dashboard with its API under
//! `/admin`.
//!
//! Protected separately from the FHIR API: with `admin.token` set, every request needs
//! `Authorization: Bearer <token>` (compared in constant time); without one, only clients on a
//! loopback address are served. Anyone else gets 401 or 403 and nothing else.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::fhir::instant::now_millis;
use crate::matching::criteria_errors_total;
use crate::ops::metrics::{metrics, StatusLabels, SubscriptionLabels};
use crate::secret::Secret;
use crate::store::SubStatus;

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
