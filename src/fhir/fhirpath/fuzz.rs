//! Property tests over the parser and evaluator: whatever the text, compiling returns an
//! expression or an error, and evaluating a compiled expression against a real resource
//! returns a result or an error within its budget; nothing panics, overflows or hangs.
//!
//! Two generators: raw strings (including bytes that are not FHIRPath at all), and token
//! soups drawn from FHIRPath's own vocabulary, which reach deep into the parser and the
//! function library. `PROPTEST_CASES` sets the number of cases; CI runs the default (256 per
//! property), a long run is `PROPTEST_CASES=200000 cargo test --release --lib fhirpath::fuzz`.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{Env, Expression, Limits};

const VOCABULARY: &[&str] = &[
    "Patient",
    "name",
    "given",
    "family",
    "telecom",
    "value",
    "birthDate",
    "extension",
    "url",
    "id",
    "Observation",
    "where(",
    "select(",
    "repeat(",
    "repeatAll(",
    "exists(",
    "all(",
    "first()",
    "last()",
    "tail()",
    "skip(",
    "take(",
    "count()",
    "distinct()",
    "empty()",
    "not()",
    "iif(",
    "ofType(",
    "as(",
    "is(",
    "resolve()",
    "children()",
    "descendants()",
    "aggregate(",
    "defineVariable(",
    "sort(",
    "substring(",
    "replaceMatches(",
    "matches(",
    "split(",
    "join(",
    "toString()",
    "toInteger()",
    "toDecimal()",
    "toQuantity(",
    "lowBoundary(",
    "highBoundary(",
    "precision()",
    "union(",
    "combine(",
    "intersect(",
    "exclude(",
    "trace(",
    "encode(",
    "decode(",
    "power(",
    "log(",
    "round(",
    "$this",
    "$index",
    "$total",
    "%resource",
    "%context",
    "%previous",
    "%current",
    "%ucum",
    "%v1",
    "'a'",
    "'\\u0041'",
    "''",
    "'.*'",
    "'(a+)+$'",
    "1",
    "0",
    "-1",
    "2.5",
    "1e3",
    "10L",
    "@2014-01",
    "@2014-01-01T10:00:00Z",
    "@T10:30",
    "4 'mg'",
    "3 days",
    "true",
    "false",
    "{}",
    "String",
    "Quantity",
    "HumanName",
    "System.Integer",
    "FHIR.Patient",
    ".",
    ",",
    "(",
    ")",
    "[",
    "]",
    "|",
    "+",
    "-",
    "*",
    "/",
    "div",
    "mod",
    "&",
    "=",
    "!=",
    "~",
    "!~",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "or",
    "xor",
    "implies",
    "in",
    "contains",
    " ",
    "//c\n",
    "/*c*/",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCABULARY), 1..40).prop_map(|tokens| tokens.concat())
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient", "id": "p1", "active": true, "birthDate": "1974-12-25",
        "_birthDate": { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00" }] },
        "name": [{ "use": "official", "family": "Chalmers", "given": ["Peter", "James"] }, { "use": "usual", "given": ["Jim"] }],
        "telecom": [{ "system": "phone", "value": "(03) 5555 6473" }],
        "contained": [{ "resourceType": "Organization", "id": "o1", "name": "Lab" }],
        "managingOrganization": { "reference": "#o1" }
    })
}

fn exercise(text: &str, resource: &Value) {
    let Ok(expr) = Expression::parse(text) else { return };
    let limits = Limits { max_steps: 20_000, max_items: 5_000, ..Limits::default() };
    let env = Env::new(Some(resource)).with_variable("previous", Some(resource)).with_variable("current", None).with_limits(limits);
    let _ = expr.evaluate(&env);
    let _ = expr.evaluate_bool(&env);
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        exercise(&text, &patient());
    }

    #[test]
    fn fhirpath_token_soups_never_panic(text in token_soup()) {
        exercise(&text, &patient());
    }
}
