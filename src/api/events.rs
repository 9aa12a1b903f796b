//! `$events` (R5 `OperationDefinition/Subscription-events`):
//! `GET|POST /fhir/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`.
//!
//! Answers a notification Bundle in the instance version's shape (`notify`: R5
//! `subscription-notification`, R4/R4B `history` with request/response on every entry, the
//! Backport IG's `backport-subscription-events`) whose status has type `query-event` and one `notificationEvent` per stored event in the inclusive range (default:
//! from 1 to the current count), rendered at `content` (else the subscription's level) with
//! the resource version each event saw, not today's. At most `subscriptions.max_events_per_query`
//! events per call: ask again from the last eventNumber + 1. Reading events changes nothing.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::access::{Access, Caller};
use super::outcome::{fhir_response, ApiError};
use super::rest::check_id;
use super::Shared;
use crate::auth::{Perm, Principal};
use crate::channels::render::{error_view, send_grant, status as status_view, Replayed};
use crate::fhir::instant::now_millis;
use crate::fhir::subscription::{fields, ContentLevel};
use crate::fhir::{Issue, IssueType};
use crate::notify::{notification_bundle, NotificationType, StatusContext};
use crate::outbox::{Outbox, SledOutbox};

/// The operation's inputs, checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Range {
    since: Option<u64>,
    until: Option<u64>,
    content: Option<ContentLevel>,
}

fn bad(text: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, IssueType::Value, text)
}

fn number(name: &str, value: &str) -> Result<u64, ApiError> {
    value.trim().parse::<u64>().map_err(|_| bad(format!("{name} '{value}' is not a non-negative whole number")))
}

fn parse_range(pairs: &[(String, String)]) -> Result<Range, ApiError> {
    let mut range = Range::default();
    for (name, value) in pairs {
        let seen = match name.as_str() {
            "eventsSinceNumber" => range.since.replace(number(name, value)?).is_some(),
            "eventsUntilNumber" => range.until.replace(number(name, value)?).is_some(),
            "content" => {
                let level = ContentLevel::from_code(value.trim())
                    .ok_or_else(|| bad(format!("content '{value}' is not empty, id-only or full-resource")))?;
                range.content.replace(level).is_some()
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!("$events takes eventsSinceNumber, eventsUntilNumber and content, not '{other}'"),
                ))
            }
        };
        if seen {
            return Err(bad(format!("{name} is given more than once")));
        }
    }
    if let (Some(since), Some(until)) = (range.since, range.until) {
        if since > until {
            return Err(bad(format!("eventsSinceNumber {since} is greater than eventsUntilNumber {until}")));
        }
    }
    Ok(range)
}

fn run(state: &Shared, principal: &Principal, id: &str, pairs: &[(String, String)]) -> Result<Response, ApiError> {
    check_id(id)?;
    let (resource, sub_state) = Access::new(state, principal).subscription(id, Perm::Read)?;
    let range = parse_range(pairs)?;
    let version = crate::fhir::version::instance();
    let topic_url = fields::topic_url(&resource).unwrap_or_default();
    let stored_content = fields::content(&resource);
    let content = range.content.or(stored_content).unwrap_or(ContentLevel::IdOnly);
    // Retention (`subscriptions.events_*`) removed events up to `pruned_through`.
    let first_kept = sub_state.pruned_through + 1;
    if range.since.is_some_and(|s| s < first_kept) {
        return Err(ApiError::issues(
            StatusCode::GONE,
            vec![Issue::at(
                IssueType::NotFound,
                "eventsSinceNumber",
                format!(
                    "events 1 to {} are past retention and no longer kept; events {first_kept} to {} are kept",
                    sub_state.pruned_through, sub_state.events_since_start
                ),
            )],
        ));
    }
    let since = range.since.unwrap_or(first_kept).max(1);
    let until = range.until.unwrap_or(u64::MAX).min(sub_state.events_since_start);
    let mut events: Vec<Replayed> = SledOutbox::new(state.store.clone())
        .events_with_versions(id, None, since, until, state.max_events_per_query)
        .map_err(|e| ApiError::internal(&e))?
        .into_iter()
        .map(Replayed::from)
        .collect();
    // The subscription's grant applies here as on its channel (digest §6.1); events a lane
    // withheld are counted there, so a query does not count them again.
    if let Some(grant) = send_grant(sub_state.owner.as_deref(), sub_state.grant.as_ref(), state.auth.as_deref()) {
        for e in &mut events {
            e.screen(Some(&grant));
        }
    }
    // Built as a `Value` (`notification_bundle`), so resources are not written ahead.
    let with_versions: Vec<_> = events.iter().map(|e| e.as_notify(false)).collect();
    let ctx = StatusContext {
        version,
        base_url: &state.base_url,
        subscription_id: id,
        identifier: fields::identifier(&resource),
        topic_url,
        status: status_view(sub_state.status),
        events_since_start: sub_state.events_since_start,
        error: sub_state.error.as_ref().map(error_view),
        content,
    };
    let bundle = notification_bundle(&ctx, NotificationType::QueryEvent, &with_versions, now_millis());
    Ok(fhir_response(StatusCode::OK, &bundle))
}

pub(super) fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

/// An operation's inputs from a `Parameters` body (primitive values as text) or a form body.
pub(super) fn body_pairs(body: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Ok(params) = serde_json::from_str::<Value>(body) {
        for p in params.get("parameter").and_then(Value::as_array).into_iter().flatten() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = p
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
                .map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default();
            pairs.push((name.to_string(), value));
        }
    } else if !body.trim().is_empty() {
        pairs.extend(url::form_urlencoded::parse(body.as_bytes()).into_owned());
    }
    pairs
}

pub(super) async fn instance(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    run(&state, &principal, &id, &query_pairs(raw))
}

/// POST takes the inputs in the query, a `Parameters` body, or a form body.
pub(super) async fn instance_post(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
    body: String,
) -> Result<Response, ApiError> {
    let mut pairs = query_pairs(raw);
    pairs.extend(body_pairs(&body));
    run(&state, &principal, &id, &pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(parse_range(&pairs(&[])).unwrap(), Range::default());
        let r = parse_range(&pairs(&[("eventsSinceNumber", "2"), ("eventsUntilNumber", "5"), ("content", "empty")])).unwrap();
        assert_eq!(r, Range { since: Some(2), until: Some(5), content: Some(ContentLevel::Empty) });
        for bad in [
            vec![("eventsSinceNumber", "x")],
            vec![("eventsSinceNumber", "-1")],
            vec![("eventsSinceNumber", "5"), ("eventsUntilNumber", "2")],
            vec![("eventsSinceNumber", "1"), ("eventsSinceNumber", "2")],
            vec![("content", "everything")],
            vec![("colour", "red")],
        ] {
            let err = parse_range(&pairs(&bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
