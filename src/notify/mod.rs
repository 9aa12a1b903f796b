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

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;

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

// The shapes below serialize, field by field and in this order, to the JSON of the R5
// resources; `notification_bytes` writes them straight out, `notification_bundle` and
// `subscription_status` as `Value`s. Resources sent at `full-resource` are borrowed
// (Subscriptions excepted: they are copied to redact their secrets).

#[derive(Serialize)]
struct Reference {
    reference: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventOut {
    /// The `withheld` mark (`notify::withhold`), on an event sent without its focus.
    #[serde(skip_serializing_if = "Option::is_none")]
    extension: Option<[WithheldOut; 1]>,
    event_number: String,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    focus: Option<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    additional_context: Vec<Reference>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WithheldOut {
    url: &'static str,
    value_code: &'static str,
}

#[derive(Serialize)]
struct SubscriptionOut<'a> {
    reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<&'a Value>,
}

#[derive(Serialize)]
struct Coding<'a> {
    system: &'static str,
    code: &'a str,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    coding: [Coding<'a>; 1],
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusOut<'a> {
    resource_type: &'static str,
    id: String,
    status: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    events_since_subscription_start: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notification_event: Vec<EventOut>,
    subscription: SubscriptionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<[ErrorOut<'a>; 1]>,
}

#[derive(Serialize)]
struct RequestOut {
    method: &'static str,
    url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EntryOut<'a> {
    #[serde(rename_all = "camelCase")]
    Status { full_url: String, resource: StatusOut<'a> },
    #[serde(rename_all = "camelCase")]
    Resource {
        full_url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<Cow<'a, Value>>,
        request: RequestOut,
        response: ResponseOut,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleOut<'a> {
    resource_type: &'static str,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    entry: Vec<EntryOut<'a>>,
}

fn status_out<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventWithVersion<'_>]) -> StatusOut<'a> {
    let notification_event = events
        .iter()
        .map(|e| {
            // A withheld event keeps its number (a gap would send clients after an event
            // forever); what it was about does not go out.
            let shown = ctx.content != ContentLevel::Empty && !e.withheld;
            EventOut {
                extension: e.withheld.then_some([WithheldOut { url: WITHHELD_URL, value_code: withhold::NOT_AUTHORIZED }]),
                event_number: e.event.number.to_string(),
                timestamp: format_millis(e.event.timestamp),
                focus: shown
                    .then(|| Reference { reference: resource_url(ctx.base_url, &e.event.focus_type, &e.event.focus_id, e.version) }),
                additional_context: if shown {
                    e.context()
                        .map(|(r, v)| Reference { reference: resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v)) })
                        .collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    StatusOut {
        resource_type: "SubscriptionStatus",
        id: new_id(),
        status: ctx.status.code(),
        kind: kind.code(),
        events_since_subscription_start: ctx.events_since_start.to_string(),
        notification_event,
        subscription: SubscriptionOut {
            reference: format!("{}/Subscription/{}", ctx.base_url, ctx.subscription_id),
            identifier: ctx.identifier,
        },
        // R5 §2.8: topic SHOULD NOT be present at `empty` (it can reveal PHI), MAY/SHOULD otherwise.
        topic: (ctx.content != ContentLevel::Empty).then_some(ctx.topic_url),
        error: ctx.error.filter(|_| ctx.status == SubStatus::Error).map(|err| {
            [ErrorOut {
                coding: [Coding { system: "http://terminology.hl7.org/CodeSystem/subscription-error", code: &err.code }],
                text: &err.text,
            }]
        }),
    }
}

/// A `SubscriptionStatus` resource (its `id` is fresh each time).
pub fn subscription_status(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventWithVersion<'_>]) -> Value {
    serde_json::to_value(status_out(ctx, kind, events)).unwrap_or_default()
}

/// A resource as a notification carries it: a Subscription (a topic may be about
/// Subscriptions) with its secrets redacted, since the subscriber need not be its owner;
/// any other resource borrowed as stored.
fn shown(resource: &Value) -> Cow<'_, Value> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return Cow::Borrowed(resource);
    }
    let mut resource = resource.clone();
    secrets::redact(&mut resource);
    Cow::Owned(resource)
}

/// The entry of an additional-context resource: like a focus entry, read rather than written.
fn context_entry<'a>(ctx: &StatusContext<'_>, r: &ContextRef, v: &'a VersionRecord) -> EntryOut<'a> {
    EntryOut::Resource {
        full_url: resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v)),
        resource: v.resource.as_ref().filter(|_| ctx.content == ContentLevel::FullResource).map(shown),
        request: RequestOut { method: "GET", url: format!("{}/{}", r.resource_type, r.id) },
        response: ResponseOut {
            status: "200",
            etag: Some(format!("W/\"{}\"", v.version_id)),
            last_modified: Some(format_millis(v.last_updated)),
        },
    }
}

fn payload_entry<'a>(ctx: &StatusContext<'_>, e: &EventWithVersion<'a>) -> EntryOut<'a> {
    let ev = e.event;
    let (method, url, status) = match ev.interaction.as_str() {
        "create" => ("POST", ev.focus_type.clone(), "201"),
        "delete" => ("DELETE", format!("{}/{}", ev.focus_type, ev.focus_id), "204"),
        // An eventTrigger event: the focus was read, not written, by this event.
        "event" => ("GET", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
        _ => ("PUT", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
    };
    EntryOut::Resource {
        full_url: resource_url(ctx.base_url, &ev.focus_type, &ev.focus_id, e.version),
        resource: e.version.and_then(|v| v.resource.as_ref()).filter(|_| ctx.content == ContentLevel::FullResource).map(shown),
        request: RequestOut { method, url },
        response: ResponseOut {
            status,
            etag: e.version.map(|v| format!("W/\"{}\"", v.version_id)),
            last_modified: e.version.map(|v| format_millis(v.last_updated)),
        },
    }
}

fn bundle_out<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventWithVersion<'a>], now: Millis) -> BundleOut<'a> {
    let status = status_out(ctx, kind, events);
    let status_url = format!("urn:uuid:{}", status.id);
    let mut entry = vec![EntryOut::Status { full_url: status_url, resource: status }];
    if ctx.content != ContentLevel::Empty {
        // Bundle rule bdl-7: one entry per (fullUrl, version). A focus comes first; context
        // already present (a focus, or an earlier event's context) is not repeated.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for e in events.iter().filter(|e| !e.withheld) {
            let url = resource_url(ctx.base_url, &e.event.focus_type, &e.event.focus_id, e.version);
            seen.insert((url, e.version.map(|v| v.version_id.clone()).unwrap_or_default()));
            entry.push(payload_entry(ctx, e));
        }
        for e in events.iter().filter(|e| !e.withheld) {
            for (r, v) in e.context() {
                let url = resource_url(ctx.base_url, &r.resource_type, &r.id, Some(v));
                if seen.insert((url, v.version_id.clone())) {
                    entry.push(context_entry(ctx, r, v));
                }
            }
        }
    }
    BundleOut { resource_type: "Bundle", id: new_id(), kind: "subscription-notification", timestamp: format_millis(now), entry }
}

/// A notification Bundle of type `subscription-notification`.
pub fn notification_bundle(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventWithVersion<'_>], now: Millis) -> Value {
    serde_json::to_value(bundle_out(ctx, kind, events, now)).unwrap_or_default()
}

/// The same Bundle as `notification_bundle`, as the JSON bytes a channel sends, written
/// without building a `Value` first (the delivery lanes' hot path).
pub fn notification_bytes(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventWithVersion<'_>], now: Millis) -> Vec<u8> {
    serde_json::to_vec(&bundle_out(ctx, kind, events, now)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
