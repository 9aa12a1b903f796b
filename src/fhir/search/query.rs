//! Search strings parsed into clauses: `status:not=cancelled&owner=Organization/lab-1`,
//! URL-encoded or not, optionally prefixed by `Type?`.
//!
//! In: a resource type, a search string and a [`SearchParams`] set. Out: a [`Query`] whose
//! clauses are ANDed and whose values within a clause are ORed, each clause bound to its
//! SearchParameter, modifier and typed values; result-control parameters (`_count`, `_sort`,
//! `_include`...) are set aside for the REST layer; every problem is reported, with the
//! clause it concerns. Nothing is evaluated here (see `matcher`).

use std::borrow::Cow;

use super::params::{ParamType, SearchParam, SearchParams};
use super::types;
use super::value::{parse_value, SearchValue};

/// Parameters that shape the result rather than select resources.
pub const CONTROL_PARAMETERS: [&str; 14] = [
    "_count",
    "_offset",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_elements",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
    "_page",
    "_score",
];

/// A search modifier (`:not`, `:exact`...). `Type` is `:[type]` on a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    Missing,
    Not,
    Exact,
    Contains,
    Text,
    Identifier,
    OfType,
    In,
    NotIn,
    Above,
    Below,
    CodeText,
    Type(String),
}

impl Modifier {
    /// The modifier written after a `:`, or `None` if R5 has no such modifier.
    pub fn parse(text: &str) -> Option<Modifier> {
        Some(match text {
            "missing" => Modifier::Missing,
            "not" => Modifier::Not,
            "exact" => Modifier::Exact,
            "contains" => Modifier::Contains,
            "text" => Modifier::Text,
            "identifier" => Modifier::Identifier,
            "of-type" => Modifier::OfType,
            "in" => Modifier::In,
            "not-in" => Modifier::NotIn,
            "above" => Modifier::Above,
            "below" => Modifier::Below,
            "code-text" => Modifier::CodeText,
            ty if types::is_resource_type(ty) => Modifier::Type(ty.to_owned()),
            _ => return None,
        })
    }

    /// The modifier as written after the `:`.
    pub fn code(&self) -> &str {
        match self {
            Modifier::Missing => "missing",
            Modifier::Not => "not",
            Modifier::Exact => "exact",
            Modifier::Contains => "contains",
            Modifier::Text => "text",
            Modifier::Identifier => "identifier",
            Modifier::OfType => "of-type",
            Modifier::In => "in",
            Modifier::NotIn => "not-in",
            Modifier::Above => "above",
            Modifier::Below => "below",
            Modifier::CodeText => "code-text",
            Modifier::Type(t) => t,
        }
    }

    /// Whether R5 allows this modifier on a parameter of type `kind`.
    pub fn allowed_on(&self, kind: ParamType) -> bool {
        use ParamType as P;
        match self {
            Modifier::Missing => true,
            Modifier::Not => matches!(kind, P::Token | P::Reference | P::String | P::Uri),
            Modifier::Exact | Modifier::Contains => matches!(kind, P::String | P::Uri),
            Modifier::Text => matches!(kind, P::Token | P::Reference | P::String),
            Modifier::Identifier | Modifier::Type(_) => kind == P::Reference,
            Modifier::OfType | Modifier::In | Modifier::NotIn | Modifier::CodeText => kind == P::Token,
            Modifier::Above | Modifier::Below => matches!(kind, P::Uri | P::Token | P::Reference),
        }
    }
}

/// One `name[:modifier]=value[,value]` clause.
#[derive(Debug, Clone)]
pub struct Clause {
    pub kind: ClauseKind,
    /// The clause as written (decoded), for messages.
    pub text: String,
}

#[derive(Debug, Clone)]
pub enum ClauseKind {
    /// A parameter of the searched type with its values (ORed).
    Param { param: &'static SearchParam, modifier: Option<Modifier>, values: Vec<SearchValue> },
    /// `ref[:Type].inner=...`: some resource `ref` points to (of a type in `inner`) matches
    /// the inner clause for its type.
    Chain { param: &'static SearchParam, inner: Vec<(String, Clause)> },
    /// `_has:Source:ref:inner=...`: some `Source` whose `ref` points here matches `inner`.
    Has { source_type: String, reference: &'static SearchParam, inner: Box<Clause> },
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct Query {
    pub resource_type: String,
    /// ANDed.
    pub clauses: Vec<Clause>,
    /// Result-control parameters, decoded, in order.
    pub control: Vec<(String, String)>,
}

/// A problem with one clause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown search parameter '{name}' for {resource_type}")]
    UnknownParameter { name: String, resource_type: String },
    #[error("modifier ':{modifier}' is not allowed on {kind} parameter '{name}'")]
    Modifier { name: String, modifier: String, kind: &'static str },
    #[error("'{value}' is not a valid value for {kind} parameter '{name}': {reason}")]
    Value { name: String, value: String, kind: &'static str, reason: String },
    #[error("'{text}' is not a search clause: {reason}")]
    Syntax { text: String, reason: String },
}

impl QueryError {
    /// Unknown parameters may be ignored under `Prefer: handling=lenient`; nothing else may.
    pub fn is_unknown_parameter(&self) -> bool {
        matches!(self, QueryError::UnknownParameter { .. })
    }
}

/// Chains nest at most this deep (`subject:Patient.organization.name=...` is 2).
const MAX_CHAIN: usize = 3;
/// Longest search string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 16 * 1024;

impl Query {
    /// Parse `text` as a search on `resource_type`. Returns the query and every problem
    /// found; a clause with a problem is left out of the query.
    pub fn parse(resource_type: &str, text: &str, params: &'static SearchParams) -> (Query, Vec<QueryError>) {
        let mut query = Query { resource_type: resource_type.to_owned(), clauses: Vec::new(), control: Vec::new() };
        let mut errors = Vec::new();
        if text.len() > MAX_QUERY_LEN {
            errors.push(QueryError::Syntax { text: format!("{}...", text.get(..64).unwrap_or("")), reason: "longer than 16 KB".into() });
            return (query, errors);
        }
        let body = match text.split_once('?') {
            Some((prefix, rest)) if types::is_resource_type(prefix) || prefix.is_empty() => rest,
            _ => text,
        };
        for part in body.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode(raw_name);
            let value = decode(raw_value);
            if CONTROL_PARAMETERS.contains(&name.as_ref()) {
                query.control.push((name.into_owned(), value.into_owned()));
                continue;
            }
            match parse_clause(resource_type, &name, &value, params, 0) {
                Ok(clause) => query.clauses.push(clause),
                Err(e) => errors.push(e),
            }
        }
        (query, errors)
    }
}

/// Percent-decoding for strings that may or may not be URL-encoded: `%XX` with two hex
/// digits is decoded, anything else (a lone `%`) is kept; `+` stays `+`, as FHIR search
/// strings in topics are not form-encoded.
pub fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(text),
    }
}

/// Split a parameter value at commas not escaped with `\` (escapes are kept for the value
/// parsers, which also honour `\|` and `\$`).
pub fn split_or(value: &str) -> Vec<&str> {
    super::value::split_unescaped(value, ',')
}

fn unknown(name: &str, resource_type: &str) -> QueryError {
    QueryError::UnknownParameter { name: name.to_owned(), resource_type: resource_type.to_owned() }
}

/// Parse one clause `name=value` on `resource_type`.
fn parse_clause(resource_type: &str, name: &str, value: &str, params: &'static SearchParams, depth: usize) -> Result<Clause, QueryError> {
    let text = format!("{name}={value}");
    if depth > MAX_CHAIN {
        return Err(QueryError::Syntax { text, reason: format!("chains nest at most {MAX_CHAIN} deep") });
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        // _has:Source:ref:inner (the inner part may itself be a _has or carry a modifier).
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(reference), Some(inner_name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(QueryError::Syntax { text, reason: "_has needs _has:Type:reference:parameter".into() });
        };
        if !types::is_resource_type(source) {
            return Err(QueryError::Syntax { text, reason: format!("'{source}' is not a resource type") });
        }
        let reference_param =
            params.get(source, reference).filter(|p| p.kind == ParamType::Reference).ok_or_else(|| unknown(reference, source))?;
        let inner = parse_clause(source, inner_name, value, params, depth + 1)?;
        return Ok(Clause {
            kind: ClauseKind::Has { source_type: source.to_owned(), reference: reference_param, inner: Box::new(inner) },
            text,
        });
    }
    // A chain: `ref.inner` or `ref:Type.inner`, where the first `.` ends the reference part.
    if let Some((head, tail)) = name.split_once('.') {
        let (code, modifier) = head.split_once(':').map_or((head, None), |(c, m)| (c, Some(m)));
        let param = params.get(resource_type, code).ok_or_else(|| unknown(code, resource_type))?;
        if param.kind != ParamType::Reference {
            return Err(QueryError::Syntax { text, reason: format!("'{code}' is not a reference parameter, so it cannot be chained") });
        }
        let targets: Vec<String> = match modifier {
            Some(ty) if types::is_resource_type(ty) => vec![ty.to_owned()],
            Some(other) => return Err(QueryError::Syntax { text, reason: format!("':{other}' is not a resource type") }),
            None => param.targets.clone(),
        };
        let inner_code = tail.split(['.', ':']).next().unwrap_or(tail);
        let mut inner = Vec::new();
        for target in targets.iter().filter(|t| params.get(t, inner_code).is_some()) {
            inner.push((target.clone(), parse_clause(target, tail, value, params, depth + 1)?));
        }
        if inner.is_empty() {
            return Err(unknown(tail, &targets.join("|")));
        }
        return Ok(Clause { kind: ClauseKind::Chain { param, inner }, text });
    }
    let (code, modifier_text) = name.split_once(':').map_or((name, None), |(c, m)| (c, Some(m)));
    let param = params.get(resource_type, code).ok_or_else(|| unknown(code, resource_type))?;
    let modifier = match modifier_text {
        None => None,
        Some(m) => {
            let parsed = Modifier::parse(m).filter(|md| md.allowed_on(param.kind)).ok_or_else(|| QueryError::Modifier {
                name: code.to_owned(),
                modifier: m.to_owned(),
                kind: param.kind.code(),
            })?;
            if let Modifier::Type(t) = &parsed {
                if !param.targets.is_empty() && !param.targets.contains(t) {
                    return Err(QueryError::Modifier { name: code.to_owned(), modifier: m.to_owned(), kind: param.kind.code() });
                }
            }
            Some(parsed)
        }
    };
    let mut values = Vec::new();
    for part in split_or(value) {
        let parsed = parse_value(param, modifier.as_ref(), part, params).map_err(|reason| QueryError::Value {
            name: code.to_owned(),
            value: part.to_owned(),
            kind: param.kind.code(),
            reason,
        })?;
        values.push(parsed);
    }
    Ok(Clause { kind: ClauseKind::Param { param, modifier, values }, text })
}

/// One filter read from a backport filter string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterCriterion {
    pub resource_type: Option<String>,
    pub parameter: String,
    pub modifier: Option<String>,
    /// The comparator, when the value starts with one and the parameter is ordered; the caller
    /// decides (here it stays part of `value`).
    pub value: String,
}

/// Read the filter strings of the R4/R4B Subscriptions backport, in all three published forms:
/// `param=value`, `Type.param=value`, and `Type?param=value&param2=value2` (URL-encoded or
/// not). Each `&` part is one filter; the `Type` applies to all of them.
pub fn parse_filter_criteria(text: &str) -> Result<Vec<FilterCriterion>, String> {
    let (resource_type, body) = match text.split_once('?') {
        Some((ty, rest)) if types::is_resource_type(ty) => (Some(ty.to_owned()), rest),
        Some((ty, _)) => return Err(format!("'{ty}' is not a resource type")),
        None => (None, text),
    };
    let mut out = Vec::new();
    for part in body.split('&').filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!("'{part}' is not name=value"));
        };
        let name = decode(name);
        let (ty, name) = match name.split_once('.') {
            Some((ty, rest)) if resource_type.is_none() && types::is_resource_type(ty) => (Some(ty.to_owned()), rest.to_owned()),
            _ => (resource_type.clone(), name.into_owned()),
        };
        let (parameter, modifier) = match name.split_once(':') {
            Some((p, m)) => (p.to_owned(), Some(m.to_owned())),
            None => (name, None),
        };
        if parameter.is_empty() {
            return Err(format!("'{part}' has no parameter name"));
        }
        out.push(FilterCriterion { resource_type: ty, parameter, modifier, value: decode(value).into_owned() });
    }
    if out.is_empty() {
        return Err("no filter in the string".into());
    }
    Ok(out)
}
