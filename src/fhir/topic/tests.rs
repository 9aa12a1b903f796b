//! Topic parsing against the official R5 examples and hand-made cases.

use serde_json::{json, Value};

use super::*;

fn official(name: &str) -> Option<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/examples/r5/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).ok()?).ok()
}

#[test]
fn official_topics_with_criteria_are_refused_as_not_supported() {
    for name in ["SubscriptionTopic-example.json", "SubscriptionTopic-admission.json"] {
        let Some(topic) = official(name) else { return };
        let issues = parse_topic("x", &topic).unwrap_err();
        assert!(issues.iter().any(|i| i.code == IssueType::NotSupported), "{name}: {issues:?}");
    }
}

#[test]
fn triggers_filters_and_shapes_are_read() {
    let t = parse_topic(
        "t1",
        &json!({
            "resourceType": "SubscriptionTopic", "url": "http://x/t", "version": "2", "status": "active",
            "resourceTrigger": [
                { "resource": "http://hl7.org/fhir/StructureDefinition/Task", "supportedInteraction": ["create", "update"] },
                { "resource": "Resource" }
            ],
            "canFilterBy": [{ "resource": "Task", "filterParameter": "owner", "comparator": ["eq"], "modifier": ["not"] }],
            "notificationShape": [{ "resource": "Task", "include": ["Task:focus"], "revInclude": ["Provenance:target"] }]
        }),
    )
    .unwrap();
    assert!(t.fires_on("Task", Interaction::Create));
    assert!(t.fires_on("Patient", Interaction::Delete), "Resource means every type, absent interactions mean all");
    assert_eq!(t.can_filter_by[0].modifiers, vec!["not"]);
    assert_eq!(t.shapes[0].include, vec!["Task:focus"]);
    let only_update = parse_topic(
        "t2",
        &json!({ "url": "u", "status": "active", "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["update"] }] }),
    )
    .unwrap();
    assert!(!only_update.fires_on("Task", Interaction::Create));
    assert!(!only_update.fires_on("Patient", Interaction::Update));
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let issues = parse_topic(
        "t",
        &json!({ "status": "sideways", "resourceTrigger": [{ "resource": "Nope", "supportedInteraction": ["read"] }], "canFilterBy": [{ "resource": "Task" }] }),
    )
    .unwrap_err();
    let exprs: Vec<String> = issues.iter().filter_map(|i| i.expression.clone()).collect();
    for want in [
        "SubscriptionTopic.url",
        "SubscriptionTopic.status",
        "SubscriptionTopic.resourceTrigger[0].resource",
        "SubscriptionTopic.resourceTrigger[0].supportedInteraction[0]",
        "SubscriptionTopic.canFilterBy[0].filterParameter",
    ] {
        assert!(exprs.iter().any(|e| e == want), "{want} not in {exprs:?}");
    }
}
