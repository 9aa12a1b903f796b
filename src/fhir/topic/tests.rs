//! Topic parsing against the official R5 examples and hand-made cases.

use serde_json::{json, Value};

use super::*;

fn official(name: &str) -> Option<Value> {
    crate::testdata::fhir_json(&format!("examples/r5/{name}"))
}

#[test]
fn official_topics_with_fhirpath_criteria_and_event_triggers_are_compiled() {
    if let Some(topic) = official("SubscriptionTopic-example.json") {
        let spec = parse_topic("x", &topic).unwrap();
        let criteria = spec.triggers[0].fhir_path.as_ref().expect("fhirPathCriteria compiled");
        assert!(criteria.0.source().contains("%current.status"));
    }
    if let Some(topic) = official("SubscriptionTopic-admission.json") {
        let spec = parse_topic("x", &topic).unwrap();
        assert_eq!(spec.event_triggers.len(), 1);
        assert!(spec.fires_on_event("http://terminology.hl7.org/CodeSystem/v2-0003", "A01", "Encounter"));
        assert!(!spec.fires_on_event("http://terminology.hl7.org/CodeSystem/v2-0003", "A03", "Encounter"));
        // Its shape names includes R5 has no reference parameter for (`Encounter:observation`):
        // those are skipped, the others kept.
        let shape = &spec.shapes[0];
        assert!(shape.includes.iter().any(|i| i.param.is_some_and(|p| p.code == "patient")));
        assert!(shape.includes.len() < shape.include.len());
    }
}

#[test]
fn invalid_fhirpath_criteria_is_refused_with_its_position() {
    let topic = json!({ "url": "u", "status": "active", "resourceTrigger": [
        { "resource": "Task", "fhirPathCriteria": "%current.status = 'completed' and and" },
        { "resource": "Task", "fhirPathCriteria": "%current.nosuch()" },
        { "resource": "Task", "queryCriteria": { "current": "status=completed&nosuch=1", "requireBoth": "yes" } }
    ] });
    let issues = parse_topic("t", &topic).unwrap_err();
    let at = |path: &str| issues.iter().find(|i| i.expression.as_deref() == Some(path)).unwrap_or_else(|| panic!("{path}: {issues:?}"));
    let syntax = at("SubscriptionTopic.resourceTrigger[0].fhirPathCriteria");
    assert_eq!(syntax.code, IssueType::Invalid);
    assert!(syntax.diagnostics.contains("syntax error at character 35"), "{}", syntax.diagnostics);
    assert!(at("SubscriptionTopic.resourceTrigger[1].fhirPathCriteria").diagnostics.contains("unknown function nosuch()"));
    assert!(at("SubscriptionTopic.resourceTrigger[2].queryCriteria.current").diagnostics.contains("unknown search parameter 'nosuch'"));
    assert_eq!(at("SubscriptionTopic.resourceTrigger[2].queryCriteria.requireBoth").code, IssueType::Structure);
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

#[test]
fn no_element_may_name_subscription_and_each_one_that_does_is_reported() {
    const CANONICAL: &str = "http://hl7.org/fhir/StructureDefinition/Subscription";
    let issues = parse_topic(
        "t",
        &json!({ "url": "u", "status": "active",
            "resourceTrigger": [{ "resource": "Task" }, { "resource": "Subscription", "fhirPathCriteria": "%current.status = 'active'" }],
            "eventTrigger": [{ "event": { "coding": [{ "system": "s", "code": "c" }] }, "resource": CANONICAL }],
            "canFilterBy": [{ "resource": "Subscription", "filterParameter": "url" }],
            "notificationShape": [{ "resource": CANONICAL }] }),
    )
    .unwrap_err();
    let mut refused: Vec<&str> =
        issues.iter().filter(|i| i.code == IssueType::BusinessRule).filter_map(|i| i.expression.as_deref()).collect();
    refused.sort_unstable();
    assert_eq!(
        refused,
        [
            "SubscriptionTopic.canFilterBy[0].resource",
            "SubscriptionTopic.eventTrigger[0].resource",
            "SubscriptionTopic.notificationShape[0].resource",
            "SubscriptionTopic.resourceTrigger[1].resource",
        ],
        "{issues:?}"
    );
    assert_eq!(issues.len(), 4, "nothing else is wrong: {issues:?}");
}

fn criteria(query: Value) -> QueryCriteria {
    let topic = json!({ "url": "u", "status": "active", "resourceTrigger": [{ "resource": "Task", "queryCriteria": query }] });
    parse_topic("t", &topic).unwrap().triggers[0].query.clone().unwrap()
}

#[test]
fn query_criteria_follow_r5_for_create_update_and_delete() {
    let ctx = crate::fhir::search::matcher::NoContext { base_url: "http://h/fhir" };
    let task = |status: &str| json!({ "resourceType": "Task", "id": "t", "status": status, "intent": "order" });
    let (requested, accepted, progress) = (task("requested"), task("accepted"), task("in-progress"));
    // The update-only transition: previous not in-progress, current in-progress, both needed.
    let started = criteria(json!({ "previous": "status:not=in-progress", "current": "status=in-progress", "requireBoth": true,
        "resultForCreate": "test-fails", "resultForDelete": "test-fails" }));
    let pass = |c: &QueryCriteria, p: Option<&Value>, n: Option<&Value>| c.passes("Task", p, n, &ctx).unwrap();
    assert!(pass(&started, Some(&accepted), Some(&progress)));
    assert!(!pass(&started, Some(&progress), Some(&progress)), "an unrelated edit of an in-progress Task");
    assert!(!pass(&started, Some(&requested), Some(&accepted)));
    assert!(!pass(&started, None, Some(&progress)), "create: resultForCreate test-fails, both required");
    assert!(!pass(&started, Some(&progress), None), "delete: resultForDelete test-fails");
    // Same tests, either one enough.
    let either = criteria(json!({ "previous": "status:not=in-progress", "current": "status=in-progress", "requireBoth": false,
        "resultForCreate": "test-fails" }));
    assert!(pass(&either, Some(&requested), Some(&accepted)), "previous alone passes under OR");
    assert!(pass(&either, None, Some(&progress)), "create: current passes");
    assert!(!pass(&either, Some(&progress), None), "delete: previous fails and the absent resultForDelete fails");
    // Da Vinci PCT shape: only current, resultForCreate and resultForDelete test-passes, OR.
    let pct = criteria(json!({ "resultForCreate": "test-passes", "current": "code=gfe-coordination-task,gfe-contributor-task",
        "resultForDelete": "test-passes", "requireBoth": false }));
    let coded = json!({ "resourceType": "Task", "id": "t", "status": "requested", "intent": "order", "code": { "coding": [{ "code": "gfe-contributor-task" }] } });
    assert!(pass(&pct, Some(&requested), Some(&coded)), "update: current passes");
    assert!(!pass(&pct, Some(&requested), Some(&requested)), "update: current fails, previous absent is neutral");
    assert!(pass(&pct, Some(&coded), None), "delete: resultForDelete");
    // Neither test: every listed interaction fires.
    assert!(pass(&criteria(json!({})), Some(&requested), Some(&accepted)));
    // URL-encoded criteria read the same.
    let encoded = criteria(json!({ "current": "owner=Organization%2Flab-1" }));
    let owned = json!({ "resourceType": "Task", "id": "t", "status": "requested", "intent": "order", "owner": { "reference": "Organization/lab-1" } });
    assert!(pass(&encoded, None, Some(&owned)));
}
