//! `_include` / `_revinclude` directives and their expansion, shared by REST search (the
//! `searchset` page) and notifications (`SubscriptionTopic.notificationShape`).
//!
//! In: directives as written (`Source:param[:Target]`; `param` `*` means every reference
//! parameter of `Source`) and the resources to expand from. Out: the resources the directives
//! reach, each once, in discovery order, bounded in count and in `:iterate` rounds. Data comes
//! only through an [`IncludeSource`], so this module does no IO.
//!
//! notificationShape strings are the same directives with two spellings the R5 examples use:
//! an `_include=`/`_revinclude=` prefix (optionally `:iterate`), and a trailing
//! `&iterate=Type:param` (the spec's own example writes `Encounter:patient&iterate=Patient.link`,
//! with a dot), which adds an iterated include.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::{normalize_reference_query, reference_matches, ParamType, SearchParam, SearchParams};
use crate::fhir::types::{is_resource_type, is_valid_id};

/// `:iterate` rounds after the first.
pub const MAX_ITERATE: usize = 3;

/// One directive.
#[derive(Clone, Debug)]
pub struct Include {
    pub source: String,
    /// `None` for `*` (every reference parameter of `source`; not allowed on revinclude).
    pub param: Option<&'static SearchParam>,
    pub target: Option<String>,
    pub iterate: bool,
}

/// Why a directive was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectiveError {
    /// The parameter is unknown or unsupported (a lenient search ignores it) rather than
    /// malformed.
    pub unsupported: bool,
    pub message: String,
}

fn refuse(unsupported: bool, message: String) -> DirectiveError {
    DirectiveError { unsupported, message }
}

/// Parses `Source:param[:Target]`.
pub fn parse_directive(value: &str, reverse: bool, iterate: bool, params: &'static SearchParams) -> Result<Include, DirectiveError> {
    let mut parts = value.split(':');
    let (Some(source), Some(code)) = (parts.next(), parts.next()) else {
        return Err(refuse(false, format!("{value}: expected Type:parameter[:targetType]")));
    };
    let target = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(refuse(false, format!("{value}: expected Type:parameter[:targetType]")));
    }
    if !is_resource_type(source) || target.as_deref().is_some_and(|t| !is_resource_type(t)) {
        return Err(refuse(false, format!("{value}: not a resource type")));
    }
    let param = if code == "*" {
        None
    } else {
        match params.get(source, code) {
            Some(p) if p.kind == ParamType::Reference => Some(p),
            _ => return Err(refuse(true, format!("{value}: {code} is not a reference parameter of {source}"))),
        }
    };
    if reverse && param.is_none() {
        return Err(refuse(true, format!("{value}: a reverse include needs a named parameter")));
    }
    Ok(Include { source: source.to_owned(), param, target, iterate })
}

/// Parses one `notificationShape.include` (`reverse` false) or `.revInclude` string into its
/// directives.
pub fn parse_shape_directive(text: &str, reverse: bool, params: &'static SearchParams) -> Result<Vec<Include>, DirectiveError> {
    let mut out = Vec::new();
    for (i, part) in text.split('&').enumerate() {
        let part = part.trim();
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, v),
            None if i == 0 => ("", part),
            None => return Err(refuse(false, format!("{text}: expected name=value after '&'"))),
        };
        let (rev, iterate) = match name {
            "" => (reverse, false),
            "_include" => (false, false),
            "_include:iterate" | "iterate" => (false, true),
            "_revinclude" => (true, false),
            "_revinclude:iterate" => (true, true),
            other => return Err(refuse(false, format!("{text}: {other} is not an include directive"))),
        };
        // `Patient.link` in the R5 example stands for `Patient:link`.
        let value = if value.contains(':') { value.to_owned() } else { value.replacen('.', ":", 1) };
        out.push(parse_directive(&value, rev, iterate, params)?);
    }
    Ok(out)
}

/// What the expansion reads.
pub trait IncludeSource {
    type Error;
    fn base_url(&self) -> &str;
    /// The live resource `Type/id`, if any.
    fn load(&self, resource_type: &str, id: &str) -> Result<Option<Value>, Self::Error>;
    /// Ids of `source` resources whose `param` may reference `target` (`Type/id`): a superset
    /// is fine (each is checked), at most about `limit`.
    fn referencing(&self, source: &str, param: &SearchParam, target: &str, limit: usize) -> Result<Vec<String>, Self::Error>;
}

/// A resource the expansion reached: (type, id, resource).
pub type Found = (String, String, Value);

/// The result of [`expand`].
#[derive(Debug, Default)]
pub struct Expansion {
    pub found: Vec<Found>,
    /// Stopped at `max` resources.
    pub truncated: bool,
}

/// A reference on `base_url` (relative, absolute on the base, optionally versioned) as
/// (type, id).
pub fn local_target(reference: &str, base_url: &str) -> Option<(String, String)> {
    let own = base_url.trim_end_matches('/');
    let rest = reference.strip_prefix(own).and_then(|r| r.strip_prefix('/')).unwrap_or(reference);
    let mut parts = rest.split('/');
    let (ty, id) = (parts.next()?, parts.next()?);
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => {}
        _ => return None,
    }
    (is_resource_type(ty) && is_valid_id(id)).then(|| (ty.to_owned(), id.to_owned()))
}

fn reference_params(ty: &str, inc: &Include) -> Vec<&'static SearchParam> {
    match inc.param {
        Some(p) => vec![p],
        None => SearchParams::current()
            .map(|all| all.iter().filter(|p| p.kind == ParamType::Reference && p.applies_to(ty)).collect())
            .unwrap_or_default(),
    }
}

fn reference_strings<'v>(nodes: &[&'v Value]) -> Vec<&'v str> {
    nodes
        .iter()
        .filter_map(|n| n.as_str().or_else(|| n.get("reference").and_then(|r| r.as_str().or_else(|| r.get("reference")?.as_str()))))
        .collect()
}

/// The resources `includes` and `revincludes` reach from `seeds`, never repeating a seed or
/// each other; `:iterate` directives run again on what the previous round added, up to
/// [`MAX_ITERATE`] more rounds; at most `max` resources.
pub fn expand<S: IncludeSource>(
    src: &S,
    includes: &[Include],
    revincludes: &[Include],
    seeds: &[Found],
    max: usize,
) -> Result<Expansion, S::Error> {
    let mut out = Expansion::default();
    if includes.is_empty() && revincludes.is_empty() {
        return Ok(out);
    }
    let base = src.base_url().to_owned();
    let mut seen: HashSet<String> = seeds.iter().map(|(t, i, _)| format!("{t}/{i}")).collect();
    let mut frontier: Vec<Found> = seeds.to_vec();
    let iterates = includes.iter().chain(revincludes).any(|i| i.iterate);
    for round in 0..=MAX_ITERATE {
        let mut added: Vec<Found> = Vec::new();
        let room = max.saturating_sub(out.found.len());
        let add = |seen: &mut HashSet<String>, ty: String, id: String, r: Value, added: &mut Vec<Found>| -> bool {
            if added.len() >= room {
                return false;
            }
            if seen.insert(format!("{ty}/{id}")) {
                added.push((ty, id, r));
            }
            true
        };
        let mut full = false;
        for (ty, id, resource) in &frontier {
            for inc in includes.iter().filter(|i| (round == 0 || i.iterate) && &i.source == ty) {
                for p in reference_params(ty, inc) {
                    let Ok(nodes) = p.values(ty, resource) else { continue };
                    for reference in reference_strings(&nodes) {
                        let Some((tty, tid)) = local_target(reference, &base) else { continue };
                        if inc.target.as_ref().is_some_and(|t| t != &tty) || seen.contains(&format!("{tty}/{tid}")) {
                            continue;
                        }
                        if let Some(r) = src.load(&tty, &tid)? {
                            full |= !add(&mut seen, tty, tid, r, &mut added);
                        }
                    }
                }
            }
            for inc in revincludes.iter().filter(|i| round == 0 || i.iterate) {
                let Some(p) = inc.param else { continue };
                if inc.target.as_ref().is_some_and(|t| t != ty) {
                    continue;
                }
                let target = format!("{ty}/{id}");
                if normalize_reference_query(&target, &base).is_none() {
                    continue;
                }
                let ids: BTreeSet<String> = src.referencing(&inc.source, p, &target, max)?.into_iter().collect();
                for sid in ids {
                    if seen.contains(&format!("{}/{sid}", inc.source)) {
                        continue;
                    }
                    let Some(r) = src.load(&inc.source, &sid)? else { continue };
                    if p.values(&inc.source, &r).is_ok_and(|v| reference_matches(&v, &target, &base)) {
                        full |= !add(&mut seen, inc.source.clone(), sid, r, &mut added);
                    }
                }
            }
        }
        out.truncated |= full;
        out.found.extend(added.iter().cloned());
        if full || added.is_empty() || !iterates {
            break;
        }
        frontier = added;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> &'static SearchParams {
        SearchParams::r5().expect("official parameters load")
    }

    #[test]
    fn shape_strings_in_the_spec_examples_parse() {
        let got = parse_shape_directive("Encounter:patient&iterate=Patient.link", false, params()).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].source.as_str(), got[0].iterate), ("Encounter", false));
        assert_eq!(got[0].param.map(|p| p.code.as_str()), Some("patient"));
        assert_eq!((got[1].source.as_str(), got[1].iterate), ("Patient", true));
        assert_eq!(got[1].param.map(|p| p.code.as_str()), Some("link"));

        let rev = parse_shape_directive("Provenance:target", true, params()).expect("parses");
        assert_eq!(rev[0].param.map(|p| p.code.as_str()), Some("target"));
        let typed = parse_shape_directive("_include:iterate=Task:focus:ServiceRequest", false, params()).expect("parses");
        assert!(typed[0].iterate);
        assert_eq!(typed[0].target.as_deref(), Some("ServiceRequest"));
    }

    #[test]
    fn bad_shape_strings_are_refused_with_the_reason() {
        assert!(parse_shape_directive("Task", false, params()).is_err());
        assert!(parse_shape_directive("Task:status", false, params()).is_err_and(|e| e.unsupported));
        assert!(parse_shape_directive("Nope:focus", false, params()).is_err_and(|e| !e.unsupported));
        assert!(parse_shape_directive("Task:*", true, params()).is_err());
        assert!(parse_shape_directive("Task:focus&sort=x", false, params()).is_err());
    }

    #[test]
    fn local_targets_are_relative_absolute_or_versioned_on_our_base() {
        let base = "http://h/fhir";
        assert_eq!(local_target("Task/1", base), Some(("Task".into(), "1".into())));
        assert_eq!(local_target("http://h/fhir/Task/1/_history/2", base), Some(("Task".into(), "1".into())));
        assert_eq!(local_target("http://other/fhir/Task/1", base), None);
        assert_eq!(local_target("Task/1/extra", base), None);
    }
}
