//! Search semantics, table-driven against official R5 examples: one row per
//! (resource, search string, expected), covering every parameter type and modifier.

use serde_json::{json, Value};

use super::matcher::{clause_matches, NoContext, SearchContext};
use super::query::{Query, QueryError};
use super::{SearchError, SearchParam, SearchParams};

fn example(name: &str) -> Option<Value> {
    crate::testdata::fhir_json(&format!("examples/r5/{name}"))
}

/// A context with a fixed clock, a few resources to chain into, and one local ValueSet.
struct Fixture {
    resources: Vec<Value>,
}

impl SearchContext for Fixture {
    fn base_url(&self) -> &str {
        "http://herald.test/fhir"
    }
    fn now_millis(&self) -> i64 {
        1_795_000_000_000 // 2026-11-18
    }
    fn resolve(&self, reference: &str) -> Option<Value> {
        let (ty, id) = reference.split_once('/')?;
        self.resources.iter().find(|r| r["resourceType"] == ty && r["id"] == id).cloned()
    }
    fn referencing(&self, source_type: &str, param: &SearchParam, target: &str) -> Result<Vec<Value>, SearchError> {
        let mut out = Vec::new();
        for r in self.resources.iter().filter(|r| r["resourceType"] == source_type) {
            if super::reference_matches(&param.values(source_type, r)?, target, self.base_url()) {
                out.push(r.clone());
            }
        }
        Ok(out)
    }
    fn code_system(&self, url: &str) -> Result<Option<super::matcher::CodeHierarchy>, String> {
        Ok((url == "http://herald.test/cs").then(|| {
            super::matcher::CodeHierarchy::from_code_system(&json!({ "resourceType": "CodeSystem", "concept": [
                { "code": "root", "concept": [{ "code": "panel", "concept": [{ "code": "lipids" }] }] },
                { "code": "ldl", "property": [{ "code": "parent", "valueCode": "lipids" }] }
            ] }))
        }))
    }
    fn value_set(&self, url: &str) -> Result<Option<Vec<super::matcher::Code>>, String> {
        match url {
            "http://herald.test/ValueSet/weights" => Ok(Some(vec![(Some("http://loinc.org".into()), "29463-7".into())])),
            "http://herald.test/ValueSet/needs-tx" => Err("it is defined by a filter, which needs a terminology server".into()),
            _ => Ok(None),
        }
    }
}

fn check(resource: &Value, search: &str, fixture: &Fixture) -> Result<bool, String> {
    let ty = resource["resourceType"].as_str().unwrap();
    let (query, errors) = Query::parse(ty, search, SearchParams::r5().unwrap());
    if let Some(e) = errors.first() {
        return Err(e.to_string());
    }
    let mut all = true;
    for clause in &query.clauses {
        all &= clause_matches(clause, ty, resource, fixture).map_err(|e| e.to_string())?;
    }
    Ok(all)
}

#[test]
fn every_parameter_type_and_modifier_on_official_examples() {
    let (Some(patient), Some(obs), Some(task), Some(bp)) = (
        example("Patient-example.json"),
        example("Observation-example.json"),
        example("Task-example1.json"),
        example("Observation-blood-pressure.json"),
    ) else {
        return;
    };
    let coded = json!({ "resourceType": "Observation", "id": "c", "status": "final",
        "code": { "coding": [{ "system": "http://herald.test/cs", "code": "lipids" }] } });
    let fixture = Fixture {
        resources: vec![
            patient.clone(),
            obs.clone(),
            bp.clone(),
            json!({"resourceType": "Organization", "id": "1", "name": "Gastroenterology"}),
        ],
    };
    let rows: &[(&Value, &str, bool)] = &[
        // token: code, system|code, |code, system|, Identifier, boolean, ContactPoint, :not, :text, :of-type, :in, :not-in
        (&obs, "status=final", true),
        (&obs, "status=preliminary,final", true),
        (&obs, "status:not=final", false),
        (&obs, "status:not=amended", true),
        (&obs, "code=http://loinc.org|29463-7", true),
        (&obs, "code=http://snomed.info/sct|29463-7", false),
        (&obs, "code=|29463-7", false),
        (&obs, "code=http://acme.org/devices/clinical-codes|", true),
        (&obs, "code:text=body weight", true),
        (&obs, "code:text=blood", false),
        (&obs, "code:in=http://herald.test/ValueSet/weights", true),
        (&bp, "code:in=http://herald.test/ValueSet/weights", false),
        (&bp, "code:not-in=http://herald.test/ValueSet/weights", true),
        (&coded, "code:below=http://herald.test/cs|panel", true),
        (&coded, "code:below=http://herald.test/cs|root", true),
        (&coded, "code:below=http://herald.test/cs|ldl", false),
        (&coded, "code:above=http://herald.test/cs|ldl", true),
        (&coded, "code:above=http://herald.test/cs|root", false),
        (&patient, "identifier=urn:oid:1.2.36.146.595.217.0.1|12345", true),
        (&patient, "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345", true),
        (&patient, "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|99999", false),
        (&patient, "active=true", true),
        (&patient, "gender=female", false),
        (&patient, "phone=(03) 3410 5613", true),
        (&patient, "gender:missing=false", true),
        (&patient, "deceased:missing=true", false),
        (&task, "owner:missing=false", true),
        // reference: Type/id, id, absolute on own base, :[type], :identifier, chains, _has
        (&obs, "subject=Patient/example", true),
        (&obs, "subject=example", true),
        (&obs, "subject=http://herald.test/fhir/Patient/example", true),
        (&obs, "subject:Patient=example", true),
        (&obs, "subject=Patient/other", false),
        (&obs, "subject:Patient.gender=male", true),
        (&obs, "subject:Patient.gender=female", false),
        (&obs, "patient.name=peter", true),
        (&bp, "based-on:identifier=https://acme.org/identifiers|1234", true),
        (&patient, "_has:Observation:subject:code=http://loinc.org|29463-7", true),
        (&patient, "_has:Observation:subject:code=http://loinc.org|0000-0", false),
        (&patient, "organization.name=gastro", true),
        // string: prefix, case- and accent-insensitive, :exact, :contains, HumanName and Address parts
        (&patient, "family=chal", true),
        (&patient, "family=CHALMERS", true),
        (&patient, "family:exact=Chalmers", true),
        (&patient, "family:exact=chalmers", false),
        (&patient, "name:contains=alm", true),
        (&patient, "given=jim", true),
        (&patient, "address-city=pleasant", true),
        (&patient, "address=534 erew", true),
        (&patient, "address=erewhon", false),
        (&patient, "name=du", false),
        (&patient, "family=marche", false),
        // date: precision ranges and every prefix, on date, dateTime and Period
        (&patient, "birthdate=1974", true),
        (&patient, "birthdate=1974-12", true),
        (&patient, "birthdate=1974-12-25", true),
        (&patient, "birthdate=1974-12-26", false),
        (&patient, "birthdate=gt1974-12-24", true),
        (&patient, "birthdate=lt1974-12-25", false),
        (&patient, "birthdate=le1974-12-25", true),
        (&patient, "birthdate=ge1975", false),
        (&patient, "birthdate=sa1974-12-24", true),
        (&patient, "birthdate=eb1975", true),
        (&patient, "birthdate=ne1974", false),
        (&patient, "birthdate=ap1975-01-01", true),
        (&obs, "date=2016-03-28", true),
        (&obs, "date=2016-03-28T10:00:00Z", false),
        (&obs, "date=ge2016-03-28T10:00:00Z", true),
        (&task, "period=ge2016-10-31", true),
        // number and quantity: precision, prefixes, units
        (&obs, "value-quantity=185", true),
        (&obs, "value-quantity=185.4", false),
        (&obs, "value-quantity=1.85e2", true),
        (&obs, "value-quantity=gt180|http://unitsofmeasure.org|[lb_av]", true),
        (&obs, "value-quantity=gt180|http://unitsofmeasure.org|kg", false),
        (&obs, "value-quantity=lt180||lbs", false),
        (&obs, "value-quantity=ap190", true),
        // composite
        (&obs, "code-value-quantity=http://loinc.org|29463-7$185", true),
        (&obs, "code-value-quantity=http://loinc.org|29463-7$186", false),
        (&bp, "component-code-value-quantity=http://loinc.org|8480-6$gt100", true),
        (&bp, "component-code-value-quantity=http://loinc.org|8480-6$gt200", false),
        // _id, _lastUpdated-free specials from the bundle, uri
        (&patient, "_id=example", true),
        (&patient, "_id=other", false),
        (&obs, "_tag=http://terminology.hl7.org/CodeSystem/v3-ActReason|HTEST", true),
        (&bp, "_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns", true),
        (&bp, "_profile:below=http://hl7.org/fhir/StructureDefinition/", true),
        (&bp, "_profile:above=http://hl7.org/fhir/StructureDefinition/vitalsigns/extra", true),
        // several clauses: AND; URL-encoded or not
        (&obs, "status=final&subject=Patient/example", true),
        (&obs, "status=final&subject=Patient/other", false),
        (&obs, "code=http%3A%2F%2Floinc.org%7C29463-7", true),
        (&obs, "Observation?status=final", true),
    ];
    let mut failures = Vec::new();
    for (resource, search, expected) in rows {
        match check(resource, search, &fixture) {
            Ok(got) if got == *expected => {}
            other => failures.push(format!("{} {search}: expected {expected}, got {other:?}", resource["resourceType"])),
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn bad_clauses_are_reported_one_by_one() {
    let params = SearchParams::r5().unwrap();
    let (query, errors) =
        Query::parse("Task", "status=requested&nosuch=1&status:exact=x&authored-on=gtyesterday&owner:Patient.nosuch=1&_count=10", params);
    assert_eq!(query.clauses.len(), 1);
    assert_eq!(query.control, vec![("_count".to_owned(), "10".to_owned())]);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].is_unknown_parameter());
    assert!(matches!(errors[1], QueryError::Modifier { .. }));
    assert!(matches!(errors[2], QueryError::Value { .. }));
    assert!(errors[3].is_unknown_parameter());
}

#[test]
fn value_sets_that_need_a_terminology_server_are_refused_clearly() {
    let Some(obs) = example("Observation-example.json") else { return };
    let fixture = Fixture { resources: Vec::new() };
    let err = check(&obs, "code:in=http://herald.test/ValueSet/needs-tx", &fixture).unwrap_err();
    assert!(err.contains("terminology server"), "{err}");
    let err = check(&obs, "code:in=http://herald.test/ValueSet/unknown", &fixture).unwrap_err();
    assert!(err.contains("not known"), "{err}");
    let plain = NoContext { base_url: "http://x" };
    let (query, errors) = Query::parse("Observation", "code:below=http://loinc.org|29463-7", SearchParams::r5().unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    let err = clause_matches(&query.clauses[0], "Observation", &obs, &plain).unwrap_err();
    assert!(err.to_string().contains("does not hold"), "{err}");
    assert!(!Query::parse("Observation", "code:below=http://loinc.org", SearchParams::r5().unwrap()).1.is_empty(), "system|code required");
}

#[test]
fn backport_filter_strings_in_all_three_forms() {
    use super::query::{parse_filter_criteria, FilterCriterion};
    let c = |ty: Option<&str>, p: &str, m: Option<&str>, v: &str| FilterCriterion {
        resource_type: ty.map(str::to_owned),
        parameter: p.to_owned(),
        modifier: m.map(str::to_owned),
        value: v.to_owned(),
    };
    assert_eq!(parse_filter_criteria("owner=Organization/lab-1").unwrap(), [c(None, "owner", None, "Organization/lab-1")]);
    assert_eq!(parse_filter_criteria("Task.status:not=cancelled").unwrap(), [c(Some("Task"), "status", Some("not"), "cancelled")]);
    assert_eq!(
        parse_filter_criteria("Task?owner=Organization%2Flab-1&authored-on=gt2026-01-01").unwrap(),
        [c(Some("Task"), "owner", None, "Organization/lab-1"), c(Some("Task"), "authored-on", None, "gt2026-01-01")]
    );
    assert!(parse_filter_criteria("Nope?x=1").is_err());
    assert!(parse_filter_criteria("novalue").is_err());
    assert!(parse_filter_criteria("").is_err());
}
