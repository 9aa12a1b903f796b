//! Who is calling (authentication, one middleware) and what they may touch (authorization,
//! decided by the handlers on the data they resolved).
//!
//! - **Who**: `authenticate` runs in front of every FHIR route. With `[auth]` configured, a
//!   route whose row in `api::ROUTES` needs nothing (`/metadata`, the websocket endpoint,
//!   whose binding token is the credential) answers without credentials; every other route
//!   needs a valid bearer JWT or API key (`crate::auth`), else 401 with `WWW-Authenticate`.
//!   The exemption is read from the route the router matched, never from the raw path, so no
//!   spelling of another route can borrow it. Without `[auth]` every caller is anonymous with
//!   full access (allowed only on loopback; see `lib.rs`). The principal travels to the handler
//!   in the request's extensions; `Caller` takes it out, and fails closed when it is missing.
//! - **What**: handlers decide on what they actually read or write, after the path, query
//!   and body are decoded: `Access::require` (a scope must grant the permission on the type,
//!   403), `Access::sees` (the version at hand: the patient compartment for `patient/`-only
//!   scopes, ownership for Subscriptions), `Access::current` and `Access::subscription` (load
//!   and check in one step). Searches see the store through `Access::sees` (`search::context`),
//!   so matches, totals, includes, chains and `_has` never count what the caller may not see.
//!   Writes are checked again by the committer on the stored version they replace
//!   (`ingest::committer`), where no concurrent write can slip between check and commit.
//! - **Ownership**: a Subscription belongs to the client that created it (`SubState.owner`)
//!   and to the clients the operator maps to its `managingEntity` (`auth.entities`). To
//!   anyone else it does not exist: 404 on every read, operation and write, never 403, and no
//!   search, `$status` or count lists it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::outcome::ApiError;
use super::{AppState, Shared};
use crate::auth::{AuthError, Credential, Perm, Principal};
use crate::fhir::IssueType;
use crate::store::{GrantSource, StoredGrant, SubState, VersionRecord};

fn unauthorized(why: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, IssueType::Security, why).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"herald\""));
    resp
}

pub(super) fn perm_name(p: Perm) -> &'static str {
    match p {
        Perm::Create => "create",
        Perm::Read => "read",
        Perm::Update => "update",
        Perm::Delete => "delete",
        Perm::Search => "search",
    }
}

/// The grant a write records for its author: send-time checks of the Subscriptions it
/// creates or updates use it (`notify::withhold`), and the committer checks the patient
/// compartment of what it replaces with it. `None` for anonymous callers.
pub(super) fn grant_of(principal: &Principal) -> Option<StoredGrant> {
    let via = match principal.via {
        Credential::ApiKey => GrantSource::ApiKey,
        Credential::Jwt => GrantSource::Jwt,
        Credential::None => return None,
    };
    principal.client.as_deref().filter(|c| !c.is_empty())?;
    Some(StoredGrant { via, scopes: principal.scopes.to_string(), patient: principal.patient.clone() })
}

/// The middleware: authenticates, rate-limits, and hands the principal to the handler.
pub(super) async fn authenticate(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let principal = match &state.auth {
        None => Principal::anonymous(),
        Some(auth) => {
            let exempt = req
                .extensions()
                .get::<MatchedPath>()
                .and_then(|m| super::route_for(m.as_str()))
                .and_then(|r| r.needs(req.method()))
                .is_some_and(|n| n == super::Needs::Nothing);
            let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let api_key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
            match auth.authenticate(authorization, api_key) {
                Ok(p) => p,
                // An exempt route with missing or bad credentials: a caller with no rights.
                Err(_) if exempt => Principal::unauthenticated(),
                Err(AuthError::Missing) => return unauthorized("authentication required: a bearer token or API key"),
                Err(AuthError::Invalid(why)) => {
                    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
                    state.audit.record(
                        crate::ops::audit::AuditEntry::new("credentials-refused", None, "failure")
                            .detail("path", req.uri().path().to_owned())
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
    req.extensions_mut().insert(Arc::new(principal));
    next.run(req).await
}

/// The authenticated caller, as `authenticate` found it. A handler reached without it (a
/// route added without the middleware) refuses rather than serve as if anonymous.
pub(super) struct Caller(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Arc<Principal>>() {
            Some(p) => Ok(Caller(p.clone())),
            None => {
                tracing::error!(path = %parts.uri.path(), "a FHIR handler ran without authentication; refusing");
                Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueType::Exception, "internal error"))
            }
        }
    }
}

/// One caller's rights over the store: every FHIR handler asks it before it returns or
/// changes anything.
pub(super) struct Access<'a> {
    state: &'a AppState,
    who: &'a Principal,
}

impl<'a> Access<'a> {
    pub fn new(state: &'a AppState, who: &'a Principal) -> Self {
        Access { state, who }
    }

    pub fn state(&self) -> &'a AppState {
        self.state
    }

    /// A scope must grant `perm` on `resource_type` (`*`: on every type), else 403; `patient/`
    /// scopes need the token's patient claim.
    pub fn require(&self, resource_type: &str, perm: Perm) -> Result<(), ApiError> {
        if !self.who.may(resource_type, perm) {
            let what = if resource_type == "*" { "every resource type" } else { resource_type };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                IssueType::Security,
                format!("no granted scope allows {} on {what}", perm_name(perm)),
            ));
        }
        if !self.who.is_anonymous() && self.who.patient.is_none() && self.who.scopes.needs_compartment(resource_type, perm) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, IssueType::Security, "patient/ scopes need a token with a patient claim"));
        }
        Ok(())
    }

    /// A scope must grant `perm` on every resource type, and not only within a patient's
    /// compartment: side-car feeds and emitted events name resources of any type and patient.
    pub fn require_everything(&self, perm: Perm) -> Result<(), ApiError> {
        self.require("*", perm)?;
        if !self.who.is_anonymous() && self.who.scopes.needs_compartment("*", perm) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                IssueType::Security,
                format!("{} on every resource type needs a system/ or user/ scope, not a patient/ one", perm_name(perm)),
            ));
        }
        Ok(())
    }

    /// Whether the caller may be shown this version of `resource_type/id` (`None`: a
    /// deletion): a scope to read or search the type (within the patient's compartment where
    /// only `patient/` scopes grant it) and, for a Subscription, being one of its managers.
    pub fn sees(&self, resource_type: &str, id: &str, resource: Option<&Value>) -> bool {
        if self.who.is_anonymous() {
            return true;
        }
        self.who.may_see(resource_type, resource) && (resource_type != "Subscription" || self.manages(id))
    }

    /// Whether the caller may be shown every resource of `resource_type` (a scope without a
    /// compartment; never Subscriptions, which are per client): then counts from the index
    /// tell it nothing it could not read.
    pub fn sees_whole_type(&self, resource_type: &str) -> bool {
        self.who.is_anonymous() || (resource_type != "Subscription" && self.who.may_see(resource_type, None))
    }

    /// Whether the caller may see, change and use `Subscription/{id}`. Authenticated callers
    /// manage only live subscriptions (a deleted one has no owner left to compare with).
    pub fn manages(&self, id: &str) -> bool {
        let Some(client) = self.who.client.as_deref() else { return true };
        match self.state.store.sub_state(id) {
            Ok(Some(s)) => !client.is_empty() && self.state.entities.may_manage(s.owner.as_deref(), s.managing_entity.as_deref(), client),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a subscription's owner; refusing access");
                false
            }
        }
    }

    /// Whether the caller is shown `Subscription/{id}`'s secrets: only an authenticated
    /// client that manages it (anonymous callers never see them).
    pub fn shows_secrets(&self, id: &str) -> bool {
        !self.who.is_anonymous() && self.manages(id)
    }

    /// The current record of `resource_type/id` for an interaction needing `perm`: 404 when
    /// it does not exist or the caller may not see it (the two are not told apart), 410 when
    /// the caller could see it and it is deleted.
    pub fn current(&self, resource_type: &str, id: &str, perm: Perm) -> Result<VersionRecord, ApiError> {
        self.require(resource_type, perm)?;
        let not_found = || ApiError::not_found(format!("{resource_type}/{id} not found"));
        let rec = self.state.store.latest(resource_type, id).map_err(|e| ApiError::internal(&e))?.ok_or_else(not_found)?;
        let live = rec.resource.as_ref().filter(|_| !rec.deleted);
        if !self.sees(resource_type, id, live) {
            return Err(not_found());
        }
        if live.is_none() {
            return Err(ApiError::new(
                StatusCode::GONE,
                IssueType::Deleted,
                format!("{resource_type}/{id} was deleted (version {})", rec.version_id),
            ));
        }
        Ok(rec)
    }

    /// A live Subscription and its state for an operation needing `perm`; 404 when it does
    /// not exist, was deleted, or is another client's.
    pub fn subscription(&self, id: &str, perm: Perm) -> Result<(Value, SubState), ApiError> {
        self.require("Subscription", perm)?;
        let not_found = || ApiError::not_found(format!("Subscription/{id} not found"));
        let store = &self.state.store;
        let rec = store.latest("Subscription", id).map_err(|e| ApiError::internal(&e))?;
        let Some(resource) = rec.filter(|r| !r.deleted).and_then(|r| r.resource) else { return Err(not_found()) };
        let state = store.sub_state(id).map_err(|e| ApiError::internal(&e))?.ok_or_else(not_found)?;
        if !self.sees("Subscription", id, Some(&resource)) {
            return Err(not_found());
        }
        Ok((resource, state))
    }
}
