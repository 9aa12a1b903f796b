//! What the Subscription operations (`$status`, `$events`, `$get-ws-binding-token`,
//! `$resend`) read from a stored Subscription, in the instance version's shape: resources are
//! stored as the client's version wrote them (an R4 instance stores backport-profile R4
//! Subscriptions), so the same fact sits in different elements.
//!
//! | fact | R5 | R4 / R4B (Backport IG 1.1.0) |
//! |---|---|---|
//! | topic | `topic` | `criteria` |
//! | channel | `channelType.code` | `channel.type` |
//! | content | `content` | `channel._payload` extension `backport-payload-content` |
//! | identifier | `identifier[0]` | `identifier[0]` (not an R4/R4B element; read if present) |
//!
//! An R4/R4B instance reads the R5 element when the backport one is absent: instances of the
//! release that introduced `fhir.version`, before backport parsing, stored R5-shaped
//! Subscriptions whatever their version. Reading only: the resource was validated when it was
//! written (`fhir::subscription`), so a missing element reads as absent, never as an error.

use serde_json::Value;

use crate::fhir::subscription::ContentLevel;
use crate::fhir::version::FhirVersion;

const PAYLOAD_CONTENT_URL: &str = "/StructureDefinition/backport-payload-content";

/// A stored Subscription read in `version`'s shape.
pub(super) struct StoredSubscription<'a> {
    resource: &'a Value,
    version: FhirVersion,
}

impl<'a> StoredSubscription<'a> {
    pub fn new(resource: &'a Value, version: FhirVersion) -> Self {
        StoredSubscription { resource, version }
    }

    /// The topic canonical, without any `|version`.
    pub fn topic_url(&self) -> &'a str {
        let backport = self.version.is_backport().then(|| self.text("/criteria")).flatten();
        let topic = backport.or_else(|| self.text("/topic")).unwrap_or_default();
        topic.split('|').next().unwrap_or(topic)
    }

    /// The channel type code (`rest-hook`, `websocket`, ...).
    pub fn channel(&self) -> &'a str {
        let backport = self.version.is_backport().then(|| self.text("/channel/type")).flatten();
        backport.or_else(|| self.text("/channelType/code")).unwrap_or_default()
    }

    /// The content level the subscription asked for, if it names one Herald knows.
    pub fn content(&self) -> Option<ContentLevel> {
        let backport = self
            .version
            .is_backport()
            .then(|| {
                self.resource
                    .pointer("/channel/_payload/extension")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|e| e.get("url").and_then(Value::as_str).is_some_and(|u| u.ends_with(PAYLOAD_CONTENT_URL)))
                    .and_then(|e| e.get("valueCode"))
                    .and_then(Value::as_str)
            })
            .flatten();
        backport.or_else(|| self.text("/content")).and_then(ContentLevel::from_code)
    }

    fn text(&self, pointer: &str) -> Option<&'a str> {
        self.resource.pointer(pointer).and_then(Value::as_str)
    }

    /// `identifier[0]`, echoed in the status's subscription reference.
    pub fn identifier(&self) -> Option<&'a Value> {
        self.resource.get("identifier").and_then(Value::as_array).and_then(|a| a.first())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_version_reads_its_own_elements() {
        // R5 reads only R5 elements.
        let r4_in_r5 = json!({ "criteria": "http://t", "channel": { "type": "rest-hook" } });
        let s = StoredSubscription::new(&r4_in_r5, FhirVersion::R5);
        assert_eq!((s.topic_url(), s.channel(), s.content()), ("", "", None));
        let r5 = json!({
            "resourceType": "Subscription", "topic": "http://t|2", "content": "full-resource",
            "channelType": { "code": "websocket" }, "identifier": [{ "value": "x" }]
        });
        let r4 = json!({
            "resourceType": "Subscription", "criteria": "http://t",
            "channel": { "type": "rest-hook", "payload": "application/fhir+json", "_payload": { "extension": [
                { "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": "empty" }
            ] } }
        });
        let s = StoredSubscription::new(&r5, FhirVersion::R5);
        assert_eq!((s.topic_url(), s.channel(), s.content()), ("http://t", "websocket", Some(ContentLevel::FullResource)));
        assert_eq!(s.identifier(), Some(&json!({ "value": "x" })));
        for v in [FhirVersion::R4, FhirVersion::R4B] {
            let s = StoredSubscription::new(&r4, v);
            assert_eq!(
                (s.topic_url(), s.channel(), s.content(), s.identifier()),
                ("http://t", "rest-hook", Some(ContentLevel::Empty), None)
            );
            // An R5-shaped resource stored by an R4/R4B instance before backport parsing.
            let s = StoredSubscription::new(&r5, v);
            assert_eq!((s.topic_url(), s.channel(), s.content()), ("http://t", "websocket", Some(ContentLevel::FullResource)));
        }
    }
}
