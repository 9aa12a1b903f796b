//! The R4 `Basic` and R4B `SubscriptionTopic` converters against the published examples (the
//! Backport IG's encounter-complete topic in both forms, fhir-candle's US Core patient data
//! feed, the R4B core admission topic), hand-made refusals, and round trips of Herald's own
//! topics.

use serde_json::{json, Value};

use super::stored::{from_r5, is_topic, parse_stored, to_r5, topic_type};
use super::{basic, parse_topic, r4b};
use crate::fhir::official::shared;
use crate::fhir::FhirVersion;

#[test]
fn the_backport_igs_r4_basic_topic_converts_and_parses() {
    let Some(basic) = shared("examples/topics/subscriptions-backport/Basic-r4-encounter-complete.json") else { return };
    assert!(is_topic(FhirVersion::R4, "Basic", &basic));
    let r5 = basic::to_r5(&basic).unwrap();
    assert_eq!(r5["resourceType"], "SubscriptionTopic");
    assert_eq!(r5["status"], "draft", "status comes from the modifier extension");
    assert_eq!(r5["version"], "1.2.0");
    assert_eq!(r5["resourceTrigger"][0]["queryCriteria"]["requireBoth"], true);
    assert_eq!(r5["resourceTrigger"][0]["supportedInteraction"], json!(["create", "update"]));
    // The 4.3 and 5.0 namespaces are both read; another IG's extension stays on its element.
    assert_eq!(r5["canFilterBy"].as_array().map(Vec::len), Some(2));
    let related = &r5["notificationShape"][0]["extension"][0]["url"];
    assert_eq!(related, "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-related-query");

    let spec = parse_stored(FhirVersion::R4, "Basic", "r4-encounter-complete", &basic).unwrap().unwrap();
    assert_eq!(spec.url, "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/r4-encounter-complete");
    assert_eq!(spec.triggers[0].resource, "Encounter");
    assert!(spec.triggers[0].fhir_path.is_some() && spec.triggers[0].query.is_some());
    assert_eq!(spec.can_filter_by[0].filter_parameter, "subject");
    assert_eq!(spec.shapes[0].resource, "Encounter");
}

#[test]
fn the_us_core_patient_data_feed_basic_converts_and_parses() {
    let Some(basic) = shared("examples/topics/us-core-patient-data-feed/Basic-us-core-patient-data-feed.json") else { return };
    let spec = parse_stored(FhirVersion::R4, "Basic", "feed", &basic).unwrap().unwrap();
    assert_eq!(spec.url, "http://hl7.org/fhir/us/core/SubscriptionTopic/patient-data-feed");
    let types: Vec<&str> = spec.trigger_types().collect();
    assert!(["Encounter", "Observation", "DocumentReference", "DiagnosticReport"].iter().all(|t| types.contains(t)), "{types:?}");
    // `*` (fhir-candle's "any type") is read as no resource.
    let any = spec.can_filter_by.iter().find(|f| f.filter_parameter == "patient").unwrap();
    assert_eq!(any.resource, None);
}

#[test]
fn r4b_topics_convert_and_their_comparators_move_out_of_modifier() {
    let Some(topic) = shared("examples/topics/subscriptions-backport/SubscriptionTopic-r4b-encounter-complete.json") else { return };
    let r5 = r4b::to_r5(&topic).unwrap();
    let length = r5["canFilterBy"].as_array().unwrap().iter().find(|f| f["filterParameter"] == "length").unwrap();
    assert_eq!(length["comparator"], json!(["gt", "lt", "ge", "le"]));
    assert!(length.get("modifier").is_none());
    let spec = parse_stored(FhirVersion::R4B, "SubscriptionTopic", "r4b-encounter-complete", &topic).unwrap().unwrap();
    assert_eq!(spec.can_filter_by.len(), 3);

    let Some(admission) = shared("data/r4b/subscriptions-r4b/examples/SubscriptionTopic-admission.json") else { return };
    let r5 = r4b::to_r5(&admission).unwrap();
    // `=` is plain equality (always allowed in R5); `in` and `not-in` stay modifiers.
    assert_eq!(r5["canFilterBy"][0]["modifier"], json!(["in", "not-in"]));
    parse_topic("admission", &r5).unwrap();
}

/// Herald's R5 built-in topics, as they ship.
fn builtins() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/topics");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            out.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
        }
    }
    assert!(!out.is_empty());
    out
}

/// `canFilterBy` comparators and modifiers are sets: R4B lists its own codes first.
fn sorted_codes(mut topic: Value) -> Value {
    for f in topic.get_mut("canFilterBy").and_then(Value::as_array_mut).into_iter().flatten() {
        for key in ["comparator", "modifier"] {
            if let Some(list) = f.get_mut(key).and_then(Value::as_array_mut) {
                list.sort_by_key(|v| v.to_string());
            }
        }
    }
    topic
}

#[test]
fn r5_topics_survive_a_round_trip_through_basic_and_r4b() {
    let mut extra = builtins();
    extra.push(json!({
        "resourceType": "SubscriptionTopic", "id": "t", "url": "http://example.org/t", "status": "active",
        "name": "T", "copyrightLabel": "(c)", "versionAlgorithmString": "semver",
        "extension": [{ "url": "http://example.org/ext", "valueString": "kept" }],
        "resourceTrigger": [{ "resource": "Task", "queryCriteria": { "current": "status=completed", "requireBoth": false } }],
        "canFilterBy": [{ "resource": "Task", "filterParameter": "status", "comparator": ["eq"], "modifier": ["not", "in"] }],
        "notificationShape": [{ "resource": "Task", "include": ["Task:focus"], "extension": [{ "url": "http://example.org/x", "valueBoolean": true }] }]
    }));
    for topic in extra {
        for version in FhirVersion::ALL {
            let stored = from_r5(version, &topic).unwrap();
            assert_eq!(stored["resourceType"], topic_type(version));
            assert!(is_topic(version, topic_type(version), &stored), "{version}");
            let back = to_r5(version, topic_type(version), &stored).unwrap().unwrap();
            assert_eq!(sorted_codes(back), sorted_codes(topic.clone()), "{version}: {stored:#}");
        }
    }
}

#[test]
fn r5_only_modifiers_travel_as_cross_version_extensions_in_r4b() {
    let topic = json!({ "resourceType": "SubscriptionTopic", "url": "u", "status": "active",
        "canFilterBy": [{ "filterParameter": "status", "comparator": ["eq"], "modifier": ["not", "in"] }] });
    let stored = r4b::from_r5(&topic).unwrap();
    assert_eq!(stored["canFilterBy"][0]["modifier"], json!(["eq", "in"]), "R4B's own codes only");
    assert_eq!(
        stored["canFilterBy"][0]["extension"],
        json!([{ "url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.canFilterBy.modifier", "valueCode": "not" }])
    );
}

fn topic_basic(extension: Value, modifier: Value) -> Value {
    json!({
        "resourceType": "Basic",
        "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
        "extension": extension,
        "modifierExtension": modifier,
    })
}

const XV: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";

#[test]
fn basic_topics_that_would_be_misread_are_refused_with_the_extension_at_fault() {
    let status = json!([{ "url": format!("{XV}status"), "valueCode": "active" }]);
    let url = json!({ "url": format!("{XV}url"), "valueUri": "http://example.org/t" });
    let cases = [
        (topic_basic(json!([url, { "url": format!("{XV}colour"), "valueString": "red" }]), status.clone()), "Basic.extension[1].url"),
        (topic_basic(json!([url, url]), status.clone()), "Basic.extension[1]"),
        (topic_basic(json!([{ "url": format!("{XV}url"), "valueBoolean": true }]), status.clone()), "Basic.extension[0]"),
        (
            topic_basic(
                json!([url, { "url": format!("{XV}resourceTrigger"), "extension": [{ "url": "resource", "valueUri": "Task" }, { "url": "colour", "valueString": "x" }] }]),
                status.clone(),
            ),
            "Basic.extension[1].extension[1].url",
        ),
        (
            topic_basic(json!([url]), json!([{ "url": "http://example.org/must-understand", "valueBoolean": true }])),
            "Basic.modifierExtension[0]",
        ),
    ];
    for (basic, at) in cases {
        let issues = basic::to_r5(&basic).unwrap_err();
        assert!(issues.iter().any(|i| i.expression.iter().any(|e| e == at)), "{at}: {issues:?}");
    }
    // Converted but invalid as a topic: parse_topic's refusal (no trigger) comes through.
    let basic = topic_basic(json!([url]), status);
    assert!(parse_stored(FhirVersion::R4, "Basic", "b", &basic).unwrap().is_err());
}

#[test]
fn only_a_basic_coded_subscription_topic_is_a_topic_and_only_in_r4() {
    let plain = json!({ "resourceType": "Basic", "code": { "coding": [{ "system": "http://example.org", "code": "referral" }] } });
    assert!(!is_topic(FhirVersion::R4, "Basic", &plain));
    assert!(parse_stored(FhirVersion::R4, "Basic", "p", &plain).is_none());
    let other_system =
        json!({ "resourceType": "Basic", "code": { "coding": [{ "system": "http://example.org", "code": "SubscriptionTopic" }] } });
    assert!(!is_topic(FhirVersion::R4, "Basic", &other_system));
    let coded = topic_basic(json!([]), json!([]));
    assert!(is_topic(FhirVersion::R4, "Basic", &coded));
    assert!(!is_topic(FhirVersion::R4B, "Basic", &coded) && !is_topic(FhirVersion::R5, "Basic", &coded));
    assert!(!is_topic(FhirVersion::R4, "SubscriptionTopic", &json!({})));
    assert!(is_topic(FhirVersion::R4B, "SubscriptionTopic", &json!({})));
}
