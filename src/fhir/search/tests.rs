//! Tests against the official R5 files in `shared/fhir/`: every token and reference
//! SearchParameter compiles for each base and evaluates on every official example, table
//! tests of R5 token/reference equality on those examples, the generated definitions file,
//! the type tables, index-key equivalence, and hostile input for the parser.
//! Tests that need `shared/fhir/` print a note and pass when it is absent.

use super::branches::split_union;
use super::*;
use crate::fhir::version::FhirVersion;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const BASE: &str = "http://127.0.0.1:8080/fhir";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/examples/r5");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/data");

/// Token and reference parameters that cannot be evaluated, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("http://hl7.org/fhir/SearchParameter/ImagingStudy-reason", "the official R5 definition has no expression"),
    ("http://hl7.org/fhir/SearchParameter/Medication-form", "the official R5 definition has no expression"),
    ("http://hl7.org/fhir/SearchParameter/MedicationKnowledge-packaging-cost-concept", "the official R5 definition has no expression"),
];

fn r5() -> &'static SearchParams {
    SearchParams::r5().expect("embedded R5 definitions load")
}

fn is_token_or_reference(param: &SearchParam) -> bool {
    matches!(param.kind, ParamType::Token | ParamType::Reference)
}

pub(super) fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `dir`, or `None` with a note when `shared/` is absent; under CI (`CI=true`) a missing data
/// set fails the test instead.
pub(super) fn shared_dir(dir: &str) -> Option<PathBuf> {
    crate::testdata::shared(dir)
}

/// Every official example resource: each `*.json` in `examples/r5` and
/// `examples/r5/notifications`, plus the resources they contain or carry as Bundle entries,
/// labelled `name`, `name#id` and `name/entry[i]`.
fn all_examples(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = [dir.to_path_buf(), dir.join("notifications")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let resource = read_json(&file);
        for (i, entry) in resource["entry"].as_array().into_iter().flatten().enumerate() {
            if entry["resource"].is_object() {
                out.push((format!("{name}/entry[{i}]"), entry["resource"].clone()));
            }
        }
        for contained in resource["contained"].as_array().into_iter().flatten() {
            out.push((format!("{name}#{}", contained["id"].as_str().unwrap_or("?")), contained.clone()));
        }
        out.push((name, resource));
    }
    out
}

/// `name` or `name#contained-id`, read from the official examples.
fn example(dir: &Path, label: &str) -> Value {
    let (file, contained) = match label.split_once('#') {
        Some((file, id)) => (file, Some(id)),
        None => (label, None),
    };
    let resource = read_json(&dir.join(format!("{file}.json")));
    match contained {
        None => resource,
        Some(id) => resource["contained"]
            .as_array()
            .and_then(|list| list.iter().find(|r| r["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("{label}: no contained resource {id}")),
    }
}

fn resource_type(resource: &Value) -> &str {
    resource["resourceType"].as_str().unwrap_or("")
}

#[test]
fn every_token_and_reference_parameter_compiles_for_each_base() {
    let mut params = 0;
    let mut pairs = 0;
    let mut failures = Vec::new();
    for param in r5().iter().filter(|p| is_token_or_reference(p)) {
        params += 1;
        let unsupported = UNSUPPORTED.iter().any(|(url, _)| *url == param.url);
        for base in &param.base {
            match (param.path_for(base), unsupported) {
                (Ok(_), false) => pairs += 1,
                (Err(SearchError::NoExpression { .. }), true) => {}
                (result, _) => failures.push(format!("{} on {base}: {result:?}", param.url)),
            }
        }
    }
    println!(
        "token/reference parameters: {params}, supported {}, unsupported {}; \
         (parameter, base) pairs compiled: {pairs}",
        params - UNSUPPORTED.len(),
        UNSUPPORTED.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(params, 981);
}

#[test]
fn every_parameter_with_an_expression_compiles_for_each_base() {
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for param in r5().iter() {
        let entry = by_type.entry(param.kind.code()).or_default();
        for base in &param.base {
            match param.path_for(base) {
                Ok(_) => entry.0 += 1,
                Err(SearchError::NoExpression { .. }) => entry.1 += 1,
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    println!("(parameter, base) pairs per type, (compiled, without expression): {by_type:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn values_evaluate_on_every_official_example() {
    let Some(dir) = shared_dir(EXAMPLES) else {
        return;
    };
    let examples = all_examples(&dir);
    assert!(examples.len() > 38, "expected the official examples in {EXAMPLES}");
    let mut evaluations = 0;
    let mut non_empty = 0;
    let mut failures = Vec::new();
    for (label, resource) in &examples {
        let ty = resource_type(resource);
        for param in r5().iter().filter(|p| is_token_or_reference(p) && p.applies_to(ty)) {
            if UNSUPPORTED.iter().any(|(url, _)| *url == param.url) {
                continue;
            }
            evaluations += 1;
            match param.values(ty, resource) {
                Ok(values) => non_empty += usize::from(!values.is_empty()),
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    println!("{} example resources, {evaluations} token/reference evaluations, {non_empty} non-empty", examples.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_parameter_with_an_expression_evaluates_on_the_official_examples() {
    let Some(dir) = shared_dir(EXAMPLES) else {
        return;
    };
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (label, resource) in &all_examples(&dir) {
        let ty = resource_type(resource);
        for param in r5().iter().filter(|p| p.expression.is_some() && p.applies_to(ty)) {
            let entry = by_type.entry(param.kind.code()).or_default();
            match param.values(ty, resource) {
                Ok(values) => {
                    entry.0 += 1;
                    entry.1 += usize::from(!values.is_empty());
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    println!("evaluations per type, (total, non-empty): {by_type:?}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_registry_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SearchParams>();
    assert_send_sync::<CompiledPath>();
    assert_send_sync::<SearchError>();
}

/// (example, parameter code, search value, expected match).
const CASES: &[(&str, &str, &str, bool)] = &[
    // Task.owner is Organization/1832473e-2fe0-452d-abe9-3cdb9879522f in Task-example1.
    ("Task-example1", "owner", "Organization/1832473e-2fe0-452d-abe9-3cdb9879522f", true),
    ("Task-example1", "owner", "1832473e-2fe0-452d-abe9-3cdb9879522f", true),
    ("Task-example1", "owner", "http://127.0.0.1:8080/fhir/Organization/1832473e-2fe0-452d-abe9-3cdb9879522f", true),
    ("Task-example1", "owner", "http://other.org/fhir/Organization/1832473e-2fe0-452d-abe9-3cdb9879522f", false),
    ("Task-example1", "owner", "Organization/1", false),
    ("Task-example1", "owner", "Practitioner/1832473e-2fe0-452d-abe9-3cdb9879522f", false),
    ("Task-example3", "owner", "Practitioner/example", true),
    ("Task-example1", "status", "in-progress", true),
    ("Task-example1", "status", "|in-progress", true),
    ("Task-example1", "status", "requested", false),
    // The implicit system of a code element is not known, so a system never matches it.
    ("Task-example1", "status", "http://hl7.org/fhir/task-status|in-progress", false),
    ("Task-example1", "code", "fulfill", true),
    ("Task-example1", "code", "http://hl7.org/fhir/CodeSystem/task-code|fulfill", true),
    ("Task-example1", "code", "http://hl7.org/fhir/CodeSystem/task-code|", true),
    ("Task-example1", "code", "|fulfill", false),
    ("Task-example1", "code", "http://loinc.org|fulfill", false),
    ("Task-example1", "focus", "ServiceRequest/lipid", true),
    ("Task-example1", "focus", "ServiceRequest/physiotherapy", false),
    ("Task-example2", "focus", "ServiceRequest/lipid", false),
    ("Task-example2", "part-of", "Task/example1", true),
    ("Task-example2", "part-of", "example1", true),
    ("Task-example1", "part-of", "Task/example1", false),
    ("Task-example1", "subject", "Patient/example", true),
    ("Task-example1", "subject", "Patient/f001", false),
    ("Task-example1", "patient", "Patient/example", true),
    ("Task-example3", "patient", "Patient/f001", true),
    ("Task-example3", "patient", "Patient/example", false),
    ("Task-example1", "identifier", "http:/goodhealth.org/identifiers|20170201-001", true),
    ("Task-example1", "identifier", "20170201-001", true),
    ("Task-example1", "identifier", "|20170201-001", false),
    ("Task-example1", "identifier", "http:/goodhealth.org/identifiers|20170201-002", false),
    ("Task-example1", "encounter", "Encounter/example", true),
    ("Task-example1", "requester", "Practitioner/example", true),
    ("Task-example1", "requester", "Patient/example", false),
    // Observation.code, all four token forms.
    ("Observation-example", "code", "http://loinc.org|29463-7", true),
    ("Observation-example", "code", "29463-7", true),
    ("Observation-example", "code", "http://loinc.org|", true),
    ("Observation-example", "code", "http://snomed.info/sct|27113001", true),
    ("Observation-example", "code", "|29463-7", false),
    ("Observation-example", "code", "http://snomed.info/sct|29463-7", false),
    ("Observation-example", "code", "http://acme.org|", false),
    // Observation.value[x]: valueCodeableConcept in the Observation ServiceRequest-lipid
    // contains; valueQuantity in Observation-example.
    ("ServiceRequest-lipid#fasting", "value-concept", "http://terminology.hl7.org/CodeSystem/v2-0136|Y", true),
    ("ServiceRequest-lipid#fasting", "value-concept", "Y", true),
    ("ServiceRequest-lipid#fasting", "value-concept", "N", false),
    ("Observation-example", "value-concept", "[lb_av]", false),
    ("Observation-blood-pressure", "combo-code", "http://loinc.org|8480-6", true),
    ("Observation-blood-pressure", "component-code", "http://loinc.org|85354-9", false),
    ("Observation-example", "subject", "Patient/example", true),
    ("Observation-example", "patient", "Patient/example", true),
    ("Observation-example", "patient", "Group/example", false),
    ("Observation-bmi", "_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns", true),
    ("Observation-bmi", "_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns|5.0.0", false),
    ("Observation-bmi", "_profile", "http://hl7.org/fhir/StructureDefinition/bodyweight", false),
    // DiagnosticReport.subject, and patient through where(resolve() is Patient).
    ("DiagnosticReport-f201", "subject", "Patient/f201", true),
    ("DiagnosticReport-f201", "patient", "Patient/f201", true),
    ("DiagnosticReport-f201", "patient", "f201", true),
    ("DiagnosticReport-f201", "patient", "Patient/example", false),
    ("Encounter-f001", "patient", "Patient/f001", true),
    ("Encounter-f001", "patient", "Patient/f201", false),
    ("Encounter-f001", "subject", "Patient/f001", true),
    ("Encounter-f001", "status", "completed", true),
    ("Encounter-f001", "status", "in-progress", false),
    // Versioned references in the data.
    ("Provenance-example", "target", "Procedure/example", true),
    ("Provenance-example", "target", "Procedure/example/_history/1", true),
    ("Provenance-example", "target", "http://127.0.0.1:8080/fhir/Procedure/example", true),
    ("Provenance-example", "target", "Procedure/example/_history/2", false),
    ("Provenance-example", "target", "Procedure/other", false),
    ("Provenance-example1", "target", "Patient/pat3", true),
    ("Provenance-example", "location", "Location/1", true),
    // Patient: boolean expression, ContactPoint, Identifier, code, Resource parameters.
    ("Patient-example", "deceased", "false", true),
    ("Patient-example", "deceased", "true", false),
    ("Patient-example", "phone", "(03) 5555 6473", true),
    ("Patient-example", "phone", "phone|(03) 5555 6473", false),
    ("Patient-example", "identifier", "urn:oid:1.2.36.146.595.217.0.1|12345", true),
    ("Patient-example", "identifier", "urn:oid:1.2.36.146.595.217.0.1|54321", false),
    ("Patient-example", "gender", "male", true),
    ("Patient-example", "gender", "female", false),
    ("Patient-example", "active", "true", true),
    ("Patient-example", "_id", "example", true),
    ("Patient-example", "_id", "other", false),
    ("DocumentReference-example", "format-code", "urn:oid:1.3.6.1.4.1.19376.1.2.3|urn:ihe:pcc:handp:2008", true),
    ("Subscription-example", "status", "active", true),
];

/// (example, JSON pointer, new JSON value or `null` to remove, code, search value, expected):
/// official examples changed in one place to reach forms they do not carry.
const PATCHED_CASES: &[(&str, &str, &str, &str, &str, bool)] = &[
    ("Task-example1", "/owner/reference", r#""http://127.0.0.1:8080/fhir/Organization/lab-1""#, "owner", "Organization/lab-1", true),
    (
        "Task-example1",
        "/owner/reference",
        r#""http://127.0.0.1:8080/fhir/Organization/lab-1""#,
        "owner",
        "http://127.0.0.1:8080/fhir/Organization/lab-1",
        true,
    ),
    (
        "Task-example1",
        "/owner/reference",
        r#""http://127.0.0.1:8080/fhir/Organization/lab-1""#,
        "owner",
        "http://127.0.0.1:8080/fhir/Organization/lab-2",
        false,
    ),
    ("Task-example1", "/owner/reference", r#""http://other.org/fhir/Organization/lab-1""#, "owner", "Organization/lab-1", false),
    (
        "Task-example1",
        "/owner/reference",
        r#""http://other.org/fhir/Organization/lab-1""#,
        "owner",
        "http://other.org/fhir/Organization/lab-1",
        true,
    ),
    ("Task-example1", "/owner/reference", r#""Organization/lab-1/_history/2""#, "owner", "Organization/lab-1", true),
    ("Task-example1", "/owner/reference", r#""Organization/lab-1/_history/2""#, "owner", "Organization/lab-1/_history/2", true),
    ("Task-example1", "/owner/reference", r#""Organization/lab-1/_history/2""#, "owner", "Organization/lab-1/_history/3", false),
    ("Task-example1", "/status", r#""requested""#, "status", "requested", true),
    ("Task-example1", "/status", r#""requested""#, "status", "in-progress", false),
    ("DiagnosticReport-f201", "/subject/reference", r#""Group/f201""#, "subject", "Group/f201", true),
    ("DiagnosticReport-f201", "/subject/reference", r#""Group/f201""#, "patient", "Group/f201", false),
    ("DiagnosticReport-f201", "/subject", r#"{"reference": "urn:uuid:5f0b", "type": "Patient"}"#, "patient", "urn:uuid:5f0b", true),
    ("DiagnosticReport-f201", "/subject", r#"{"reference": "urn:uuid:5f0b"}"#, "patient", "urn:uuid:5f0b", false),
    ("DiagnosticReport-f201", "/subject", r#"{"reference": "urn:uuid:5f0b"}"#, "subject", "urn:uuid:5f0b", true),
    ("Encounter-f001", "/subject/reference", r#""http://127.0.0.1:8080/fhir/Patient/f001""#, "patient", "Patient/f001", true),
    ("Encounter-f001", "/subject/reference", r#""http://other.org/Patient/f001""#, "patient", "Patient/f001", false),
    (
        "Observation-bmi",
        "/meta/profile/0",
        r#""http://hl7.org/fhir/StructureDefinition/vitalsigns|5.0.0""#,
        "_profile",
        "http://hl7.org/fhir/StructureDefinition/vitalsigns",
        true,
    ),
    (
        "Observation-bmi",
        "/meta/profile/0",
        r#""http://hl7.org/fhir/StructureDefinition/vitalsigns|5.0.0""#,
        "_profile",
        "http://hl7.org/fhir/StructureDefinition/vitalsigns|5.0.0",
        true,
    ),
    (
        "Observation-bmi",
        "/meta/profile/0",
        r#""http://hl7.org/fhir/StructureDefinition/vitalsigns|5.0.0""#,
        "_profile",
        "http://hl7.org/fhir/StructureDefinition/vitalsigns|4.0.1",
        false,
    ),
    ("Patient-example", "/deceasedBoolean", "true", "deceased", "true", true),
    ("Patient-example", "/deceasedBoolean", "null", "deceased", "false", true),
    ("Patient-example", "/deceasedDateTime", r#""2015-02-14T13:42:00+10:00""#, "deceased", "true", true),
];

/// Set (or with `null`, remove) the member at `pointer`, creating the last step if needed.
fn patch(resource: &mut Value, pointer: &str, json_text: &str) {
    let new: Value = serde_json::from_str(json_text).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match resource.pointer_mut(parent).unwrap() {
        Value::Object(map) if new.is_null() => {
            map.shift_remove(key);
        }
        Value::Object(map) => {
            map.insert(key.to_owned(), new);
        }
        Value::Array(list) => list[key.parse::<usize>().unwrap()] = new,
        other => panic!("cannot patch {pointer} in {other}"),
    }
    if pointer == "/deceasedDateTime" {
        resource.as_object_mut().unwrap().shift_remove("deceasedBoolean");
    }
}

/// Evaluate `code` on `resource` and match `query` with the parameter's type; also require
/// the index keys to give the same answer.
fn check(label: &str, resource: &Value, code: &str, query: &str, expect: bool) -> Result<(), String> {
    let ty = resource_type(resource);
    let param = r5().get(ty, code).ok_or_else(|| format!("{label}: no parameter {code} on {ty}"))?;
    let values = param.values(ty, resource).map_err(|e| format!("{label}: {e}"))?;
    let (matched, indexed) = match param.kind {
        ParamType::Token => (token_matches(&values, query), normalize_token_query(query).is_some_and(|k| token_keys(&values).contains(&k))),
        ParamType::Reference => (
            reference_matches(&values, query, BASE),
            normalize_reference_query(query, BASE).is_some_and(|k| reference_keys(&values, BASE).contains(&k)),
        ),
        other => return Err(format!("{label}: {code} is a {other:?} parameter")),
    };
    if matched != expect || indexed != expect {
        return Err(format!(
            "{label}: {code}={query}: expected {expect}, match {matched}, \
             index {indexed}; values {values:?}"
        ));
    }
    Ok(())
}

#[test]
fn token_and_reference_equality_on_official_examples() {
    let Some(dir) = shared_dir(EXAMPLES) else {
        return;
    };
    let mut failures = Vec::new();
    for (label, code, query, expect) in CASES {
        let resource = example(&dir, label);
        failures.extend(check(label, &resource, code, query, *expect).err());
    }
    for (label, pointer, value, code, query, expect) in PATCHED_CASES {
        let mut resource = example(&dir, label);
        patch(&mut resource, pointer, value);
        let label = format!("{label} with {pointer}={value}");
        failures.extend(check(&label, &resource, code, query, *expect).err());
    }
    println!("{} cases", CASES.len() + PATCHED_CASES.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn choice_values_are_selected_by_type() {
    let Some(dir) = shared_dir(EXAMPLES) else {
        return;
    };
    let observation = example(&dir, "Observation-example");
    let quantity = r5().get("Observation", "value-quantity").unwrap();
    assert_eq!(quantity.values("Observation", &observation).unwrap(), vec![&observation["valueQuantity"]]);
    let concept = r5().get("Observation", "value-concept").unwrap();
    assert!(concept.values("Observation", &observation).unwrap().is_empty());
    let fasting = example(&dir, "ServiceRequest-lipid#fasting");
    assert_eq!(concept.values("Observation", &fasting).unwrap(), vec![&fasting["valueCodeableConcept"]]);
    assert!(quantity.values("Observation", &fasting).unwrap().is_empty());
}

#[test]
fn lookup_by_type_code_and_url() {
    let set = r5();
    assert_eq!(set.len(), 1239);
    let url = |ty: &str, code: &str| set.get(ty, code).map(|p| p.url.as_str());
    let sp = |id: &str| format!("http://hl7.org/fhir/SearchParameter/{id}");
    assert_eq!(url("Task", "owner"), Some(sp("Task-owner").as_str()));
    assert_eq!(url("Task", "patient"), Some(sp("clinical-patient").as_str()));
    assert_eq!(url("Task", "code"), Some(sp("clinical-code").as_str()));
    assert_eq!(url("Patient", "_id"), Some(sp("Resource-id").as_str()));
    assert_eq!(url("Bundle", "_id"), Some(sp("Resource-id").as_str()));
    assert_eq!(url("Patient", "_text"), Some(sp("DomainResource-text").as_str()));
    assert_eq!(url("Bundle", "_text"), Some(sp("Resource-text").as_str()));
    assert_eq!(url("NotAType", "_id"), None);
    assert_eq!(url("Task", "no-such-code"), None);
    let owner = set.by_url(&sp("Task-owner")).unwrap();
    assert_eq!(owner.kind, ParamType::Reference);
    assert_eq!(owner.expression.as_deref(), Some("Task.owner"));
    assert!(owner.targets.contains(&"Organization".to_owned()));
    assert!(!owner.applies_to("Observation"));
    assert!(matches!(owner.path_for("Observation"), Err(SearchError::NotApplicable { .. })));
    let composite = set.by_url(&sp("Observation-code-value-concept")).unwrap();
    assert_eq!(composite.components.len(), 2);
}

#[test]
fn shared_parameters_compile_only_the_branches_for_the_type() {
    let set = r5();
    let patient = set.get("Task", "patient").unwrap();
    assert_eq!(patient.path_for("Task").unwrap().source(), "Task.for.where(resolve() is Patient)");
    let topic = set.get("EvidenceVariable", "topic").unwrap();
    assert!(topic.path_for("EvidenceVariable").unwrap().is_empty());
    assert_eq!(topic.path_for("Library").unwrap().source(), "Library.topic");
    // Resource-level parameters compile once and serve every type.
    let id = set.get("Observation", "_id").unwrap();
    assert!(std::ptr::eq(id.path_for("Observation").unwrap(), id.path_for("Task").unwrap()));
    // The type given must be the resource's own.
    let task = json!({"resourceType": "Task", "status": "requested"});
    let status = set.get("Task", "status").unwrap();
    assert!(matches!(status.values("Observation", &task), Err(SearchError::NotApplicable { .. }) | Err(SearchError::ResourceType { .. })));
    assert!(matches!(status.values("Task", &json!({})), Err(SearchError::ResourceType { .. })));
    assert_eq!(status.values("Task", &task).unwrap(), vec![&json!("requested")]);
}

#[test]
fn union_branches_are_split_with_their_roots() {
    let branches = split_union("A.x | (B.y | C.z).first() | (start | end.start).first() | 'p|q' | D.w");
    let found: Vec<(&str, Vec<&str>)> = branches.iter().map(|b| (b.text, b.roots.clone())).collect();
    assert_eq!(
        found,
        vec![
            ("A.x", vec!["A"]),
            ("(B.y | C.z).first()", vec!["B", "C"]),
            ("(start | end.start).first()", vec![]),
            ("'p|q'", vec![]),
            ("D.w", vec!["D"]),
        ]
    );
    // A weaker operator at the top keeps the expression whole.
    assert_eq!(split_union("A.x | A.y = B.z").len(), 1);
    assert_eq!(split_union("A.x.exists() and A.x | B.y").len(), 1);
    assert_eq!(split_union("A.x.where(b | c)").len(), 1);
    assert_eq!(split_union("A.x // a | b\n | B.y").len(), 2);
}

/// The official bundle projected as `tools/gen_search_params.py` does it.
pub(super) fn project(resource: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in ["url", "code", "base", "type", "expression"] {
        if let Some(v) = resource.get(key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    out.insert("target".to_owned(), resource.get("target").cloned().unwrap_or(json!([])));
    if resource["type"] == "composite" {
        let components: Vec<Value> = resource["component"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"definition": c["definition"], "expression": c["expression"]}))
            .collect();
        out.insert("component".to_owned(), Value::Array(components));
    }
    Value::Object(out)
}

#[test]
fn generated_definitions_match_the_official_bundle() {
    let embedded: Value = serde_json::from_str(include_str!("search-parameters-r5.json")).unwrap();
    let list = embedded.as_array().unwrap();
    assert_eq!(list.len(), 1239);
    let urls: Vec<&str> = list.iter().map(|p| p["url"].as_str().unwrap()).collect();
    assert!(urls.windows(2).all(|w| w[0] < w[1]), "sorted by url, no duplicates");
    let owner = list.iter().find(|p| p["url"] == "http://hl7.org/fhir/SearchParameter/Task-owner").unwrap();
    assert_eq!(owner["type"], "reference");
    assert_eq!(owner["expression"], "Task.owner");
    assert_eq!(owner["target"], json!(["Organization", "CareTeam", "RelatedPerson", "PractitionerRole", "Practitioner", "Patient"]));
    let kinds: BTreeMap<&str, usize> = list.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    // The bundle's 515 token and 470 reference entries, less the skipped drafts.
    assert_eq!(kinds["token"], 514);
    assert_eq!(kinds["reference"], 467);

    let Some(data) = shared_dir(DATA) else {
        return;
    };
    let bundle = read_json(&data.join("search-parameters-r5.json"));
    let skipped = ["example", "example-constraint", "example-extension", "example-reference", "filter"];
    let mut expected: Vec<Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| !skipped.contains(&r["id"].as_str().unwrap()))
        .map(project)
        .collect();
    expected.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    assert_eq!(embedded, Value::Array(expected));
}

#[test]
fn resource_type_tables_match_the_official_definitions() {
    let Some(data) = shared_dir(DATA) else {
        return;
    };
    for (version, file) in [
        (FhirVersion::R4, "r4/profiles-resources.json"),
        (FhirVersion::R4B, "r4b/profiles-resources.json"),
        (FhirVersion::R5, "profiles-resources.json"),
    ] {
        let mut resources = BTreeSet::new();
        let bundle = read_json(&data.join(file));
        for entry in bundle["entry"].as_array().unwrap() {
            let sd = &entry["resource"];
            if sd["resourceType"] == "StructureDefinition"
                && sd["derivation"] == "specialization"
                && sd["kind"] == "resource"
                && sd["abstract"] == false
            {
                resources.insert(sd["id"].as_str().unwrap());
            }
        }
        assert_eq!(types::resource_types_of(version).collect::<BTreeSet<_>>(), resources, "{version}");
    }
}

#[test]
fn index_keys_answer_like_the_match_functions() {
    let Some(dir) = shared_dir(EXAMPLES) else {
        return;
    };
    let examples = all_examples(&dir);
    let mut checked = 0;
    let mut failures = Vec::new();
    for param in r5().iter().filter(|p| is_token_or_reference(p) && p.expression.is_some()) {
        let mut selected = Vec::new();
        for (label, resource) in &examples {
            let ty = resource_type(resource);
            if param.applies_to(ty) {
                selected.push((label, param.values(ty, resource).unwrap()));
            }
        }
        let is_token = param.kind == ParamType::Token;
        let keys = |values: &[&Value]| {
            if is_token {
                token_keys(values)
            } else {
                reference_keys(values, BASE)
            }
        };
        let mut queries: BTreeSet<String> = BTreeSet::new();
        for (_, values) in &selected {
            for key in keys(values) {
                queries.insert(format!("{key}x"));
                queries.insert(format!("|{key}"));
                queries.insert(format!("{BASE}/{key}"));
                queries.insert(format!("{BASE}//{key}"));
                queries.insert(key.replace('/', "/x"));
                queries.insert(key);
            }
        }
        for (label, values) in &selected {
            let own = keys(values);
            for query in &queries {
                let (matched, normal) = if is_token {
                    (token_matches(values, query), normalize_token_query(query))
                } else {
                    (reference_matches(values, query, BASE), normalize_reference_query(query, BASE))
                };
                checked += 1;
                if matched != normal.as_ref().is_some_and(|k| own.contains(k)) {
                    failures.push(format!("{} on {label}: {query:?} -> {normal:?}", param.url));
                }
            }
            for key in &own {
                let normal = if is_token { normalize_token_query(key) } else { normalize_reference_query(key, BASE) };
                if normal.as_ref() != Some(key) {
                    failures.push(format!("{}: key {key:?} normalises to {normal:?}", param.url));
                }
            }
        }
    }
    println!("{checked} (values, query) pairs checked");
    assert!(failures.is_empty(), "{} failures: {:#?}", failures.len(), &failures[..failures.len().min(20)]);
}

#[test]
fn matching_edge_cases() {
    let coding = json!({"coding": [{"system": "http://x", "code": "a|b"}]});
    let values = [&coding];
    assert!(token_matches(&values, "http://x|a\\|b"));
    assert!(token_matches(&values, "a\\|b"));
    assert!(!token_matches(&values, "a|b"));
    assert!(!token_matches(&values, ""));
    assert!(!token_matches(&values, "|"));
    assert_eq!(normalize_token_query("|"), None);
    assert_eq!(normalize_token_query("http://x|a\\|b").as_deref(), Some("http://x|a\\|b"));

    let reference = json!({"reference": "Patient/1"});
    let contained = json!({"reference": "#p1"});
    let values = [&reference, &contained];
    assert!(reference_matches(&values, "Patient/1", "http://127.0.0.1:8080/fhir/"));
    assert!(reference_matches(&values, "http://127.0.0.1:8080/fhir/Patient/1", "http://127.0.0.1:8080/fhir/"));
    assert!(!reference_matches(&values, "#p1", BASE));
    assert!(!reference_matches(&values, "", BASE));
    assert!(reference_matches(&values, "Patient/1", ""));
    assert!(!reference_matches(&values, "http://127.0.0.1:8080/fhir/Patient/1", ""));
    let urn = json!({"reference": "urn:uuid:abc"});
    assert!(reference_matches(&[&urn], "urn:uuid:abc", BASE));
    assert!(!reference_matches(&[&urn], "abc", BASE));
}

/// Deterministic pseudo-random numbers (xorshift64).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn hostile_input_never_panics() {
    const VOCABULARY: &[&str] = &[
        "Task",
        "Patient",
        "Resource",
        ".",
        "owner",
        "value",
        "where(",
        "resolve()",
        " is ",
        " as ",
        "ofType(",
        "Quantity",
        ")",
        "(",
        "|",
        "'x'",
        "'",
        "`",
        "=",
        "!=",
        " and ",
        " or ",
        "[0]",
        "[",
        "]",
        "$this",
        "%resource",
        "%x",
        "exists()",
        "first()",
        "extension(",
        "'http://x'",
        ",",
        "{",
        "}",
        "\\",
        "@2020",
        "#",
        "é",
        "\u{0}",
        " ",
        "//",
        "/*",
        "*/",
        "1.5",
        "-",
        "true",
        "select(",
        "not()",
        "FHIR.",
        "System.",
        "\n",
    ];
    let resource = json!({
        "resourceType": "Task", "id": "t", "owner": {"reference": "Organization/1"},
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "for": {"reference": "#p"}, "valueQuantity": {"value": 1},
        "extension": [{"url": "http://x", "valueString": "x"}]
    });
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let (mut ok, mut err) = (0, 0);
    for round in 0..30_000 {
        let len = (next(&mut state) % 120) as usize;
        let text = if round % 2 == 0 {
            let bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len / 4).map(|_| VOCABULARY[(next(&mut state) % VOCABULARY.len() as u64) as usize]).collect()
        };
        let _ = split_union(&text);
        let _ = token_matches(&[&resource["owner"]], &text);
        let _ = reference_matches(&[&resource["owner"]], &text, BASE);
        let _ = normalize_token_query(&text);
        let _ = normalize_reference_query(&text, BASE);
        match CompiledPath::parse(&text) {
            Ok(path) => {
                ok += 1;
                let _ = path.evaluate(&resource);
            }
            Err(_) => err += 1,
        }
    }
    println!("hostile inputs: {ok} compiled, {err} rejected");
    let resources: Vec<Value> = match shared_dir(EXAMPLES) {
        Some(dir) => all_examples(&dir).into_iter().map(|(_, r)| r).collect(),
        None => vec![resource],
    };
    let (mut compiled, mut evaluated) = (0, 0);
    for _ in 0..3_000 {
        let text = random_expression(&mut state, 0);
        let Ok(path) = CompiledPath::parse(&text) else {
            continue;
        };
        compiled += 1;
        for r in &resources {
            evaluated += usize::from(path.evaluate(r).is_ok());
        }
    }
    println!("generated expressions: {compiled} compiled, {evaluated} evaluations without error");
    assert!(compiled > 1_000);
    // The engine bounds tree height, not parentheses (which add no node); its own tests
    // pin the exact limit.
    for depth in [1000, 4000, 100_000] {
        let parens = format!("{}Task.id{}", "(".repeat(depth), ")".repeat(depth));
        assert!(CompiledPath::parse(&parens).is_err());
        assert!(CompiledPath::parse(&"(".repeat(depth)).is_err());
        assert!(CompiledPath::parse(&"a.where(".repeat(depth)).is_err());
        let _ = split_union(&parens);
    }
}

/// A random expression in the shapes search parameters use (nesting stops at 70 levels).
fn random_expression(state: &mut u64, depth: usize) -> String {
    const ROOTS: &[&str] = &["Task", "Observation", "Patient", "Resource", "Bundle", "$this", "%resource"];
    const MEMBERS: &[&str] = &[
        "id",
        "status",
        "code",
        "coding",
        "subject",
        "value",
        "for",
        "owner",
        "entry",
        "resource",
        "extension",
        "contained",
        "identifier",
        "system",
        "reference",
        "component",
    ];
    const TYPES: &[&str] = &["Reference", "Quantity", "CodeableConcept", "Patient", "string", "boolean"];
    let pick = |state: &mut u64, list: &[&'static str]| list[(next(state) % list.len() as u64) as usize];
    if depth > 70 {
        return pick(state, MEMBERS).to_owned();
    }
    let mut out = pick(state, ROOTS).to_owned();
    for _ in 0..next(state) % 4 {
        let step = match next(state) % 12 {
            0 => format!(".where({})", random_expression(state, depth + 1)),
            1 => format!(".ofType({})", pick(state, TYPES)),
            2 => ".where(resolve() is Patient)".to_owned(),
            3 => ".exists()".to_owned(),
            4 => ".first()".to_owned(),
            5 => "[0]".to_owned(),
            6 => ".extension('http://x')".to_owned(),
            7 => format!(".select({})", random_expression(state, depth + 1)),
            _ => format!(".{}", pick(state, MEMBERS)),
        };
        out.push_str(&step);
    }
    match next(state) % 10 {
        0 => format!("{out} | {}", random_expression(state, depth + 1)),
        1 => format!("({out}) = {}", random_expression(state, depth + 1)),
        2 => format!("{out}.exists() and {}", random_expression(state, depth + 1)),
        3 => format!("({out} as {})", pick(state, TYPES)),
        4 => format!("{out} != 'x'"),
        _ => out,
    }
}
