//! Every code a built-in topic compares an element with is a code that element may hold: for
//! each `%current.<path> = 'x'`, `!= 'x'` or `in ('x' | 'y')` in a `fhirPathCriteria` whose
//! element is a `code` with a required binding, the code is in that value set in the version
//! the definition is written for. A trigger testing a code its version does not have (R5
//! MedicationRequest has no `revoked`) never fires, and nothing else would notice.
//!
//! The value sets come from `../shared/fhir/data` (R5), `data/r4`, `data/r4b`: the ValueSet
//! and CodeSystem files there (the subscription-related ones, e.g. `task-status`), else the
//! element's `short`, which for a `code` bound to a small required value set lists its codes
//! (`active | on-hold | ...`; a `+` means the list is cut, and is not used). A compared code
//! whose value set neither source lists fails the test, so every comparison stays checked.
//! Comparisons inside `where(...)` (a Coding's `code`, which no required binding constrains)
//! and `queryCriteria` (no built-in uses one) are not read.

use std::collections::HashMap;

use serde_json::Value;

use super::*;
use crate::fhir::official::Official;

/// A compared element path from `%current`/`%previous` and the codes it is compared with.
#[derive(Debug, PartialEq)]
struct Comparison {
    path: Vec<String>,
    codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Var(String),
    Ident(String),
    Str(String),
    Op(String),
    Dot,
    Open,
    Close,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let mut s = String::new();
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => s.extend(chars.next()),
                        '\'' => break,
                        d => s.push(d),
                    }
                }
                out.push(Tok::Str(s));
            }
            '.' => out.push(Tok::Dot),
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            '!' | '~' | '=' | '|' | '<' | '>' => {
                let mut op = String::from(c);
                if let Some(&next) = chars.peek().filter(|d| **d == '=' || **d == '~') {
                    op.push(next);
                    chars.next();
                }
                out.push(Tok::Op(op));
            }
            c if c.is_alphanumeric() || c == '_' || c == '%' || c == '$' => {
                let mut name = String::from(c);
                while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_') {
                    name.push(d);
                    chars.next();
                }
                out.push(if c == '%' || c == '$' { Tok::Var(name) } else { Tok::Ident(name) });
            }
            _ => {}
        }
    }
    out
}

/// The comparisons of element paths rooted at `%current` or `%previous` with string literals.
fn comparisons(text: &str) -> Vec<Comparison> {
    let toks = tokens(text);
    let mut out = Vec::new();
    for (start, tok) in toks.iter().enumerate() {
        if !matches!(tok, Tok::Var(v) if v == "%current" || v == "%previous") {
            continue;
        }
        let mut path = Vec::new();
        let mut at = start + 1;
        while let (Some(Tok::Dot), Some(Tok::Ident(name))) = (toks.get(at), toks.get(at + 1)) {
            path.push(name.clone());
            at += 2;
        }
        if path.is_empty() || toks.get(at) == Some(&Tok::Open) {
            continue; // a function call ends the chain: not a plain element
        }
        let codes = match (toks.get(at), toks.get(at + 1)) {
            (Some(Tok::Op(op)), Some(Tok::Str(s))) if op == "=" || op == "!=" => vec![s.clone()],
            (Some(Tok::Ident(kw)), Some(Tok::Open)) if kw == "in" => {
                let mut codes = Vec::new();
                let mut i = at + 2;
                while let Some(Tok::Str(s)) = toks.get(i) {
                    codes.push(s.clone());
                    match toks.get(i + 1) {
                        Some(Tok::Op(op)) if op == "|" => i += 2,
                        _ => break,
                    }
                }
                codes
            }
            _ => continue,
        };
        out.push(Comparison { path, codes });
    }
    out
}

/// Codes of the value sets and code systems in a version's subscription definitions, by
/// value set canonical (without `|version`).
fn value_sets(dir: &str) -> HashMap<String, Vec<String>> {
    fn concepts(list: &Value, out: &mut Vec<String>) {
        for c in list.as_array().into_iter().flatten() {
            out.extend(c["code"].as_str().map(str::to_owned));
            concepts(&c["concept"], out);
        }
    }
    let folder = match dir {
        "r5" => "data/subscriptions-r5".to_owned(),
        _ => format!("data/{dir}/subscriptions-{dir}"),
    };
    let Some(path) = crate::testdata::fhir(&folder) else { return HashMap::new() };
    let mut files: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ValueSet-") || name.starts_with("CodeSystem-") {
            files.extend(crate::testdata::fhir_json(&format!("{folder}/{name}")));
        }
    }
    let mut systems: HashMap<String, Vec<String>> = HashMap::new();
    for cs in files.iter().filter(|f| f["resourceType"] == "CodeSystem") {
        let mut codes = Vec::new();
        concepts(&cs["concept"], &mut codes);
        systems.insert(cs["url"].as_str().unwrap_or_default().to_owned(), codes);
    }
    let mut out = HashMap::new();
    for vs in files.iter().filter(|f| f["resourceType"] == "ValueSet") {
        let mut codes = Vec::new();
        for include in vs["compose"]["include"].as_array().into_iter().flatten() {
            let listed: Vec<String> =
                include["concept"].as_array().into_iter().flatten().filter_map(|c| c["code"].as_str()).map(str::to_owned).collect();
            match (listed.is_empty(), include["filter"].is_null(), include["system"].as_str().and_then(|s| systems.get(s))) {
                (false, _, _) => codes.extend(listed),
                (true, true, Some(all)) => codes.extend(all.iter().cloned()),
                _ => {}
            }
        }
        out.insert(vs["url"].as_str().unwrap_or_default().to_owned(), codes);
    }
    out
}

/// The codes a `short` lists, when it is a complete list of codes.
fn short_codes(short: &str) -> Option<Vec<String>> {
    let codes: Vec<String> = short.split('|').map(|c| c.trim().to_owned()).collect();
    let is_code = |c: &String| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch));
    (codes.len() > 1 && codes.iter().all(is_code)).then_some(codes)
}

/// Problems with the codes `topic` (R5-shaped) compares, against `defs` and `sets`.
fn problems(defs: &Official, sets: &HashMap<String, Vec<String>>, topic: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    for t in topic["resourceTrigger"].as_array().into_iter().flatten() {
        let ty = t["resource"].as_str().unwrap_or_default();
        let Some(text) = t["fhirPathCriteria"].as_str() else { continue };
        for cmp in comparisons(text) {
            let at = format!("{ty}.{}", cmp.path.join("."));
            // The element: walk the path through backbone elements and data types.
            let mut owner = ty.to_owned();
            let mut element = None;
            for name in &cmp.path {
                element = defs.element(&owner, name);
                match element.and_then(|e| e.types.first()) {
                    Some(next) => owner = next.clone(),
                    None => break,
                }
            }
            let Some(def) = element else {
                errors.push(format!("{at}: no such element"));
                continue;
            };
            let Some((strength, vs)) = def.binding.as_ref().filter(|(s, _)| s == "required" && def.types == ["code"]) else {
                continue;
            };
            let url = vs.split('|').next().unwrap_or_default();
            let Some(allowed) = sets.get(url).cloned().or_else(|| def.short.as_deref().and_then(short_codes)) else {
                errors.push(format!("{at}: cannot check {:?}: no codes known for its {strength} value set {vs}", cmp.codes));
                continue;
            };
            for code in cmp.codes.iter().filter(|c| !allowed.contains(c)) {
                errors.push(format!("{at}: '{code}' is not in {vs} ({})", allowed.join(" | ")));
            }
        }
    }
    errors
}

fn check_version(version: FhirVersion, dir: &str) {
    let Some(defs) = Official::load(dir) else { return };
    let sets = value_sets(dir);
    let mut all = Vec::new();
    for text in definitions(version) {
        let topic: Value = serde_json::from_str(text).unwrap();
        all.extend(problems(&defs, &sets, &topic).into_iter().map(|p| format!("{version} {}: {p}", topic["id"])));
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn every_code_a_builtin_compares_is_in_the_elements_required_value_set() {
    check_version(FhirVersion::R5, "r5");
    check_version(FhirVersion::R4, "r4");
    check_version(FhirVersion::R4B, "r4b");
}

#[test]
fn the_check_finds_a_code_the_version_does_not_have() {
    let Some(r5) = Official::load("r5") else { return };
    let sets = value_sets("r5");
    // request-completed-or-revoked 1.0.0 as shipped for R5, and a Task status typo.
    let topic = serde_json::json!({ "resourceTrigger": [
        { "resource": "MedicationRequest",
          "fhirPathCriteria": "%current.status in ('completed' | 'revoked' | 'entered-in-error') and (%previous.status.empty() or %previous.status != %current.status)" },
        { "resource": "Task", "fhirPathCriteria": "%current.status = 'canceled' and %previous.status != 'cancelled'" }
    ] });
    let found = problems(&r5, &sets, &topic);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("MedicationRequest.status: 'revoked' is not in"), "{found:?}");
    assert!(found[1].starts_with("Task.status: 'canceled' is not in"), "{found:?}");
}

#[test]
fn comparisons_are_read_from_current_and_previous_paths_only() {
    let text = "%current.status in ('completed' | 'cancelled') and %previous.status != 'on-hold' and \
                %current.code.coding.where(code = 'abort').exists() and %current.meta.tag.exists() and %previous.status.empty()";
    let found = comparisons(text);
    let expected = [
        Comparison { path: vec!["status".into()], codes: vec!["completed".into(), "cancelled".into()] },
        Comparison { path: vec!["status".into()], codes: vec!["on-hold".into()] },
    ];
    assert_eq!(found, expected);
}

/// Without `../shared`: the MedicationRequest codes `request-completed-or-revoked` compares
/// are each version's own (R5 and R4/R4B `medicationrequest-status`, as their
/// MedicationRequest.status definitions list them), and they are the codes for a request that
/// ended or was withdrawn.
#[test]
fn request_completed_or_revoked_compares_each_versions_own_medication_request_codes() {
    const R5_CODES: [&str; 9] = ["active", "on-hold", "ended", "stopped", "completed", "cancelled", "entered-in-error", "draft", "unknown"];
    const R4_CODES: [&str; 8] = ["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"];
    for (version, allowed, expected) in [
        (FhirVersion::R5, &R5_CODES[..], &["completed", "cancelled", "stopped", "ended", "entered-in-error"][..]),
        (FhirVersion::R4, &R4_CODES[..], &["completed", "cancelled", "stopped", "entered-in-error"][..]),
        (FhirVersion::R4B, &R4_CODES[..], &["completed", "cancelled", "stopped", "entered-in-error"][..]),
    ] {
        let topic = definitions(version)
            .iter()
            .map(|t| serde_json::from_str::<Value>(t).unwrap())
            .find(|t| t["id"] == "herald-request-completed-or-revoked")
            .unwrap();
        let trigger = topic["resourceTrigger"].as_array().unwrap().iter().find(|t| t["resource"] == "MedicationRequest").unwrap();
        let compared: Vec<String> = comparisons(trigger["fhirPathCriteria"].as_str().unwrap())
            .into_iter()
            .filter(|c| c.path == ["status"])
            .flat_map(|c| c.codes)
            .collect();
        assert_eq!(compared, expected, "{version}");
        assert!(compared.iter().all(|c| allowed.contains(&c.as_str())), "{version}: {compared:?} outside {allowed:?}");
    }
}
