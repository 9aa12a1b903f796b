//! The notification Bundle: the status entry, then one entry per event focus, then one per
//! additional-context resource not already present. The shapes below serialize, field by field
//! and in FHIR's element order, to the version's JSON. Resources sent at `full-resource` are
//! borrowed (Subscriptions excepted: they are copied to redact their secrets).
//!
//! R5: `subscription-notification`, the status entry without request/response. R4 and R4B: a
//! `history` Bundle declaring its backport profile, whose status entry carries `request` (`GET
//! <base>/Subscription/<id>/$status`) and `response` (`200`), like every other entry.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::parameters::MetaOut;
use super::status::{status_resource, StatusResource};
use super::{new_id, resource_url, ContextView, EventView, NotificationType, StatusContext, VersionView};
use crate::fhir::instant::{format_millis, Millis};
use crate::fhir::subscription::{secrets, ContentLevel};
use crate::fhir::version::FhirVersion;

/// `backport-subscription-notification-r4`: an R4 notification Bundle.
const NOTIFICATION_R4_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
/// `backport-subscription-notification`: an R4B notification Bundle.
const NOTIFICATION_R4B_PROFILE: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification";

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
    Status {
        full_url: String,
        resource: StatusResource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<RequestOut>,
        #[serde(skip_serializing_if = "Option::is_none")]
        response: Option<ResponseOut>,
    },
    #[serde(rename_all = "camelCase")]
    Resource {
        full_url: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        resource: Option<Carried<'a>>,
        request: RequestOut,
        response: ResponseOut,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BundleOut<'a> {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<MetaOut>,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    entry: Vec<EntryOut<'a>>,
}

/// A resource in an entry: as stored (`shown`), or already written (`resource_json`).
#[derive(Serialize)]
#[serde(untagged)]
enum Carried<'a> {
    Value(Cow<'a, Value>),
    Written(&'a RawValue),
}

/// The resource of a `full-resource` entry for version `v`: its written JSON when a subscriber
/// wrote it already, else the resource itself.
fn carried<'a>(v: &VersionView<'a>) -> Option<Carried<'a>> {
    match v.rendered {
        Some(json) => Some(Carried::Written(json)),
        None => v.resource.map(|r| Carried::Value(shown(r))),
    }
}

/// A resource as a notification carries it: a Subscription (a topic may be about
/// Subscriptions) with its secrets redacted, since the subscriber need not be its owner;
/// any other resource borrowed as stored.
pub(super) fn shown(resource: &Value) -> Cow<'_, Value> {
    if resource.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return Cow::Borrowed(resource);
    }
    let mut resource = resource.clone();
    secrets::redact(&mut resource);
    Cow::Owned(resource)
}

/// The entry of an additional-context resource: like a focus entry, read rather than written.
fn context_entry<'a>(ctx: &StatusContext<'_>, c: &ContextView<'a>) -> EntryOut<'a> {
    let (r, v) = (c, c.version);
    EntryOut::Resource {
        full_url: resource_url(ctx.base_url, r.resource_type, r.id, v.full_url),
        resource: if ctx.content == ContentLevel::FullResource { carried(&v) } else { None },
        request: RequestOut { method: "GET", url: format!("{}/{}", r.resource_type, r.id) },
        response: ResponseOut {
            status: "200",
            etag: Some(format!("W/\"{}\"", v.version_id)),
            last_modified: Some(format_millis(v.last_updated)),
        },
    }
}

fn payload_entry<'a>(ctx: &StatusContext<'_>, e: &EventView<'a>) -> EntryOut<'a> {
    let ev = e;
    let (method, url, status) = match ev.interaction {
        "create" => ("POST", ev.focus_type.to_string(), "201"),
        "delete" => ("DELETE", format!("{}/{}", ev.focus_type, ev.focus_id), "204"),
        // An eventTrigger event: the focus was read, not written, by this event.
        "event" => ("GET", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
        _ => ("PUT", format!("{}/{}", ev.focus_type, ev.focus_id), "200"),
    };
    EntryOut::Resource {
        full_url: resource_url(ctx.base_url, ev.focus_type, ev.focus_id, e.focus.and_then(|v| v.full_url)),
        resource: e.focus.filter(|_| ctx.content == ContentLevel::FullResource).and_then(|v| carried(&v)),
        request: RequestOut { method, url },
        response: ResponseOut {
            status,
            etag: e.focus.map(|v| format!("W/\"{}\"", v.version_id)),
            last_modified: e.focus.map(|v| format_millis(v.last_updated)),
        },
    }
}

/// The status entry: a `urn:uuid` fullUrl; in a backport `history` Bundle also the `$status`
/// read it stands for.
fn status_entry<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventView<'_>]) -> EntryOut<'a> {
    let resource = status_resource(ctx, kind, events);
    let full_url = format!("urn:uuid:{}", resource.id());
    let (request, response) = if ctx.version.is_backport() {
        (
            Some(RequestOut { method: "GET", url: format!("{}/$status", ctx.subscription_url()) }),
            Some(ResponseOut { status: "200", etag: None, last_modified: None }),
        )
    } else {
        (None, None)
    };
    EntryOut::Status { full_url, resource, request, response }
}

pub(super) fn bundle_out<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventView<'a>], now: Millis) -> BundleOut<'a> {
    let mut entry = vec![status_entry(ctx, kind, events)];
    if ctx.content != ContentLevel::Empty {
        // Bundle rule bdl-7: one entry per (fullUrl, version). A focus comes first; context
        // already present (a focus, or an earlier event's context) is not repeated.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for e in events.iter().filter(|e| !e.withheld) {
            let url = resource_url(ctx.base_url, e.focus_type, e.focus_id, e.focus.and_then(|v| v.full_url));
            seen.insert((url, e.focus.map(|v| v.version_id.to_string()).unwrap_or_default()));
            entry.push(payload_entry(ctx, e));
        }
        for e in events.iter().filter(|e| !e.withheld) {
            for c in &e.context {
                let url = resource_url(ctx.base_url, c.resource_type, c.id, c.version.full_url);
                if seen.insert((url, c.version.version_id.to_string())) {
                    entry.push(context_entry(ctx, c));
                }
            }
        }
    }
    let (kind, profile) = match ctx.version {
        FhirVersion::R4 => ("history", Some(NOTIFICATION_R4_PROFILE)),
        FhirVersion::R4B => ("history", Some(NOTIFICATION_R4B_PROFILE)),
        FhirVersion::R5 => ("subscription-notification", None),
    };
    BundleOut {
        resource_type: "Bundle",
        id: new_id(),
        meta: profile.map(|p| MetaOut { profile: [p] }),
        kind,
        timestamp: format_millis(now),
        entry,
    }
}
