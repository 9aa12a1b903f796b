//! `$status` (R5 `OperationDefinition/Subscription-status`, Backport IG
//! `backport-subscription-status`): a `searchset` Bundle with one `query-status` status per
//! subscription, in the instance version's shape (R4: a `backport-subscription-status-r4`
//! Parameters; R4B and R5: a SubscriptionStatus), each entry with `search.mode` `match`. Instance level:
//! `GET|POST /fhir/Subscription/{id}/$status`. Type level: `GET|POST /fhir/Subscription/$status`
//! with `id` and `status` (each repeatable and comma-separable, OR within a parameter, AND
//! between them; none = all subscriptions). Reading status changes nothing.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::access::{Access, Caller};
use super::outcome::{fhir_response, ApiError};
use super::rest::check_id;
use super::Shared;
use crate::auth::{Perm, Principal};
use crate::channels::render::{error_view, status as status_view};
use crate::fhir::outcome::operation_outcome;
use crate::fhir::subscription::{fields, ContentLevel};
use crate::fhir::{Issue, IssueType};
use crate::notify::{subscription_status, NotificationType, StatusContext};
use crate::store::SubStatus;

/// The `query-status` entry of one of the caller's subscriptions, with its status; `None`
/// when it does not exist or is another client's (the two are not told apart). The status
/// resource is the instance version's (`notify`): an R4 `Parameters`, an R4B or R5
/// `SubscriptionStatus`. Searchset entries carry no request/response (bdl-3, bdl-4).
fn status_entry(access: &Access<'_>, id: &str, perm: Perm) -> Result<Option<(Value, SubStatus)>, ApiError> {
    let (resource, sub_state) = match access.subscription(id, perm) {
        Ok(found) => found,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(None),
        Err(e) => return Err(e),
    };
    let state = access.state();
    let version = crate::fhir::version::instance();
    let resource = &resource;
    let topic_url = fields::topic_url(resource).unwrap_or_default();
    let content = fields::content(resource).unwrap_or(ContentLevel::IdOnly);
    let identifier = fields::identifier(resource);
    let ctx = StatusContext {
        version,
        base_url: &state.base_url,
        subscription_id: id,
        identifier,
        topic_url,
        status: status_view(sub_state.status),
        events_since_start: sub_state.events_since_start,
        error: sub_state.error.as_ref().map(error_view),
        // $status is asked by an authenticated client about its own subscription: the topic is
        // always shown here, whatever the notification content level.
        content: if content == ContentLevel::Empty { ContentLevel::IdOnly } else { content },
    };
    let status = subscription_status(&ctx, NotificationType::QueryStatus, &[]);
    let full_url = format!("urn:uuid:{}", status.get("id").and_then(Value::as_str).unwrap_or_default());
    Ok(Some((json!({ "fullUrl": full_url, "resource": status, "search": { "mode": "match" } }), sub_state.status)))
}

/// Most entries one `$status` answers.
const MAX_STATUS_ENTRIES: usize = 1_000;

/// Subscriptions read per store page by a type-level `$status` without ids.
const STATUS_PAGE: usize = 256;

/// The answer; `note`: the listing stopped at a bound (an `outcome` entry says so, and `total`
/// is left out since it is not known).
fn searchset(mut entries: Vec<Value>, note: Option<String>) -> Response {
    let total = entries.len();
    let bundle = match note {
        None => json!({ "resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries }),
        Some(text) => {
            entries.push(json!({ "resource": operation_outcome(&[Issue::info(text)]), "search": { "mode": "outcome" } }));
            json!({ "resourceType": "Bundle", "type": "searchset", "entry": entries })
        }
    };
    fhir_response(StatusCode::OK, &bundle)
}

pub(super) async fn instance(State(state): State<Shared>, Path(id): Path<String>, Caller(principal): Caller) -> Result<Response, ApiError> {
    check_id(&id)?;
    let access = Access::new(&state, &principal);
    access.require("Subscription", Perm::Read)?;
    let (entry, _) = status_entry(&access, &id, Perm::Read)?.ok_or_else(|| ApiError::not_found(format!("Subscription/{id} not found")))?;
    Ok(searchset(vec![entry], None))
}

fn collect_params(pairs: &[(String, String)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn type_level_run(state: &Shared, principal: &Principal, pairs: Vec<(String, String)>) -> Result<Response, ApiError> {
    let access = Access::new(state, principal);
    access.require("Subscription", Perm::Search)?;
    for (k, _) in &pairs {
        if k != "id" && k != "status" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::NotSupported,
                format!("$status takes 'id' and 'status', not '{k}'"),
            ));
        }
    }
    let ids = collect_params(&pairs, "id");
    let statuses = collect_params(&pairs, "status");
    for s in &statuses {
        if SubStatus::from_code(s).is_none() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Value, format!("'{s}' is not a subscription status")));
        }
    }
    if ids.len() > MAX_STATUS_ENTRIES {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::TooCostly,
            format!("$status takes at most {MAX_STATUS_ENTRIES} ids at once"),
        ));
    }
    let mut entries = Vec::new();
    // Filtered on the subscription's own status, not on the rendered resource's shape.
    let wanted = |found: &(Value, SubStatus)| statuses.is_empty() || statuses.iter().any(|s| s == found.1.code());
    if !ids.is_empty() {
        for id in ids.iter().filter(|id| crate::fhir::types::is_valid_id(id)) {
            if let Some((entry, _)) = status_entry(&access, id, Perm::Search)?.filter(|e| wanted(e)) {
                entries.push(entry);
            }
        }
        return Ok(searchset(entries, None));
    }
    // Every subscription the caller may see: read page by page, and no more than
    // `search.max_scan` subscriptions or `MAX_STATUS_ENTRIES` answers (the rest by id or status).
    let mut after: Option<String> = None;
    let mut scanned = 0usize;
    let limit = state.search.max_scan;
    loop {
        let page = state.store.list_current("Subscription", after.as_deref(), STATUS_PAGE).map_err(|e| ApiError::internal(&e))?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (id, _) in page.iter().filter(|(_, c)| !c.deleted) {
            if scanned >= limit || entries.len() >= MAX_STATUS_ENTRIES {
                let note = format!("stopped after {scanned} subscriptions and {} answers; ask for the rest by id or status", entries.len());
                return Ok(searchset(entries, Some(note)));
            }
            scanned += 1;
            if let Some((entry, _)) = status_entry(&access, id, Perm::Search)?.filter(|e| wanted(e)) {
                entries.push(entry);
            }
        }
        if page.len() < STATUS_PAGE {
            break;
        }
    }
    Ok(searchset(entries, None))
}

pub(super) async fn type_level(
    State(state): State<Shared>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect();
    type_level_run(&state, &principal, pairs)
}

/// POST takes a `Parameters` resource (or form data).
pub(super) async fn type_level_post(
    State(state): State<Shared>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
    body: String,
) -> Result<Response, ApiError> {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect();
    if let Ok(params) = serde_json::from_str::<Value>(&body) {
        for p in params.get("parameter").and_then(Value::as_array).into_iter().flatten() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = ["valueString", "valueCode", "valueId"].iter().find_map(|k| p.get(*k).and_then(Value::as_str)).unwrap_or_default();
            pairs.push((name.to_string(), value.to_string()));
        }
    } else if !body.trim().is_empty() {
        pairs.extend(url::form_urlencoded::parse(body.as_bytes()).into_owned());
    }
    type_level_run(&state, &principal, pairs)
}
