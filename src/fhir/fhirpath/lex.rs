//! FHIRPath lexer: expression text in, tokens with byte offsets out.
//!
//! Recognises identifiers (plain and `backtick`), strings with FHIRPath escapes, integer,
//! long (`10L`) and decimal numbers, `@` date/time literals, `$`/`%` variables, punctuation
//! and operators, and skips whitespace and both comment forms. It never interprets a token:
//! keywords, quantity units and date validity are the parser's business.

use super::error::{ErrorKind, FhirPathError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// A `backtick` identifier: never a keyword.
    Quoted(String),
    Str(String),
    /// Digits with an optional fraction, as written.
    Num(String),
    /// `10L`: digits only, the `L` dropped.
    Long(String),
    /// `@...` without the `@`: `2014-01-01`, `2014-01-01T10:00`, `T10:00`.
    DateTime(String),
    /// `$this`, `$index`, `$total` (name without the `$`).
    Dollar(String),
    /// `%resource` and friends (name without the `%`).
    Percent(String),
    Punct(&'static str),
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::Quoted(s) => format!("identifier `{s}`"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Num(s) => format!("number {s}"),
            Tok::Long(s) => format!("number {s}L"),
            Tok::DateTime(s) => format!("@{s}"),
            Tok::Dollar(s) => format!("${s}"),
            Tok::Percent(s) => format!("%{s}"),
            Tok::Punct(p) => format!("{p:?}"),
            Tok::Eof => "end of expression".to_owned(),
        }
    }
}

pub(super) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// Two-character operators first, so `<=` is not read as `<`.
const PUNCTUATION: [&str; 22] =
    ["!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "|", "=", "~", "<", ">", "+", "-", "*", "/", "&"];

pub(super) fn lex(source: &str) -> Result<Vec<Token>, FhirPathError> {
    let mut tokens = Vec::new();
    let mut rest = source;
    loop {
        let trimmed = rest.trim_start();
        let pos = source.len() - trimmed.len();
        rest = trimmed;
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').and_then(|i| after.get(i..)).unwrap_or("");
            continue;
        }
        if let Some(after) = rest.strip_prefix("/*") {
            let end = after.find("*/").ok_or_else(|| FhirPathError::syntax(pos, ErrorKind::Unterminated))?;
            rest = after.get(end + 2..).unwrap_or("");
            continue;
        }
        let Some(first) = rest.chars().next() else {
            tokens.push(Token { tok: Tok::Eof, pos });
            return Ok(tokens);
        };
        let (tok, len) = if first.is_alphabetic() || first == '_' {
            let len = word_len(rest);
            (Tok::Ident(rest.get(..len).unwrap_or("").to_owned()), len)
        } else if first.is_ascii_digit() {
            let len = number_len(rest);
            let text = rest.get(..len).unwrap_or("").to_owned();
            let after = rest.get(len..).unwrap_or("");
            if after.starts_with('L') && !text.contains('.') && !after.get(1..).is_some_and(|a| a.starts_with(is_word_char)) {
                (Tok::Long(text), len + 1)
            } else {
                (Tok::Num(text), len)
            }
        } else if first == '\'' || first == '`' {
            let (text, len) = quoted(rest, first, pos)?;
            let tok = if first == '\'' { Tok::Str(text) } else { Tok::Quoted(text) };
            (tok, len)
        } else if first == '$' || first == '%' {
            let tail = rest.get(1..).unwrap_or("");
            let (name, len) = if tail.starts_with('`') || tail.starts_with('\'') {
                let quote = if tail.starts_with('`') { '`' } else { '\'' };
                let (text, len) = quoted(tail, quote, pos + 1)?;
                (text, len + 1)
            } else {
                let len = word_len(tail);
                (tail.get(..len).unwrap_or("").to_owned(), len + 1)
            };
            if name.is_empty() {
                return Err(FhirPathError::syntax(pos, ErrorKind::UnexpectedChar(first)));
            }
            let tok = if first == '$' { Tok::Dollar(name) } else { Tok::Percent(name) };
            (tok, len)
        } else if first == '@' {
            let body = rest.get(1..).unwrap_or("");
            let len = datetime_len(body);
            if len == 0 {
                return Err(FhirPathError::syntax(pos, ErrorKind::UnexpectedChar('@')));
            }
            (Tok::DateTime(body.get(..len).unwrap_or("").to_owned()), len + 1)
        } else if let Some(p) = PUNCTUATION.iter().find(|p| rest.starts_with(**p)) {
            (Tok::Punct(p), p.len())
        } else {
            return Err(FhirPathError::syntax(pos, ErrorKind::UnexpectedChar(first)));
        };
        tokens.push(Token { tok, pos });
        rest = rest.get(len..).unwrap_or("");
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_len(s: &str) -> usize {
    s.find(|c: char| !is_word_char(c)).unwrap_or(s.len())
}

/// Digits, then an optional fraction only when a digit follows the dot (`name[0].given`
/// and `1.toString()` keep their dot).
fn number_len(s: &str) -> usize {
    let int = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let rest = s.get(int..).unwrap_or("");
    match rest.strip_prefix('.') {
        Some(frac) if frac.starts_with(|c: char| c.is_ascii_digit()) => {
            int + 1 + frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len())
        }
        _ => int,
    }
}

/// Length of a date/time literal body: `YYYY[-MM[-DD]][T[hh[:mm[:ss[.fff]]]][Z|(+|-)hh:mm]]`
/// or `Thh[:mm[:ss[.fff]]]`. Validity is checked by the parser; here only the shape counts, so
/// `@2014-01-01.toString()` stops before the dot that starts the invocation.
fn datetime_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, n: usize| -> bool {
        let ok = bytes.get(*i..*i + n).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
        if ok {
            *i += n;
        }
        ok
    };
    let time = |i: &mut usize| {
        if digits(i, 2)
            && bytes.get(*i) == Some(&b':')
            && {
                let mut j = *i + 1;
                let ok = digits(&mut j, 2);
                if ok {
                    *i = j;
                }
                ok
            }
            && bytes.get(*i) == Some(&b':')
        {
            let mut j = *i + 1;
            if digits(&mut j, 2) {
                *i = j;
                if bytes.get(*i) == Some(&b'.') && bytes.get(*i + 1).is_some_and(u8::is_ascii_digit) {
                    *i += 1;
                    while bytes.get(*i).is_some_and(u8::is_ascii_digit) {
                        *i += 1;
                    }
                }
            }
        }
    };
    if bytes.first() == Some(&b'T') {
        i = 1;
        time(&mut i);
        return if i > 1 { i } else { 0 };
    }
    if !digits(&mut i, 4) {
        return 0;
    }
    for _ in 0..2 {
        let mut j = i;
        if bytes.get(j) == Some(&b'-') {
            j += 1;
            if digits(&mut j, 2) {
                i = j;
                continue;
            }
        }
        break;
    }
    if bytes.get(i) == Some(&b'T') {
        i += 1;
        time(&mut i);
        if bytes.get(i) == Some(&b'Z') {
            i += 1;
        } else if matches!(bytes.get(i), Some(b'+' | b'-')) {
            let mut j = i + 1;
            if digits(&mut j, 2) && bytes.get(j) == Some(&b':') && {
                j += 1;
                digits(&mut j, 2)
            } {
                i = j;
            }
        }
    }
    i
}

/// A `'string'` or `` `identifier` `` starting at the beginning of `s`: its unescaped text
/// and its length in bytes, quotes included.
fn quoted(s: &str, quote: char, pos: usize) -> Result<(String, usize), FhirPathError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((out, i + c.len_utf8()));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let bad = || FhirPathError::syntax(pos + i, ErrorKind::BadEscape);
        let (_, escaped) = chars.next().ok_or_else(bad)?;
        match escaped {
            '\'' | '"' | '`' | '\\' | '/' => out.push(escaped),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let mut code = 0u32;
                for _ in 0..4 {
                    let (_, h) = chars.next().ok_or_else(bad)?;
                    code = code * 16 + h.to_digit(16).ok_or_else(bad)?;
                }
                out.push(char::from_u32(code).ok_or_else(bad)?);
            }
            _ => return Err(bad()),
        }
    }
    Err(FhirPathError::syntax(pos, ErrorKind::Unterminated))
}
