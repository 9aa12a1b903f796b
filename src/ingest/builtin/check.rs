//! Every element and search parameter a built-in topic names exists in the FHIR version it is
//! written for: R5 against the embedded R5 model and SearchParameters, R4 and R4B against the
//! official definitions in `../shared/fhir/data/{r4,r4b}` (StructureDefinition snapshots and
//! the SearchParameter bundle) plus the parameters Herald ships beyond them for that version
//! (`tools/gen_search_params.py`: the Backport IG's Subscription parameters and Herald's Task
//! `output`), which every instance of the version has.
//!
//! What is checked: trigger, event and shape resource types; every element path in
//! `fhirPathCriteria` (chains from `%current`/`%previous`, and the bare names inside
//! `where`/`exists`/`all`/`select` arguments, typed through data types and backbone
//! elements); `queryCriteria` parameter names; `canFilterBy` (`filterDefinition` by url, with
//! the resource among its bases, else the parameter by name); `notificationShape`
//! `include`/`revInclude` parameters. The FHIRPath reading is a small tokenizer for the
//! expression forms topics use, not a FHIRPath type checker.

use serde_json::Value;

use super::*;
use crate::fhir::model::Model;
use crate::fhir::official::Official;
use crate::fhir::search::{SearchParam, SearchParams};

/// What a version defines, as far as the check needs it.
trait Definitions {
    fn is_resource(&self, ty: &str) -> bool;
    /// The types of element `name` of type `ty` (a resource, data type or backbone path).
    fn element(&self, ty: &str, name: &str) -> Option<Vec<String>>;
    fn has_param(&self, base: &str, code: &str) -> bool;
    /// The bases of the parameter with this canonical url.
    fn param_bases(&self, url: &str) -> Option<Vec<String>>;
}

impl Definitions for Official {
    fn is_resource(&self, ty: &str) -> bool {
        Official::is_resource(self, ty)
    }
    fn element(&self, ty: &str, name: &str) -> Option<Vec<String>> {
        Official::element(self, ty, name).map(|d| d.types.clone())
    }
    fn has_param(&self, base: &str, code: &str) -> bool {
        Official::has_param(self, base, code)
    }
    fn param_bases(&self, url: &str) -> Option<Vec<String>> {
        Official::param_bases(self, url).map(<[String]>::to_vec)
    }
}

/// A version's official definitions and the parameters Herald's embedded set adds to them
/// (those whose url the official bundle does not have). Core parameters still come from the
/// official bundle only.
struct WithShipped<'a> {
    official: &'a Official,
    shipped: Vec<&'static SearchParam>,
}

impl<'a> WithShipped<'a> {
    fn new(version: FhirVersion, official: &'a Official) -> WithShipped<'a> {
        let embedded = SearchParams::for_version(version).unwrap_or_else(|e| panic!("{version} parameters: {e}"));
        let shipped = embedded.iter().filter(|p| official.param_bases(&p.url).is_none()).collect();
        WithShipped { official, shipped }
    }
}

impl Definitions for WithShipped<'_> {
    fn is_resource(&self, ty: &str) -> bool {
        self.official.is_resource(ty)
    }
    fn element(&self, ty: &str, name: &str) -> Option<Vec<String>> {
        Definitions::element(self.official, ty, name)
    }
    fn has_param(&self, base: &str, code: &str) -> bool {
        self.official.has_param(base, code) || self.shipped.iter().any(|p| p.code == code && p.base.iter().any(|b| b == base))
    }
    fn param_bases(&self, url: &str) -> Option<Vec<String>> {
        Definitions::param_bases(self.official, url).or_else(|| self.shipped.iter().find(|p| p.url == url).map(|p| p.base.clone()))
    }
}

/// R5, from the embedded model and SearchParameters.
struct Embedded;

impl Definitions for Embedded {
    fn is_resource(&self, ty: &str) -> bool {
        crate::fhir::types::is_resource_type(ty)
    }
    fn element(&self, ty: &str, name: &str) -> Option<Vec<String>> {
        Model::r5().ok()?.element(ty, name).map(|e| e.types.clone())
    }
    fn has_param(&self, base: &str, code: &str) -> bool {
        SearchParams::r5().is_ok_and(|p| p.get(base, code).is_some())
    }
    fn param_bases(&self, url: &str) -> Option<Vec<String>> {
        SearchParams::r5().ok()?.by_url(url).map(|p| p.base.clone())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Var(String),
    Dot,
    Open,
    Close,
    Other,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == '\'' {
                        break;
                    }
                }
                out.push(Tok::Other);
            }
            '.' => out.push(Tok::Dot),
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            '%' | '$' => {
                let mut name = String::from(c);
                while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                    name.push(d);
                    chars.next();
                }
                out.push(Tok::Var(name));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut name = String::from(c);
                while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                    name.push(d);
                    chars.next();
                }
                out.push(Tok::Ident(name));
            }
            c if c.is_whitespace() => {}
            _ => out.push(Tok::Other),
        }
    }
    out
}

const KEYWORDS: [&str; 12] = ["and", "or", "xor", "implies", "in", "contains", "is", "as", "div", "mod", "true", "false"];
/// Functions whose arguments are expressions over each input item.
const ITEM_FUNCTIONS: [&str; 5] = ["where", "exists", "all", "select", "any"];

/// Walks `toks[*at..]` up to the closing parenthesis of the current level (or the end),
/// checking member chains; bare names are members of `this` (the item type inside a
/// function argument). Problems go to `errors`.
fn walk(defs: &dyn Definitions, resource: &str, toks: &[Tok], at: &mut usize, this: &[String], errors: &mut Vec<String>) {
    while let Some(tok) = toks.get(*at) {
        *at += 1;
        let mut types: Option<Vec<String>> = match tok {
            Tok::Close => return,
            Tok::Open => {
                walk(defs, resource, toks, at, this, errors);
                None
            }
            Tok::Var(v) if v == "%current" || v == "%previous" => Some(vec![resource.to_owned()]),
            Tok::Var(v) if v == "$this" => Some(this.to_vec()),
            Tok::Ident(name) if !KEYWORDS.contains(&name.as_str()) && toks.get(*at) != Some(&Tok::Open) => {
                Some(member(defs, this, name, errors))
            }
            Tok::Ident(_) if toks.get(*at) == Some(&Tok::Open) => {
                // A bare function call (`exists(...)`) on the focus.
                *at += 1;
                walk(defs, resource, toks, at, this, errors);
                None
            }
            _ => None,
        };
        while let (Some(current), Some(Tok::Dot), Some(Tok::Ident(name))) = (types.clone(), toks.get(*at), toks.get(*at + 1)) {
            *at += 2;
            if toks.get(*at) == Some(&Tok::Open) {
                *at += 1;
                let inner: &[String] = if ITEM_FUNCTIONS.contains(&name.as_str()) { &current } else { &[] };
                if name == "ofType" || name == "as" || name == "is" {
                    // A type name, not an element.
                    while toks.get(*at).is_some_and(|t| *t != Tok::Close) {
                        *at += 1;
                    }
                    *at += 1;
                } else {
                    walk(defs, resource, toks, at, inner, errors);
                }
                types = match name.as_str() {
                    "where" | "ofType" | "first" | "last" | "distinct" => Some(current),
                    "extension" => Some(vec!["Extension".to_owned()]),
                    _ => None,
                };
            } else {
                types = Some(member(defs, &current, name, errors));
            }
        }
    }
}

/// The types of `name` on any of `on`; an error when none has it.
fn member(defs: &dyn Definitions, on: &[String], name: &str, errors: &mut Vec<String>) -> Vec<String> {
    let found: Vec<String> = on.iter().filter_map(|t| defs.element(t, name)).flatten().collect();
    if found.is_empty() {
        errors.push(format!("{on:?} has no element '{name}'"));
    }
    found
}

fn strings<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    v[key].as_array().into_iter().flatten().filter_map(Value::as_str)
}

/// Every problem with the names `topic` (R5-shaped) uses, against `defs`.
fn problems(defs: &dyn Definitions, topic: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let resource_ok = |ty: &str, at: &str, errors: &mut Vec<String>| {
        if !defs.is_resource(ty) {
            errors.push(format!("{at}: no resource type {ty}"));
        }
    };
    for t in topic["resourceTrigger"].as_array().into_iter().flatten() {
        let ty = t["resource"].as_str().unwrap_or_default();
        resource_ok(ty, "resourceTrigger", &mut errors);
        if let Some(text) = t["fhirPathCriteria"].as_str() {
            let toks = tokens(text);
            let mut at = 0;
            let before = errors.len();
            walk(defs, ty, &toks, &mut at, &[ty.to_owned()], &mut errors);
            for e in errors.iter_mut().skip(before) {
                *e = format!("{ty} fhirPathCriteria {text:?}: {e}");
            }
        }
        for key in ["previous", "current"] {
            for clause in t["queryCriteria"][key].as_str().unwrap_or_default().split('&').filter(|c| !c.is_empty()) {
                let name = clause.split(['=', ':']).next().unwrap_or_default();
                if !name.starts_with('_') && !defs.has_param(ty, name) {
                    errors.push(format!("{ty} queryCriteria: no search parameter {name}"));
                }
            }
        }
    }
    for e in topic["eventTrigger"].as_array().into_iter().flatten() {
        resource_ok(e["resource"].as_str().unwrap_or_default(), "eventTrigger", &mut errors);
    }
    for f in topic["canFilterBy"].as_array().into_iter().flatten() {
        let ty = f["resource"].as_str().unwrap_or_default();
        let name = f["filterParameter"].as_str().unwrap_or_default();
        match f["filterDefinition"].as_str() {
            Some(url) => match defs.param_bases(url) {
                Some(bases) if bases.iter().any(|b| b == ty) => {}
                Some(bases) => errors.push(format!("canFilterBy {ty}.{name}: {url} is defined on {bases:?}")),
                None => errors.push(format!("canFilterBy {ty}.{name}: no SearchParameter {url}")),
            },
            None if defs.has_param(ty, name) => {}
            None => errors.push(format!("canFilterBy: no search parameter {name} on {ty}")),
        }
    }
    for s in topic["notificationShape"].as_array().into_iter().flatten() {
        let ty = s["resource"].as_str().unwrap_or_default();
        resource_ok(ty, "notificationShape", &mut errors);
        for (key, reverse) in [("include", false), ("revInclude", true)] {
            for directive in strings(s, key) {
                let mut parts = directive.split(':');
                let (source, param) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                if !reverse && source != ty {
                    errors.push(format!("notificationShape {ty}: include {directive} starts from another type"));
                }
                if !defs.has_param(source, param) {
                    errors.push(format!("notificationShape {ty}: {key} {directive}: no search parameter {param} on {source}"));
                }
            }
        }
    }
    errors
}

fn check_version(version: FhirVersion, defs: &dyn Definitions) {
    let mut all = Vec::new();
    for text in definitions(version) {
        let topic: Value = serde_json::from_str(text).unwrap();
        for p in problems(defs, &topic) {
            all.push(format!("{version} {}: {p}", topic["id"]));
        }
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn every_element_and_search_parameter_the_r5_builtins_name_exists_in_r5() {
    check_version(FhirVersion::R5, &Embedded);
}

#[test]
fn every_element_and_search_parameter_the_r4_builtins_name_exists_in_r4_and_r4b() {
    let (Some(r4), Some(r4b)) = (Official::load("r4"), Official::load("r4b")) else { return };
    check_version(FhirVersion::R4, &WithShipped::new(FhirVersion::R4, &r4));
    check_version(FhirVersion::R4B, &WithShipped::new(FhirVersion::R4B, &r4b));
}

#[test]
fn the_r4_builtins_include_task_output_through_the_parameter_herald_ships() {
    let Some(r4) = Official::load("r4") else { return };
    let shipped = WithShipped::new(FhirVersion::R4, &r4);
    let herald: Vec<&str> = shipped.shipped.iter().map(|p| p.url.as_str()).filter(|u| !u.contains("subscriptions-backport")).collect();
    assert_eq!(herald, ["http://herald.dev/fhir/SearchParameter/Task-output"], "Herald's own R4 parameters");
    for (file, directive) in [(0, "include Task:output"), (5, "revInclude Task:output")] {
        let topic: Value = serde_json::from_str(SHIPPED_R4[file]).unwrap();
        let official_only = problems(&r4, &topic);
        assert!(!official_only.is_empty() && official_only.iter().all(|p| p.contains(directive)), "{official_only:?}");
        assert_eq!(problems(&shipped, &topic), Vec::<String>::new());
    }
}

#[test]
fn the_check_finds_r5_names_in_r4_definitions() {
    let Some(r4) = Official::load("r4") else { return };
    let r5_task_assigned: Value = serde_json::from_str(SHIPPED_R5[1]).unwrap();
    let found = problems(&r4, &r5_task_assigned);
    assert!(found.iter().any(|p| p.contains("requestedPerformer")), "{found:?}");
    assert!(found.iter().any(|p| p.contains("requestedperformer-reference")), "{found:?}");
    let r5_actionable: Value = serde_json::from_str(SHIPPED_R5[3]).unwrap();
    assert!(problems(&r4, &r5_actionable).iter().any(|p| p.contains("ServiceRequest-code-concept")));
    // Inside `where(...)` too: a Coding has no `colour`.
    let topic = serde_json::json!({ "resourceTrigger": [{ "resource": "Task",
        "fhirPathCriteria": "%current.code.coding.where(colour = 'red').exists() and %current.output.value.exists()" }] });
    let found = problems(&r4, &topic);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("colour"));
}
