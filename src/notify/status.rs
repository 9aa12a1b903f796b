//! The status resource heading a notification: `SubscriptionStatus` (R5, and R4B, whose
//! SubscriptionStatus has the same elements in the same order: `status`, `type`,
//! `eventsSinceSubscriptionStart`, `notificationEvent`, `subscription`, `topic`, `error`), or
//! in R4 the `Parameters` that `parameters` makes of the same values. What each event shows
//! (focus, context, the withheld mark) is decided here once, for every version.

use serde::Serialize;
use serde_json::Value;

use super::parameters::{self, ParametersOut};
use super::withhold::{self, WITHHELD_URL};
use super::{new_id, resource_url, EventView, NotificationType, Status, StatusContext};
use crate::fhir::instant::format_millis;
use crate::fhir::subscription::ContentLevel;
use crate::fhir::version::FhirVersion;

#[derive(Serialize)]
pub(super) struct Reference {
    pub reference: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventOut {
    /// The `withheld` mark (`notify::withhold`), on an event sent without its focus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<[WithheldOut; 1]>,
    pub event_number: String,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub focus: Option<Reference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_context: Vec<Reference>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WithheldOut {
    pub url: &'static str,
    pub value_code: &'static str,
}

#[derive(Serialize)]
pub(super) struct SubscriptionOut<'a> {
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<&'a Value>,
}

#[derive(Serialize)]
pub(super) struct Coding<'a> {
    pub system: &'static str,
    pub code: &'a str,
}

#[derive(Serialize)]
pub(super) struct ErrorOut<'a> {
    pub coding: [Coding<'a>; 1],
    pub text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusOut<'a> {
    pub resource_type: &'static str,
    pub id: String,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub events_since_subscription_start: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notification_event: Vec<EventOut>,
    pub subscription: SubscriptionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<[ErrorOut<'a>; 1]>,
}

/// The status resource of a version.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum StatusResource<'a> {
    /// R5 and R4B.
    Status(StatusOut<'a>),
    /// R4.
    Parameters(ParametersOut<'a>),
}

impl StatusResource<'_> {
    pub fn id(&self) -> &str {
        match self {
            StatusResource::Status(s) => &s.id,
            StatusResource::Parameters(p) => &p.id,
        }
    }
}

fn event_out(ctx: &StatusContext<'_>, e: &EventView<'_>) -> EventOut {
    // A withheld event keeps its number (a gap would send clients after an event forever);
    // what it was about does not go out.
    let shown = ctx.content != ContentLevel::Empty && !e.withheld;
    EventOut {
        extension: e.withheld.then_some([WithheldOut { url: WITHHELD_URL, value_code: withhold::NOT_AUTHORIZED }]),
        event_number: e.number.to_string(),
        timestamp: format_millis(e.timestamp),
        focus: shown
            .then(|| Reference { reference: resource_url(ctx.base_url, e.focus_type, e.focus_id, e.focus.and_then(|v| v.full_url)) }),
        additional_context: if shown {
            e.context
                .iter()
                .map(|c| Reference { reference: resource_url(ctx.base_url, c.resource_type, c.id, c.version.full_url) })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// The values of the status, in the R5/R4B `SubscriptionStatus` shape.
pub(super) fn status_out<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventView<'_>]) -> StatusOut<'a> {
    StatusOut {
        resource_type: "SubscriptionStatus",
        id: new_id(),
        status: ctx.status_code(),
        kind: kind.code(),
        events_since_subscription_start: ctx.events_since_start.to_string(),
        notification_event: events.iter().map(|e| event_out(ctx, e)).collect(),
        subscription: SubscriptionOut { reference: ctx.subscription_url(), identifier: ctx.identifier },
        // R5 §2.8: topic SHOULD NOT be present at `empty` (it can reveal PHI), MAY/SHOULD
        // otherwise; the Backport IG says the same (Inferno warns on a topic at `empty`).
        topic: (ctx.content != ContentLevel::Empty).then_some(ctx.topic_url),
        error: ctx.error.filter(|_| ctx.status == Status::Error).map(|err| {
            [ErrorOut {
                coding: [Coding { system: "http://terminology.hl7.org/CodeSystem/subscription-error", code: err.code }],
                text: err.text,
            }]
        }),
    }
}

/// The status resource in `ctx.version`'s shape.
pub(super) fn status_resource<'a>(ctx: &StatusContext<'a>, kind: NotificationType, events: &[EventView<'_>]) -> StatusResource<'a> {
    let status = status_out(ctx, kind, events);
    match ctx.version {
        FhirVersion::R4 => StatusResource::Parameters(parameters::from_status(status)),
        FhirVersion::R4B | FhirVersion::R5 => StatusResource::Status(status),
    }
}
