//! The R4 status resource: a `Parameters` conforming to the Backport IG's
//! `backport-subscription-status-r4` (1.1.0), made from the same values as the R5/R4B
//! `SubscriptionStatus` (`status::StatusOut`), so that every version says the same thing.
//!
//! Parameters, in the order of the IG's examples: `subscription` (valueReference, with the
//! subscription's identifier when it has one), `topic` (valueCanonical; absent at `empty`),
//! `status` and `type` (valueCode), `events-since-subscription-start` (valueString), one
//! `notification-event` per event with parts `event-number` (valueString), `timestamp`
//! (valueInstant), `focus` and `additional-context` (valueReference), then `error`
//! (valueCodeableConcept). The withheld mark (`notify::withhold`) is an extension on the
//! `notification-event` parameter itself (a BackboneElement may carry extensions), where R5
//! puts it on `notificationEvent`. `meta.profile` names the profile, as the IG's examples do.

use serde::Serialize;

use super::status::{ErrorOut, EventOut, Reference, StatusOut, SubscriptionOut, WithheldOut};

/// `backport-subscription-status-r4`.
pub const STATUS_R4_PROFILE: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4";

#[derive(Serialize)]
pub(super) struct MetaOut {
    pub profile: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ParametersOut<'a> {
    pub resource_type: &'static str,
    pub id: String,
    pub meta: MetaOut,
    pub parameter: Vec<ParamOut<'a>>,
}

/// One parameter (or part): its name and a value of one type, or parts.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ParamOut<'a> {
    Subscription {
        name: &'static str,
        #[serde(rename = "valueReference")]
        value: SubscriptionOut<'a>,
    },
    Reference {
        name: &'static str,
        #[serde(rename = "valueReference")]
        value: Reference,
    },
    Canonical {
        name: &'static str,
        #[serde(rename = "valueCanonical")]
        value: &'a str,
    },
    Code {
        name: &'static str,
        #[serde(rename = "valueCode")]
        value: &'static str,
    },
    Text {
        name: &'static str,
        #[serde(rename = "valueString")]
        value: String,
    },
    Instant {
        name: &'static str,
        #[serde(rename = "valueInstant")]
        value: String,
    },
    Concept {
        name: &'static str,
        #[serde(rename = "valueCodeableConcept")]
        value: ErrorOut<'a>,
    },
    Parts {
        #[serde(skip_serializing_if = "Option::is_none")]
        extension: Option<[WithheldOut; 1]>,
        name: &'static str,
        part: Vec<ParamOut<'a>>,
    },
}

fn event_parameter<'a>(event: EventOut) -> ParamOut<'a> {
    let mut part = Vec::with_capacity(3 + event.additional_context.len());
    part.push(ParamOut::Text { name: "event-number", value: event.event_number });
    part.push(ParamOut::Instant { name: "timestamp", value: event.timestamp });
    if let Some(focus) = event.focus {
        part.push(ParamOut::Reference { name: "focus", value: focus });
    }
    part.extend(event.additional_context.into_iter().map(|value| ParamOut::Reference { name: "additional-context", value }));
    ParamOut::Parts { extension: event.extension, name: "notification-event", part }
}

/// The `Parameters` saying what `status` says.
pub(super) fn from_status(status: StatusOut<'_>) -> ParametersOut<'_> {
    let mut parameter = Vec::with_capacity(6 + status.notification_event.len());
    parameter.push(ParamOut::Subscription { name: "subscription", value: status.subscription });
    if let Some(topic) = status.topic {
        parameter.push(ParamOut::Canonical { name: "topic", value: topic });
    }
    parameter.push(ParamOut::Code { name: "status", value: status.status });
    parameter.push(ParamOut::Code { name: "type", value: status.kind });
    parameter.push(ParamOut::Text { name: "events-since-subscription-start", value: status.events_since_subscription_start });
    parameter.extend(status.notification_event.into_iter().map(event_parameter));
    if let Some([error]) = status.error {
        parameter.push(ParamOut::Concept { name: "error", value: error });
    }
    ParametersOut { resource_type: "Parameters", id: status.id, meta: MetaOut { profile: [STATUS_R4_PROFILE] }, parameter }
}
