//! Unit tests of the FHIRPath subset on small resources: semantics, error positions, bounds.

use super::*;
use serde_json::json;

fn eval(expr: &str, resource: &Value) -> Vec<Value> {
    let path = CompiledPath::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
    path.evaluate(resource).unwrap_or_else(|e| panic!("{expr:?}: {e}")).into_iter().cloned().collect()
}

fn error(expr: &str) -> PathError {
    match CompiledPath::parse(expr) {
        Ok(_) => panic!("{expr:?} should not compile"),
        Err(e) => e,
    }
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
        "effectiveDateTime": "2024-01-01",
        "valueQuantity": {"value": 5, "unit": "mg"},
        "extension": [
            {"url": "http://x/a", "valueString": "A"},
            {"url": "http://x/b", "valueBoolean": true}
        ],
        "component": [
            {"code": {"text": "c1"}, "valueCodeableConcept": {"text": "v1"}},
            {"code": {"text": "c2"}, "valueAge": {"value": 3}}
        ]
    })
}

#[test]
fn navigation_flattens_arrays_and_checks_the_leading_type() {
    let obs = observation();
    assert_eq!(eval("Observation.code.coding.code", &obs), vec![json!("1234-5"), json!("999")]);
    assert_eq!(eval("code.coding.system.first()", &obs), vec![json!("http://loinc.org")]);
    assert!(eval("Patient.code", &obs).is_empty());
    assert_eq!(eval("Resource.id", &obs), vec![json!("o1")]);
    assert_eq!(eval("DomainResource.id", &obs), vec![json!("o1")]);
    assert_eq!(eval("Observation.code.coding[1].code", &obs), vec![json!("999")]);
    assert!(eval("Observation.code.coding[7]", &obs).is_empty());
}

#[test]
fn choice_elements_are_found_by_type_suffix_and_typed() {
    let obs = observation();
    assert_eq!(eval("Observation.value", &obs), vec![json!({"value": 5, "unit": "mg"})]);
    assert_eq!(eval("Observation.value.ofType(Quantity).unit", &obs), vec![json!("mg")]);
    assert!(eval("Observation.value.ofType(CodeableConcept)", &obs).is_empty());
    assert_eq!(eval("(Observation.value as Quantity).value", &obs), vec![json!(5)]);
    assert_eq!(eval("Observation.value.as(Quantity).value", &obs), vec![json!(5)]);
    assert_eq!(eval("Observation.value is Quantity", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.effective.ofType(dateTime)", &obs), vec![json!("2024-01-01")]);
    // Age specialises Quantity.
    assert_eq!(eval("Observation.component.value.ofType(Quantity).value", &obs), vec![json!(3)]);
    assert_eq!(eval("Observation.component.value.ofType(CodeableConcept).text", &obs), vec![json!("v1")]);
    // `status` is no choice element, so `statusDate`-style keys are never taken for it.
    let citation = json!({"resourceType": "Citation", "statusDate": [{"activity": {}}]});
    assert!(eval("Citation.status", &citation).is_empty());
}

#[test]
fn resolve_decides_the_type_from_the_reference() {
    let obs = observation();
    assert_eq!(eval("Observation.subject.where(resolve() is Patient)", &obs), vec![json!({"reference": "Patient/p9/_history/3"})]);
    assert!(eval("Observation.subject.where(resolve() is Group)", &obs).is_empty());
    let practitioners = eval("Observation.performer.where(resolve() is Practitioner)", &obs);
    assert_eq!(practitioners.len(), 1);
    let organisations = eval("Observation.performer.where(resolve() is Organization)", &obs);
    assert_eq!(organisations, vec![json!({"reference": "urn:uuid:0f3c", "type": "Organization"})]);
    // A contained target resolves to the contained resource itself.
    assert_eq!(eval("Observation.performer.resolve().id", &obs), vec![json!("p1")]);
    // Other targets resolve to nothing a path can return.
    assert!(eval("Observation.subject.resolve()", &obs).is_empty());
    assert_eq!(eval("Observation.performer.where(resolve() is Resource)", &obs).len(), 3);
}

#[test]
fn where_exists_extension_and_logic() {
    let obs = observation();
    assert_eq!(eval("Observation.code.coding.where(system = 'http://loinc.org').code", &obs), vec![json!("1234-5")]);
    assert_eq!(eval("Observation.code.coding.where(system != 'http://loinc.org').code", &obs), vec![json!("999")]);
    assert_eq!(eval("Observation.extension('http://x/b').value", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.extension.where(url = 'http://x/a').value", &obs), vec![json!("A")]);
    assert_eq!(eval("Observation.extension('http://x/c').exists()", &obs), vec![json!(false)]);
    assert_eq!(eval("Observation.status.exists() and Observation.status != 'draft'", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.missing.exists() or true", &obs), vec![json!(true)]);
    assert!(eval("Observation.missing = 'x'", &obs).is_empty());
    assert_eq!(eval("Observation.missing.empty()", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.status.exists().not()", &obs), vec![json!(false)]);
    assert_eq!(eval("false implies Observation.missing", &obs), vec![json!(true)]);
    assert_eq!(eval("true xor false", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.component.where(code.text = 'c2').select(value.value)", &obs), vec![json!(3)]);
    assert_eq!(eval("Observation.status.hasValue()", &obs), vec![json!(true)]);
    assert_eq!(eval("Observation.code.where($this.coding.exists()).exists()", &obs), vec![json!(true)]);
    assert_eq!(eval("%resource.id | $this.id", &obs), vec![json!("o1")]);
}

#[test]
fn union_keeps_order_and_drops_the_same_node_twice() {
    let obs = observation();
    assert_eq!(eval("Observation.status | Observation.id | Observation.status", &obs), vec![json!("final"), json!("o1")]);
    assert_eq!(eval("(Observation.code.coding.code | Observation.id).first()", &obs), vec![json!("1234-5")]);
}

#[test]
fn boolean_results_need_a_single_item() {
    let obs = observation();
    let path = CompiledPath::parse("Observation.code.coding.code and true").unwrap();
    let err = path.evaluate(&obs).unwrap_err();
    assert_eq!(err.kind, PathErrorKind::NotSingleton(2));
    assert_eq!(err.position, 0);
}

#[test]
fn errors_carry_the_offending_position() {
    let cases: &[(&str, usize, PathErrorKind)] = &[
        (
            "Task.owner.",
            11,
            PathErrorKind::Expected { expected: "a member or function name after '.'", found: "end of expression".to_owned() },
        ),
        ("Task.owner.trace('x')", 11, PathErrorKind::UnsupportedFunction("trace".to_owned())),
        ("Task.a + 1", 7, PathErrorKind::UnsupportedOperator("+".to_owned())),
        ("Task.a > 1", 7, PathErrorKind::UnsupportedOperator(">".to_owned())),
        ("Task.a contains 'x'", 7, PathErrorKind::UnsupportedOperator("contains".to_owned())),
        ("Task.x.ofType(Nonsense)", 14, PathErrorKind::UnknownType("Nonsense".to_owned())),
        ("Task.where('x", 11, PathErrorKind::Unterminated),
        ("Task.a = @2020-01-01", 9, PathErrorKind::UnsupportedLiteral("@2020-01-01".to_owned())),
        ("Task.a = %vs-x", 9, PathErrorKind::UnsupportedVariable("%vs".to_owned())),
        ("Task.a # b", 7, PathErrorKind::UnexpectedChar('#')),
        ("Task.first(1)", 5, PathErrorKind::Arguments { function: "first".to_owned(), expected: "no arguments" }),
        ("Task.extension(url)", 5, PathErrorKind::Arguments { function: "extension".to_owned(), expected: "one string literal (the url)" }),
        ("Task.a[x]", 7, PathErrorKind::Expected { expected: "a non-negative integer index", found: "something else".to_owned() }),
        ("(Task.a", 7, PathErrorKind::Expected { expected: ")", found: "end of expression".to_owned() }),
        ("Task.a Task.b", 7, PathErrorKind::Expected { expected: "end of expression", found: "identifier \"Task\"".to_owned() }),
    ];
    for (expr, position, kind) in cases {
        let err = error(expr);
        assert_eq!((&err.kind, err.position), (kind, *position), "{expr}");
    }
}

#[test]
fn strings_escapes_comments_and_quoted_identifiers() {
    let res = json!({"resourceType": "Basic", "div": "it's", "a": "x/y"});
    assert_eq!(eval("Basic.`div`", &res), vec![json!("it's")]);
    assert_eq!(eval("Basic.div = 'it\\'s'", &res), vec![json!(true)]);
    assert_eq!(eval("Basic.a = 'x\\/y' // trailing comment", &res), vec![json!(true)]);
    assert_eq!(eval("Basic /* inline */ .a = 'x\\u002fy'", &res), vec![json!(true)]);
    assert_eq!(error("Basic.a = 'bad \\q'").kind, PathErrorKind::BadEscape);
    assert_eq!(error("Basic /* open").kind, PathErrorKind::Unterminated);
}

#[test]
fn nesting_and_length_are_bounded() {
    let nested = |n: usize| format!("{}Task.id{}", "(".repeat(n), ")".repeat(n));
    assert!(CompiledPath::parse(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(error(&nested(MAX_DEPTH + 1)).kind, PathErrorKind::TooDeep { max: MAX_DEPTH });
    assert_eq!(error(&nested(5000)).kind, PathErrorKind::TooLong { max: MAX_EXPRESSION_LEN });
    let wheres = format!("{}true{}", "a.where(".repeat(200), ")".repeat(200));
    assert_eq!(error(&wheres).kind, PathErrorKind::TooDeep { max: MAX_DEPTH });
    // Alternating operators of one level build a deep tree without any parentheses.
    let alternating = format!("a{}", " = a != a".repeat(100));
    assert_eq!(error(&alternating).kind, PathErrorKind::TooDeep { max: MAX_DEPTH });
    // A long union is flat and fine.
    let union = vec!["Task.id"; 700].join(" | ");
    assert!(CompiledPath::parse(&union).is_ok());
}

#[test]
fn evaluation_work_is_bounded() {
    let res = json!({"resourceType": "Patient", "name": [{}, {}, {}, {}]});
    let expr = format!("Patient.name{}", ".select(%resource.name)".repeat(30));
    let path = CompiledPath::parse(&expr).unwrap();
    let err = path.evaluate(&res).unwrap_err();
    assert_eq!(err.kind, PathErrorKind::TooManyItems { max: MAX_EVAL_ITEMS });
}

#[test]
fn the_empty_path_selects_nothing() {
    let path = CompiledPath::empty();
    assert!(path.is_empty());
    assert!(path.evaluate(&observation()).unwrap().is_empty());
    let parsed: CompiledPath = "Observation.id".parse().unwrap();
    assert_eq!(parsed.source(), "Observation.id");
}
