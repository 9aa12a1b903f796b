//! Tests of the official SearchParameters of each FHIR version side by side (R4 4.0.1 and
//! R4B 4.3.0 with the Subscriptions Backport IG's Subscription parameters and Herald's Task
//! `output`, R5 5.0.0): each set loads with its counts, answers the look-ups a backport server
//! needs (`Task?owner`, `Task?status`, `Subscription?url`, `status`, `topic`) and the one
//! `output-modified` needs (`Task?output`), applies `Resource` parameters to its own version's
//! types, and equals the official bundle plus the backport and Herald definitions.
//!
//! Most tests choose the version with [`SearchParams::for_version`] and leave the
//! process-wide version alone. Evaluating an R4 expression needs the R4 model in the FHIRPath
//! engine, which follows `fhir::version::instance`; the tests marked "own process" therefore
//! call `fhir::version::select`. nextest runs every test in a process of its own, so that is
//! safe there; under `cargo test` (one process for all) they print a note and return, since
//! the other tests expect the default version.

use super::matcher::strings;
use super::tests::{project, read_json, shared_dir};
use super::*;
use crate::fhir::fhirpath::Expression;
use crate::fhir::version::{self, FhirVersion};
use crate::store::index::{extract, IndexSet};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir");
const SP: &str = "http://hl7.org/fhir/SearchParameter/";
const BACKPORT_SP: &str = "http://hl7.org/fhir/uv/subscriptions-backport/SearchParameter/";
const BACKPORT_SD: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const HERALD_SP: &str = "http://herald.dev/fhir/SearchParameter/";

fn set(version: FhirVersion) -> &'static SearchParams {
    SearchParams::for_version(version).unwrap_or_else(|e| panic!("embedded {version} parameters load: {e}"))
}

fn url(version: FhirVersion, ty: &str, code: &str) -> Option<&'static str> {
    set(version).get(ty, code).map(|p| p.url.as_str())
}

#[test]
fn each_version_loads_its_own_parameters_once() {
    let counts = [(FhirVersion::R4, 1380), (FhirVersion::R4B, 1419), (FhirVersion::R5, 1239)];
    for (version, count) in counts {
        let params = set(version);
        assert_eq!(params.version(), version);
        assert_eq!(params.len(), count, "{version}");
        assert!(std::ptr::eq(params, set(version)), "shared after the first call");
    }
    assert!(std::ptr::eq(SearchParams::r5().unwrap(), set(FhirVersion::R5)));
    // No `select` in this process: the instance serves the default, R5.
    assert!(std::ptr::eq(SearchParams::current().unwrap(), set(version::instance())));
}

#[test]
fn task_and_subscription_parameters_resolve_in_every_version() {
    for version in FhirVersion::ALL {
        assert_eq!(url(version, "Task", "owner"), Some(format!("{SP}Task-owner").as_str()), "{version}");
        assert_eq!(url(version, "Task", "status"), Some(format!("{SP}Task-status").as_str()), "{version}");
        assert_eq!(url(version, "Subscription", "url"), Some(format!("{SP}Subscription-url").as_str()), "{version}");
        assert_eq!(url(version, "Subscription", "status"), Some(format!("{SP}Subscription-status").as_str()), "{version}");
        assert!(url(version, "Subscription", "topic").is_some(), "{version}");
        let owner = set(version).get("Task", "owner").unwrap();
        assert_eq!((owner.kind, owner.expression.as_deref()), (ParamType::Reference, Some("Task.owner")), "{version}");
        // `output-modified` finds the Tasks listing an output through it (`ingest::outputs`).
        let output = set(version).get("Task", "output").unwrap_or_else(|| panic!("{version} Task?output"));
        let expected_url = match version {
            FhirVersion::R5 => format!("{SP}Task-output"),
            FhirVersion::R4 | FhirVersion::R4B => format!("{HERALD_SP}Task-output"),
        };
        assert_eq!(output.url, expected_url);
        assert_eq!(
            (output.kind, output.expression.as_deref()),
            (ParamType::Reference, Some("Task.output.value.ofType(Reference)")),
            "{version}"
        );
        let targets: Vec<&str> = output.targets.iter().map(String::as_str).collect();
        assert_eq!(targets, types::resource_types_of(version).collect::<Vec<_>>(), "{version}: every resource type may be an output");
    }
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let params = set(version);
        // R4's `url` searches the endpoint (data/r4/README.md), the backport's `url SHALL`.
        let endpoint = params.get("Subscription", "url").unwrap();
        assert_eq!((endpoint.kind, endpoint.expression.as_deref()), (ParamType::Uri, Some("Subscription.channel.endpoint")));
        assert_eq!(params.get("Subscription", "status").unwrap().expression.as_deref(), Some("Subscription.status"));
        let topic = params.get("Subscription", "topic").unwrap();
        assert_eq!(topic.url, format!("{BACKPORT_SP}Subscription-topic"));
        assert_eq!((topic.kind, topic.expression.as_deref()), (ParamType::Uri, Some("Subscription.criteria")));
        for code in ["filter-criteria", "payload-type", "custom-channel"] {
            let param = params.get("Subscription", code).unwrap_or_else(|| panic!("{version} {code}"));
            assert_eq!(param.url, format!("{BACKPORT_SP}Subscription-{code}"));
            assert_eq!(param.kind, ParamType::String);
            assert!(param.expression.as_deref().is_some_and(|e| e.starts_with("Subscription.")), "rooted at the real location");
        }
        assert_eq!(url(version, "Task", "subject"), Some(format!("{SP}Task-subject").as_str()));
        assert_eq!(params.get("Task", "subject").unwrap().expression.as_deref(), Some("Task.for"));
        assert!(params.get("Task", "performer").is_some(), "R4 Task-performer searches performerType");
    }
    let r5 = set(FhirVersion::R5);
    assert_eq!(url(FhirVersion::R5, "Subscription", "topic"), Some(format!("{SP}Subscription-topic").as_str()));
    assert_eq!(r5.get("Subscription", "url").unwrap().expression.as_deref(), Some("Subscription.endpoint"));
    assert!(r5.get("Subscription", "payload-type").is_none(), "the backport parameters are R4/R4B only");
}

#[test]
fn resource_parameters_apply_to_the_sets_own_resource_types() {
    let (r4, r4b, r5) = (set(FhirVersion::R4), set(FhirVersion::R4B), set(FhirVersion::R5));
    for ty in ["SubscriptionTopic", "SubscriptionStatus"] {
        assert!(r4.get(ty, "_id").is_none(), "R4 has no {ty}");
        assert!(r4b.get(ty, "_id").is_some() && r5.get(ty, "_id").is_some(), "{ty}");
        assert!(!r4.by_url(&format!("{SP}Resource-id")).unwrap().applies_to(ty), "{ty}");
        assert!(r4b.by_url(&format!("{SP}Resource-id")).unwrap().applies_to(ty), "{ty}");
    }
    assert_eq!(url(FhirVersion::R4B, "SubscriptionTopic", "url"), Some(format!("{SP}SubscriptionTopic-url").as_str()));
    assert!(r4.get("DeviceUseStatement", "_text").is_some() && r5.get("DeviceUseStatement", "_text").is_none());
    assert!(r4.get("Bundle", "_text").is_none(), "Bundle is no DomainResource, and R4 has no Resource-text");
}

#[test]
fn every_r4_and_r4b_expression_parses() {
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let mut failures = Vec::new();
        for param in set(version).iter() {
            let texts = param.expression.iter().chain(param.components.iter().map(|c| &c.expression));
            for text in texts {
                if let Err(e) = Expression::parse(text) {
                    failures.push(format!("{}: {text}: {e}", param.url));
                }
            }
        }
        assert!(failures.is_empty(), "{version}: {failures:#?}");
    }
}

/// The official bundle of `dir` projected as `tools/gen_search_params.py` does it, plus the
/// backport parameters with the expressions the script substitutes, plus Herald's Task
/// `output` (R5's, under Herald's canonical) targeting the embedded model's resource types.
fn expected_definitions(shared: &std::path::Path, version: FhirVersion, bundle: &str) -> Vec<Value> {
    let bundle = read_json(&shared.join(bundle));
    let mut expected: Vec<Value> = bundle["entry"].as_array().unwrap().iter().map(|e| project(&e["resource"])).collect();
    let fixed = [
        ("topic", "Subscription.criteria".to_owned()),
        ("filter-criteria", format!("Subscription.criteria.extension('{BACKPORT_SD}backport-filter-criteria').value.ofType(string)")),
        ("payload-type", format!("Subscription.channel.payload.extension('{BACKPORT_SD}backport-payload-content').value.ofType(code)")),
        ("custom-channel", format!("Subscription.channel.type.extension('{BACKPORT_SD}backport-channel-type').value.ofType(Coding)")),
    ];
    for (code, expression) in fixed {
        let mut definition = read_json(&shared.join(format!("backport/definitions/SearchParameter-Subscription-{code}.json")));
        definition["expression"] = Value::String(expression);
        expected.push(project(&definition));
    }
    expected.push(json!({
        "url": format!("{HERALD_SP}Task-output"), "code": "output", "base": ["Task"], "type": "reference",
        "expression": "Task.output.value.ofType(Reference)", "target": types::resource_types_of(version).collect::<Vec<_>>(),
    }));
    expected.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    expected
}

#[test]
fn generated_r4_and_r4b_definitions_match_the_official_bundles() {
    let files = [
        (FhirVersion::R4, include_str!("search-parameters-r4.json"), "data/r4/search-parameters.json"),
        (FhirVersion::R4B, include_str!("search-parameters-r4b.json"), "data/r4b/search-parameters.json"),
    ];
    // Counts by type from data/r4/README.md and data/r4b/README.md, plus the backport's
    // 3 string parameters and 1 uri parameter, and Herald's 1 reference parameter.
    let kinds = [
        (FhirVersion::R4, [("token", 536), ("reference", 473), ("string", 136), ("uri", 46), ("composite", 46)]),
        (FhirVersion::R4B, [("token", 566), ("reference", 480), ("string", 138), ("uri", 49), ("composite", 46)]),
    ];
    let shared = shared_dir(SHARED);
    for ((version, text, bundle), (_, expected_kinds)) in files.into_iter().zip(kinds) {
        let embedded: Value = serde_json::from_str(text).unwrap();
        let list = embedded.as_array().unwrap();
        assert_eq!(list.len(), set(version).len());
        let urls: Vec<&str> = list.iter().map(|p| p["url"].as_str().unwrap()).collect();
        assert!(urls.windows(2).all(|w| w[0] < w[1]), "sorted by url, no duplicates");
        let found: BTreeMap<&str, usize> = list.iter().fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p["type"].as_str().unwrap()).or_default() += 1;
            m
        });
        for (kind, count) in expected_kinds {
            assert_eq!(found[kind], count, "{version} {kind}");
        }
        if let Some(shared) = &shared {
            assert_eq!(embedded, Value::Array(expected_definitions(shared, version, bundle)), "{version}");
        }
    }
}

/// Own process: selects `version` for the rest of this test process, or returns `false` with
/// a note when the process also runs other tests (`cargo test`), which expect the default.
fn own_process_with(version: FhirVersion) -> bool {
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() != Ok("process-per-test") {
        println!("note: not in a process of its own (run it with cargo nextest); skipping the {version} evaluation");
        return false;
    }
    version::select(version).unwrap();
    true
}

/// A backport Subscription as the IG's `subscription-zulip` example has it.
fn backport_subscription() -> Value {
    json!({
        "resourceType": "Subscription", "id": "s", "status": "active", "reason": "test",
        "criteria": "http://example.org/topics/task",
        "_criteria": { "extension": [
            { "url": format!("{BACKPORT_SD}backport-filter-criteria"), "valueString": "Task?owner=Organization/lab" },
            { "url": format!("{BACKPORT_SD}backport-filter-criteria"), "valueString": "Task?status=requested" }
        ] },
        "channel": {
            "type": "rest-hook",
            "_type": { "extension": [{ "url": format!("{BACKPORT_SD}backport-channel-type"),
                "valueCoding": { "system": "http://example.org/subscription-channel-type", "code": "zulip" } }] },
            "endpoint": "https://receiver.example/hook",
            "payload": "application/fhir+json",
            "_payload": { "extension": [{ "url": format!("{BACKPORT_SD}backport-payload-content"), "valueCode": "id-only" }] }
        }
    })
}

/// Own process. Under `version`'s model, the backport and core Subscription parameters select
/// the backport extensions, an R4 Task's R4-only elements are searchable, and every parameter
/// compiles for every type it applies to and evaluates on a bare resource of that type
/// without an error (the R5 model would refuse R4 element names).
fn backport_version_evaluates(version: FhirVersion) {
    if !own_process_with(version) {
        return;
    }
    assert!(std::ptr::eq(SearchParams::current().unwrap(), set(version)));
    let params = set(version);
    let subscription = backport_subscription();
    let values = |code: &str| params.get("Subscription", code).unwrap().values("Subscription", &subscription).unwrap();
    assert_eq!(values("topic"), [&json!("http://example.org/topics/task")]);
    assert_eq!(values("url"), [&json!("https://receiver.example/hook")]);
    assert_eq!(values("status"), [&json!("active")]);
    assert_eq!(strings(&values("filter-criteria")), ["Task?owner=Organization/lab", "Task?status=requested"]);
    assert_eq!(strings(&values("payload-type")), ["id-only"]);
    assert!(strings(&values("custom-channel")).contains(&"zulip"));
    let plain =
        json!({ "resourceType": "Subscription", "status": "off", "reason": "r", "criteria": "x", "channel": { "type": "rest-hook" } });
    let plain_values = |code: &str| params.get("Subscription", code).unwrap().values("Subscription", &plain).unwrap();
    assert!(
        plain_values("filter-criteria").is_empty() && plain_values("payload-type").is_empty() && plain_values("custom-channel").is_empty()
    );

    let task = json!({
        "resourceType": "Task", "id": "t", "status": "requested", "intent": "order",
        "for": { "reference": "Patient/p" }, "owner": { "reference": "Organization/lab" },
        "performerType": [{ "coding": [{ "system": "http://example.org/roles", "code": "lab" }] }],
        "output": [
            { "type": { "text": "result" }, "valueReference": { "reference": "DiagnosticReport/dr" } },
            { "type": { "text": "note" }, "valueString": "not a reference" }
        ]
    });
    let task_values = |code: &str| params.get("Task", code).unwrap().values("Task", &task).unwrap();
    assert_eq!(task_values("owner"), [&task["owner"]]);
    assert_eq!(task_values("status"), [&json!("requested")]);
    assert_eq!(task_values("subject"), [&task["for"]]);
    assert_eq!(task_values("patient"), [&task["for"]]);
    assert_eq!(task_values("performer"), [&task["performerType"][0]]);
    assert_eq!(task_values("output"), [&task["output"][0]["valueReference"]], "Herald's Task-output, R4 model");
    // The default `[search] index` set indexes it, as in R5 (docs/workflows.md: "indexed by default").
    let default_index = IndexSet::default();
    assert!(default_index.covers("Task", "output"));
    assert!(extract::indexed_params("Task").iter().any(|p| p.url == format!("{HERALD_SP}Task-output")));
    let entries = extract::entries(&default_index, "Task", &task, "http://h/fhir");
    assert_eq!(entries.iter().filter(|e| e.code == "output").count(), 1, "{entries:?}");

    let mut failures = Vec::new();
    let mut evaluations = 0;
    for param in params.iter().filter(|p| p.expression.is_some()) {
        for ty in types::resource_types_of(version).filter(|ty| param.applies_to(ty)) {
            evaluations += 1;
            if let Err(e) = param.values(ty, &json!({ "resourceType": ty, "id": "x" })) {
                failures.push(format!("{} on {ty}: {e}", param.url));
            }
        }
    }
    println!("{version}: {evaluations} (parameter, type) evaluations, {} failures", failures.len());
    assert!(failures.is_empty(), "{version}: {} failures: {:#?}", failures.len(), &failures[..failures.len().min(40)]);

    // Every parameter on every resource of the version's official and backport examples.
    let Some(shared) = shared_dir(SHARED) else { return };
    let mut resources = Vec::new();
    for (label, resource) in version_examples(&shared, version) {
        let entries = resource["entry"].as_array().into_iter().flatten().filter_map(|e| e.get("resource")).cloned();
        resources.extend(entries.enumerate().map(|(i, r)| (format!("{label}/entry[{i}]"), r)));
        resources.push((label, resource));
    }
    let mut selected = 0;
    for (label, resource) in &resources {
        let Some(ty) = resource["resourceType"].as_str() else { continue };
        for param in params.iter().filter(|p| p.expression.is_some() && p.applies_to(ty)) {
            match param.values(ty, resource) {
                Ok(values) => selected += usize::from(!values.is_empty()),
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    println!("{version}: {} example resources, {selected} non-empty (parameter, resource) pairs", resources.len());
    assert!(resources.len() > 20 && selected > 100, "{} resources, {selected} selections", resources.len());
    assert!(failures.is_empty(), "{version}: {failures:#?}");
}

/// The examples of `version` in `shared/fhir`: the Backport IG's (its Subscriptions serve both
/// versions) and the core subscription examples of `data/r4` or `data/r4b`, labelled by file.
fn version_examples(shared: &std::path::Path, version: FhirVersion) -> Vec<(String, Value)> {
    let (tag, core) = match version {
        FhirVersion::R4 => ("-r4-", "data/r4/subscriptions-r4"),
        FhirVersion::R4B => ("-r4b-", "data/r4b/subscriptions-r4b/examples"),
        FhirVersion::R5 => return Vec::new(),
    };
    let mut out = Vec::new();
    for dir in ["backport/examples", core] {
        let Ok(listing) = std::fs::read_dir(shared.join(dir)) else { continue };
        let mut files: Vec<_> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let versioned = name.contains("-r4-") || name.contains("-r4b-");
            if name.ends_with(".json") && (dir == core || name.contains(tag) || !versioned) {
                out.push((name, read_json(&file)));
            }
        }
    }
    out
}

#[test]
fn own_process_r4_parameters_evaluate_under_the_r4_model() {
    backport_version_evaluates(FhirVersion::R4);
}

#[test]
fn own_process_r4b_parameters_evaluate_under_the_r4b_model() {
    backport_version_evaluates(FhirVersion::R4B);
}
