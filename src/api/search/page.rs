//! Result control: `_count`, `_sort`, `_total`, `_summary`, `_elements`, `_include`,
//! `_revinclude` and Herald's page cursor `_page`.
//!
//! In: the control parameters `Query::parse` set aside (plus the `:iterate` includes the
//! handler took out first). Out: `Options`, and the problems found, each marked as an unknown
//! or unsupported parameter (which `Prefer: handling=lenient` may ignore) or an invalid value.
//! The cursor is the (sort key, id) of the last (or first) entry of a page, not an offset, so a
//! page link keeps meaning the same place in the order while resources are written; `_page`
//! carries it opaque (`encode_cursor`), and anything Herald did not make is 400.

use std::cmp::Ordering;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::fhir::search::date::parse_range;
use crate::fhir::search::include::parse_directive;
pub use crate::fhir::search::include::Include;
use crate::fhir::search::matcher::date_ranges;
use crate::fhir::search::{ParamType, SearchParam, SearchParams};
use crate::fhir::{Issue, IssueType};

pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Total {
    Default,
    None,
    Estimate,
    Accurate,
}

#[derive(Clone, Debug)]
pub enum SortBy {
    LastUpdated,
    Id,
    Date(&'static SearchParam),
    Token(&'static SearchParam),
}

#[derive(Clone, Debug)]
pub struct SortField {
    pub by: SortBy,
    pub desc: bool,
    /// As written, for links.
    pub text: String,
}

/// One component of a sort key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortValue {
    Num(i64),
    Str(String),
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The page ends before this position (a `previous` link) rather than starting after it.
    pub before: bool,
    pub key: Vec<SortValue>,
    pub id: String,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub count: usize,
    pub sort: Vec<SortField>,
    pub total: Total,
    pub summary_count: bool,
    /// `_summary` other than `count`: which part of each resource is shown.
    pub summary: Summary,
    pub elements: Option<Vec<String>>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub cursor: Option<Cursor>,
}

/// `_summary=data|true|text` (`false` and absence: the whole resource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summary {
    Full,
    /// Everything but `text`.
    Data,
    /// The isSummary and mandatory elements, recursively (`fhir::model::summary`).
    True,
    /// `text`, `id`, `meta` and the top-level mandatory elements.
    Text,
}

/// A problem with a control parameter.
pub struct Problem {
    /// Unknown or unsupported: ignorable under lenient handling.
    pub ignorable: bool,
    pub issue: Issue,
}

fn problem(ignorable: bool, name: &str, text: String) -> Problem {
    let code = if ignorable { IssueType::NotSupported } else { IssueType::Value };
    Problem { ignorable, issue: Issue::at(code, name, text) }
}

fn parse_include(ty: &str, name: &str, value: &str, reverse: bool, params: &'static SearchParams) -> Result<Include, Problem> {
    let iterate = name.ends_with(":iterate");
    let inc =
        parse_directive(value, reverse, iterate, params).map_err(|e| problem(e.unsupported, name, format!("{name}={}", e.message)))?;
    if !reverse && inc.source != ty && !iterate {
        return Err(problem(false, name, format!("{name}={value}: {} is not the searched type {ty} (use :iterate)", inc.source)));
    }
    Ok(inc)
}

/// Parses result-control parameters for a search on `ty`.
pub fn parse(ty: &str, control: &[(String, String)], params: &'static SearchParams) -> (Options, Vec<Problem>) {
    let mut o = Options {
        count: DEFAULT_COUNT,
        sort: Vec::new(),
        total: Total::Default,
        summary_count: false,
        summary: Summary::Full,
        elements: None,
        includes: Vec::new(),
        revincludes: Vec::new(),
        cursor: None,
    };
    let mut problems = Vec::new();
    for (name, value) in control {
        match name.as_str() {
            "_count" => match value.parse::<usize>() {
                Ok(n) => o.count = n.min(MAX_COUNT),
                Err(_) => problems.push(problem(false, name, format!("_count={value} is not a number"))),
            },
            "_total" => match value.as_str() {
                "none" => o.total = Total::None,
                "estimate" => o.total = Total::Estimate,
                "accurate" => o.total = Total::Accurate,
                _ => problems.push(problem(false, name, format!("_total={value}: none, estimate or accurate"))),
            },
            "_summary" => match value.as_str() {
                "count" => o.summary_count = true,
                "data" => o.summary = Summary::Data,
                "true" => o.summary = Summary::True,
                "text" => o.summary = Summary::Text,
                "false" => o.summary = Summary::Full,
                _ => problems.push(problem(false, name, format!("_summary={value}: true, text, data, count or false"))),
            },
            "_elements" => {
                let names = value
                    .split(',')
                    .map(|e| e.trim())
                    .map(|e| e.strip_prefix(&format!("{ty}.")).unwrap_or(e).to_owned())
                    .filter(|e| !e.is_empty())
                    .collect();
                o.elements = Some(names);
            }
            "_sort" => {
                for field in value.split(',').filter(|f| !f.is_empty()) {
                    let (desc, code) = field.strip_prefix('-').map_or((false, field), |c| (true, c));
                    let by = match code {
                        "_lastUpdated" => SortBy::LastUpdated,
                        "_id" => SortBy::Id,
                        _ => match params.get(ty, code) {
                            Some(p) if p.kind == ParamType::Date => SortBy::Date(p),
                            Some(p) if p.kind == ParamType::Token => SortBy::Token(p),
                            Some(_) => {
                                problems.push(problem(
                                    true,
                                    name,
                                    format!("_sort={code}: only _lastUpdated, _id, date and token parameters sort"),
                                ));
                                continue;
                            }
                            None => {
                                problems.push(problem(true, name, format!("_sort={code}: unknown search parameter for {ty}")));
                                continue;
                            }
                        },
                    };
                    o.sort.push(SortField { by, desc, text: field.to_owned() });
                }
            }
            "_include" | "_include:iterate" => match parse_include(ty, name, value, false, params) {
                Ok(i) => o.includes.push(i),
                Err(p) => problems.push(p),
            },
            "_revinclude" | "_revinclude:iterate" => match parse_include(ty, name, value, true, params) {
                Ok(i) => o.revincludes.push(i),
                Err(p) => problems.push(p),
            },
            "_page" => match decode_cursor(value) {
                Some(c) => o.cursor = Some(c),
                None => problems.push(problem(false, name, "_page is not a page link Herald made; follow the Bundle's links".into())),
            },
            "_format" | "_pretty" => {}
            _ => problems.push(problem(true, name, format!("{name} is not supported"))),
        }
    }
    // The specification gives no meaning to `_elements` beside `_summary=true|text` (each
    // chooses the elements); Herald refuses the pair rather than guess which one wins.
    if o.elements.is_some() && matches!(o.summary, Summary::True | Summary::Text) {
        problems.push(problem(false, "_elements", "_elements cannot be combined with _summary=true or _summary=text".into()));
    }
    if o.cursor.as_ref().is_some_and(|c| c.key.len() != o.sort.len()) {
        problems.push(problem(false, "_page", "_page does not belong to this _sort".into()));
        o.cursor = None;
    }
    (o, problems)
}

impl Options {
    /// Whether the order is plain id order (the index's own order).
    pub fn id_order(&self) -> bool {
        self.sort.iter().all(|f| matches!(f.by, SortBy::Id) && !f.desc)
    }
}

fn codes(selected: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for v in selected {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Bool(b) => out.push(b.to_string()),
            Value::Object(map) => {
                let codings = map.get("coding").or_else(|| map.get("concept").and_then(|c| c.get("coding")));
                for c in codings.and_then(Value::as_array).into_iter().flatten() {
                    out.extend(c.get("code").and_then(Value::as_str).map(str::to_owned));
                }
                out.extend(map.get("code").or_else(|| map.get("value")).and_then(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    out
}

/// The sort key of one resource. With several values, ascending uses the lowest and
/// descending the highest (R5 search, `_sort`).
pub fn sort_key(fields: &[SortField], ty: &str, id: &str, resource: &Value) -> Vec<SortValue> {
    fields
        .iter()
        .map(|f| match &f.by {
            SortBy::Id => SortValue::Str(id.to_owned()),
            SortBy::LastUpdated => resource
                .pointer("/meta/lastUpdated")
                .and_then(Value::as_str)
                .and_then(parse_range)
                .map_or(SortValue::Missing, |r| SortValue::Num(r.start)),
            SortBy::Date(p) => {
                let ranges = p.values(ty, resource).map(|v| date_ranges(&v)).unwrap_or_default();
                let starts = ranges.iter().map(|r| r.start);
                let pick = if f.desc { starts.max() } else { starts.min() };
                pick.map_or(SortValue::Missing, SortValue::Num)
            }
            SortBy::Token(p) => {
                let found = p.values(ty, resource).map(|v| codes(&v)).unwrap_or_default();
                let pick = if f.desc { found.into_iter().max() } else { found.into_iter().min() };
                pick.map_or(SortValue::Missing, SortValue::Str)
            }
        })
        .collect()
}

fn compare_value(a: &SortValue, b: &SortValue) -> Ordering {
    match (a, b) {
        (SortValue::Missing, SortValue::Missing) => Ordering::Equal,
        // Resources without a value sort last in ascending order.
        (SortValue::Missing, _) => Ordering::Greater,
        (_, SortValue::Missing) => Ordering::Less,
        (SortValue::Num(x), SortValue::Num(y)) => x.cmp(y),
        (SortValue::Str(x), SortValue::Str(y)) => x.cmp(y),
        (SortValue::Num(_), SortValue::Str(_)) => Ordering::Less,
        (SortValue::Str(_), SortValue::Num(_)) => Ordering::Greater,
    }
}

/// The total order of results: the sort fields, each in its direction, then the id.
pub fn compare(fields: &[SortField], a: (&[SortValue], &str), b: (&[SortValue], &str)) -> Ordering {
    for (i, f) in fields.iter().enumerate() {
        let (Some(x), Some(y)) = (a.0.get(i), b.0.get(i)) else { break };
        let o = compare_value(x, y);
        let o = if f.desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.1.cmp(b.1)
}

/// Version tag of the cursor format.
const CURSOR_FORMAT: &str = "c1";

/// The `_page` value of a cursor: opaque to clients (base64url of `["c1", "a"|"b", key, id]`).
/// It is only a position: the query comes from the link's other parameters, and every row is
/// checked against that query and the caller's access, so an edited cursor can only move the
/// position inside the same query's results.
pub fn encode_cursor(c: &Cursor) -> String {
    let key: Vec<Value> = c
        .key
        .iter()
        .map(|v| match v {
            SortValue::Num(n) => json!(n),
            SortValue::Str(s) => json!(s),
            SortValue::Missing => Value::Null,
        })
        .collect();
    let text = json!([CURSOR_FORMAT, if c.before { "b" } else { "a" }, key, c.id]).to_string();
    URL_SAFE_NO_PAD.encode(text)
}

/// Longest `_page` value accepted (ids are at most 64 characters; sort keys are short).
const MAX_CURSOR_BYTES: usize = 4096;

fn decode_cursor(text: &str) -> Option<Cursor> {
    if text.len() > MAX_CURSOR_BYTES {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let parts = v.as_array()?;
    if parts.first()?.as_str()? != CURSOR_FORMAT || parts.len() != 4 {
        return None;
    }
    let before = match parts.get(1)?.as_str()? {
        "a" => false,
        "b" => true,
        _ => return None,
    };
    let mut key = Vec::new();
    for k in parts.get(2)?.as_array()? {
        key.push(match k {
            Value::Null => SortValue::Missing,
            Value::String(s) => SortValue::Str(s.clone()),
            Value::Number(n) => SortValue::Num(n.as_i64()?),
            _ => return None,
        });
    }
    let id = parts.get(3)?.as_str()?.to_owned();
    crate::fhir::types::is_valid_id(&id).then_some(Cursor { before, key, id })
}
