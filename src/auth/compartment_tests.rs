//! `in_compartment` against the official R4 and R4B Patient CompartmentDefinitions
//! (`shared/fhir/data/r4*/compartments/`): wherever a definition places a type in the
//! compartment through one of the fields `in_compartment` reads (`subject`, `patient`, `for`,
//! `beneficiary`), a resource of that version referring to the patient there is in the
//! compartment. Its other paths (`performer`, `author`, ...) are outside the practical subset,
//! in every version alike. Prints a note and passes when `shared/` is absent (fails under CI).

use serde_json::{json, Value};

use super::in_compartment;
use crate::fhir::model::Model;
use crate::fhir::search::SearchParams;
use crate::fhir::version::FhirVersion;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir/data");

#[test]
fn the_compartment_fields_place_resources_as_the_r4_and_r4b_definitions_do() {
    let Some(data) = crate::testdata::shared(DATA) else { return };
    for (version, dir) in [(FhirVersion::R4, "r4"), (FhirVersion::R4B, "r4b")] {
        let text = std::fs::read_to_string(data.join(dir).join("compartments/CompartmentDefinition-patient.json")).unwrap();
        let definition: Value = serde_json::from_str(&text).unwrap();
        let (params, model) = (SearchParams::for_version(version).unwrap(), Model::for_version(version).unwrap());
        let mut checked = 0;
        for entry in definition["resource"].as_array().unwrap() {
            let ty = entry["code"].as_str().unwrap();
            for code in entry["param"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let Some(expression) = params.get(ty, code).and_then(|p| p.expression.as_deref()) else { continue };
                for branch in expression.split('|').map(str::trim) {
                    let path = branch.strip_suffix(".where(resolve() is Patient)").unwrap_or(branch);
                    let Some(field) = path.strip_prefix(ty).and_then(|p| p.strip_prefix('.')) else { continue };
                    if !["subject", "patient", "for", "beneficiary"].contains(&field) {
                        continue;
                    }
                    let element = model.element(ty, field).unwrap_or_else(|| panic!("{version} {ty}.{field}"));
                    assert_eq!(element.types, ["Reference"], "{version} {ty}.{field}");
                    let reference = json!({ "reference": "Patient/p1" });
                    let value = if element.many { json!([reference]) } else { reference };
                    let resource = json!({ "resourceType": ty, "id": "x", field: value });
                    assert!(in_compartment(&resource, "p1"), "{version} {ty}.{field}");
                    assert!(!in_compartment(&resource, "p2"), "{version} {ty}.{field}");
                    checked += 1;
                }
            }
        }
        println!("{version}: {checked} compartment paths checked");
        assert!(checked > 50, "{version}: {checked}");
    }
}
