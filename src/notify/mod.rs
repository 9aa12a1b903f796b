//! Notification bundles: R5 `subscription-notification` Bundles headed by a `SubscriptionStatus`
//! (handshake, heartbeat, event-notification, query-event) and the `query-status` resources of
//! `$status`. Pure: callers pass the stored events and, for `full-resource`, the resource
//! versions the events saw.
//!
//! Shapes follow the R5 examples (digest §1.3, §1.4, §2.5, §2.8): counters are JSON strings;
//! the status entry has a `urn:uuid` fullUrl and no request/response; `empty` carries no focus,
//! no topic and no other entry; `id-only` carries the focus and an entry with `fullUrl`,
//! `request` and `response` but no `resource`; `full-resource` adds the resource (a deletion
//! has none to add, so its entry stays request/response only). An event's additional context
//! (the topic's `notificationShape` includes, resolved when the event was committed) is listed
//! in `notificationEvent.additionalContext` and gets entries at the same level: `GET`
//! request/response at `id-only`, the resource as well at `full-resource`, so every reference
//! in the status resolves to an entry. A Subscription carried as a resource has its secrets
//! redacted. An event `withhold` marked (the subscriber's grant no longer covers its focus)
//! keeps its number and timestamp but is rendered as at `empty`, with the [`WITHHELD_URL`]
//! extension; context its grant cannot read was taken out before rendering.

pub mod withhold;

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::fhir::instant::{format_millis, Millis};
use crate::fhir::subscription::{secrets, ContentLevel};
use crate::store::{ContextRef, EventRecord, StoredError, SubStatus, VersionRecord};

pub use withhold::WITHHELD_URL;

/// `subscription-notification-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationType {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl NotificationType {
    pub fn code(self) -> &'static str {
        match self {
            NotificationType::Handshake => "handshake",
            NotificationType::Heartbeat => "heartbeat",
            NotificationType::EventNotification => "event-notification",
            NotificationType::QueryStatus => "query-status",
            NotificationType::QueryEvent => "query-event",
        }
    }
}

/// What a SubscriptionStatus says about its subscription.
pub struct StatusContext<'a> {
    pub base_url: &'a str,
    pub subscription_id: &'a str,
    /// `Subscription.identifier[0]`, echoed as `subscription.identifier` (COW requires it).
    pub identifier: Option<&'a Value>,
    pub topic_url: &'a str,
    pub status: SubStatus,
    pub events_since_start: u64,
    pub error: Option<&'a StoredError>,
    pub content: ContentLevel,
}

/// An event with the resource versions it saw (needed for `full-resource`): the focus, and
/// one per `event.context` entry, in the same order (`None` where a version could not be
/// read; that context is then left out).
pub struct EventWithVersion<'a> {
    pub event: &'a EventRecord,
    pub version: Option<&'a VersionRecord>,
    pub context: &'a [Option<VersionRecord>],
    /// The subscriber may not see the focus (`withhold::screen`): no focus, no context.
    pub withheld: bool,
}

impl<'a> EventWithVersion<'a> {
    /// An event whose context versions are not at hand (rendered without additional context).
    pub fn bare(event: &'a EventRecord, version: Option<&'a VersionRecord>) -> Self {
        EventWithVersion { event, version, context: &[], withheld: false }
    }

    /// The context the event can show: each reference with its version.
    fn context(&self) -> impl Iterator<Item = (&'a ContextRef, &'a VersionRecord)> {
        self.event.context.iter().zip(self.context).filter_map(|(r, v)| Some((r, v.as_ref()?)))
    }
}

fn resource_url(base_url: &str, resource_type: &str, id: &str, version: Option<&VersionRecord>) -> String {
    match version.and_then(|v| v.full_url.as_deref()) {
        Some(url) => url.to_string(),
        None => format!("{base_url}/{resource_type}/{id}"),
    }
}

/// A random (v4) UUID from the thread's userspace generator: `Uuid::new_v4` asks the kernel
/// (`getrandom`) for every id, two per notification.
fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// A `SubscriptionStatus` resource (its `id` is fresh each time).
pub fn subscription_status(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventWithVersion<'_>]) -> Value {
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
                ev.insert("eventNumber".into(), json!(e.event.number.to_string()));
                ev.insert("timestamp".into(), json!(format_millis(e.event.timestamp)));
                if e.withheld {
                    // The number stays (a gap would send clients after an event forever);
                    // what it was about does not.
                    ev.insert("extension".into(), json!([{ "url": WITHHELD_URL, "valueCode": withhold::NOT_AUTHORIZED }]));
                } else if ctx.content != ContentLevel::Empty {
                    let url = resource_url(ctx.base_url, &e.event.focus_type, &e.event.focus_id, e.version);
                    ev.insert("focus".into(), json!({ "reference": url }));
                    let additional: Vec<Value> = e
                        .context()
                        .map(|(r, v)| json!({ "reference": resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v)) }))
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
        if ctx.status == SubStatus::Error {
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

/// A resource as a notification carries it: a Subscription (a topic may be about
/// Subscriptions) with its secrets redacted, since the subscriber need not be its owner.
fn shown(resource: &Value) -> Value {
    let mut resource = resource.clone();
    secrets::redact(&mut resource);
    resource
}

/// The entry of an additional-context resource: like a focus entry, read rather than written.
fn context_entry(ctx: &StatusContext<'_>, r: &ContextRef, v: &VersionRecord) -> Value {
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v))));
    if ctx.content == ContentLevel::FullResource {
        if let Some(resource) = v.resource.as_ref() {
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

fn payload_entry(ctx: &StatusContext<'_>, e: &EventWithVersion<'_>) -> Value {
    let ev = e.event;
    let url = resource_url(ctx.base_url, &ev.focus_type, &ev.focus_id, e.version);
    let (method, request_url, status) = match ev.interaction.as_str() {
        "create" => ("POST", ev.focus_type.clone(), "201"),
        "delete" => ("DELETE", format!("{}/{}", ev.focus_type, ev.focus_id), "204"),
        // An eventTrigger event: the focus was read, not written, by this event.
        "event" => ("GET", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
        _ => ("PUT", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
    };
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(url));
    if ctx.content == ContentLevel::FullResource {
        if let Some(resource) = e.version.and_then(|v| v.resource.as_ref()) {
            entry.insert("resource".into(), shown(resource));
        }
    }
    entry.insert("request".into(), json!({ "method": method, "url": request_url }));
    let mut response = Map::new();
    response.insert("status".into(), json!(status));
    if let Some(v) = e.version {
        response.insert("etag".into(), json!(format!("W/\"{}\"", v.version_id)));
        response.insert("lastModified".into(), json!(format_millis(v.last_updated)));
    }
    entry.insert("response".into(), Value::Object(response));
    Value::Object(entry)
}

/// A notification Bundle of type `subscription-notification`.
pub fn notification_bundle(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventWithVersion<'_>], now: Millis) -> Value {
    let status = subscription_status(ctx, kind, events);
    let status_url = format!("urn:uuid:{}", status.get("id").and_then(Value::as_str).unwrap_or_default());
    let mut entries = vec![json!({ "fullUrl": status_url, "resource": status })];
    if ctx.content != ContentLevel::Empty {
        // Bundle rule bdl-7: one entry per (fullUrl, version). A focus comes first; context
        // already present (a focus, or an earlier event's context) is not repeated.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for e in events.iter().filter(|e| !e.withheld) {
            let entry = payload_entry(ctx, e);
            let url = resource_url(ctx.base_url, &e.event.focus_type, &e.event.focus_id, e.version);
            seen.insert((url, e.version.map(|v| v.version_id.clone()).unwrap_or_default()));
            entries.push(entry);
        }
        for e in events.iter().filter(|e| !e.withheld) {
            for (r, v) in e.context() {
                let url = resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v));
                if seen.insert((url, v.version_id.clone())) {
                    entries.push(context_entry(ctx, r, v));
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

#[cfg(test)]
mod tests;
