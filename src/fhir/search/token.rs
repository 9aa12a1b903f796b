//! Token search: equality of coded values with a search value, as R5 search defines it.
//!
//! In: the values a token parameter selected and one search value. Out: match or not, or
//! the index keys that give the same answer. Values are recognised by shape, because the
//! evaluator hands over plain JSON:
//! - string (code, id, uri, string): a code without a system;
//! - boolean: the code `true` or `false`, without a system;
//! - CodeableConcept (`coding`): each Coding; CodeableReference (`concept`): its concept;
//! - Coding or Quantity (`code`): `system` and `code`;
//! - Identifier (`value`): `system` and `value`;
//! - ContactPoint (`value`, `system` one of phone|fax|email|pager|url|sms|other): the
//!   value, without a system (R5 gives ContactPoint no token system).
//!
//! Search values, all of them indexable: `code` (any system), `system|code`, `|code` (no
//! system), `system|` (any code in the system). `\|`, `\,`, `\$` and `\\` are escapes.
//! Matching is exact and case-sensitive. A `code` element's implicit system (from its
//! binding) is not known here, so `system|code` does not match plain codes; `code` and
//! `|code` do. Modifiers (`:not`, `:text`, `:in`, `:of-type`, ...) are not handled here.

use serde_json::Value;
use std::borrow::Cow;

/// ContactPoint.system codes: an object with `value` and one of these is a ContactPoint.
const CONTACT_POINT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

/// One coded value: a system and a code, either possibly absent.
#[derive(Debug, Clone, Copy)]
struct Coded<'a> {
    system: Option<&'a str>,
    code: Option<&'a str>,
}

fn non_empty(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn collect<'a>(value: &'a Value, out: &mut Vec<Coded<'a>>) {
    match value {
        Value::String(code) if !code.is_empty() => out.push(Coded { system: None, code: Some(code) }),
        Value::Bool(b) => out.push(Coded { system: None, code: Some(if *b { "true" } else { "false" }) }),
        Value::Object(map) => {
            if let Some(codings) = map.get("coding") {
                for coding in codings.as_array().into_iter().flatten() {
                    if coding.is_object() {
                        collect(coding, out);
                    }
                }
            } else if let Some(concept @ Value::Object(_)) = map.get("concept") {
                collect(concept, out);
            } else if map.contains_key("code") {
                out.push(Coded { system: non_empty(map.get("system")), code: non_empty(map.get("code")) });
            } else if let Some(value) = non_empty(map.get("value")) {
                let system = non_empty(map.get("system"));
                let contact = system.is_some_and(|s| CONTACT_POINT_SYSTEMS.contains(&s));
                out.push(Coded { system: if contact { None } else { system }, code: Some(value) });
            }
        }
        _ => {}
    }
}

/// The `(system, code)` pairs of the coded values among `values` (shapes as above).
pub(crate) fn codings<'a>(values: &[&'a Value]) -> Vec<(Option<&'a str>, Option<&'a str>)> {
    coded(values).into_iter().map(|c| (c.system, c.code)).collect()
}

fn coded<'a>(values: &[&'a Value]) -> Vec<Coded<'a>> {
    let mut out = Vec::new();
    for value in values {
        collect(value, &mut out);
    }
    out
}

/// A parsed token search value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query<'q> {
    /// `code`
    Code(Cow<'q, str>),
    /// `|code`
    NoSystem(Cow<'q, str>),
    /// `system|`
    System(Cow<'q, str>),
    /// `system|code`
    Both(Cow<'q, str>, Cow<'q, str>),
}

fn parse(query: &str) -> Option<Query<'_>> {
    let split = unescaped_bar(query);
    let (system, code) = match split {
        Some(at) => (query.get(..at), query.get(at + 1..)),
        None => (None, Some(query)),
    };
    let system = system.map(unescape).filter(|s| !s.is_empty());
    let code = code.map(unescape).filter(|c| !c.is_empty());
    match (split.is_some(), system, code) {
        (false, _, Some(code)) => Some(Query::Code(code)),
        (true, None, Some(code)) => Some(Query::NoSystem(code)),
        (true, Some(system), None) => Some(Query::System(system)),
        (true, Some(system), Some(code)) => Some(Query::Both(system, code)),
        _ => None,
    }
}

/// Byte offset of the first `|` not preceded by an escaping backslash.
fn unescaped_bar(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '|' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Remove FHIR search escapes (`\,`, `\$`, `\|`, `\\`); a trailing lone backslash stays.
pub(crate) fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // A trailing lone backslash stands for itself.
            out.push(chars.next().unwrap_or('\\'));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escape `\` and `|` so that keys split unambiguously at their one bare `|`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

/// True if any of `values` matches the token search value `query`.
pub fn token_matches(values: &[&Value], query: &str) -> bool {
    let Some(query) = parse(query) else {
        return false;
    };
    coded(values).iter().any(|c| match &query {
        Query::Code(code) => c.code == Some(code),
        Query::NoSystem(code) => c.system.is_none() && c.code == Some(code),
        Query::System(system) => c.system == Some(system),
        Query::Both(system, code) => c.system == Some(system) && c.code == Some(code),
    })
}

/// Index keys for `values`: `token_matches(values, q)` is true exactly when
/// `normalize_token_query(q)` is one of these keys. Sorted, without duplicates.
pub fn token_keys(values: &[&Value]) -> Vec<String> {
    let mut keys = Vec::new();
    for Coded { system, code } in coded(values) {
        let system = system.map(escape);
        if let Some(code) = code.map(escape) {
            keys.push(match &system {
                Some(system) => format!("{system}|{code}"),
                None => format!("|{code}"),
            });
            keys.push(code);
        }
        if let Some(system) = system {
            keys.push(format!("{system}|"));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The index key for one token search value; `None` when it can match nothing.
pub fn normalize_token_query(query: &str) -> Option<String> {
    Some(match parse(query)? {
        Query::Code(code) => escape(&code),
        Query::NoSystem(code) => format!("|{}", escape(&code)),
        Query::System(system) => format!("{}|", escape(&system)),
        Query::Both(system, code) => format!("{}|{}", escape(&system), escape(&code)),
    })
}
