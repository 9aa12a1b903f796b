//! Tests of the embedded R5 model: the lookups a FHIRPath engine leans on (elements through
//! base chains, backbone pseudo-types, contentReference, choice properties, subtypes), the
//! checks that reject a damaged file, every snapshot element of the official definitions, and a walk of every official example in `shared/fhir/`
//! in which each JSON property must resolve with the right cardinality.
//! Tests that need `shared/fhir/` print a note and pass when it is absent.

use super::*;
use crate::fhir::version::FhirVersion;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/data");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/examples/r5");

fn r5() -> &'static Model {
    Model::r5().expect("embedded R5 model loads")
}

pub(super) fn el<'a>(model: &'a Model, type_name: &str, name: &str) -> &'a Element {
    model.element(type_name, name).unwrap_or_else(|| panic!("{type_name}.{name} is missing"))
}

#[test]
fn parse_time_of_the_embedded_file() {
    let started = Instant::now();
    let model = Model::from_json(R5_MODEL).unwrap();
    let elapsed = started.elapsed();
    let elements: usize = model.types.values().map(|t| t.elements.len()).sum();
    println!(
        "model-r5.json: {} bytes, {} types, {} aliases, {elements} own elements, parsed in {elapsed:?}",
        R5_MODEL.len(),
        model.types.len(),
        model.aliases.len()
    );
    assert_eq!(model.fhir_version(), "5.0.0");
}

#[test]
fn patient_birth_date_is_a_single_date() {
    let e = el(r5(), "Patient", "birthDate");
    assert_eq!(e.types, ["date"]);
    assert!(!e.many && !e.choice);
    assert_eq!(r5().property("Patient", "birthDate").map(|(e, t)| (e.name.as_str(), t)), Some(("birthDate", "date")));
}

#[test]
fn patient_name_is_many_human_names_and_given_is_many_strings() {
    let name = el(r5(), "Patient", "name");
    assert_eq!(name.types, ["HumanName"]);
    assert!(name.many);
    let given = el(r5(), "HumanName", "given");
    assert_eq!(given.types, ["string"]);
    assert!(given.many);
}

#[test]
fn observation_value_is_a_choice_resolved_by_suffix() {
    let model = r5();
    let value = el(model, "Observation", "value");
    assert!(value.choice && !value.many);
    for t in ["Quantity", "CodeableConcept", "string", "boolean", "integer", "Range", "Ratio", "SampledData", "time", "dateTime", "Period"]
    {
        assert!(value.types.iter().any(|x| x == t), "Observation.value lacks {t}");
    }
    let (e, t) = model.property("Observation", "valueQuantity").unwrap();
    assert_eq!((e.name.as_str(), t), ("value", "Quantity"));
    assert_eq!(model.property("Observation", "valueCodeableConcept").map(|(_, t)| t), Some("CodeableConcept"));
    assert_eq!(model.property("Observation", "valueDateTime").map(|(_, t)| t), Some("dateTime"));
    assert_eq!(model.property("Observation", "effectiveDateTime").map(|(e, t)| (e.name.as_str(), t)), Some(("effective", "dateTime")));
    // Choice elements inside backbone elements and inherited through bases.
    assert_eq!(model.property("Observation.component", "valueString").map(|(_, t)| t), Some("string"));
    assert_eq!(model.property("Extension", "valueCanonical").map(|(_, t)| t), Some("canonical"));
}

#[test]
fn properties_that_json_never_uses_give_none() {
    let model = r5();
    assert!(model.property("Observation", "value").is_none(), "bare choice name");
    assert!(model.property("Observation", "valueFoo").is_none());
    assert!(model.property("Observation", "valuequantity").is_none());
    assert!(model.property("Observation", "valueAge").is_none(), "Age is not among Observation.value's types");
    assert!(model.property("Patient", "_birthDate").is_none());
    assert!(model.property("Patient", "").is_none());
    assert!(model.property("Patient", "resourceType").is_none());
    assert!(model.property("Patient", "Ä").is_none());
}

#[test]
fn questionnaire_item_item_reuses_item_through_content_reference() {
    let model = r5();
    let item = el(model, "Questionnaire", "item");
    assert_eq!(item.types, ["Questionnaire.item"]);
    let nested = el(model, "Questionnaire.item", "item");
    assert_eq!(nested.types, ["Questionnaire.item"]);
    assert!(nested.many);
    assert_eq!(el(model, "Questionnaire.item", "linkId").types, ["string"]);
    assert_eq!(model.property("Questionnaire.item", "answerValueSet").map(|(_, t)| t), Some("canonical"));
}

#[test]
fn patient_contact_is_a_backbone_pseudo_type() {
    let model = r5();
    let contact = el(model, "Patient", "contact");
    assert_eq!(contact.types, ["Patient.contact"]);
    assert!(contact.many);
    let info = model.type_info("Patient.contact").unwrap();
    assert_eq!(info.kind, Kind::Backbone);
    assert_eq!(info.base.as_deref(), Some("BackboneElement"));
    assert!(!info.is_abstract);
    let name = el(model, "Patient.contact", "name");
    assert_eq!(name.types, ["HumanName"]);
    assert!(!name.many);
    // Inherited through BackboneElement -> Element.
    assert_eq!(el(model, "Patient.contact", "modifierExtension").types, ["Extension"]);
    assert_eq!(el(model, "Patient.contact", "id").types, ["System.String"]);
    // A backbone element typed Element in a data type gets Element as its base.
    assert_eq!(model.type_info("Timing.repeat").and_then(|t| t.base.as_deref()), Some("Element"));
    assert!(model.element("Timing.repeat", "modifierExtension").is_none());
}

#[test]
fn subtypes_follow_the_base_chain() {
    let model = r5();
    assert!(model.is_subtype_of("Age", "Quantity"));
    assert!(model.is_subtype_of("Age", "DataType"));
    assert!(model.is_subtype_of("Age", "Element"));
    assert!(!model.is_subtype_of("Quantity", "Age"));
    assert!(model.is_subtype_of("Patient", "DomainResource"));
    assert!(model.is_subtype_of("Patient", "Resource"));
    assert!(model.is_subtype_of("Patient", "Patient"));
    assert!(model.is_subtype_of("Bundle", "Resource"));
    assert!(!model.is_subtype_of("Bundle", "DomainResource"));
    assert!(model.is_subtype_of("positiveInt", "integer"));
    assert!(model.is_subtype_of("code", "string"));
    assert!(model.is_subtype_of("Patient.contact", "BackboneElement"));
    assert!(model.is_subtype_of("SimpleQuantity", "Quantity"));
    assert!(!model.is_subtype_of("Nope", "Nope"));
    assert!(!model.is_subtype_of("Patient", "Nope"));
    // R5 interfaces are not bases.
    assert!(!model.is_subtype_of("ValueSet", "CanonicalResource"));
    assert!(model.implements("ValueSet", "MetadataResource"));
    assert!(model.implements("ValueSet", "CanonicalResource"));
    assert!(model.implements("SubscriptionTopic", "CanonicalResource"));
    assert!(!model.implements("SubscriptionTopic", "MetadataResource"));
    assert!(!model.implements("Patient", "CanonicalResource"));
    let chain: Vec<&str> = model.ancestors("Age").map(|t| t.name.as_str()).collect();
    assert_eq!(chain, ["Age", "Quantity", "DataType", "Element", "Base"]);
}

#[test]
fn inherited_elements_are_found_through_bases() {
    let model = r5();
    assert_eq!(el(model, "Age", "value").types, ["decimal"]);
    assert_eq!(el(model, "Patient", "id").types, ["System.String"]);
    assert_eq!(el(model, "Patient", "id").fhir_type.as_deref(), Some("id"));
    assert_eq!(el(model, "Patient", "meta").types, ["Meta"]);
    assert_eq!(el(model, "Patient", "contained").types, ["Resource"]);
    assert!(model.element("Bundle", "text").is_none(), "Bundle is not a DomainResource");
    assert!(model.element("Bundle", "extension").is_none(), "R5 Resource has no extension");
    let names: Vec<&str> = model.elements("Patient").iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names.get(..9),
        Some(&["id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension", "identifier"][..])
    );
}

#[test]
fn element_has_id_and_extension() {
    let model = r5();
    let id = el(model, "Element", "id");
    assert_eq!(id.types, ["System.String"]);
    assert!(!id.many);
    let extension = el(model, "Element", "extension");
    assert_eq!(extension.types, ["Extension"]);
    assert!(extension.many);
    assert_eq!(el(model, "HumanName", "extension").types, ["Extension"]);
    assert_eq!(el(model, "Extension", "url").fhir_type.as_deref(), Some("uri"));
}

#[test]
fn bundle_entry_resource_is_resource() {
    let model = r5();
    assert_eq!(el(model, "Bundle", "entry").types, ["Bundle.entry"]);
    let resource = el(model, "Bundle.entry", "resource");
    assert_eq!(resource.types, ["Resource"]);
    assert!(!resource.many);
    assert_eq!(el(model, "Bundle.entry", "search").types, ["Bundle.entry.search"]);
}

#[test]
fn kinds_and_type_lookup() {
    let model = r5();
    assert!(model.is_resource("Patient") && model.is_resource("Resource") && model.is_resource("DomainResource"));
    assert!(!model.is_resource("HumanName") && !model.is_resource("Patient.contact") && !model.is_resource("Nope"));
    assert!(model.is_primitive("string") && model.is_primitive("positiveInt") && model.is_primitive("xhtml"));
    assert!(!model.is_primitive("System.String") && !model.is_primitive("Quantity"));
    assert_eq!(model.type_info("System.String").map(|t| t.kind), Some(Kind::System));
    assert_eq!(model.type_info("string.value").map(|t| t.name.as_str()), None);
    assert_eq!(el(model, "string", "value").types, ["System.String"]);
    assert_eq!(el(model, "date", "value").types, ["System.Date"]);
    assert_eq!(model.type_info("SimpleQuantity").map(|t| t.name.as_str()), Some("Quantity"));
    let resource = model.type_info("Resource").unwrap();
    assert!(resource.is_abstract);
    assert_eq!(resource.base.as_deref(), Some("Base"));
    assert_eq!(model.type_info("Age").map(|t| (t.kind, t.is_abstract)), Some((Kind::ComplexType, false)));
    assert_eq!(model.type_names().filter(|n| model.is_resource(n)).count(), 162);
}

/// Oddities of the published R5 definitions, kept as published; the engine decides.
#[test]
fn upstream_oddities_are_kept_as_published() {
    let model = r5();
    // integer.value is System.Integer, but its subtypes' values are System.String.
    assert_eq!(el(model, "integer", "value").types, ["System.Integer"]);
    assert_eq!(el(model, "positiveInt", "value").types, ["System.String"]);
    assert_eq!(el(model, "unsignedInt", "value").types, ["System.String"]);
    assert_eq!(el(model, "integer64", "value").types, ["System.Integer"]);
    // xhtml is a primitive that derives from Element, not PrimitiveType.
    assert_eq!(model.type_info("xhtml").and_then(|t| t.base.as_deref()), Some("Element"));
    // Element.id says its FHIR type is string, Resource.id says id.
    assert_eq!(el(model, "Element", "id").fhir_type.as_deref(), Some("string"));
    assert_eq!(el(model, "Resource", "id").fhir_type.as_deref(), Some("id"));
    // An ordinary element named resourceType.
    assert_eq!(model.property("Subscription.filterBy", "resourceType").map(|(_, t)| t), Some("uri"));
    // The canonical-resource "interfaces" are abstract resources outside every base chain.
    assert!(model.is_resource("CanonicalResource") && !model.is_subtype_of("ValueSet", "MetadataResource"));
}

#[test]
fn unknown_types_and_elements_give_none() {
    let model = r5();
    assert!(model.type_info("Nope").is_none());
    assert!(model.type_info("patient").is_none());
    assert!(model.element("Nope", "id").is_none());
    assert!(model.element("Patient", "nope").is_none());
    assert!(model.element("Patient", "").is_none());
    assert!(model.property("Nope", "id").is_none());
    assert!(model.elements("Nope").is_empty());
    assert_eq!(model.ancestors("Nope").count(), 0);
}

#[test]
fn a_damaged_file_is_an_error_not_a_panic() {
    let parse = |text: &str| Model::from_json(text).map(|_| ());
    assert!(matches!(parse(""), Err(ModelError::Parse(_))));
    assert!(matches!(parse("[]"), Err(ModelError::Parse(_))));
    assert!(matches!(parse(&R5_MODEL.replace("\"kind\":\"resource\"", "\"kind\":\"thing\"")), Err(ModelError::Parse(_))));
    let file = |types: &str| format!("{{\"fhirVersion\":\"5.0.0\",\"aliases\":{{}},\"types\":[{types}]}}");
    let ok = r#"{"name":"Base","kind":"complex-type","elements":[]}"#;
    assert!(parse(&file(ok)).is_ok());
    for (bad, why) in [
        (r#"{"name":"A","kind":"complex-type","base":"Nope","elements":[]}"#, "unknown base"),
        (
            r#"{"name":"A","kind":"complex-type","base":"B","elements":[]},{"name":"B","kind":"complex-type","base":"A","elements":[]}"#,
            "cycle",
        ),
        (r#"{"name":"A","kind":"complex-type","base":"A","elements":[]}"#, "self cycle"),
        (r#"{"name":"A","kind":"complex-type","elements":[{"name":"x","type":["Nope"]}]}"#, "unknown element type"),
        (r#"{"name":"A","kind":"complex-type","elements":[{"name":"x","type":[]}]}"#, "no type"),
        (r#"{"name":"A","kind":"complex-type","elements":[{"name":"x","type":["A","A"]}]}"#, "two types, no choice"),
        (r#"{"name":"A","kind":"complex-type","elements":[{"name":"x","type":["A"]},{"name":"x","type":["A"]}]}"#, "duplicate element"),
        (r#"{"name":"A","kind":"complex-type","elements":[]},{"name":"A","kind":"complex-type","elements":[]}"#, "duplicate type"),
        (r#"{"name":"A","kind":"complex-type","implements":["Nope"],"elements":[]}"#, "unknown interface"),
    ] {
        assert!(matches!(parse(&file(&format!("{ok},{bad}"))), Err(ModelError::Invalid(_))), "{why}");
    }
    let alias = format!("{{\"fhirVersion\":\"5.0.0\",\"aliases\":{{\"X\":\"Nope\"}},\"types\":[{ok}]}}");
    assert!(matches!(parse(&alias), Err(ModelError::Invalid(_))));
    let long: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"name":"T{i}","kind":"complex-type","base":"{}","elements":[]}}"#,
                if i == 0 { "Base".to_string() } else { format!("T{}", i - 1) }
            )
        })
        .collect();
    assert!(matches!(parse(&file(&format!("{ok},{}", long.join(",")))), Err(ModelError::Invalid(_))), "overlong chain");
    assert!(ModelError::Invalid("x".into()).to_string().contains("inconsistent"));
}

/// The model's view of one snapshot element: (types, many, choice), derived independently
/// of `tools/gen_fhir_model.py`.
fn expected_element(element: &Value, paths: &BTreeSet<&str>) -> (Vec<String>, bool, bool) {
    let path = element["path"].as_str().unwrap();
    let types = if let Some(target) = element["contentReference"].as_str() {
        vec![target.trim_start_matches('#').to_string()]
    } else if paths.iter().any(|p| p.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))) {
        vec![path.to_string()]
    } else {
        let codes = element["type"].as_array().unwrap().iter().map(|t| t["code"].as_str().unwrap());
        codes.map(|c| c.replace("http://hl7.org/fhirpath/System.", "System.")).collect()
    };
    (types, element["max"] != "1", path.ends_with("[x]"))
}

#[test]
fn every_snapshot_element_of_the_official_definitions_resolves() {
    let Some(data) = shared_dir(DATA) else { return };
    for (version, dir) in [(FhirVersion::R4, data.join("r4")), (FhirVersion::R4B, data.join("r4b")), (FhirVersion::R5, data.clone())] {
        snapshot_elements_resolve(Model::for_version(version).unwrap(), &dir);
    }
}

/// Every element of every snapshot in `dir`'s definitions resolves in `model` with its types,
/// cardinality and choice. Logical models (R4's MetadataResource) are not types.
fn snapshot_elements_resolve(model: &Model, data: &Path) {
    let mut errors = Vec::new();
    let mut checked = 0;
    for file in ["profiles-types.json", "profiles-resources.json"] {
        let text = std::fs::read_to_string(data.join(file)).unwrap();
        let bundle: Value = serde_json::from_str(&text).unwrap();
        let definitions = bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]);
        let types = |r: &&Value| r["resourceType"] == "StructureDefinition" && r["derivation"] != "constraint" && r["kind"] != "logical";
        for sd in definitions.filter(types) {
            let elements = sd["snapshot"]["element"].as_array().unwrap();
            let paths: BTreeSet<&str> = elements.iter().map(|e| e["path"].as_str().unwrap()).collect();
            let own = sd["type"].as_str().unwrap();
            assert_eq!(model.type_info(own).map(|t| t.is_abstract), Some(sd["abstract"] == true), "{own}");
            for element in elements.iter().skip(1) {
                let path = element["path"].as_str().unwrap();
                let (parent, name) = path.rsplit_once('.').unwrap();
                let (types, many, choice) = expected_element(element, &paths);
                match model.element(parent, name.trim_end_matches("[x]")) {
                    Some(e) if (&e.types, e.many, e.choice) == (&types, many, choice) => checked += 1,
                    found => errors.push(format!("{path}: expected {types:?} many {many} choice {choice}, found {found:?}")),
                }
            }
        }
    }
    println!("{}: checked {checked} snapshot elements", model.fhir_version());
    assert!(checked > 7_000, "{checked}");
    assert!(errors.is_empty(), "{} problems:\n{}", errors.len(), errors.join("\n"));
}

/// `dir`, or `None` with a note when `shared/` is absent; under CI (`CI=true`) a missing data
/// set fails the test instead.
pub(super) fn shared_dir(dir: &str) -> Option<PathBuf> {
    crate::testdata::shared(dir)
}

pub(super) fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Check every property of `value` (an instance of `type_name`) against the model.
pub(super) fn walk(model: &Model, type_name: &str, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        if !model.is_primitive(type_name) && !type_name.starts_with("System.") {
            errors.push(format!("{at}: {type_name} is not an object"));
        }
        return;
    };
    // `resourceType` names the type only where a resource is expected: it is also an
    // ordinary element (Subscription.filterBy.resourceType).
    let is_resource = model.is_resource(type_name);
    let mut type_name = type_name.to_string();
    if is_resource {
        match object.get("resourceType").and_then(Value::as_str) {
            Some(rt) if model.is_subtype_of(rt, &type_name) => type_name = rt.to_string(),
            other => return errors.push(format!("{at}: resourceType {other:?} where {type_name} is expected")),
        }
    }
    for (key, child) in object {
        let at = format!("{at}.{key}");
        if is_resource && key == "resourceType" {
            continue;
        }
        if let Some(plain) = key.strip_prefix('_') {
            match model.property(&type_name, plain) {
                Some((_, t)) if model.is_primitive(t) => {
                    for item in child.as_array().map_or(std::slice::from_ref(child), Vec::as_slice) {
                        if !item.is_null() {
                            walk(model, "Element", item, &at, errors);
                        }
                    }
                }
                _ => errors.push(format!("{at}: no primitive element {plain} on {type_name}")),
            }
            continue;
        }
        let Some((element, t)) = model.property(&type_name, key) else {
            errors.push(format!("{at}: unknown on {type_name}"));
            continue;
        };
        if child.is_array() != element.many {
            errors.push(format!("{at}: array {} but many {}", child.is_array(), element.many));
        }
        for item in child.as_array().map_or(std::slice::from_ref(child), Vec::as_slice) {
            if !item.is_null() {
                walk(model, t, item, &at, errors);
            }
        }
    }
}

#[test]
fn every_property_of_the_official_examples_resolves() {
    let model = r5();
    let dirs: Vec<PathBuf> = [EXAMPLES.to_string(), format!("{EXAMPLES}/notifications"), format!("{DATA}/fhirpath-r5/input")]
        .iter()
        .filter_map(|d| shared_dir(d))
        .collect();
    let mut errors = Vec::new();
    let mut checked = 0;
    for file in dirs.iter().flat_map(|d| json_files(d)) {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        walk(model, "Resource", &value, &name, &mut errors);
        checked += 1;
    }
    println!("walked {checked} example files");
    assert!(errors.is_empty(), "{} problems:\n{}", errors.len(), errors.join("\n"));
}
