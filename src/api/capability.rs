//! `GET /fhir/metadata`: a CapabilityStatement that says what Herald does today, and no more,
//! in the instance's FHIR version.
//!
//! Per version: `fhirVersion` is the instance's; the resource types listed are the version's
//! (from `Model::current`); topics are `SubscriptionTopic` resources in R5 and R4B and `Basic`
//! resources coded `SubscriptionTopic` in R4. In R4 and R4B the statement `instantiates` the
//! Subscriptions Backport IG's server statement (`backport-subscription-server-r4`, and for
//! R4B `backport-subscription-server`, the IG's only other one), the Subscription entry names
//! the `backport-subscription` profile and the IG's OperationDefinitions. In every version
//! the Subscription entry carries one `capabilitystatement-subscriptiontopic-canonical`
//! extension (`valueCanonical`) per stored topic a Subscription can name (all but retired
//! ones, so drafts too), which is how R4 clients discover topics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::outcome::fhir_response;
use super::Shared;
use crate::fhir::instant::{format_millis, now_millis};
use crate::fhir::model::Model;
use crate::fhir::topic::stored;
use crate::fhir::types::RESOURCE_TYPES;
use crate::fhir::version::instance;
use crate::fhir::FhirVersion;
use crate::store::Store;

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport";
const TOPIC_CANONICAL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

pub(super) async fn metadata(State(state): State<Shared>) -> Response {
    let version = instance();
    let topics = subscribable_topics(&state.store, version);
    let cs = statement(version, &resource_types(version), &topics, &state.base_url, state.auth.is_some(), &format_millis(now_millis()));
    fhir_response(StatusCode::OK, &cs)
}

/// The canonical urls of the stored topics a Subscription may name (not retired).
fn subscribable_topics(store: &Store, version: FhirVersion) -> Vec<String> {
    let ty = stored::topic_type(version);
    let mut urls: Vec<String> = store
        .list_current(ty, None, usize::MAX)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, c)| !c.deleted)
        .filter_map(|(id, c)| store.version(ty, &id, c.seq).ok().flatten()?.resource)
        .filter_map(|r| stored::to_r5(version, ty, &r)?.ok())
        .filter(|t| t.get("status").and_then(Value::as_str) != Some("retired"))
        .filter_map(|t| t.get("url").and_then(Value::as_str).map(str::to_owned))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// The concrete resource types of `version`'s model, sorted. Until the model of the version
/// is available, the R5 list (the only case is a build whose model is R5 alone).
pub(crate) fn resource_types(version: FhirVersion) -> Vec<String> {
    let listed = |m: &Model| -> Vec<String> {
        let mut types: Vec<String> =
            m.type_names().filter(|t| m.is_resource(t) && m.type_info(t).is_some_and(|i| !i.is_abstract)).map(str::to_owned).collect();
        types.sort();
        types
    };
    match Model::current() {
        Ok(m) if m.fhir_version() == version.number() => listed(m),
        Ok(m) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(model = m.fhir_version(), %version, "the model of this FHIR version is not available; listing the model's types");
            });
            listed(m)
        }
        Err(_) => RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// The CapabilityStatement of `version` for these resource types and topics.
pub(crate) fn statement(version: FhirVersion, types: &[String], topics: &[String], base_url: &str, secured: bool, date: &str) -> Value {
    let crud = json!([
        { "code": "read" }, { "code": "vread" }, { "code": "update" }, { "code": "patch" }, { "code": "delete" },
        { "code": "history-instance" }, { "code": "create" }, { "code": "search-type" }
    ]);
    let topic_type = stored::topic_type(version);
    let resources: Vec<Value> = types
        .iter()
        // Never stored: generated in notifications and `$status` only. R4 has no topic type.
        .filter(|t| *t != "SubscriptionStatus" && !(version == FhirVersion::R4 && *t == "SubscriptionTopic"))
        .map(|t| {
            let mut r = json!({
                "type": t,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "interaction": crud,
                "searchParam": [{ "name": "_id", "type": "token" }],
            });
            if let Some(obj) = r.as_object_mut() {
                match t.as_str() {
                    "Subscription" => {
                        for (key, value) in subscription_entry(version, topics) {
                            obj.insert(key.into(), value);
                        }
                    }
                    "SubscriptionTopic" => {
                        obj.insert("searchParam".into(), topic_search_params());
                    }
                    ty if ty == topic_type => {
                        // R4: topics are Basic resources.
                        obj.insert("searchParam".into(), json!([
                            { "name": "_id", "type": "token" },
                            { "name": "code", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Basic-code",
                              "documentation": "code=SubscriptionTopic finds the topics (Basic resources coded http://hl7.org/fhir/fhir-types#SubscriptionTopic, the R5 elements as cross-version extensions)." }
                        ]));
                    }
                    _ => {}
                }
            }
            r
        })
        .collect();
    let security = if secured {
        json!({
            "cors": false,
            "service": [{ "coding": [{ "system": "http://hl7.org/fhir/restful-security-service", "code": "SMART-on-FHIR" }] }],
            "description": "Bearer JWTs (SMART scopes, validated offline against configured keys) or API keys. SMART v2 scopes system/, user/ and patient/ (compartment) are enforced on every interaction; a Subscription is visible to and usable by the client that created it only.",
        })
    } else {
        json!({
            "cors": false,
            "description": "NO AUTHENTICATION: this Herald serves every request anonymously with full access. It only does so on a loopback address unless started with --allow-anonymous. Configure [auth] (JWTs or API keys) before exposing it.",
        })
    };
    let mut cs = json!({
        "resourceType": "CapabilityStatement",
        "name": "Herald",
        "status": "active",
        "date": date,
        "kind": "instance",
        "software": { "name": "Herald", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": format!("Herald FHIR {} topic-based subscription broker", version.name()), "url": base_url },
        "fhirVersion": version.number(),
        // JSON only: XML is refused with 406 (`api::mime`), XML bodies with 415.
        "format": ["application/fhir+json", "json"],
        // CapabilityStatement.patchFormat (R4, R4B and R5 alike).
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": security,
            "documentation": documentation(version),
            "resource": resources,
            "interaction": [{ "code": "transaction" }, { "code": "batch" }],
            "operation": [{ "name": "ingest", "definition": "urn:herald:operation:ingest", "documentation": "Side-car mode: apply a history Bundle or a full-resource subscription-notification Bundle from another FHIR server as changes." }]
        }]
    });
    if let (Some(obj), Some(server)) = (cs.as_object_mut(), backport_server(version)) {
        obj.insert("instantiates".into(), json!([server]));
        obj.insert("implementationGuide".into(), json!([format!("{BACKPORT}/ImplementationGuide/hl7.fhir.uv.subscriptions-backport")]));
    }
    cs
}

/// The Backport IG server statement an R4 or R4B Herald instantiates.
fn backport_server(version: FhirVersion) -> Option<String> {
    match version {
        FhirVersion::R4 => Some(format!("{BACKPORT}/CapabilityStatement/backport-subscription-server-r4")),
        FhirVersion::R4B => Some(format!("{BACKPORT}/CapabilityStatement/backport-subscription-server")),
        FhirVersion::R5 => None,
    }
}

/// The search parameters of `SubscriptionTopic` (R5 and R4B: every one the Backport IG's
/// server statement lists, and the rest of the official ones).
fn topic_search_params() -> Value {
    let p = |name: &str, ty: &str| json!({ "name": name, "type": ty, "definition": format!("http://hl7.org/fhir/SearchParameter/SubscriptionTopic-{name}") });
    json!([
        { "name": "_id", "type": "token" },
        p("url", "uri"), p("derived-or-self", "uri"), p("resource", "uri"), p("title", "string"),
        p("trigger-description", "string"), p("status", "token"), p("version", "token")
    ])
}

/// The Subscription entry's version-specific elements.
fn subscription_entry(version: FhirVersion, topics: &[String]) -> Vec<(&'static str, Value)> {
    let advertised = Value::Array(topics.iter().map(|u| json!({ "url": TOPIC_CANONICAL, "valueCanonical": u })).collect());
    if version == FhirVersion::R5 {
        return vec![
            (
                "searchParam",
                json!([
                    { "name": "_id", "type": "token" },
                    { "name": "status", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status" },
                    { "name": "topic", "type": "uri", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-topic" }
                ]),
            ),
            (
                "operation",
                json!([
                    { "name": "status", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-status" },
                    { "name": "events", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-events" },
                    { "name": "get-ws-binding-token", "definition": "http://hl7.org/fhir/OperationDefinition/Subscription-get-ws-binding-token" }
                ]),
            ),
            ("extension", advertised),
        ];
    }
    vec![
        ("supportedProfile", json!([format!("{BACKPORT}/StructureDefinition/backport-subscription")])),
        (
            "searchParam",
            json!([
                { "name": "_id", "type": "token" },
                { "name": "url", "type": "uri", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-url" },
                { "name": "status", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Subscription-status" },
                { "name": "topic", "type": "uri", "definition": format!("{BACKPORT}/SearchParameter/Subscription-topic") }
            ]),
        ),
        (
            "operation",
            json!([
                { "name": "status", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-status") },
                { "name": "events", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-events") },
                { "name": "get-ws-binding-token", "definition": format!("{BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token") }
            ]),
        ),
        ("extension", advertised),
    ]
}

fn documentation(version: FhirVersion) -> String {
    const COMMON: &str = "content empty, id-only, full-resource; resource triggers by type and interaction with fhirPathCriteria or queryCriteria; eventTrigger for Herald's workflow events (output-modified) and for events reported with POST [base]/SubscriptionTopic/$emit (Herald's extension: Parameters with event valueCoding, focus resource or valueReference, context valueReference*); notificationShape include/revInclude as additionalContext; X-Provenance on create and update; filters with every comparator and modifier on official and stored SearchParameters; built-in clinical order workflow topics. Conditional interactions are not supported yet. Side-car ingest: POST [base]/$ingest with a history or subscription-notification Bundle.";
    match version {
        FhirVersion::R5 => format!("Topic-based subscriptions (R5): rest-hook and websocket channels (websocket: $get-ws-binding-token, then bind-with-token on the returned websocket-url); $status and $events; {COMMON}"),
        FhirVersion::R4B => format!("Topic-based subscriptions (R4B, Subscriptions R5 Backport IG 1.1.0): backport-subscription Subscriptions (criteria = topic canonical, filters in backport-filter-criteria); SubscriptionTopic resources (R4B); history notification Bundles with a SubscriptionStatus first; rest-hook and websocket channels; $status and $events; {COMMON}"),
        FhirVersion::R4 => format!("Topic-based subscriptions (R4, Subscriptions R5 Backport IG 1.1.0): backport-subscription Subscriptions (criteria = topic canonical, filters in backport-filter-criteria); topics are Basic resources coded http://hl7.org/fhir/fhir-types#SubscriptionTopic (GET [base]/Basic?code=SubscriptionTopic) and are listed in the capabilitystatement-subscriptiontopic-canonical extensions; history notification Bundles with a backport-subscription-status-r4 Parameters first; rest-hook and websocket channels; $status and $events; {COMMON}"),
    }
}

#[cfg(test)]
mod tests;
