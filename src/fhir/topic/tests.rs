//! Topic parsing against the official R5 examples and hand-made cases.

use serde_json::{json, Value};

use super::*;

fn official(name: &str) -> Option<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/examples/r5/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).ok()?).ok()
}

#[test]
fn official_topic_with_fhirpath_criteria_is_compiled_and_event_triggers_are_refused() {
    if let Some(topic) = official("SubscriptionTopic-example.json") {
        let spec = parse_topic("x", &topic).unwrap();
        let criteria = spec.triggers[0].fhir_path.as_ref().expect("fhirPathCriteria compiled");
        assert!(criteria.0.source().contains("%current.status"));
    }
    if let Some(topic) = official("SubscriptionTopic-admission.json") {
        let issues = parse_topic("x", &topic).unwrap_err();
        assert!(issues
            .iter()
            .any(|i| i.code == IssueType::NotSupported && i.expression.as_deref() == Some("SubscriptionTopic.eventTrigger")));
    }
}

#[test]
fn invalid_fhirpath_criteria_is_refused_with_its_position() {
    let topic = json!({ "url": "u", "status": "active", "resourceTrigger": [
        { "resource": "Task", "fhirPathCriteria": "%current.status = 'completed' and and" },
        { "resource": "Task", "fhirPathCriteria": "%current.nosuch()" },
        { "resource": "Task", "queryCriteria": { "current": "status=completed" } }
    ] });
    let issues = parse_topic("t", &topic).unwrap_err();
    let at = |path: &str| issues.iter().find(|i| i.expression.as_deref() == Some(path)).unwrap_or_else(|| panic!("{path}: {issues:?}"));
    let syntax = at("SubscriptionTopic.resourceTrigger[0].fhirPathCriteria");
    assert_eq!(syntax.code, IssueType::Invalid);
    assert!(syntax.diagnostics.contains("syntax error at character 35"), "{}", syntax.diagnostics);
    assert!(at("SubscriptionTopic.resourceTrigger[1].fhirPathCriteria").diagnostics.contains("unknown function nosuch()"));
    assert_eq!(at("SubscriptionTopic.resourceTrigger[2].queryCriteria").code, IssueType::NotSupported);
    let both = json!({ "url": "u", "status": "active", "resourceTrigger": [
        { "resource": "Task", "queryCriteria": { "current": "status=completed" }, "fhirPathCriteria": "%current.status = 'completed'" }
    ] });
    assert!(parse_topic("t", &both).unwrap().triggers[0].fhir_path.is_some(), "FHIRPath is used when both are given");
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
