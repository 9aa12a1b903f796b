//! The bundle builder against the official R5 notification examples
//! (`shared/fhir/examples/r5/notifications/`). Each case rebuilds an example from its own
//! values and compares the two after removing what legitimately differs per bundle (random
//! ids, timestamps, narrative, meta, response details).

use serde_json::{json, Value};

use super::*;
use crate::channels::render::{error_view, event_view, status as status_of};
use crate::outbox::{Cached, Version};
use crate::store::records::FORMAT;
use crate::store::{ContextRef, EventRecord, StoredError, SubStatus, VersionRecord};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/examples/r5/notifications");
const BASE: &str = "http://example.org/FHIR/R5";
const TOPIC: &str = "http://example.org/FHIR/R5/SubscriptionTopic/admission";

fn example(name: &str) -> Option<Value> {
    crate::testdata::shared(format!("{EXAMPLES}/{name}"))?;
    let text = std::fs::read_to_string(format!("{EXAMPLES}/{name}")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes fields that differ between any two correct bundles.
fn normalize(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for k in ["id", "timestamp", "text", "meta", "response"] {
                    o.remove(k);
                }
                if o.get("fullUrl").and_then(Value::as_str).is_some_and(|u| u.starts_with("urn:uuid:")) {
                    o.remove("fullUrl");
                }
                // Examples mix http and https for the same base; compare on the path.
                if let Some(Value::String(u)) = o.get_mut("fullUrl") {
                    *u = u.replace("https://", "http://");
                }
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn event(number: u64, interaction: &str, id: &str) -> EventRecord {
    EventRecord {
        v: FORMAT,
        number,
        timestamp: 0,
        topic: TOPIC.into(),
        interaction: interaction.into(),
        focus_type: "Encounter".into(),
        focus_id: id.into(),
        focus_seq: 1,
        context: Vec::new(),
        incarnation: 0,
    }
}

fn ctx(status: SubStatus, count: u64, content: ContentLevel, error: Option<&StoredError>) -> StatusContext<'_> {
    StatusContext {
        version: FhirVersion::R5,
        base_url: BASE,
        subscription_id: "123",
        identifier: None,
        topic_url: TOPIC,
        status: status_of(status),
        events_since_start: count,
        error: error.map(error_view),
        content,
    }
}

/// A stored event as the lanes hand it to notify, without additional context.
/// Resources are written ahead as the lanes write them (`full`), so every bundle test also
/// covers the spliced JSON.
pub(super) fn view_of<'a>(e: &'a EventRecord, focus: Option<&'a Version>) -> EventView<'a> {
    event_view(e, focus, &[], false, true)
}

/// A stored event as the lanes hand it to notify, with the context versions it saw.
pub(super) fn view_with<'a>(
    e: &'a EventRecord,
    focus: Option<&'a Version>,
    context: &'a [Option<Version>],
    withheld: bool,
) -> EventView<'a> {
    event_view(e, focus, context, withheld, true)
}

/// Builds the bundle and compares it with the example; skips (with a note) without shared/.
fn check(file: &str, built: Value) {
    let Some(expected) = example(file) else {
        eprintln!("skipping {file}: shared examples not present");
        return;
    };
    assert_eq!(normalize(built), normalize(expected), "{file}");
}

#[test]
fn handshake_matches_the_official_example() {
    check(
        "notification-handshake.json",
        notification_bundle(&ctx(SubStatus::Requested, 0, ContentLevel::IdOnly, None), NotificationType::Handshake, &[], 0),
    );
}

#[test]
fn heartbeat_matches_the_official_example() {
    check(
        "notification-heartbeat.json",
        notification_bundle(&ctx(SubStatus::Active, 310, ContentLevel::IdOnly, None), NotificationType::Heartbeat, &[], 0),
    );
}

#[test]
fn empty_matches_the_official_example() {
    let e = event(2, "update", "2");
    let events = [view_of(&e, None)];
    check(
        "notification-empty.json",
        notification_bundle(&ctx(SubStatus::Active, 2, ContentLevel::Empty, None), NotificationType::EventNotification, &events, 0),
    );
}

#[test]
fn id_only_matches_the_official_example() {
    let e = event(2, "update", "2");
    let events = [view_of(&e, None)];
    check(
        "notification-id-only.json",
        notification_bundle(&ctx(SubStatus::Active, 2, ContentLevel::IdOnly, None), NotificationType::EventNotification, &events, 0),
    );
}

#[test]
fn full_resource_matches_the_official_example() {
    let Some(expected) = example("notification-full-resource.json") else { return };
    let resource = expected["entry"][1]["resource"].clone();
    let version = version_of("Encounter", "2", 1, resource);
    let e = event(2, "update", "2");
    let events = [view_of(&e, Some(&version))];
    check(
        "notification-full-resource.json",
        notification_bundle(&ctx(SubStatus::Active, 2, ContentLevel::FullResource, None), NotificationType::EventNotification, &events, 0),
    );
}

#[test]
fn error_status_matches_the_official_example() {
    let err = StoredError { code: "no-response".into(), text: String::new(), at: 0 };
    let e = event(328, "update", "x");
    let events = [view_of(&e, None)];
    let mut built =
        notification_bundle(&ctx(SubStatus::Error, 328, ContentLevel::Empty, Some(&err)), NotificationType::EventNotification, &events, 0);
    // The example carries the topic although its content is empty and has no error text;
    // Herald omits the topic at `empty` (R5 §2.8 SHOULD NOT) and explains the error.
    let status = &mut built["entry"][0]["resource"];
    status["topic"] = json!(TOPIC);
    if let Some(e) = status["error"][0].as_object_mut() {
        e.remove("text");
    }
    check("notification-error.json", built);
}

#[test]
fn query_status_resource_matches_the_official_example() {
    let Some(expected) = example("notification-query-status.json") else { return };
    let built = subscription_status(&ctx(SubStatus::Active, 310, ContentLevel::IdOnly, None), NotificationType::QueryStatus, &[]);
    assert_eq!(normalize(built), normalize(expected["entry"][0]["resource"].clone()));
}

#[test]
fn counters_are_json_strings_and_highest_event_equals_count() {
    let a = event(6, "create", "a");
    let b = event(7, "delete", "b");
    let events = [view_of(&a, None), view_of(&b, None)];
    let bundle =
        notification_bundle(&ctx(SubStatus::Active, 7, ContentLevel::IdOnly, None), NotificationType::EventNotification, &events, 0);
    let status = &bundle["entry"][0]["resource"];
    assert_eq!(status["eventsSinceSubscriptionStart"], json!("7"));
    assert_eq!(status["notificationEvent"][1]["eventNumber"], json!("7"));
    assert_eq!(bundle["entry"][1]["request"], json!({ "method": "POST", "url": "Encounter" }));
    assert_eq!(bundle["entry"][2]["request"], json!({ "method": "DELETE", "url": "Encounter/b" }));
}

/// A stored version `seq` (versionId the same) of `ty/id` as the lanes share it; shared with
/// `withhold::tests`.
pub(super) fn version_of(ty: &str, id: &str, seq: u64, resource: Value) -> Version {
    shared(record_of(ty, id, seq, resource))
}

/// A read version as the outbox's cache hands it out.
pub(super) fn shared(record: VersionRecord) -> Version {
    std::sync::Arc::new(Cached::new(record, true))
}

/// The record of `version_of`, to change before sharing it.
pub(super) fn record_of(ty: &str, id: &str, seq: u64, resource: Value) -> VersionRecord {
    VersionRecord {
        v: FORMAT,
        resource_type: ty.into(),
        id: id.into(),
        seq,
        version_id: seq.to_string(),
        last_updated: 0,
        method: "PUT".into(),
        deleted: false,
        resource: Some(resource),
        full_url: None,
    }
}

#[test]
fn additional_context_follows_the_content_level_and_is_listed_once() {
    let patient = version_of("Patient", "p", 3, json!({ "resourceType": "Patient", "id": "p" }));
    let mut a = event(1, "update", "a");
    let mut b = event(2, "update", "b");
    let p = ContextRef { resource_type: "Patient".into(), id: "p".into(), seq: 3 };
    a.context = vec![p.clone()];
    b.context = vec![p.clone(), ContextRef { resource_type: "Patient".into(), id: "gone".into(), seq: 1 }];
    let (va, vb) = (version_of("Encounter", "a", 1, json!({})), version_of("Encounter", "b", 1, json!({})));
    let ca = [Some(patient.clone())];
    let cb = [Some(patient.clone()), None];
    let events = [view_with(&a, Some(&va), &ca, false), view_with(&b, Some(&vb), &cb, false)];
    let url = format!("{BASE}/Patient/p");
    for (content, with_resource) in [(ContentLevel::IdOnly, false), (ContentLevel::FullResource, true)] {
        let bundle = notification_bundle(&ctx(SubStatus::Active, 2, content, None), NotificationType::EventNotification, &events, 0);
        let status = &bundle["entry"][0]["resource"];
        // Both events list the patient; the version that could not be read is left out.
        for i in 0..2 {
            assert_eq!(status["notificationEvent"][i]["additionalContext"], json!([{ "reference": url }]));
        }
        let entries = bundle["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 4, "status, two foci, one patient: {bundle}");
        let patient_entry = &entries[3];
        assert_eq!(patient_entry["fullUrl"], json!(url));
        assert_eq!(patient_entry["request"], json!({ "method": "GET", "url": "Patient/p" }));
        assert_eq!(patient_entry["response"]["etag"], json!("W/\"3\""));
        assert_eq!(patient_entry.get("resource").is_some(), with_resource, "{content:?}");
    }
    // At `empty` there is no context at all.
    let bundle =
        notification_bundle(&ctx(SubStatus::Active, 2, ContentLevel::Empty, None), NotificationType::EventNotification, &events, 0);
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 1);
    assert!(bundle["entry"][0]["resource"]["notificationEvent"][0].get("additionalContext").is_none());
}

/// The bundle builder as it was before it wrote `Serialize` shapes (issue #9), kept as the
/// reference the new one must reproduce byte for byte, random ids aside.
mod reference {
    use std::collections::HashSet;

    use serde_json::{json, Map, Value};

    use super::super::{new_id, resource_url, ContextView, EventView, NotificationType, Status, StatusContext};
    use crate::fhir::instant::{format_millis, Millis};
    use crate::fhir::subscription::{secrets, ContentLevel};

    fn shown(resource: &Value) -> Value {
        let mut resource = resource.clone();
        secrets::redact(&mut resource);
        resource
    }

    /// A `SubscriptionStatus` resource (its `id` is fresh each time).
    pub(super) fn subscription_status(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventView<'_>]) -> Value {
        let mut status = Map::new();
        status.insert("resourceType".into(), json!("SubscriptionStatus"));
        status.insert("id".into(), json!(new_id()));
        status.insert("status".into(), json!(ctx.status.code()));
        status.insert("type".into(), json!(kind.code()));
        status.insert("eventsSinceSubscriptionStart".into(), json!(ctx.events_since_start.to_string()));
        if !events.is_empty() {
            let list: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut ev = Map::new();
                    ev.insert("eventNumber".into(), json!(e.number.to_string()));
                    ev.insert("timestamp".into(), json!(format_millis(e.timestamp)));
                    if ctx.content != ContentLevel::Empty {
                        let url = resource_url(ctx.base_url, e.focus_type, e.focus_id, e.focus.and_then(|v| v.full_url));
                        ev.insert("focus".into(), json!({ "reference": url }));
                        let additional: Vec<Value> = e
                            .context
                            .iter()
                            .map(|c| json!({ "reference": resource_url(ctx.base_url, c.resource_type, c.id, c.version.full_url) }))
                            .collect();
                        if !additional.is_empty() {
                            ev.insert("additionalContext".into(), Value::Array(additional));
                        }
                    }
                    Value::Object(ev)
                })
                .collect();
            status.insert("notificationEvent".into(), Value::Array(list));
        }
        let mut subscription = Map::new();
        subscription.insert("reference".into(), json!(format!("{}/Subscription/{}", ctx.base_url, ctx.subscription_id)));
        if let Some(identifier) = ctx.identifier {
            subscription.insert("identifier".into(), identifier.clone());
        }
        status.insert("subscription".into(), Value::Object(subscription));
        // R5 §2.8: topic SHOULD NOT be present at `empty` (it can reveal PHI), MAY/SHOULD otherwise.
        if ctx.content != ContentLevel::Empty {
            status.insert("topic".into(), json!(ctx.topic_url));
        }
        if let Some(err) = ctx.error {
            if ctx.status == Status::Error {
                status.insert(
                    "error".into(),
                    json!([{
                        "coding": [{
                            "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                            "code": err.code,
                        }],
                        "text": err.text,
                    }]),
                );
            }
        }
        Value::Object(status)
    }

    /// The entry of an additional-context resource: like a focus entry, read rather than written.
    fn context_entry(ctx: &StatusContext<'_>, c: &ContextView<'_>) -> Value {
        let (r, v) = (c, c.version);
        let mut entry = Map::new();
        entry.insert("fullUrl".into(), json!(resource_url(ctx.base_url, r.resource_type, r.id, v.full_url)));
        if ctx.content == ContentLevel::FullResource {
            if let Some(resource) = v.resource {
                entry.insert("resource".into(), shown(resource));
            }
        }
        entry.insert("request".into(), json!({ "method": "GET", "url": format!("{}/{}", r.resource_type, r.id) }));
        entry.insert(
            "response".into(),
            json!({
                "status": "200",
                "etag": format!("W/\"{}\"", v.version_id),
                "lastModified": format_millis(v.last_updated),
            }),
        );
        Value::Object(entry)
    }

    fn payload_entry(ctx: &StatusContext<'_>, e: &EventView<'_>) -> Value {
        let ev = e;
        let url = resource_url(ctx.base_url, ev.focus_type, ev.focus_id, e.focus.and_then(|v| v.full_url));
        let (method, request_url, status) = match ev.interaction {
            "create" => ("POST", ev.focus_type.to_string(), "201"),
            "delete" => ("DELETE", format!("{}/{}", ev.focus_type, ev.focus_id), "204"),
            // An eventTrigger event: the focus was read, not written, by this event.
            "event" => ("GET", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
            _ => ("PUT", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
        };
        let mut entry = Map::new();
        entry.insert("fullUrl".into(), json!(url));
        if ctx.content == ContentLevel::FullResource {
            if let Some(resource) = e.focus.and_then(|v| v.resource) {
                entry.insert("resource".into(), shown(resource));
            }
        }
        entry.insert("request".into(), json!({ "method": method, "url": request_url }));
        let mut response = Map::new();
        response.insert("status".into(), json!(status));
        if let Some(v) = e.focus {
            response.insert("etag".into(), json!(format!("W/\"{}\"", v.version_id)));
            response.insert("lastModified".into(), json!(format_millis(v.last_updated)));
        }
        entry.insert("response".into(), Value::Object(response));
        Value::Object(entry)
    }

    /// A notification Bundle of type `subscription-notification`.
    pub(super) fn notification_bundle(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventView<'_>], now: Millis) -> Value {
        let status = subscription_status(ctx, kind, events);
        let status_url = format!("urn:uuid:{}", status.get("id").and_then(Value::as_str).unwrap_or_default());
        let mut entries = vec![json!({ "fullUrl": status_url, "resource": status })];
        if ctx.content != ContentLevel::Empty {
            // Bundle rule bdl-7: one entry per (fullUrl, version). A focus comes first; context
            // already present (a focus, or an earlier event's context) is not repeated.
            let mut seen: HashSet<(String, String)> = HashSet::new();
            for e in events {
                let entry = payload_entry(ctx, e);
                let url = resource_url(ctx.base_url, e.focus_type, e.focus_id, e.focus.and_then(|v| v.full_url));
                seen.insert((url, e.focus.map(|v| v.version_id.to_string()).unwrap_or_default()));
                entries.push(entry);
            }
            for e in events {
                for c in &e.context {
                    let url = resource_url(ctx.base_url, c.resource_type, c.id, c.version.full_url);
                    if seen.insert((url, c.version.version_id.to_string())) {
                        entries.push(context_entry(ctx, c));
                    }
                }
            }
        }
        json!({
            "resourceType": "Bundle",
            "id": new_id(),
            "type": "subscription-notification",
            "timestamp": format_millis(now),
            "entry": entries,
        })
    }
}

/// The text of `v` with the random ids (Bundle, SubscriptionStatus, its `urn:uuid` fullUrl)
/// replaced.
fn without_ids(v: &Value) -> String {
    let mut v = v.clone();
    v["id"] = json!("B");
    if v["entry"].is_array() {
        v["entry"][0]["fullUrl"] = json!("urn:uuid:S");
        v["entry"][0]["resource"]["id"] = json!("S");
    } else {
        v["id"] = json!("S");
    }
    serde_json::to_string(&v).unwrap()
}

#[test]
fn bundles_and_bytes_are_what_the_value_builder_wrote() {
    let patient = version_of("Patient", "p", 3, json!({ "resourceType": "Patient", "id": "p", "active": true, "n": 1.50 }));
    let mut elsewhere = record_of("Patient", "q", 2, json!({ "resourceType": "Patient", "id": "q" }));
    elsewhere.full_url = Some("http://other.example/fhir/Patient/q".into());
    let elsewhere = shared(elsewhere);
    // A topic may be about Subscriptions: their secrets are redacted in every bundle.
    let subscription = version_of(
        "Subscription",
        "s",
        5,
        json!({ "resourceType": "Subscription", "id": "s", "parameter": [{ "name": "Authorization", "value": "Bearer hunter2" }] }),
    );
    let mut a = event(1, "create", "a");
    let mut b = event(2, "update", "b");
    let c = event(3, "delete", "c");
    let d = event(4, "event", "d");
    a.context = vec![ContextRef { resource_type: "Patient".into(), id: "p".into(), seq: 3 }];
    b.context = vec![
        a.context[0].clone(),
        ContextRef { resource_type: "Patient".into(), id: "q".into(), seq: 2 },
        ContextRef { resource_type: "Subscription".into(), id: "s".into(), seq: 5 },
    ];
    let (va, vb) = (
        version_of("Encounter", "a", 1, json!({ "resourceType": "Encounter", "id": "a", "status": "planned" })),
        version_of("Encounter", "b", 4, json!({})),
    );
    let ca = [Some(patient.clone())];
    let cb = [Some(patient.clone()), Some(elsewhere), Some(subscription)];
    let events = [view_with(&a, Some(&va), &ca, false), view_with(&b, Some(&vb), &cb, false), view_of(&c, None), view_of(&d, Some(&va))];
    let err = StoredError { code: "no-response".into(), text: "timed out".into(), at: 0 };
    let identifier = json!({ "system": "urn:ietf:rfc:3986", "value": "urn:uuid:1" });
    let mut compared = 0;
    for content in [ContentLevel::Empty, ContentLevel::IdOnly, ContentLevel::FullResource] {
        for (status, error) in [(SubStatus::Active, None), (SubStatus::Error, Some(&err)), (SubStatus::Active, Some(&err))] {
            for kind in [
                NotificationType::Handshake,
                NotificationType::Heartbeat,
                NotificationType::EventNotification,
                NotificationType::QueryEvent,
            ] {
                for n in [0, 1, 4] {
                    let mut c = ctx(status, 9, content, error);
                    if n == 4 {
                        c.identifier = Some(&identifier);
                    }
                    let events = &events[..n];
                    let want = reference::notification_bundle(&c, kind, events, 1_795_000_000_000);
                    let got = notification_bundle(&c, kind, events, 1_795_000_000_000);
                    assert_eq!(without_ids(&got), without_ids(&want));
                    let raw = notification_bytes(&c, kind, events, 1_795_000_000_000);
                    assert!(!String::from_utf8_lossy(&raw).contains("hunter2"), "a Subscription secret was sent");
                    let bytes: Value = serde_json::from_slice(&raw).unwrap();
                    assert_eq!(without_ids(&bytes), without_ids(&want));
                    let status = subscription_status(&c, kind, events);
                    assert_eq!(without_ids(&status), without_ids(&reference::subscription_status(&c, kind, events)));
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 3 * 4 * 3);
}
