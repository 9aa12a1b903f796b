//! Reference search: equality of Reference and canonical values with a search value.
//!
//! In: the values a reference parameter selected (Reference objects, CodeableReference
//! objects, canonical/uri strings) and one search value. Out: match or not, or the index keys
//! that give the same answer. Also owns the parsing of literal reference strings
//! (`Type/id`, `[base]/Type/id`, `.../_history/vid`) that `resolve()` uses.
//! It never dereferences anything: identity is decided from the strings alone.
//!
//! Forms of a search value (R5 search, reference parameters), all of them indexable:
//! - `Type/id`: a local resource. Data that is relative, or absolute under `base_url`,
//!   is local, so `Organization/1` and `{base_url}/Organization/1` are the same target.
//!   Data versioned as `Type/id/_history/v` matches; `Type/id/_history/v` as the search
//!   value matches only that version.
//! - `id`: a local resource of any type with that id.
//! - an absolute URL on another server: the same URL, version-independent as above.
//! - `url|version`: a canonical; `url` alone matches every version of it.
//! - anything else with `:` or `/` (`urn:uuid:...`, `http://loinc.org`): exact string.
//!
//! Not handled here: `:identifier`, `:missing`, `:above`/`:below`, chaining, and contained
//! (`#id`) references, which FHIR search does not address directly.

use serde_json::Value;

use super::types;

/// A literal reference split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Literal<'s> {
    /// The service base of an absolute reference, without the trailing `/`.
    pub base: Option<&'s str>,
    pub ty: &'s str,
    pub id: &'s str,
    pub version: Option<&'s str>,
}

/// Parse `Type/id`, `Type/id/_history/vid` or either of them under an `http(s)://` base.
/// `Type` must be an R5 resource type and ids follow the FHIR id rule (1-64 of
/// `[A-Za-z0-9\-.]`); anything else is not a literal reference.
pub(crate) fn parse_literal(text: &str) -> Option<Literal<'_>> {
    if text.contains(|c: char| c.is_whitespace() || matches!(c, '?' | '#' | '|')) {
        return None;
    }
    let mut segments = text.rsplitn(5, '/');
    let last = segments.next()?;
    let second = segments.next()?;
    let third = segments.next();
    let fourth = segments.next();

    let (ty, id, version, tail_len) = match (third, fourth) {
        (Some(id), Some(ty)) if second == "_history" && is_type(ty) && is_id(id) => {
            (ty, id, Some(last), ty.len() + id.len() + second.len() + last.len() + 3)
        }
        _ => (second, last, None, second.len() + last.len() + 1),
    };
    if !is_type(ty) || !is_id(id) || !version.is_none_or(is_id) {
        return None;
    }
    let prefix = text.get(..text.len().checked_sub(tail_len)?)?;
    let base = if prefix.is_empty() {
        None
    } else {
        let base = prefix.strip_suffix('/')?;
        let host = base.strip_prefix("https://").or_else(|| base.strip_prefix("http://"))?;
        if host.is_empty() || host.starts_with('/') {
            return None;
        }
        Some(base)
    };
    Some(Literal { base, ty, id, version })
}

fn is_type(segment: &str) -> bool {
    types::is_resource_type(segment)
}

fn is_id(segment: &str) -> bool {
    (1..=64).contains(&segment.len()) && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// What a reference value or a search value points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'s> {
    /// On this server: relative, or absolute under `base_url`.
    Local { ty: &'s str, id: &'s str, version: Option<&'s str> },
    /// On another server.
    Remote { base: &'s str, ty: &'s str, id: &'s str, version: Option<&'s str> },
    /// A bare id in a search value.
    Id(&'s str),
    /// Any other URI, compared as a string.
    Opaque(&'s str),
}

#[derive(Debug, Clone, Copy)]
struct Form<'s> {
    target: Target<'s>,
    /// The `|version` of a canonical.
    canonical_version: Option<&'s str>,
}

/// Split `url|version`, then classify the url. `is_query` allows a bare id.
fn form<'s>(text: &'s str, base_url: &str, is_query: bool) -> Option<Form<'s>> {
    let (url, canonical_version) = match text.split_once('|') {
        Some((url, version)) => (url, Some(version).filter(|v| !v.is_empty())),
        None => (text, None),
    };
    if url.is_empty() || url.starts_with('#') {
        return None;
    }
    let target = match parse_literal(url) {
        Some(literal) if literal.base.is_none_or(|b| same_base(b, base_url)) => {
            Target::Local { ty: literal.ty, id: literal.id, version: literal.version }
        }
        Some(Literal { base: Some(base), ty, id, version }) => Target::Remote { base, ty, id, version },
        _ if url.contains([':', '/']) => Target::Opaque(url),
        _ if is_query => Target::Id(url),
        // A bare word in data is not a reference to anything.
        _ => return None,
    };
    Some(Form { target, canonical_version })
}

fn same_base(found: &str, base_url: &str) -> bool {
    let own = base_url.trim_end_matches('/');
    !own.is_empty() && found == own
}

/// The string a value carries: `Reference.reference`, `CodeableReference.reference.reference`,
/// or the value itself for canonical/uri/url strings.
fn reference_text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => Some(text),
        Value::Object(map) => match map.get("reference")? {
            Value::String(text) => Some(text),
            inner @ Value::Object(_) => reference_text(inner),
            _ => None,
        },
        _ => None,
    }
}

fn value_forms<'a>(values: &'a [&'a Value], base_url: &'a str) -> impl Iterator<Item = Form<'a>> {
    values.iter().filter_map(move |v| form(reference_text(v)?, base_url, false))
}

fn matches(value: Form<'_>, query: Form<'_>) -> bool {
    if query.canonical_version.is_some() && query.canonical_version != value.canonical_version {
        return false;
    }
    let version_ok = |wanted: Option<&str>, found: Option<&str>| wanted.is_none() || wanted == found;
    match (query.target, value.target) {
        (Target::Id(id), Target::Local { id: found, .. }) => id == found,
        (Target::Local { ty, id, version }, Target::Local { ty: t, id: i, version: v }) => ty == t && id == i && version_ok(version, v),
        (Target::Remote { base, ty, id, version }, Target::Remote { base: b, ty: t, id: i, version: v }) => {
            base == b && ty == t && id == i && version_ok(version, v)
        }
        (Target::Opaque(wanted), Target::Opaque(found)) => wanted == found,
        _ => false,
    }
}

/// True if any of `values` is the target `query` names. `base_url` is Herald's own FHIR
/// base (`http://127.0.0.1:8080/fhir`), compared exactly after dropping a trailing `/`.
pub fn reference_matches(values: &[&Value], query: &str, base_url: &str) -> bool {
    let Some(query) = form(query, base_url, true) else {
        return false;
    };
    value_forms(values, base_url).any(|value| matches(value, query))
}

/// Index keys for `values`: `reference_matches(values, q, base)` is true exactly when
/// `normalize_reference_query(q, base)` is one of these keys. Sorted, without duplicates.
pub fn reference_keys(values: &[&Value], base_url: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for value in value_forms(values, base_url) {
        let mut targets = Vec::new();
        match value.target {
            Target::Local { ty, id, version } => {
                targets.push(format!("{ty}/{id}"));
                targets.push(id.to_owned());
                if let Some(v) = version {
                    targets.push(format!("{ty}/{id}/_history/{v}"));
                }
            }
            Target::Remote { base, ty, id, version } => {
                targets.push(format!("{base}/{ty}/{id}"));
                if let Some(v) = version {
                    targets.push(format!("{base}/{ty}/{id}/_history/{v}"));
                }
            }
            Target::Opaque(text) | Target::Id(text) => targets.push(text.to_owned()),
        }
        if let Some(version) = value.canonical_version {
            keys.extend(targets.iter().map(|t| format!("{t}|{version}")));
        }
        keys.extend(targets);
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The index key for one search value; `None` when the value can match nothing.
pub fn normalize_reference_query(query: &str, base_url: &str) -> Option<String> {
    let query = form(query, base_url, true)?;
    let mut key = match query.target {
        Target::Local { ty, id, version } => match version {
            Some(v) => format!("{ty}/{id}/_history/{v}"),
            None => format!("{ty}/{id}"),
        },
        Target::Remote { base, ty, id, version } => match version {
            Some(v) => format!("{base}/{ty}/{id}/_history/{v}"),
            None => format!("{base}/{ty}/{id}"),
        },
        Target::Id(text) | Target::Opaque(text) => text.to_owned(),
    };
    if let Some(version) = query.canonical_version {
        key.push('|');
        key.push_str(version);
    }
    Some(key)
}
