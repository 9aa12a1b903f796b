//! The CapabilityStatement of each version, checked against the official base definition of
//! that version and against what the Backport IG and the conformance kit (test 2.01/2.02) ask.

use super::*;
use crate::fhir::official::Official;

const TOPICS: [&str; 2] = ["http://example.org/topics/a", "http://example.org/topics/b"];

fn of(version: FhirVersion, types: &[String]) -> Value {
    let topics: Vec<String> = TOPICS.iter().map(|t| (*t).to_owned()).collect();
    statement(version, types, &topics, "http://h/fhir", false, "2025-01-01T00:00:00Z")
}

fn entry<'a>(cs: &'a Value, ty: &str) -> Option<&'a Value> {
    cs["rest"][0]["resource"].as_array()?.iter().find(|r| r["type"] == ty)
}

#[test]
fn each_version_states_its_own_fhir_version_and_its_topics() {
    let types: Vec<String> = RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).collect();
    for version in FhirVersion::ALL {
        let cs = of(version, &types);
        assert_eq!(cs["fhirVersion"], version.number());
        assert_eq!(cs["rest"][0]["mode"], "server");
        let sub = entry(&cs, "Subscription").unwrap();
        let advertised: Vec<&str> = sub["extension"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["url"] == TOPIC_CANONICAL)
            .filter_map(|e| e["valueCanonical"].as_str())
            .collect();
        assert_eq!(advertised, TOPICS, "{version}: one valueCanonical per topic");
        assert!(entry(&cs, "SubscriptionStatus").is_none(), "never stored, so not a REST resource");
        let ops: Vec<&str> = sub["operation"].as_array().unwrap().iter().filter_map(|o| o["definition"].as_str()).collect();
        assert_eq!(ops.len(), 3);
        if version.is_backport() {
            assert_eq!(sub["supportedProfile"], json!([format!("{BACKPORT}/StructureDefinition/backport-subscription")]));
            assert!(ops.iter().all(|d| d.starts_with(&format!("{BACKPORT}/OperationDefinition/backport-subscription-"))), "{ops:?}");
            assert_eq!(cs["instantiates"].as_array().map(Vec::len), Some(1));
        } else {
            assert!(sub.get("supportedProfile").is_none() && cs.get("instantiates").is_none());
        }
    }
    let r4 = of(FhirVersion::R4, &types);
    assert_eq!(r4["instantiates"][0], format!("{BACKPORT}/CapabilityStatement/backport-subscription-server-r4"));
    assert!(entry(&r4, "SubscriptionTopic").is_none(), "R4 has no SubscriptionTopic");
    assert!(entry(&r4, "Basic").unwrap()["searchParam"].to_string().contains("Basic-code"));
    let r4b = of(FhirVersion::R4B, &types);
    assert_eq!(r4b["instantiates"][0], format!("{BACKPORT}/CapabilityStatement/backport-subscription-server"));
    let params: Vec<&str> =
        entry(&r4b, "SubscriptionTopic").unwrap()["searchParam"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    for name in ["url", "derived-or-self", "resource", "title", "trigger-description"] {
        assert!(params.contains(&name), "R4B SubscriptionTopic search by {name} (the IG's server statement)");
    }
}

/// The resource types R5 shares with a version (what the version's model would list, less
/// the types R5 dropped), sorted.
fn official_types(defs: &Official) -> Vec<String> {
    RESOURCE_TYPES.iter().map(|t| (*t).to_owned()).filter(|t| defs.is_resource(t)).collect()
}

#[test]
fn the_r4_and_r4b_statements_are_valid_base_capability_statements_of_their_version() {
    for (version, dir) in [(FhirVersion::R4, "r4"), (FhirVersion::R4B, "r4b")] {
        let Some(defs) = Official::load(dir) else { return };
        let types = official_types(&defs);
        let cs = of(version, &types);
        let problems = defs.structure("CapabilityStatement", &cs);
        assert!(problems.is_empty(), "{version}:\n{}", problems.join("\n"));
        for r in cs["rest"][0]["resource"].as_array().unwrap() {
            let ty = r["type"].as_str().unwrap();
            assert!(defs.is_resource(ty), "{version} has no resource type {ty}");
            for p in r["searchParam"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                match p["definition"].as_str() {
                    Some(url) if url.starts_with(BACKPORT) => {}
                    Some(url) => assert!(defs.param_bases(url).is_some_and(|b| b.iter().any(|b| b == ty)), "{version}: {url} on {ty}"),
                    None => assert!(name.starts_with('_'), "{version}: {ty}.{name} needs its definition"),
                }
            }
        }
        // cpb-0 (R4: name.matches(...)), and codes the kit's validator checks against required bindings.
        assert!(cs["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_uppercase()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')));
        assert_eq!((cs["kind"].as_str(), cs["status"].as_str()), (Some("instance"), Some("active")));
        assert!(cs["implementation"]["url"].is_string(), "cpb-14: an instance names its implementation");

        // The validator does find what is wrong.
        let mut bad = cs.clone();
        bad["format"] = json!("json");
        bad["rest"][0]["resource"][0]["colour"] = json!("red");
        bad["rest"][0]["resource"][0]["readHistory"] = json!("yes");
        bad.as_object_mut().unwrap().remove("kind");
        assert_eq!(defs.structure("CapabilityStatement", &bad).len(), 4, "{:?}", defs.structure("CapabilityStatement", &bad));
    }
}

#[test]
fn the_model_lists_concrete_resource_types_only() {
    let types = resource_types(FhirVersion::R5);
    assert_eq!(types.len(), RESOURCE_TYPES.len());
    assert!(types.iter().all(|t| crate::fhir::types::is_resource_type(t)));
}
