//! `POST /fhir/SubscriptionTopic/$emit`: business events for topics' `eventTrigger`s (an HL7 v2
//! `ADT^A01` seen by an interface engine, a scheduling system's "appointment booked"). This is
//! Herald's extension: R5 defines `eventTrigger` but no way to report such an event to a
//! server, and no peer implements one. It is shaped like an R5 operation:
//!
//! ```text
//! Parameters
//!   event    valueCoding             1..1  the event code (matches eventTrigger.event.coding)
//!   focus    valueReference          0..1  a resource Herald holds: the event is about its
//!            | resource              0..1  current version; or the resource itself, stored
//!                                          first in the same commit (update when it has an
//!                                          id, else create); exactly one of the two
//!   context  valueReference          0..*  resources Herald holds, carried as additionalContext
//! ```
//!
//! Topics whose `eventTrigger` lists the code for the focus type fire; subscriptions' filters
//! are evaluated on the focus, and the topic's `notificationShape` adds context, exactly as
//! for resource changes. The answer is a `Parameters` with the focus version, the number of
//! subscriptions notified and the topics that fired, sent once the events are durable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::access::{Access, Caller};
use super::extract::FhirBody;
use super::outcome::{fhir_response, ApiError};
use super::rest::{check_id, check_type};
use super::Shared;
use crate::auth::Perm;
use crate::fhir::search::include::local_target;
use crate::fhir::{Issue, IssueType};
use crate::ingest::{EmittedEvent, EventFocus, WriteEntry, WriteMethod};

fn invalid(at: &str, why: impl Into<String>) -> ApiError {
    ApiError::issues(StatusCode::BAD_REQUEST, vec![Issue::at(IssueType::Invalid, at, why.into())])
}

/// Types whose writes have their own rules and checks; not accepted as an inline focus (nor
/// is an R4 `Basic` topic).
const OWN_INTERACTIONS: [&str; 4] = ["Subscription", "SubscriptionTopic", "SearchParameter", "SubscriptionStatus"];

fn parse(body: &Value, base_url: &str) -> Result<EmittedEvent, ApiError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(invalid("resourceType", "$emit takes a Parameters resource"));
    }
    let params = body.get("parameter").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let named = |name: &'static str| params.iter().filter(move |p| p.get("name").and_then(Value::as_str) == Some(name));
    let mut events = named("event");
    let coding = match (events.next(), events.next()) {
        (Some(p), None) => p.get("valueCoding").ok_or_else(|| invalid("Parameters.parameter[event]", "event needs a valueCoding"))?,
        _ => return Err(invalid("Parameters.parameter[event]", "exactly one event parameter is required")),
    };
    let (Some(system), Some(code)) = (coding.get("system").and_then(Value::as_str), coding.get("code").and_then(Value::as_str)) else {
        return Err(invalid("Parameters.parameter[event].valueCoding", "the event coding needs a system and a code"));
    };
    let local = |at: &str, p: &Value| -> Result<(String, String), ApiError> {
        let reference = p
            .pointer("/valueReference/reference")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(at, "expected a valueReference with a reference"))?;
        local_target(reference, base_url).ok_or_else(|| invalid(at, format!("{reference} is not a resource on this server")))
    };
    let mut foci = named("focus");
    let focus = match (foci.next(), foci.next()) {
        (Some(p), None) => match (p.get("resource"), p.get("valueReference")) {
            (Some(resource), None) => {
                let ty = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_owned();
                check_type(&ty)?;
                let version = crate::fhir::version::instance();
                if OWN_INTERACTIONS.contains(&ty.as_str()) || crate::fhir::topic::stored::is_topic(version, &ty, resource) {
                    return Err(invalid(
                        "Parameters.parameter[focus].resource",
                        format!("write a {ty} with its own interaction, then name it"),
                    ));
                }
                let (method, id) = match resource.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        check_id(id)?;
                        (WriteMethod::Update, id.to_owned())
                    }
                    None => (WriteMethod::Create, uuid::Uuid::new_v4().to_string()),
                };
                EventFocus::Write(WriteEntry {
                    method,
                    resource_type: ty,
                    id,
                    resource: Some(resource.clone()),
                    if_match: None,
                    provenance_for: None,
                    patched: false,
                })
            }
            (None, Some(_)) => {
                let (resource_type, id) = local("Parameters.parameter[focus]", p)?;
                EventFocus::Stored { resource_type, id }
            }
            _ => return Err(invalid("Parameters.parameter[focus]", "focus takes either a resource or a valueReference")),
        },
        _ => return Err(invalid("Parameters.parameter[focus]", "exactly one focus parameter is required")),
    };
    let context = named("context").map(|p| local("Parameters.parameter[context]", p)).collect::<Result<Vec<_>, _>>()?;
    Ok(EmittedEvent { system: system.to_owned(), code: code.to_owned(), focus, context })
}

pub(super) async fn emit(State(state): State<Shared>, Caller(principal): Caller, FhirBody(body): FhirBody) -> Result<Response, ApiError> {
    // An emitted event may name any resource as its focus and reach any subscriber.
    Access::new(&state, &principal).require_everything(Perm::Create)?;
    let event = parse(&body, &state.base_url)?;
    let result = state.ingest.emit(event).await?;
    let focus = &result.focus;
    let mut parameter = vec![
        json!({ "name": "focus", "valueReference": { "reference": format!("{}/{}/_history/{}", focus.resource_type, focus.id, focus.version_id) } }),
        json!({ "name": "notified", "valueInteger": result.notified }),
    ];
    parameter.extend(result.topics.iter().map(|t| json!({ "name": "topic", "valueCanonical": t })));
    Ok(fhir_response(StatusCode::OK, &json!({ "resourceType": "Parameters", "parameter": parameter })))
}
