//! Lexer for the FHIRPath subset: text in, tokens with byte offsets out.
//!
//! Recognises identifiers, `backtick` identifiers, strings with FHIRPath escapes, numbers,
//! `$`/`%` variables, punctuation and operators, and skips whitespace and comments. Date and
//! time literals are rejected here; everything else is left for the parser to accept or
//! reject, so every error names the byte where it happened.

use super::{PathError, PathErrorKind};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    /// A `backtick` identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
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

pub(super) fn lex(source: &str) -> Result<Vec<Token>, PathError> {
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
            let end = after.find("*/").ok_or_else(|| PathError::new(pos, PathErrorKind::Unterminated))?;
            rest = after.get(end + 2..).unwrap_or("");
            continue;
        }
        let Some(first) = rest.chars().next() else {
            tokens.push(Token { tok: Tok::Eof, pos });
            return Ok(tokens);
        };
        let (tok, len) = if first.is_ascii_alphabetic() || first == '_' {
            let len = word_len(rest);
            (Tok::Ident(rest.get(..len).unwrap_or("").to_owned()), len)
        } else if first.is_ascii_digit() {
            let len = number_len(rest);
            (Tok::Num(rest.get(..len).unwrap_or("").to_owned()), len)
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
                return Err(PathError::new(pos, PathErrorKind::UnexpectedChar(first)));
            }
            let tok = if first == '$' { Tok::Dollar(name) } else { Tok::Percent(name) };
            (tok, len)
        } else if first == '@' {
            let len =
                1 + rest.get(1..).map_or(0, |t| t.find(|c: char| !(c.is_ascii_alphanumeric() || "-:.+TZ".contains(c))).unwrap_or(t.len()));
            let text = rest.get(..len).unwrap_or("@").to_owned();
            return Err(PathError::new(pos, PathErrorKind::UnsupportedLiteral(text)));
        } else if let Some(p) = PUNCTUATION.iter().find(|p| rest.starts_with(**p)) {
            (Tok::Punct(p), p.len())
        } else {
            return Err(PathError::new(pos, PathErrorKind::UnexpectedChar(first)));
        };
        tokens.push(Token { tok, pos });
        rest = rest.get(len..).unwrap_or("");
    }
}

fn word_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

/// Digits, then an optional fraction only when a digit follows the dot (`entry[0].resource`
/// must keep its dot).
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

/// A `'string'` or `` `identifier` `` starting at the beginning of `s`: its unescaped text
/// and its length in bytes, quotes included.
fn quoted(s: &str, quote: char, pos: usize) -> Result<(String, usize), PathError> {
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
        let bad = || PathError::new(pos + i, PathErrorKind::BadEscape);
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
    Err(PathError::new(pos, PathErrorKind::Unterminated))
}
