//! Tests of search expressions on Herald's FHIRPath engine: every official R5 SearchParameter
//! expression compiles and evaluates on every official example of its bases; `CompiledPath`
//! semantics on a small resource (nodes and booleans out, `resolve()` answering the target's
//! type); and an ignored timing run for release builds.
//! Tests that need `shared/fhir/` print a note and pass when it is absent.

use super::compiled::TargetTypes;
use super::*;
use crate::fhir::fhirpath::{Env, ErrorKind, Expression};
use crate::fhir::version::FhirVersion;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fhir");

/// Where the official examples live, under `shared/fhir`: searched recursively.
const EXAMPLE_DIRS: [&str; 3] = ["examples/r5", "examples/notifications", "data/fhirpath-r5/input"];

/// Draft entries of the definitions bundle that are not part of R5 (see
/// `shared/fhir/data/README.md`): they would duplicate `_id` and `Condition.subject`.
fn is_skipped(id: &str) -> bool {
    id.starts_with("example")
}

/// `shared/fhir`, or `None` with a note when it is absent (a failure under `CI=true`).
fn shared() -> Option<PathBuf> {
    crate::testdata::shared(SHARED)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
}

/// `resource` and, recursively, the resources in its `contained` and `entry[].resource`.
fn walk(label: String, resource: Value, out: &mut Vec<(String, Value)>) {
    for (i, entry) in resource["entry"].as_array().into_iter().flatten().enumerate() {
        if entry["resource"]["resourceType"].is_string() {
            walk(format!("{label}/entry[{i}]"), entry["resource"].clone(), out);
        }
    }
    for contained in resource["contained"].as_array().into_iter().flatten() {
        if contained["resourceType"].is_string() {
            walk(format!("{label}#{}", contained["id"].as_str().unwrap_or("?")), contained.clone(), out);
        }
    }
    out.push((label, resource));
}

/// Every example resource in [`EXAMPLE_DIRS`], labelled by file, entry and contained id.
fn examples(shared: &Path) -> Vec<(String, Value)> {
    let mut files = Vec::new();
    for dir in EXAMPLE_DIRS {
        json_files(&shared.join(dir), &mut files);
    }
    // The whole official examples package (`npm pack hl7.fhir.r5.examples@5.0.0`, unpacked),
    // for a one-off wider run; CI uses the examples in `../shared`.
    if let Some(extra) = std::env::var_os("HERALD_R5_EXAMPLES_DIR") {
        json_files(Path::new(&extra), &mut files);
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let resource = read_json(&file);
        if resource["resourceType"].is_string() {
            let label = file.strip_prefix(shared).unwrap_or(&file).display().to_string();
            walk(label, resource, &mut out);
        }
    }
    out
}

/// One official definition: url, bases and expression.
struct Definition {
    url: String,
    base: Vec<String>,
    expression: Option<String>,
}

fn definitions(shared: &Path) -> Vec<Definition> {
    let bundle = read_json(&shared.join("data/search-parameters-r5.json"));
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| !is_skipped(r["id"].as_str().unwrap()))
        .map(|r| Definition {
            url: r["url"].as_str().unwrap().to_owned(),
            base: r["base"].as_array().unwrap().iter().map(|b| b.as_str().unwrap().to_owned()).collect(),
            expression: r["expression"].as_str().map(str::to_owned),
        })
        .collect()
}

/// The base entry through which a parameter reaches a resource of type `ty`, as the registry
/// decides it: the type itself, else `DomainResource`, else `Resource`.
fn covering_base<'d>(base: &'d [String], ty: &str) -> Option<&'d str> {
    let find = |name: &str| base.iter().find(|b| *b == name).map(String::as_str);
    find(ty)
        .or_else(|| types::is_domain_resource_of(FhirVersion::R5, ty).then(|| find("DomainResource")).flatten())
        .or_else(|| types::is_resource_type_of(FhirVersion::R5, ty).then(|| find("Resource")).flatten())
}

#[test]
fn every_official_expression_compiles_and_evaluates_on_the_examples_of_its_bases() {
    let Some(shared) = shared() else {
        return;
    };
    let definitions = definitions(&shared);
    let examples = examples(&shared);
    let mut failures = Vec::new();

    let mut compiled = Vec::new();
    for definition in &definitions {
        if let Some(text) = &definition.expression {
            match Expression::parse(text) {
                Ok(expression) => compiled.push((definition, expression)),
                Err(e) => failures.push(format!("{}: does not compile: {e}", definition.url)),
            }
        }
    }
    let with_expression = definitions.iter().filter(|d| d.expression.is_some()).count();

    // The whole expression on the engine, and the parameter as Herald evaluates it (the
    // branches for the type); both with `resolve()` answering from the reference.
    let mut evaluations = 0;
    let mut non_empty = 0;
    let mut whole_refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    for (definition, expression) in &compiled {
        let param = r5().by_url(&definition.url);
        for (label, resource) in &examples {
            let ty = resource["resourceType"].as_str().unwrap_or("");
            let Some(base) = covering_base(&definition.base, ty) else {
                continue;
            };
            evaluations += 1;
            covered.insert(base);
            let env = Env::new(Some(resource)).with_resolver(&TargetTypes);
            if let Err(e) = expression.evaluate(&env) {
                // Tolerated only where the official text names an element the type lacks
                // in a branch that does not start from a type; `values` drops such branches.
                match e.kind {
                    ErrorKind::UnknownElement { .. } => *whole_refused.entry(format!("{} on {ty}: {e}", definition.url)).or_default() += 1,
                    _ => failures.push(format!("{label}: {}: {e}", definition.url)),
                }
            }
            match param.map(|p| p.values(ty, resource)) {
                Some(Ok(values)) => non_empty += usize::from(!values.is_empty()),
                Some(Err(e)) => failures.push(format!("{label}: {e}")),
                None => failures.push(format!("{}: not in the embedded set", definition.url)),
            }
        }
    }
    let all_bases: BTreeSet<&str> = definitions.iter().flat_map(|d| d.base.iter().map(String::as_str)).collect();
    println!(
        "parameters: {} ({} with an expression); expressions parsed: {}/{with_expression}; example resources: {}; \
         (parameter, example) evaluations: {evaluations}, {non_empty} non-empty; \
         base types covered by at least one example: {}/{}",
        definitions.len(),
        with_expression,
        compiled.len(),
        examples.len(),
        covered.len(),
        all_bases.len(),
    );
    println!("whole expressions the engine refuses for a type (spec text errors): {whole_refused:#?}");
    assert!(failures.is_empty(), "{} failures: {:#?}", failures.len(), &failures[..failures.len().min(30)]);
    assert_eq!(compiled.len(), with_expression);
    assert_eq!(definitions.len(), 1240);
    assert!(whole_refused.keys().all(|k| k.starts_with("http://hl7.org/fhir/SearchParameter/clinical-date on ")), "{whole_refused:#?}");
}

/// `CompiledPath::evaluate` skips the engine when the expression certainly selects nothing
/// (`Expression::selects_nothing_from`); on every official parameter and every example of
/// its bases, each also without each of its top-level elements and with none, a skip must
/// be exactly what the engine answers: no error and nothing selected.
#[test]
fn a_skipped_evaluation_is_what_the_engine_answers() {
    let Some(shared) = shared() else {
        return;
    };
    let examples = examples(&shared);
    let (mut checked, mut skipped) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (label, resource) in &examples {
        let ty = resource["resourceType"].as_str().unwrap_or("");
        let Some(obj) = resource.as_object() else { continue };
        let mut variants = vec![resource.clone(), json!({ "resourceType": ty, "id": "x" })];
        for key in obj.keys().filter(|k| *k != "resourceType") {
            let mut without = obj.clone();
            without.remove(key);
            variants.push(Value::Object(without));
        }
        for param in r5().iter().filter(|p| p.expression.is_some() && p.applies_to(ty)) {
            let Some(expression) = param.path_for(ty).ok().and_then(|p| p.expression()) else { continue };
            for variant in &variants {
                checked += 1;
                if !expression.selects_nothing_from(variant) {
                    continue;
                }
                skipped += 1;
                let env = Env::new(Some(variant)).with_resolver(&TargetTypes);
                match expression.evaluate(&env) {
                    Ok(found) if found.is_empty() => {}
                    Ok(found) => failures.push(format!("{label}: {} selects {} items", param.url, found.len())),
                    Err(e) => failures.push(format!("{label}: {}: {e}", param.url)),
                }
            }
        }
    }
    println!("(parameter, resource) pairs: {checked}, decided without the engine: {skipped}");
    assert!(failures.is_empty(), "{} failures: {:#?}", failures.len(), &failures[..failures.len().min(30)]);
    assert!(skipped > checked / 4, "the shortcut should apply to most absent elements: {skipped} of {checked}");
}

/// Release-build cost of one (parameter, example) evaluation through `SearchParam::values`:
/// `cargo test --release --lib search_evaluation_cost -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in a release build"]
fn search_evaluation_cost() {
    let Some(shared) = shared() else {
        return;
    };
    let examples = examples(&shared);
    let mut pairs = Vec::new();
    for param in r5().iter().filter(|p| p.expression.is_some()) {
        for (_, resource) in &examples {
            let ty = resource["resourceType"].as_str().unwrap_or("");
            if param.applies_to(ty) {
                // Compile once, outside the timed loop.
                param.values(ty, resource).unwrap();
                pairs.push((param, ty, resource));
            }
        }
    }
    let rounds = 50;
    let start = Instant::now();
    let mut selected = 0usize;
    for _ in 0..rounds {
        for (param, ty, resource) in &pairs {
            selected += param.values(ty, resource).unwrap().len();
        }
    }
    let elapsed = start.elapsed();
    let per = elapsed.as_secs_f64() * 1e6 / (rounds * pairs.len()) as f64;
    println!("{} (parameter, example) pairs x {rounds} rounds: {elapsed:?}, {per:.2} µs per evaluation ({selected} values)", pairs.len());
}

fn r5() -> &'static SearchParams {
    SearchParams::r5().expect("embedded R5 definitions load")
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "o1",
        "contained": [{"resourceType": "Patient", "id": "p1"}],
        "status": "final",
        "code": {"coding": [
            {"system": "http://loinc.org", "code": "1234-5"},
            {"system": "http://snomed.info/sct", "code": "999"}
        ]},
        "subject": {"reference": "Patient/p9/_history/3"},
        "performer": [
            {"reference": "http://other.org/fhir/Practitioner/x1"},
            {"reference": "urn:uuid:0f3c", "type": "Organization"},
            {"reference": "#p1"},
            {"display": "nobody"}
        ],
        "valueQuantity": {"value": 5, "unit": "mg"},
        "component": [
            {"code": {"text": "c1"}, "valueCodeableConcept": {"text": "v1"}},
            {"code": {"text": "c2"}, "valueQuantity": {"value": 3}}
        ]
    })
}

fn eval(expr: &str, resource: &Value) -> Vec<Value> {
    let path = CompiledPath::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
    path.evaluate(resource).unwrap_or_else(|e| panic!("{expr:?}: {e}")).into_iter().cloned().collect()
}

#[test]
fn compiled_paths_return_nodes_and_booleans_only() {
    let obs = observation();
    let path = CompiledPath::parse("Observation.code.coding.code").unwrap();
    let values = path.evaluate(&obs).unwrap();
    assert!(std::ptr::eq(values[0], &obs["code"]["coding"][0]["code"]), "nodes are borrowed from the resource");
    assert_eq!(eval("Patient.code", &obs), Vec::<Value>::new());
    assert_eq!(eval("Resource.id | DomainResource.id", &obs), vec![json!("o1")]);
    assert_eq!(eval("Observation.value.ofType(Quantity).unit", &obs), vec![json!("mg")]);
    assert_eq!(eval("Observation.component.value.ofType(CodeableConcept).text", &obs), vec![json!("v1")]);
    assert_eq!(eval("Observation.status.exists() and Observation.status != 'draft'", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.code.coding.exists().not()", &obs), vec![json!(false)]);
    // System strings, numbers and dates are no search values.
    assert_eq!(eval("'x' | 1 | @2020 | Observation.status.upper()", &obs), Vec::<Value>::new());
    assert_eq!(eval("Observation.status | Observation.id | Observation.status", &obs), vec![json!("final"), json!("o1")]);
    let empty = CompiledPath::empty();
    assert!(empty.is_empty() && empty.expression().is_none());
    assert!(empty.evaluate(&obs).unwrap().is_empty());
    let err = CompiledPath::parse("Observation.code.coding.code and true").unwrap().evaluate(&obs).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotSingleton(2));
}

#[test]
fn resolve_answers_the_target_type_from_the_reference() {
    let obs = observation();
    assert_eq!(eval("Observation.subject.where(resolve() is Patient)", &obs), vec![json!({"reference": "Patient/p9/_history/3"})]);
    assert!(eval("Observation.subject.where(resolve() is Group)", &obs).is_empty());
    assert_eq!(eval("Observation.performer.where(resolve() is Practitioner)", &obs).len(), 1);
    // No literal reference: `Reference.type` names the target.
    assert_eq!(
        eval("Observation.performer.where(resolve() is Organization)", &obs),
        vec![json!({"reference": "urn:uuid:0f3c", "type": "Organization"})]
    );
    // A contained target is the contained resource itself; a stub never leaves evaluation.
    assert_eq!(eval("Observation.performer.resolve().id", &obs), vec![json!("p1")]);
    assert_eq!(eval("Observation.performer.resolve()", &obs), vec![json!({"resourceType": "Patient", "id": "p1"})]);
    assert!(eval("Observation.subject.resolve()", &obs).is_empty());
    assert_eq!(eval("Observation.performer.where(resolve() is Resource)", &obs).len(), 3);
    // `#` alone is the containing resource.
    let own = json!({"resourceType": "Observation", "status": "final", "code": {}, "focus": [{"reference": "#"}]});
    assert_eq!(eval("Observation.focus.where(resolve() is Observation)", &own).len(), 1);
    // Canonicals name their type in the path; the version is not part of it.
    let q = json!({"resourceType": "Questionnaire", "status": "draft",
        "derivedFrom": ["http://example.org/fhir/Questionnaire/q1|2.0"]});
    assert_eq!(eval("Questionnaire.derivedFrom.where(resolve() is Questionnaire)", &q).len(), 1);
}

#[test]
fn context_branches_the_type_lacks_are_dropped_per_type() {
    let date = r5().get("Encounter", "date").unwrap();
    assert_eq!(date.path_for("Encounter").unwrap().source(), "Encounter.actualPeriod");
    assert_eq!(date.path_for("Appointment").unwrap().source(), "(start | requestedPeriod.start).first()");
    let encounter = json!({"resourceType": "Encounter", "status": "completed", "actualPeriod": {"start": "2024-01-01"}});
    assert_eq!(date.values("Encounter", &encounter).unwrap(), vec![&encounter["actualPeriod"]]);
}

#[test]
fn deeply_nested_text_is_refused_on_a_two_mib_stack() {
    // Search expressions may come from clients (topics, filters), so compiling must end in
    // an error, not a stack overflow, on a tokio-sized stack even in a debug build.
    let shapes = [
        format!("{}Task.id{}", "(".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "(1 + ".repeat(1000), ")".repeat(1000)),
        format!("{}true{}", "Task.where(".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "iif(true, ".repeat(1000), ")".repeat(1000)),
        format!("{}1{}", "a[".repeat(3000), "]".repeat(3000)),
        format!("{}1", "-".repeat(8000)),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || shapes.iter().map(|text| CompiledPath::parse(text).is_err()).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(handle.join().unwrap(), vec![true; 6]);
}
