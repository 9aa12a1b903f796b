//! `GET /fhir/metadata`: a CapabilityStatement that says what Herald does today, and no more.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::outcome::fhir_response;
use super::Shared;
use crate::fhir::instant::{format_millis, now_millis};
use crate::fhir::types::RESOURCE_TYPES;

pub(super) async fn metadata(State(state): State<Shared>) -> Response {
    let topics: Vec<String> = state
        .store
        .list_current("SubscriptionTopic", None, usize::MAX)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, c)| !c.deleted)
        .filter_map(|(id, c)| state.store.version("SubscriptionTopic", &id, c.seq).ok().flatten())
        .filter_map(|v| v.resource.and_then(|r| r.get("url").and_then(Value::as_str).map(str::to_string)))
        .collect();
    let crud = json!([
        { "code": "read" }, { "code": "vread" }, { "code": "update" }, { "code": "delete" },
        { "code": "history-instance" }, { "code": "create" }, { "code": "search-type" }
    ]);
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .filter(|t| **t != "SubscriptionStatus")
        .map(|t| {
            let mut r = json!({
                "type": t,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "interaction": crud,
                "searchParam": [{ "name": "_id", "type": "token" }],
            });
            if let Some(obj) = r.as_object_mut() {
                match *t {
                    "SubscriptionTopic" => {
                        obj.insert("searchParam".into(), json!([
                            { "name": "_id", "type": "token" },
                            { "name": "url", "type": "uri", "definition": "http://hl7.org/fhir/SearchParameter/SubscriptionTopic-url" },
                            { "name": "status", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/SubscriptionTopic-status" },
                            { "name": "version", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/SubscriptionTopic-version" }
                        ]));
                    }
                    "Subscription" => {
                        obj.insert("searchParam".into(), json!([
                            { "name": "_id", "type": "token" },
                            { "name": "status", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status" },
                            { "name": "topic", "type": "uri", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-topic" }
                        ]));
                        obj.insert("operation".into(), json!([
                            { "name": "status", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-status" },
                            { "name": "events", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-events" },
                            { "name": "get-ws-binding-token", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-get-ws-binding-token" }
                        ]));
                        obj.insert("extension".into(), Value::Array(topics.iter().map(|u| json!({
                            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                            "valueCanonical": u,
                        })).collect()));
                    }
                    _ => {}
                }
            }
            r
        })
        .collect();
    let security = match &state.auth {
        None => json!({
            "cors": false,
            "description": "NO AUTHENTICATION: this Herald serves every request anonymously with full access. It only does so on a loopback address unless started with --allow-anonymous. Configure [auth] (JWTs or API keys) before exposing it.",
        }),
        Some(_) => json!({
            "cors": false,
            "service": [{ "coding": [{ "system": "http://hl7.org/fhir/restful-security-service", "code": "SMART-on-FHIR" }] }],
            "description": "Bearer JWTs (SMART scopes, validated offline against configured keys) or API keys. SMART v2 scopes system/, user/ and patient/ (compartment) are enforced on every interaction; a Subscription is visible to and usable by the client that created it only.",
        }),
    };
    let cs = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_millis(now_millis()),
        "kind": "instance",
        "software": { "name": "Herald", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Herald FHIR R5 topic-based subscription broker", "url": state.base_url },
        "fhirVersion": "5.0.0",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "documentation": "Topic-based subscriptions (R5): rest-hook and websocket channels (websocket: $get-ws-binding-token, then bind-with-token on the returned websocket-url); $status and $events; content empty, id-only, full-resource; resource triggers by type and interaction with fhirPathCriteria or queryCriteria; eventTrigger for Herald's workflow events (output-modified) and for events reported with POST [base]/SubscriptionTopic/$emit (Herald's extension: Parameters with event valueCoding, focus resource or valueReference, context valueReference*); notificationShape include/revInclude as additionalContext; X-Provenance on create and update; filterBy with every comparator and modifier on official and stored SearchParameters; built-in clinical order workflow topics. Conditional interactions are not supported yet. Side-car ingest: POST [base]/$ingest with a history or subscription-notification Bundle.",
            "resource": resources,
            "interaction": [{ "code": "transaction" }, { "code": "batch" }],
            "operation": [{ "name": "ingest", "definition": "urn:herald:operation:ingest", "documentation": "Side-car mode: apply a history Bundle or a full-resource subscription-notification Bundle from another FHIR server as changes." }]
        }]
    });
    fhir_response(StatusCode::OK, &cs)
}
