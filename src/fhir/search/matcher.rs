//! Does a resource satisfy a search clause? The one place FHIR search semantics are decided,
//! for REST search, `queryCriteria` and `filterBy` alike.
//!
//! In: a [`Clause`], the resource (type and JSON) and a [`SearchContext`] that answers what
//! needs data beyond the resource: chained references, `_has`, and ValueSets for `:in`.
//! Out: true or false, or a [`SearchError`] when the parameter cannot be evaluated. The
//! values a parameter selects come from its FHIRPath expression; each type then compares
//! them with the search values as R5 search defines (token, reference, string, uri, date,
//! number, quantity, composite; with `:missing`, `:not`, `:exact`, `:contains`, `:text`,
//! `:of-type`, `:identifier`, `:[type]`, `:in`, `:not-in`, `:above`, `:below`).

use rust_decimal::Decimal;
use serde_json::Value;

use super::date::{compare_ranges, parse_range, DateRange, Prefix};
use super::params::{ParamType, SearchParam};
use super::query::{Clause, ClauseKind, Modifier};
use super::value::{normalize_string, SearchValue};
use super::{reference_matches, token_matches, SearchError};
use crate::fhir::fhirpath::Env;

/// A code of a ValueSet: its system (if any) and the code.
pub type Code = (Option<String>, String);

/// What matching needs beyond the resource itself.
pub trait SearchContext {
    /// Herald's own base URL, so that absolute references to it count as local.
    fn base_url(&self) -> &str;
    /// Now, in milliseconds since the epoch (for the `ap` prefix).
    fn now_millis(&self) -> i64;
    /// The current state of the resource a local reference points to.
    fn resolve(&self, reference: &str) -> Option<Value>;
    /// Resources of `source_type` whose reference parameter `param` points at `target`
    /// (`Type/id`), for `_has`.
    fn referencing(&self, source_type: &str, param: &SearchParam, target: &str) -> Result<Vec<Value>, SearchError>;
    /// The codes of a ValueSet Herald holds, as `(system, code)`: `Ok(None)` if unknown,
    /// `Err` if it cannot be expanded without a terminology server.
    fn value_set(&self, url: &str) -> Result<Option<Vec<Code>>, String>;

    /// The hierarchy of a CodeSystem Herald holds, for `:above`/`:below` on tokens: `Ok(None)`
    /// if unknown.
    fn code_system(&self, _url: &str) -> Result<Option<CodeHierarchy>, String> {
        Ok(None)
    }
}

/// Which codes of a code system sit under which (from nested `concept`s and `parent`
/// properties).
#[derive(Debug, Clone, Default)]
pub struct CodeHierarchy {
    /// code -> its parents.
    pub parents: std::collections::HashMap<String, Vec<String>>,
}

impl CodeHierarchy {
    /// Read a CodeSystem resource's concepts.
    pub fn from_code_system(cs: &Value) -> CodeHierarchy {
        fn walk(concepts: &Value, parent: Option<&str>, h: &mut CodeHierarchy, depth: usize) {
            for c in concepts.as_array().into_iter().flatten() {
                let Some(code) = c.get("code").and_then(Value::as_str) else { continue };
                let entry = h.parents.entry(code.to_owned()).or_default();
                if let Some(p) = parent {
                    entry.push(p.to_owned());
                }
                for prop in c.get("property").and_then(Value::as_array).into_iter().flatten() {
                    if prop.get("code").and_then(Value::as_str) == Some("parent") {
                        if let Some(p) = prop.get("valueCode").and_then(Value::as_str) {
                            entry.push(p.to_owned());
                        }
                    }
                }
                if depth < 32 {
                    if let Some(children) = c.get("concept") {
                        walk(children, Some(code), h, depth + 1);
                    }
                }
            }
        }
        let mut h = CodeHierarchy::default();
        if let Some(concepts) = cs.get("concept") {
            walk(concepts, None, &mut h, 0);
        }
        h
    }

    /// Whether `ancestor` is `code` or one of its ancestors (bounded walk; cycles are safe).
    pub fn subsumes(&self, ancestor: &str, code: &str) -> bool {
        let mut seen = std::collections::HashSet::new();
        let mut frontier = vec![code];
        while let Some(c) = frontier.pop() {
            if c == ancestor {
                return true;
            }
            if seen.len() > 10_000 || !seen.insert(c) {
                continue;
            }
            frontier.extend(self.parents.get(c).into_iter().flatten().map(String::as_str));
        }
        false
    }
}

/// A context with no data beyond the resource: chains, `_has` and `:in` find nothing.
pub struct NoContext<'b> {
    pub base_url: &'b str,
}

impl SearchContext for NoContext<'_> {
    fn base_url(&self) -> &str {
        self.base_url
    }

    fn now_millis(&self) -> i64 {
        crate::fhir::instant::now_millis()
    }

    fn resolve(&self, _reference: &str) -> Option<Value> {
        None
    }

    fn referencing(&self, _source_type: &str, _param: &SearchParam, _target: &str) -> Result<Vec<Value>, SearchError> {
        Ok(Vec::new())
    }

    fn value_set(&self, _url: &str) -> Result<Option<Vec<Code>>, String> {
        Ok(None)
    }
}

fn unsupported(param: &SearchParam, what: &str) -> SearchError {
    SearchError::Unsupported { url: param.url.clone(), what: what.to_owned() }
}

/// Does `resource` (of `resource_type`) satisfy `clause`?
pub fn clause_matches(clause: &Clause, resource_type: &str, resource: &Value, ctx: &dyn SearchContext) -> Result<bool, SearchError> {
    match &clause.kind {
        ClauseKind::Param { param, modifier, values } => {
            let selected = param.values(resource_type, resource)?;
            param_matches(param, modifier.as_ref(), values, &selected, ctx)
        }
        ClauseKind::Chain { param, inner } => {
            for node in param.values(resource_type, resource)? {
                let Some(reference) = node.get("reference").and_then(Value::as_str).or_else(|| node.as_str()) else { continue };
                let Some(target) = ctx.resolve(reference) else { continue };
                let Some(ty) = target.get("resourceType").and_then(Value::as_str) else { continue };
                if let Some((_, inner_clause)) = inner.iter().find(|(t, _)| t == ty) {
                    if clause_matches(inner_clause, ty, &target, ctx)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        ClauseKind::Has { source_type, reference, inner } => {
            let Some(id) = resource.get("id").and_then(Value::as_str) else { return Ok(false) };
            for source in ctx.referencing(source_type, reference, &format!("{resource_type}/{id}"))? {
                if clause_matches(inner, source_type, &source, ctx)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// Do the values `param` selected satisfy any of `values` (ORed) under `modifier`?
pub fn param_matches(
    param: &SearchParam,
    modifier: Option<&Modifier>,
    values: &[SearchValue],
    selected: &[&Value],
    ctx: &dyn SearchContext,
) -> Result<bool, SearchError> {
    if let Some(Modifier::Missing) = modifier {
        return Ok(values.iter().any(|v| matches!(v, SearchValue::Missing(missing) if *missing == selected.is_empty())));
    }
    // `:not` and `:not-in` are "none of the values match" (and match resources without any).
    let negated = matches!(modifier, Some(Modifier::Not | Modifier::NotIn));
    let mut any = false;
    for value in values {
        if one_matches(param, modifier, value, selected, ctx)? {
            any = true;
            break;
        }
    }
    Ok(any != negated)
}

fn one_matches(
    param: &SearchParam,
    modifier: Option<&Modifier>,
    value: &SearchValue,
    selected: &[&Value],
    ctx: &dyn SearchContext,
) -> Result<bool, SearchError> {
    Ok(match value {
        SearchValue::Missing(_) => false,
        SearchValue::Token(q) if matches!(modifier, Some(Modifier::Above | Modifier::Below)) => {
            let (system, code) = q.split_once('|').unwrap_or(("", q.as_str()));
            let Some(hierarchy) = ctx.code_system(system).map_err(|why| unsupported(param, &why))? else {
                return Err(unsupported(param, &format!("subsumption in {system}, a code system Herald does not hold,")));
            };
            let below = matches!(modifier, Some(Modifier::Below));
            super::token::codings(selected).into_iter().any(|(s, c)| {
                s == Some(system) && c.is_some_and(|c| if below { hierarchy.subsumes(code, c) } else { hierarchy.subsumes(c, code) })
            })
        }
        SearchValue::Token(q) => token_matches(selected, q),
        SearchValue::Identifier(q) => {
            let identifiers: Vec<&Value> = selected.iter().filter_map(|r| r.get("identifier")).collect();
            token_matches(&identifiers, q)
        }
        SearchValue::Text(q) => texts(selected).iter().any(|t| normalize_string(t).starts_with(q.as_str())),
        SearchValue::OfType { system, code, value } => selected.iter().any(|id| {
            id.get("value").and_then(Value::as_str) == Some(value.as_str())
                && id.pointer("/type/coding").and_then(Value::as_array).is_some_and(|codings| {
                    codings.iter().any(|c| {
                        c.get("system").and_then(Value::as_str) == Some(system.as_str())
                            && c.get("code").and_then(Value::as_str) == Some(code.as_str())
                    })
                })
        }),
        SearchValue::ValueSet(url) => {
            let codes = ctx.value_set(url).map_err(|why| unsupported(param, &why))?;
            let Some(codes) = codes else {
                return Err(unsupported(param, &format!("ValueSet {url} is not known to Herald")));
            };
            codes.iter().any(|(system, code)| {
                let q = match system {
                    Some(s) => format!("{}|{}", s.replace('|', "\\|"), code.replace('|', "\\|")),
                    None => code.replace('|', "\\|"),
                };
                token_matches(selected, &q)
            })
        }
        SearchValue::Reference(q) => match modifier {
            // On canonicals (`_profile`, `instantiates-canonical`...) these compare the url
            // as a path, like `uri`; a version suffix is ignored.
            Some(Modifier::Above | Modifier::Below) => selected
                .iter()
                .filter_map(|v| v.as_str().or_else(|| v.get("reference").and_then(Value::as_str)))
                .map(|u| u.split('|').next().unwrap_or(u))
                .any(|u| if matches!(modifier, Some(Modifier::Below)) { u.starts_with(q.as_str()) } else { q.starts_with(u) }),
            _ => reference_matches(selected, q, ctx.base_url()),
        },
        SearchValue::String(q) => {
            let strings = strings(selected);
            match modifier {
                Some(Modifier::Exact) => strings.contains(&q.as_str()),
                Some(Modifier::Contains) => strings.iter().any(|s| normalize_string(s).contains(q.as_str())),
                _ => strings.iter().any(|s| normalize_string(s).starts_with(q.as_str())),
            }
        }
        SearchValue::Uri(q) => selected.iter().filter_map(|v| v.as_str()).any(|u| match modifier {
            Some(Modifier::Below) => u.starts_with(q.as_str()),
            Some(Modifier::Above) => q.starts_with(u),
            Some(Modifier::Contains) => u.contains(q.as_str()),
            _ => u == q,
        }),
        SearchValue::Date { prefix, range } => {
            let now = ctx.now_millis();
            date_ranges(selected).iter().any(|target| compare_ranges(*prefix, *range, *target, now))
        }
        SearchValue::Number { prefix, value } => numbers(selected).iter().any(|n| compare_number(*prefix, *value, *n)),
        SearchValue::Quantity { prefix, value, system, code } => selected.iter().any(|q| {
            let Some(n) = q.get("value").and_then(number_of) else { return false };
            let unit_ok = match (system, code) {
                (None, None) => true,
                (Some(s), Some(c)) => {
                    q.get("system").and_then(Value::as_str) == Some(s.as_str()) && q.get("code").and_then(Value::as_str) == Some(c.as_str())
                }
                (None, Some(c)) => {
                    q.get("code").and_then(Value::as_str) == Some(c.as_str()) || q.get("unit").and_then(Value::as_str) == Some(c.as_str())
                }
                (Some(s), None) => q.get("system").and_then(Value::as_str) == Some(s.as_str()),
            };
            unit_ok && compare_number(*prefix, *value, n)
        }),
        SearchValue::Composite(parts) => composite_matches(param, parts, selected, ctx)?,
    })
}

/// Strings a string parameter selected: primitives, and every string inside HumanName,
/// Address and other complex values. The search index keys string parameters by these
/// same strings, so the two cannot disagree.
pub fn strings<'a>(selected: &[&'a Value]) -> Vec<&'a str> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>, depth: usize) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) if depth < 4 => items.iter().for_each(|i| walk(i, out, depth + 1)),
            Value::Object(map) if depth < 4 => {
                for (k, child) in map {
                    if k != "use" && k != "period" && k != "extension" && k != "id" {
                        walk(child, out, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for v in selected {
        walk(v, &mut out, 0);
    }
    out
}

/// Display texts of coded values and references, for `:text`.
fn texts<'a>(selected: &[&'a Value]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for v in selected {
        for key in ["text", "display"] {
            if let Some(t) = v.get(key).and_then(Value::as_str) {
                out.push(t);
            }
        }
        for coding in v.get("coding").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = coding.get("display").and_then(Value::as_str) {
                out.push(t);
            }
        }
        if let Some(t) = v.pointer("/concept/text").and_then(Value::as_str) {
            out.push(t);
        }
    }
    out
}

/// Ranges of dates, dateTimes, instants, Periods and Timing events: what a date parameter
/// matches here and what the store's search index keeps (`store::index::extract`).
pub fn date_ranges(selected: &[&Value]) -> Vec<DateRange> {
    let mut out = Vec::new();
    for v in selected {
        match v {
            Value::String(s) => out.extend(parse_range(s)),
            Value::Object(map) if map.contains_key("start") || map.contains_key("end") => {
                let start = map.get("start").and_then(Value::as_str).and_then(parse_range).map_or(i64::MIN, |r| r.start);
                let end = map.get("end").and_then(Value::as_str).and_then(parse_range).map_or(i64::MAX, |r| r.end);
                out.push(DateRange::new(start, end));
            }
            Value::Object(map) => {
                for event in map.get("event").and_then(Value::as_array).into_iter().flatten() {
                    out.extend(event.as_str().and_then(parse_range));
                }
            }
            _ => {}
        }
    }
    out
}

fn number_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            text.parse::<Decimal>().ok().or_else(|| Decimal::from_scientific(&text).ok())
        }
        _ => None,
    }
}

fn numbers(selected: &[&Value]) -> Vec<Decimal> {
    selected.iter().filter_map(|v| number_of(v).or_else(|| v.get("value").and_then(number_of))).collect()
}

/// R5 number search: `eq` means within the precision the value was written with
/// (`100` is [99.5, 100.5)); the other prefixes compare values.
fn compare_number(prefix: Prefix, search: Decimal, target: Decimal) -> bool {
    let half = Decimal::new(5, search.scale().saturating_add(1));
    let (low, high) = (search - half, search + half);
    let within = low <= target && target < high;
    match prefix {
        Prefix::Eq => within,
        Prefix::Ne => !within,
        Prefix::Gt | Prefix::Sa => target > search,
        Prefix::Lt | Prefix::Eb => target < search,
        Prefix::Ge => target >= search,
        Prefix::Le => target <= search,
        Prefix::Ap => {
            let slack = (search.abs() / Decimal::TEN).max(half);
            (search - slack) <= target && target <= (search + slack)
        }
    }
}

/// A composite matches when one item its expression selects satisfies every component.
fn composite_matches(
    param: &SearchParam,
    parts: &[SearchValue],
    selected: &[&Value],
    ctx: &dyn SearchContext,
) -> Result<bool, SearchError> {
    let compiled = param.component_expressions().map_err(|why| unsupported(param, &why))?;
    let params = super::SearchParams::current()?;
    for item in selected {
        let mut all = true;
        for ((component, expr), part) in param.components.iter().zip(compiled).zip(parts) {
            let Some(inner) = params.by_url(&component.definition) else {
                return Err(unsupported(param, &format!("component {} is unknown", component.definition)));
            };
            let outputs = expr.evaluate(&Env::new(Some(item))).map_err(|e| unsupported(param, &e.to_string()))?;
            let values: Vec<&Value> = outputs.iter().filter_map(|o| o.node()).collect();
            if !one_matches(inner, None, part, &values, ctx)? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `kind` values can be answered by an index key lookup (equality on token and
/// reference, without modifiers other than `:[type]`).
pub fn is_indexable(kind: ParamType, modifier: Option<&Modifier>) -> bool {
    matches!(kind, ParamType::Token | ParamType::Reference) && matches!(modifier, None | Some(Modifier::Type(_)))
}
