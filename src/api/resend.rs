//! Operator replay: `$resend` and `$dead-letters` on a Subscription.
//!
//! - `POST /fhir/Subscription/{id}/$resend` (backport 1.2.0-ballot, digest §3.4): send stored
//!   events again on the subscription's channel, with their original numbers and in order,
//!   before new events. Inputs (query, `Parameters` or form body), all inclusive:
//!   `eventsSinceNumber`/`eventsUntilNumber` or `eventsSinceInstant`/`eventsUntilInstant`;
//!   Herald's `deadLetters=true` limits it to the dead letters in the range (default: all of
//!   them), each removed from the dead letters once its endpoint accepts it. The subscription
//!   must be rest-hook (websocket clients read `$events` or bind with `eventsSinceNumber`);
//!   the resend runs once the subscription is `active` (after an `error`, the client or
//!   operator sets it back to `requested` first). Answers an OperationOutcome saying what
//!   will be sent. A new resend replaces one in progress.
//! - `GET /fhir/Subscription/{id}/$dead-letters`: the dead letters, as a `Parameters` with one
//!   `deadLetter` per event (number, when it was parked, attempts, the reason, and the event's
//!   topic, interaction and focus). Header values and payloads are never included.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::access::{Access, Caller};
use super::events::{body_pairs, query_pairs};
use super::outcome::{fhir_response, ApiError};
use super::rest::check_id;
use super::stored_subscription::StoredSubscription;
use super::Shared;
use crate::auth::{Perm, Principal};
use crate::fhir::instant::{format_millis, parse_instant};
use crate::fhir::outcome::operation_outcome;
use crate::fhir::{Issue, IssueType};
use crate::ingest::ResendRange;

/// Most dead letters one `$dead-letters` answer lists.
const MAX_LISTED: usize = 1000;

fn bad(text: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, IssueType::Value, text)
}

fn parse(pairs: &[(String, String)]) -> Result<(ResendRange, bool), ApiError> {
    let (mut since_n, mut until_n, mut since_i, mut until_i, mut dead) = (None, None, None, None, None);
    for (name, value) in pairs {
        let value = value.trim();
        let number = || value.parse::<u64>().map_err(|_| bad(format!("{name} '{value}' is not a non-negative whole number")));
        let instant = || parse_instant(value).ok_or_else(|| bad(format!("{name} '{value}' is not an instant")));
        let seen = match name.as_str() {
            "eventsSinceNumber" => since_n.replace(number()?).is_some(),
            "eventsUntilNumber" => until_n.replace(number()?).is_some(),
            "eventsSinceInstant" => since_i.replace(instant()?).is_some(),
            "eventsUntilInstant" => until_i.replace(instant()?).is_some(),
            "deadLetters" => match value {
                "true" => dead.replace(true).is_some(),
                "false" => dead.replace(false).is_some(),
                _ => return Err(bad(format!("deadLetters '{value}' is not true or false"))),
            },
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::NotSupported,
                    format!("$resend takes eventsSinceNumber, eventsUntilNumber, eventsSinceInstant, eventsUntilInstant and deadLetters, not '{other}'"),
                ))
            }
        };
        if seen {
            return Err(bad(format!("{name} is given more than once")));
        }
    }
    let by_number = since_n.is_some() || until_n.is_some();
    let by_instant = since_i.is_some() || until_i.is_some();
    let range = match (by_number, by_instant) {
        (true, true) => return Err(bad("give a range by number or by instant, not both")),
        (_, true) => ResendRange::Instants { since: since_i, until: until_i },
        _ => ResendRange::Numbers { since: since_n, until: until_n },
    };
    if let (Some(a), Some(b)) = (since_n, until_n) {
        if a > b {
            return Err(bad(format!("eventsSinceNumber {a} is greater than eventsUntilNumber {b}")));
        }
    }
    // Without a range, a resend means the dead letters (everything else was delivered).
    Ok((range, dead.unwrap_or(!by_number && !by_instant)))
}

/// The channel of one of the caller's subscriptions (404 for anyone else's).
fn channel_of(state: &Shared, principal: &Principal, id: &str) -> Result<String, ApiError> {
    let (resource, _) = Access::new(state, principal).subscription(id, Perm::Read)?;
    Ok(StoredSubscription::new(&resource, crate::fhir::version::instance()).channel().to_owned())
}

async fn resend(state: &Shared, principal: &Principal, id: &str, pairs: &[(String, String)]) -> Result<Response, ApiError> {
    check_id(id)?;
    let channel = channel_of(state, principal, id)?;
    let (range, dead_only) = parse(pairs)?;
    let actor = principal.client.clone().filter(|c| !c.is_empty());
    if channel != "rest-hook" {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::NotSupported,
            "$resend is for rest-hook subscriptions; websocket clients read $events or bind with eventsSinceNumber",
        ));
    }
    let summary = state.ingest.resend(id, range, dead_only, actor).await?;
    let what = if dead_only { "dead letters" } else { "events" };
    let mut text = if summary.events == 0 {
        format!("no {what} to resend in the range")
    } else {
        format!(
            "{} {what} numbered {} to {} will be sent again, in order, while the subscription is active",
            summary.events, summary.from, summary.until
        )
    };
    if let Some(pending) = summary.pending_from {
        text.push_str(&format!(
            "; events from {pending} on have not been accepted yet: they are delivered in order first, then sent again"
        ));
    }
    Ok(fhir_response(StatusCode::OK, &operation_outcome(&[Issue::info(text)])))
}

pub(super) async fn resend_post(
    State(state): State<Shared>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    Caller(principal): Caller,
    body: String,
) -> Result<Response, ApiError> {
    let mut pairs = query_pairs(raw);
    pairs.extend(body_pairs(&body));
    resend(&state, &principal, &id, &pairs).await
}

pub(super) async fn dead_letters(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    channel_of(&state, &principal, &id)?;
    let dead = state.store.dead_letters(&id, MAX_LISTED).map_err(|e| ApiError::internal(&e))?;
    let mut parameter = Vec::with_capacity(dead.len());
    for d in dead {
        let event = state.store.events(&id, d.number, 1).map_err(|e| ApiError::internal(&e))?.into_iter().find(|e| e.number == d.number);
        let mut part = vec![
            json!({ "name": "eventNumber", "valueString": d.number.to_string() }),
            json!({ "name": "parkedAt", "valueInstant": format_millis(d.parked_at) }),
            json!({ "name": "attempts", "valueInteger": d.attempts }),
            json!({ "name": "reason", "valueString": d.reason }),
        ];
        if let Some(e) = event {
            part.push(json!({ "name": "timestamp", "valueInstant": format_millis(e.timestamp) }));
            part.push(json!({ "name": "topic", "valueCanonical": e.topic }));
            part.push(json!({ "name": "interaction", "valueCode": e.interaction }));
            part.push(json!({ "name": "focus", "valueReference": { "reference": format!("{}/{}/_history/{}", e.focus_type, e.focus_id, e.focus_seq) } }));
        }
        parameter.push(json!({ "name": "deadLetter", "part": part }));
    }
    Ok(fhir_response(StatusCode::OK, &json!({ "resourceType": "Parameters", "parameter": parameter })))
}
