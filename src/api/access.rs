//! Access control for the FHIR API: authentication, SMART scopes, the patient compartment and
//! Subscription ownership, as one middleware in front of every FHIR route.
//!
//! - **Who**: with `[auth]` configured, every request but `GET /fhir/metadata` and the
//!   websocket endpoint (its binding token is the credential) needs a valid bearer JWT or API
//!   key (`crate::auth`), else 401 with `WWW-Authenticate: Bearer`. Without `[auth]` every
//!   request is anonymous with full access (allowed only on loopback; see `lib.rs`).
//! - **What**: the route gives the resource type and permission (read, search, create,
//!   update, delete); a scope must grant it, else 403. Batch and transaction entries are
//!   checked one by one (`bundle`); side-car `$ingest` and `$emit` need a wildcard grant.
//! - **Patient scopes** (`patient/…` only): the resource must be in the token patient's
//!   compartment: checked on the body of creates and updates, the stored resource of deletes,
//!   the answer of reads; search results outside it are left out.
//! - **Ownership**: a Subscription belongs to the client that created it (`SubState.owner`) and
//!   to the clients the operator maps to its `managingEntity` (`auth.entities`).
//!   Another client gets 404 for it on reads and operations, 403 on writes (the committer
//!   checks those), and its searches and `$status` never list it.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::outcome::ApiError;
use super::Shared;
use crate::auth::{in_compartment, AuthError, Credential, Perm, Principal};
use crate::fhir::IssueType;
use crate::store::{GrantSource, StoredGrant};

/// Largest answer body the compartment and ownership filters buffer.
const MAX_FILTERED_BODY: usize = 64 * 1024 * 1024;

/// What a route asks for.
#[derive(Debug, PartialEq, Eq)]
struct Need {
    resource_type: String,
    id: Option<String>,
    perm: Perm,
    /// An operation on `Subscription/{id}` or the Subscription type.
    operation: bool,
}

fn need(method: &Method, path: &str) -> Option<Need> {
    let rest = path.strip_prefix("/fhir")?.trim_start_matches('/');
    let segs: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
    let n = |ty: &str, id: Option<&str>, perm: Perm, operation: bool| {
        Some(Need { resource_type: ty.to_owned(), id: id.map(str::to_owned), perm, operation })
    };
    match (method, segs.as_slice()) {
        (_, []) | (_, ["metadata"]) | (_, ["$subscription-ws"]) => None,
        (_, ["$ingest"]) | (_, ["SubscriptionTopic", "$emit"]) => n("*", None, Perm::Create, true),
        (_, [ty, op]) if op.starts_with('$') => n(ty, None, Perm::Search, true),
        (_, [ty, id, op]) if op.starts_with('$') => n(ty, Some(id), Perm::Read, true),
        (&Method::GET, [ty]) => n(ty, None, Perm::Search, false),
        (&Method::POST, [ty]) => n(ty, None, Perm::Create, false),
        (&Method::POST, [ty, "_search"]) => n(ty, None, Perm::Search, false),
        (&Method::GET, [ty, id, ..]) => n(ty, Some(id), Perm::Read, false),
        (&Method::PUT, [ty, id]) => n(ty, Some(id), Perm::Update, false),
        (&Method::DELETE, [ty, id]) => n(ty, Some(id), Perm::Delete, false),
        _ => None,
    }
}

fn unauthorized(why: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, IssueType::Security, why).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
    resp
}

fn forbidden(why: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, IssueType::Security, why).into_response()
}

fn perm_name(p: Perm) -> &'static str {
    match p {
        Perm::Create => "create",
        Perm::Read => "read",
        Perm::Update => "update",
        Perm::Delete => "delete",
        Perm::Search => "search",
    }
}

/// Whether `client` may see `Subscription/{id}` (unowned ones are visible to all).
pub(super) fn owns(state: &Shared, principal: &Principal, id: &str) -> bool {
    let Some(client) = principal.client.as_deref() else { return true };
    match state.store.sub_state(id) {
        Ok(Some(s)) => state.entities.may_manage(s.owner.as_deref(), s.managing_entity.as_deref(), client),
        Ok(None) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a subscription's owner; refusing access");
            false
        }
    }
}

/// Whether `principal` is the authenticated client that created `Subscription/{id}`: the
/// one caller who is shown its secrets.
pub(super) fn is_owner(state: &Shared, principal: Option<&Principal>, id: &str) -> bool {
    let Some(client) = principal.and_then(|p| p.client.as_deref()).filter(|c| !c.is_empty()) else { return false };
    matches!(state.store.sub_state(id), Ok(Some(s)) if s.owner.is_some() && state.entities.may_manage(s.owner.as_deref(), s.managing_entity.as_deref(), client))
}

/// The grant a write records for its author: send-time checks of the Subscriptions it
/// creates or updates use it (`notify::withhold`). `None` for anonymous callers.
pub(super) fn grant_of(principal: &Principal) -> Option<StoredGrant> {
    let via = match principal.via {
        Credential::ApiKey => GrantSource::ApiKey,
        Credential::Jwt => GrantSource::Jwt,
        Credential::None => return None,
    };
    principal.client.as_deref().filter(|c| !c.is_empty())?;
    Some(StoredGrant { via, scopes: principal.scopes.to_string(), patient: principal.patient.clone() })
}

/// The middleware.
pub(super) async fn guard(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    // Inside `nest("/fhir")` the URI has lost its prefix; the original keeps it.
    let path = req.extensions().get::<axum::extract::OriginalUri>().map_or_else(|| req.uri().path().to_owned(), |u| u.path().to_owned());
    let method = req.method().clone();
    let principal = match &state.auth {
        None => Principal::anonymous(),
        Some(auth) => {
            let exempt = need(&method, &path).is_none() && (path.ends_with("/metadata") || path.ends_with("/$subscription-ws"));
            let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let api_key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
            match auth.authenticate(authorization, api_key) {
                Ok(p) => p,
                Err(_) if exempt => {
                    Principal { client: Some(String::new()), scopes: Default::default(), patient: None, via: Credential::None }
                }
                Err(AuthError::Missing) => return unauthorized("authentication required: a bearer token or API key"),
                Err(AuthError::Invalid(why)) => {
                    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
                    state.audit.record(
                        crate::ops::audit::AuditEntry::new("credentials-refused", None, "failure")
                            .detail("path", path.clone())
                            .detail("reason", why)
                            .detail("peer", peer.unwrap_or_default()),
                    );
                    return unauthorized("the credentials are not valid");
                }
            }
        }
    };
    if let Some(limiter) = &state.rate_limit {
        let key = match principal.client.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => format!("client:{c}"),
            None => {
                req.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "anonymous".to_owned(), |c| format!("peer:{}", c.0.ip()))
            }
        };
        if let Err(wait) = limiter.check(&key) {
            let mut resp =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, IssueType::Throttled, format!("rate limit exceeded; retry in {wait} s"))
                    .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return resp;
        }
    }
    let need = need(&method, &path);
    let mut compartment = false;
    if let Some(n) = &need {
        if !principal.may(&n.resource_type, n.perm) {
            return forbidden(format!(
                "no granted scope allows {} on {}",
                perm_name(n.perm),
                if n.resource_type == "*" { "every resource type" } else { &n.resource_type }
            ));
        }
        compartment = !principal.is_anonymous() && principal.scopes.needs_compartment(&n.resource_type, n.perm);
        if compartment && principal.patient.is_none() {
            return forbidden("patient/ scopes need a token with a patient claim".into());
        }
        if n.resource_type == "Subscription" {
            if let Some(id) = &n.id {
                if matches!(n.perm, Perm::Read) && !owns(&state, &principal, id) {
                    return ApiError::not_found(format!("Subscription/{id} not found")).into_response();
                }
            }
            // Type-level token requests name their subscriptions in the query.
            if n.operation && n.id.is_none() {
                let query = req.uri().query().unwrap_or_default().to_owned();
                for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                    if k == "id" && !owns(&state, &principal, &v) {
                        return ApiError::not_found(format!("Subscription/{v} not found")).into_response();
                    }
                }
            }
        }
    }
    // Patient scopes: writes must stay in the compartment.
    if compartment {
        let Some(n) = &need else { return next.run(req).await };
        let patient = principal.patient.clone().unwrap_or_default();
        match n.perm {
            Perm::Create | Perm::Update => {
                let (parts, body) = req.into_parts();
                let Ok(bytes) = to_bytes(body, MAX_FILTERED_BODY).await else {
                    return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, IssueType::TooCostly, "body too large").into_response();
                };
                let inside = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| in_compartment(&v, &patient));
                if !inside {
                    return forbidden(format!("the resource is not in Patient/{patient}'s compartment"));
                }
                req = Request::from_parts(parts, Body::from(bytes));
            }
            Perm::Delete => {
                let stored = n.id.as_ref().and_then(|id| state.store.latest(&n.resource_type, id).ok().flatten()).and_then(|r| r.resource);
                if stored.is_some_and(|r| !in_compartment(&r, &patient)) {
                    return forbidden(format!("the resource is not in Patient/{patient}'s compartment"));
                }
            }
            _ => {}
        }
    }
    let filter_subscriptions = !principal.is_anonymous()
        && need.as_ref().is_some_and(|n| n.resource_type == "Subscription" && n.id.is_none() && n.perm == Perm::Search);
    let filter_compartment = compartment && need.as_ref().is_some_and(|n| matches!(n.perm, Perm::Read | Perm::Search));
    let principal = Arc::new(principal);
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    if !(filter_subscriptions || filter_compartment) || !resp.status().is_success() {
        return resp;
    }
    // Filter the answer: other clients' Subscriptions, resources outside the compartment.
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FILTERED_BODY).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueType::TooCostly, "answer too large to filter").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else { return Response::from_parts(parts, Body::from(bytes)) };
    let patient = principal.patient.clone().unwrap_or_default();
    let visible = |r: &Value| -> bool {
        if filter_compartment && !in_compartment(r, &patient) {
            return false;
        }
        if filter_subscriptions {
            let id = match r.get("resourceType").and_then(Value::as_str) {
                Some("Subscription") => r.get("id").and_then(Value::as_str),
                Some("SubscriptionStatus") => {
                    r.pointer("/subscription/reference").and_then(Value::as_str).and_then(|s| s.rsplit('/').next())
                }
                _ => None,
            };
            if let Some(id) = id {
                return owns(&state, &principal, id);
            }
        }
        true
    };
    if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        if let Some(entries) = value.get_mut("entry").and_then(Value::as_array_mut) {
            entries.retain(|e| {
                e.get("resource").is_none_or(|r| r.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") || visible(r))
            });
        }
    } else if !visible(&value) {
        return ApiError::not_found("not found").into_response();
    }
    let mut resp = axum::Json(value).into_response();
    *resp.status_mut() = parts.status;
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_LENGTH {
            resp.headers_mut().insert(k.clone(), v.clone());
        }
    }
    resp
}

/// Checks a batch or transaction entry's interaction against the caller's scopes.
pub(super) fn entry_allowed(principal: &Principal, resource_type: &str, perm: Perm) -> Result<(), String> {
    let compartment_only = !principal.is_anonymous() && principal.scopes.needs_compartment(resource_type, perm);
    if principal.may(resource_type, perm) && !compartment_only {
        Ok(())
    } else {
        Err(format!("no granted scope allows {} on {resource_type} (patient/ scopes are not accepted in batches)", perm_name(perm)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_type_and_permission() {
        let n = |m: Method, p: &str| need(&m, p).map(|n| (n.resource_type, n.id, n.perm, n.operation));
        assert_eq!(n(Method::GET, "/fhir/Task"), Some(("Task".into(), None, Perm::Search, false)));
        assert_eq!(n(Method::POST, "/fhir/Task/_search"), Some(("Task".into(), None, Perm::Search, false)));
        assert_eq!(n(Method::GET, "/fhir/Task/1/_history/2"), Some(("Task".into(), Some("1".into()), Perm::Read, false)));
        assert_eq!(n(Method::PUT, "/fhir/Task/1"), Some(("Task".into(), Some("1".into()), Perm::Update, false)));
        assert_eq!(n(Method::DELETE, "/fhir/Task/1"), Some(("Task".into(), Some("1".into()), Perm::Delete, false)));
        assert_eq!(n(Method::POST, "/fhir/Subscription/s/$events"), Some(("Subscription".into(), Some("s".into()), Perm::Read, true)));
        assert_eq!(n(Method::GET, "/fhir/Subscription/$status"), Some(("Subscription".into(), None, Perm::Search, true)));
        assert_eq!(n(Method::POST, "/fhir/$ingest"), Some(("*".into(), None, Perm::Create, true)));
        assert_eq!(n(Method::GET, "/fhir/metadata"), None);
        assert_eq!(n(Method::POST, "/fhir"), None);
    }
}
