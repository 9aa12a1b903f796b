//! Search values, typed by their parameter and modifier: what `owner=Organization/lab-1`,
//! `authored-on=gt2026-01-01`, `name:contains=eve` or `value-quantity=le5.4|http://unitsofmeasure.org|mg`
//! ask for.
//!
//! In: one value (between commas) of one clause. Out: a [`SearchValue`], or the reason it
//! is not valid for the parameter's type. Escapes (`\,`, `\|`, `\$`, `\\`) are honoured.

use rust_decimal::Decimal;
use unicode_normalization::UnicodeNormalization;

use super::date::{parse_range, DateRange, Prefix};
use super::params::{ParamType, SearchParam, SearchParams};
use super::query::Modifier;

#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    /// `:missing=true|false`.
    Missing(bool),
    /// A token as written (`system|code`, `code`, `|code`, `system|`), escapes kept.
    Token(String),
    /// `:text`/`:code-text` on tokens and references, already normalised.
    Text(String),
    /// `:of-type=system|code|value`.
    OfType {
        system: String,
        code: String,
        value: String,
    },
    /// `:identifier=system|value` on a reference, as a token.
    Identifier(String),
    /// A reference as written, with `:[type]` folded in (`Patient/1` for `subject:Patient=1`).
    Reference(String),
    /// A string: normalised (case and accents folded) unless `:exact`.
    String(String),
    Uri(String),
    Date {
        prefix: Prefix,
        range: DateRange,
    },
    Number {
        prefix: Prefix,
        value: Decimal,
    },
    Quantity {
        prefix: Prefix,
        value: Decimal,
        system: Option<String>,
        code: Option<String>,
    },
    /// `:in`/`:not-in`/`:above`/`:below` on a token: a ValueSet or code-system url.
    ValueSet(String),
    /// One value per component of a composite parameter.
    Composite(Vec<SearchValue>),
}

/// Case- and accent-insensitive form of a string (R5 string search): NFD, combining
/// marks dropped, lower-cased, whitespace runs folded.
pub fn normalize_string(text: &str) -> String {
    let stripped: String = text.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).collect();
    stripped.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Remove FHIR search escapes (`\,`, `\$`, `\|`, `\\`).
pub fn unescape(text: &str) -> String {
    super::token::unescape(text).into_owned()
}

/// Split at unescaped `sep` (`|` in quantities and of-type, `$` in composites).
pub(crate) fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == sep => {
                parts.push(text.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text.get(start..).unwrap_or(""));
    parts
}

fn decimal(text: &str) -> Result<Decimal, String> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.contains(['e', 'E']) {
        return Decimal::from_scientific(body).map_err(|_| format!("'{text}' is not a number"));
    }
    body.parse::<Decimal>().map_err(|_| format!("'{text}' is not a number"))
}

/// Parse one value of a clause on `param` with `modifier`.
pub fn parse_value(
    param: &SearchParam,
    modifier: Option<&Modifier>,
    text: &str,
    params: &'static SearchParams,
) -> Result<SearchValue, String> {
    if text.is_empty() {
        return Err("empty value".into());
    }
    match modifier {
        Some(Modifier::Missing) => {
            return match text {
                "true" => Ok(SearchValue::Missing(true)),
                "false" => Ok(SearchValue::Missing(false)),
                _ => Err(":missing takes true or false".into()),
            }
        }
        Some(Modifier::Text | Modifier::CodeText) => return Ok(SearchValue::Text(normalize_string(&unescape(text)))),
        Some(Modifier::In | Modifier::NotIn) => return Ok(SearchValue::ValueSet(unescape(text))),
        Some(Modifier::Above | Modifier::Below) if param.kind == ParamType::Token => {
            // `system|code`: subsumption in that code system.
            return match split_unescaped(text, '|').as_slice() {
                [system, code] if !system.is_empty() && !code.is_empty() => Ok(SearchValue::Token(text.to_owned())),
                _ => Err(":above and :below on a token take system|code".into()),
            };
        }
        Some(Modifier::OfType) => {
            let parts = split_unescaped(text, '|');
            return match parts.as_slice() {
                [system, code, value] if !code.is_empty() && !value.is_empty() => {
                    Ok(SearchValue::OfType { system: unescape(system), code: unescape(code), value: unescape(value) })
                }
                _ => Err(":of-type takes system|code|value".into()),
            };
        }
        Some(Modifier::Identifier) => return Ok(SearchValue::Identifier(text.to_owned())),
        _ => {}
    }
    Ok(match param.kind {
        ParamType::Token => SearchValue::Token(text.to_owned()),
        ParamType::Reference => match modifier {
            Some(Modifier::Type(ty)) if !text.contains('/') => SearchValue::Reference(format!("{ty}/{}", unescape(text))),
            _ => SearchValue::Reference(unescape(text)),
        },
        ParamType::String => match modifier {
            Some(Modifier::Exact) => SearchValue::String(unescape(text)),
            _ => SearchValue::String(normalize_string(&unescape(text))),
        },
        ParamType::Uri => SearchValue::Uri(unescape(text)),
        ParamType::Date => {
            let (prefix, rest) = Prefix::split(text);
            let range = parse_range(rest).ok_or_else(|| format!("'{rest}' is not a date, dateTime or instant"))?;
            SearchValue::Date { prefix, range }
        }
        ParamType::Number => {
            let (prefix, rest) = Prefix::split(text);
            SearchValue::Number { prefix, value: decimal(rest)? }
        }
        ParamType::Quantity => {
            let (prefix, rest) = Prefix::split(text);
            let parts = split_unescaped(rest, '|');
            let (number, system, code) = match parts.as_slice() {
                [n] => (*n, None, None),
                [n, s, c] => (*n, Some(unescape(s)).filter(|s| !s.is_empty()), Some(unescape(c)).filter(|c| !c.is_empty())),
                _ => return Err("a quantity is number, or number|system|code".into()),
            };
            SearchValue::Quantity { prefix, value: decimal(number)?, system, code }
        }
        ParamType::Composite => {
            let parts = split_unescaped(text, '$');
            if parts.len() != param.components.len() {
                return Err(format!("{} components expected, separated by $", param.components.len()));
            }
            let mut values = Vec::with_capacity(parts.len());
            for (part, component) in parts.iter().zip(&param.components) {
                let Some(inner) = params.by_url(&component.definition) else {
                    return Err(format!("component {} is not a known SearchParameter", component.definition));
                };
                values.push(parse_value(inner, None, part, params)?);
            }
            SearchValue::Composite(values)
        }
        ParamType::Special => return Err("special parameters are not supported".into()),
    })
}
