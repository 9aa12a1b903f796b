//! Tests of the three embedded models side by side (R4 4.0.1, R4B 4.3.0, R5 5.0.0): each
//! loads and knows its own version's facts (Task's elements, `Observation.value[x]`'s
//! choices, the roots, the Subscription shapes, which resource types exist), and every
//! property of the R4 and R4B examples in `shared/fhir/` (the Backport IG's Subscriptions,
//! notifications and status resources, the R4 and R4B core subscription examples, the
//! backport topics) resolves in the model of its version. The version is chosen explicitly
//! with [`Model::for_version`]; the process-wide one is never touched.

use super::tests::{el, json_files, shared_dir, walk};
use super::*;
use serde_json::Value;
use std::path::PathBuf;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir");

fn model(version: FhirVersion) -> &'static Model {
    Model::for_version(version).unwrap_or_else(|e| panic!("embedded {version} model loads: {e}"))
}

#[test]
fn each_version_loads_its_own_model_once() {
    for version in FhirVersion::ALL {
        let m = model(version);
        assert_eq!(m.fhir_version(), version.number());
        assert!(std::ptr::eq(m, model(version)), "shared after the first call");
    }
    assert!(std::ptr::eq(model(FhirVersion::R5), Model::r5().unwrap()));
    // No `select` in this process: the instance serves the default, R5.
    assert!(std::ptr::eq(Model::current().unwrap(), model(version::instance())));
}

#[test]
fn r4_and_r4b_task_elements_are_not_r5_ones() {
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let m = model(version);
        assert_eq!(el(m, "Task", "for").types, ["Reference"], "{version}");
        let performer = el(m, "Task", "performerType");
        assert_eq!((performer.types.as_slice(), performer.many), (&["CodeableConcept".to_string()][..], true), "{version}");
        assert_eq!(el(m, "Task", "reasonCode").types, ["CodeableConcept"], "{version}");
        for r5_only in ["requestedPerformer", "requestedPeriod", "performer", "doNotPerform", "reason"] {
            assert!(m.element("Task", r5_only).is_none(), "{version} Task has no {r5_only}");
        }
        assert_eq!(el(m, "Task.restriction", "recipient").types, ["Reference"], "{version}");
    }
    let r5 = model(FhirVersion::R5);
    assert!(r5.element("Task", "requestedPerformer").is_some());
    assert!(r5.element("Task", "performerType").is_none());
}

#[test]
fn r4_observation_value_choices() {
    let r4 = model(FhirVersion::R4);
    let value = el(r4, "Observation", "value");
    assert!(value.choice && !value.many);
    let choices =
        ["Quantity", "CodeableConcept", "string", "boolean", "integer", "Range", "Ratio", "SampledData", "time", "dateTime", "Period"];
    assert_eq!(value.types, choices);
    assert_eq!(r4.property("Observation", "valueQuantity").map(|(_, t)| t), Some("Quantity"));
    assert_eq!(r4.property("Observation", "valueDateTime").map(|(_, t)| t), Some("dateTime"));
    // R5 added Attachment and Reference.
    assert_eq!(r4.property("Observation", "valueAttachment"), None);
    let r5 = model(FhirVersion::R5);
    assert_eq!(r5.property("Observation", "valueAttachment").map(|(_, t)| t), Some("Attachment"));
    assert_eq!(el(r4, "Observation.component", "value").types, choices);
}

#[test]
fn r4_and_r4b_roots_are_element_and_resource() {
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let m = model(version);
        let chain = |t: &str| m.ancestors(t).map(|t| t.name.as_str()).collect::<Vec<_>>();
        assert_eq!(chain("Patient"), ["Patient", "DomainResource", "Resource"], "{version}");
        assert_eq!(chain("positiveInt"), ["positiveInt", "integer", "Element"], "{version}");
        assert_eq!(chain("Task.input"), ["Task.input", "BackboneElement", "Element"], "{version}");
        assert!(m.type_info("Base").is_none() && m.type_info("DataType").is_none(), "{version}");
        assert_eq!(el(m, "Resource", "id").types, ["System.String"], "{version}");
        assert_eq!(m.type_info("SimpleQuantity").map(|t| t.name.as_str()), Some("Quantity"), "{version}");
        assert!(m.is_domain_resource("Task") && !m.is_domain_resource("Bundle") && !m.is_domain_resource("DomainResource"));
    }
    assert!(!model(FhirVersion::R4).is_resource("MetadataResource"), "a logical model in R4");
}

#[test]
fn r4_and_r4b_subscriptions_have_the_backport_shape() {
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let m = model(version);
        assert_eq!(el(m, "Subscription", "criteria").types, ["string"], "{version}");
        assert_eq!(el(m, "Subscription", "reason").types, ["string"], "{version}");
        assert_eq!(el(m, "Subscription", "channel").types, ["Subscription.channel"], "{version}");
        let header = el(m, "Subscription.channel", "header");
        assert_eq!((header.types.as_slice(), header.many), (&["string".to_string()][..], true), "{version}");
        assert_eq!(el(m, "Subscription.channel", "payload").types, ["code"], "{version}");
        assert!(m.element("Subscription", "topic").is_none(), "{version}");
        assert!(m.element("Subscription", "filterBy").is_none(), "{version}");
    }
    assert!(!model(FhirVersion::R4).is_resource_type("SubscriptionStatus"));
    let r4b = model(FhirVersion::R4B);
    assert_eq!(el(r4b, "SubscriptionStatus", "eventsSinceSubscriptionStart").types, ["string"]);
    assert_eq!(el(r4b, "SubscriptionStatus.notificationEvent", "eventNumber").types, ["string"]);
    assert!(r4b.element("SubscriptionTopic", "canFilterBy").is_some());
    assert!(r4b.element("SubscriptionTopic.canFilterBy", "comparator").is_none(), "R4B mixes comparators into modifier");
}

#[test]
fn resource_type_lists_differ_as_the_specifications_say() {
    let names = |v| model(v).resource_types().collect::<Vec<_>>();
    let (r4, r4b, r5) = (names(FhirVersion::R4), names(FhirVersion::R4B), names(FhirVersion::R5));
    assert_eq!((r4.len(), r4b.len(), r5.len()), (146, 141, 158));
    assert!(r4.windows(2).all(|w| w[0] < w[1]));
    for name in ["SubscriptionTopic", "SubscriptionStatus"] {
        assert!(!r4.contains(&name) && r4b.contains(&name) && r5.contains(&name), "{name}");
    }
    assert!(r4.contains(&"MedicinalProduct") && !r4b.contains(&"MedicinalProduct"));
    assert!(r4b.contains(&"MedicinalProductDefinition") && !r4.contains(&"MedicinalProductDefinition"));
    assert!(r4b.contains(&"DeviceUseStatement") && !r5.contains(&"DeviceUseStatement"));
}

/// The R4 (`r4`) and R4B (`r4b`) examples of `shared/fhir/`, each file with its version.
fn versioned_examples(shared: &std::path::Path) -> Vec<(FhirVersion, PathBuf)> {
    let mut out = Vec::new();
    let backport = shared.join("backport/examples");
    for file in json_files(&backport) {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.contains("-r4b-") {
            out.push((FhirVersion::R4B, file));
        } else if name.contains("-r4-") {
            out.push((FhirVersion::R4, file));
        } else {
            // The IG's Subscriptions have the same shape in R4 and R4B.
            out.push((FhirVersion::R4, file.clone()));
            out.push((FhirVersion::R4B, file));
        }
    }
    for file in json_files(&shared.join("examples/notifications")) {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.contains("-r4b-") {
            out.push((FhirVersion::R4B, file));
        } else if name.contains("-r4-") {
            out.push((FhirVersion::R4, file));
        }
    }
    out.extend(json_files(&shared.join("examples/topics/subscriptions-backport")).into_iter().map(|f| {
        let r4b = f.to_string_lossy().contains("-r4b-");
        (if r4b { FhirVersion::R4B } else { FhirVersion::R4 }, f)
    }));
    out.extend(json_files(&shared.join("examples/topics/us-core-patient-data-feed")).into_iter().map(|f| (FhirVersion::R4, f)));
    out.extend(json_files(&shared.join("data/r4/subscriptions-r4")).into_iter().map(|f| (FhirVersion::R4, f)));
    out.extend(json_files(&shared.join("data/r4b/subscriptions-r4b")).into_iter().map(|f| (FhirVersion::R4B, f)));
    out.extend(json_files(&shared.join("data/r4b/subscriptions-r4b/examples")).into_iter().map(|f| (FhirVersion::R4B, f)));
    out
}

#[test]
fn every_property_of_the_r4_and_r4b_examples_resolves_in_their_version() {
    let Some(shared) = shared_dir(SHARED) else { return };
    let mut errors = Vec::new();
    let mut checked = [0, 0];
    for (version, file) in versioned_examples(&shared) {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let name = format!("{version} {}", file.file_name().unwrap().to_string_lossy());
        walk(model(version), "Resource", &value, &name, &mut errors);
        checked[usize::from(version == FhirVersion::R4B)] += 1;
    }
    println!("walked {} R4 and {} R4B example files", checked[0], checked[1]);
    assert!(checked[0] >= 20 && checked[1] >= 30, "{checked:?}");
    assert!(errors.is_empty(), "{} problems:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn an_r4_task_does_not_fit_the_r5_model() {
    // What an R4 instance stores would be misread by the R5 model: the reason the model
    // follows the instance's version.
    let task: Value = serde_json::json!({
        "resourceType": "Task", "status": "requested", "intent": "order",
        "performerType": [{ "text": "lab" }], "reasonCode": { "text": "why" }
    });
    let mut errors = Vec::new();
    walk(model(FhirVersion::R4), "Resource", &task, "r4 task", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    walk(model(FhirVersion::R5), "Resource", &task, "r4 task", &mut errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
}
