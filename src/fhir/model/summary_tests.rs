//! `_summary=true|text` on official R5 examples (Patient, Task, Observation) and on small
//! resources in R4, checked element by element against the definitions' flags.

use serde_json::{json, Value};

use super::summary::{summary_text, summary_true};
use super::Model;
use crate::fhir::version::FhirVersion;

fn model(version: FhirVersion) -> &'static Model {
    Model::for_version(version).unwrap_or_else(|e| panic!("{e}"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    k.sort_unstable();
    k
}

#[test]
fn flags_come_from_the_definitions_in_every_version() {
    for version in [FhirVersion::R4, FhirVersion::R4B, FhirVersion::R5] {
        let m = model(version);
        assert!(m.is_summary_element("Task", "status"), "{version:?}");
        assert!(m.is_mandatory_element("Task", "status") && m.is_mandatory_element("Task", "intent"), "{version:?}");
        assert!(!m.is_summary_element("Task", "input") && !m.is_summary_element("Patient", "photo"), "{version:?}");
        assert!(m.is_summary_element("Patient", "id") && m.is_summary_element("Patient", "meta"), "{version:?}");
        assert!(!m.is_summary_element("Patient", "text") && !m.is_summary_element("Patient", "extension"), "{version:?}");
        // Backbone elements by their path type; inherited flags through the base chain.
        assert!(m.is_summary_element("Observation.component", "code") && !m.is_summary_element("Observation.component", "interpretation"));
        assert!(m.is_mandatory_element("Task.input", "type") && !m.is_summary_element("Task.input", "id"));
        // Datatypes: Attachment.data is not in the summary, Attachment.url is.
        assert!(!m.is_summary_element("Attachment", "data") && m.is_summary_element("Attachment", "url"));
        assert!(!m.is_summary_element("Patient", "no-such-element"));
    }
}

#[test]
fn patient_example_summary_true() {
    let Some(p) = crate::testdata::fhir_json("examples/r5/Patient-example.json") else { return };
    let (s, removed) = summary_true(model(FhirVersion::R5), &p);
    assert!(removed);
    assert_eq!(
        keys(&s),
        [
            "active",
            "address",
            "birthDate",
            "deceasedBoolean",
            "gender",
            "id",
            "identifier",
            "managingOrganization",
            "meta",
            "name",
            "resourceType",
            "telecom"
        ]
    );
    // `_birthDate` carries only an extension, which no summary keeps; `contact` and `text` go.
    assert_eq!(s["name"], p["name"]);
    assert_eq!(s["identifier"], p["identifier"]);
    assert_eq!(s["meta"], p["meta"]);
}

#[test]
fn task_example_summary_true_and_text() {
    let Some(t) = crate::testdata::fhir_json("examples/r5/Task-example1.json") else { return };
    let m = model(FhirVersion::R5);
    let (s, removed) = summary_true(m, &t);
    assert!(removed);
    for gone in [
        "text",
        "contained",
        "identifier",
        "priority",
        "authoredOn",
        "requestedPerformer",
        "reason",
        "note",
        "relevantHistory",
        "restriction",
    ] {
        assert!(s.get(gone).is_none(), "{gone}: {s}");
    }
    for kept in ["status", "intent", "businessStatus", "code", "for", "owner", "executionPeriod", "lastModified", "requester"] {
        assert_eq!(s[kept], t[kept], "{kept}");
    }
    let (x, removed) = summary_text(m, &t);
    assert!(removed);
    assert_eq!(keys(&x), ["id", "intent", "meta", "resourceType", "status", "text"]);
    assert_eq!(x["text"], t["text"]);
}

#[test]
fn observation_components_keep_their_summary_elements() {
    let Some(o) = crate::testdata::fhir_json("examples/r5/Observation-blood-pressure.json") else { return };
    let (s, _) = summary_true(model(FhirVersion::R5), &o);
    for gone in ["text", "category", "interpretation", "bodySite"] {
        assert!(s.get(gone).is_none(), "{gone}");
    }
    let components = s["component"].as_array().unwrap();
    assert_eq!(components.len(), o["component"].as_array().unwrap().len());
    for (c, original) in components.iter().zip(o["component"].as_array().unwrap()) {
        assert_eq!(keys(c), ["code", "valueQuantity"]);
        assert_eq!(c["valueQuantity"], original["valueQuantity"]);
    }
}

#[test]
fn r4_datatypes_extensions_and_nested_resources() {
    let m = model(FhirVersion::R4);
    let patient = json!({
        "resourceType": "Patient", "id": "p", "text": { "status": "generated", "div": "<div/>" },
        "extension": [{ "url": "urn:x", "valueString": "x" }],
        "photo": [{ "contentType": "image/png", "data": "AAAA" }],
        "name": [{ "family": "Doe", "extension": [{ "url": "urn:y", "valueString": "y" }] }],
        "gender": "other", "_gender": { "extension": [{ "url": "urn:z", "valueCode": "z" }] },
        "unknownThing": 1
    });
    let (s, removed) = summary_true(m, &patient);
    assert!(removed);
    assert_eq!(s, json!({ "resourceType": "Patient", "id": "p", "name": [{ "family": "Doe" }], "gender": "other" }));
    // Nothing to remove: nothing removed, the resource unchanged.
    let small = json!({ "resourceType": "Task", "id": "t", "status": "ready", "intent": "order" });
    assert_eq!(summary_true(m, &small), (small.clone(), false));
    assert_eq!(summary_text(m, &small), (small.clone(), false));
    // A Bundle entry's resource is shaped by its own type.
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": [{ "resource": patient }] });
    let (b, _) = summary_true(m, &bundle);
    assert_eq!(b["entry"][0]["resource"], s);
    // Not a resource: unchanged.
    assert_eq!(summary_true(m, &json!([1])), (json!([1]), false));
    assert!(!summary_true(m, &json!({ "resourceType": "Nope", "a": 1 })).1);
}
