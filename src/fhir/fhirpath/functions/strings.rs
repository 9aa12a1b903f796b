//! String functions: searching, slicing, case, replacement, regular expressions, `split`
//! and `join`, and the 2.1 `encode`/`decode`/`escape`/`unescape`.
//!
//! Positions and lengths count characters, not bytes. Regular expressions use the `regex`
//! crate, whose matching time is linear in the input, with a compiled-size limit; compiled
//! patterns are cached per thread, so a topic's pattern is not recompiled per event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use regex::{Regex, RegexBuilder};

use super::super::ast::Func;
use super::super::eval::R;
use super::super::value::{Collection, Item};
use super::Call;

/// Largest compiled regular expression accepted, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Patterns kept compiled per thread.
const REGEX_CACHE: usize = 128;

pub(super) fn call<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Option<Collection<'a>>> {
    let func = cx.func;
    if func == Func::Join {
        let sep = cx.arg_str(0)?.map(|s| s.to_string()).unwrap_or_default();
        let mut parts = Vec::with_capacity(input.len());
        for item in input {
            match item.to_system() {
                Item::Str(s) => parts.push(s),
                _ => return Err(cx.error("join() needs String items")),
            }
        }
        let joined = parts.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(&sep);
        cx.ev.tick(joined.len() as u64 / 64, cx.pos)?;
        return Ok(Some(vec![Item::Str(Rc::from(joined))]));
    }
    if !matches!(
        func,
        Func::IndexOf
            | Func::LastIndexOf
            | Func::Substring
            | Func::StartsWith
            | Func::EndsWith
            | Func::ContainsStr
            | Func::Upper
            | Func::Lower
            | Func::Replace
            | Func::Matches
            | Func::MatchesFull
            | Func::ReplaceMatches
            | Func::Length
            | Func::ToChars
            | Func::Encode
            | Func::Decode
            | Func::Escape
            | Func::Unescape
            | Func::Trim
            | Func::Split
    ) {
        return Ok(None);
    }
    let s = match cx.single(input)? {
        None => return Ok(Some(Vec::new())),
        Some(Item::Str(s)) => s,
        Some(_) => return Err(cx.semantic(&format!("{}() applies to a String", func.name()))),
    };
    cx.ev.tick(s.len() as u64 / 64, cx.pos)?;
    let out: Option<Item<'a>> = match func {
        Func::IndexOf | Func::LastIndexOf => cx.arg_str(0)?.map(|needle| {
            let found = if func == Func::IndexOf { s.find(needle.as_ref()) } else { s.rfind(needle.as_ref()) };
            Item::Int(found.map_or(-1, |byte| char_count(s.get(..byte).unwrap_or(""))))
        }),
        Func::Substring => {
            let Some(start) = cx.arg_int(0)? else {
                return Ok(Some(Vec::new()));
            };
            let len = if cx.args.len() > 1 { cx.arg_int(1)? } else { None };
            let chars = char_count(&s);
            if start < 0 || start >= chars {
                None
            } else {
                let take = len.map_or(usize::MAX, |l| usize::try_from(l.max(0)).unwrap_or(0));
                let start = usize::try_from(start).unwrap_or(0);
                Some(Item::str(&s.chars().skip(start).take(take).collect::<String>()))
            }
        }
        Func::StartsWith => cx.arg_str(0)?.map(|p| Item::Bool(s.starts_with(p.as_ref()))),
        Func::EndsWith => cx.arg_str(0)?.map(|p| Item::Bool(s.ends_with(p.as_ref()))),
        Func::ContainsStr => cx.arg_str(0)?.map(|p| Item::Bool(s.contains(p.as_ref()))),
        Func::Upper => Some(Item::str(&s.to_uppercase())),
        Func::Lower => Some(Item::str(&s.to_lowercase())),
        Func::Trim => Some(Item::str(s.trim())),
        Func::Length => Some(Item::Int(char_count(&s))),
        Func::ToChars => {
            return Ok(Some(s.chars().map(|c| Item::str(c.encode_utf8(&mut [0; 4]))).collect()));
        }
        Func::Split => {
            let Some(sep) = cx.arg_str(0)? else {
                return Ok(Some(Vec::new()));
            };
            let parts: Collection<'a> = if sep.is_empty() {
                s.chars().map(|c| Item::str(c.encode_utf8(&mut [0; 4]))).collect()
            } else {
                s.split(sep.as_ref()).map(Item::str).collect()
            };
            cx.ev.check_size(parts.len(), cx.pos)?;
            return Ok(Some(parts));
        }
        Func::Replace => match (cx.arg_str(0)?, cx.arg_str(1)?) {
            (Some(pattern), Some(with)) => {
                let replaced = s.replace(pattern.as_ref(), &with);
                cx.ev.tick(replaced.len() as u64 / 64, cx.pos)?;
                Some(Item::str(&replaced))
            }
            _ => None,
        },
        Func::Matches | Func::MatchesFull => match cx.arg_str(0)? {
            Some(pattern) => {
                let anchored = if func == Func::MatchesFull { format!("^(?:{pattern})$") } else { pattern.to_string() };
                Some(Item::Bool(regex(cx, &anchored)?.is_match(&s)))
            }
            None => None,
        },
        Func::ReplaceMatches => match (cx.arg_str(0)?, cx.arg_str(1)?) {
            (Some(pattern), _) if pattern.is_empty() => Some(Item::Str(s.clone())),
            (Some(pattern), Some(with)) => {
                let re = regex(cx, &pattern)?;
                // FHIRPath substitutions name groups as `$1`; the regex crate reads `$1x` as a
                // group called `1x`, so braces pin the number.
                let with = dollar_groups(&with);
                let replaced = re.replace_all(&s, with.as_str()).into_owned();
                cx.ev.tick(replaced.len() as u64 / 64, cx.pos)?;
                Some(Item::str(&replaced))
            }
            _ => None,
        },
        Func::Encode | Func::Decode | Func::Escape | Func::Unescape => match cx.arg_str(0)? {
            Some(format) => codec(func, &s, &format).map(|t| Item::str(&t)),
            None => None,
        },
        _ => return Ok(None),
    };
    Ok(Some(out.into_iter().collect()))
}

fn char_count(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

thread_local! {
    static COMPILED: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

/// A compiled pattern, dot matching newlines as FHIRPath's single-line mode requires.
fn regex(cx: &Call<'_, '_, '_>, pattern: &str) -> R<Regex> {
    if let Some(re) = COMPILED.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(re);
    }
    let re = RegexBuilder::new(pattern)
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| cx.error(&format!("invalid regular expression: {e}")))?;
    COMPILED.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() >= REGEX_CACHE {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re.clone());
    });
    Ok(re)
}

fn dollar_groups(with: &str) -> String {
    let mut out = String::with_capacity(with.len());
    let mut chars = with.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(d);
                chars.next();
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn codec(func: Func, s: &str, format: &str) -> Option<String> {
    match (func, format) {
        (Func::Encode, "base64") => Some(base64_encode(s.as_bytes(), BASE64)),
        (Func::Encode, "urlbase64") => Some(base64_encode(s.as_bytes(), BASE64_URL)),
        (Func::Encode, "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        (Func::Decode, "base64") => String::from_utf8(base64_decode(s, BASE64)?).ok(),
        (Func::Decode, "urlbase64") => String::from_utf8(base64_decode(s, BASE64_URL)?).ok(),
        (Func::Decode, "hex") => {
            let bytes: Option<Vec<u8>> = s
                .as_bytes()
                .chunks(2)
                .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()).filter(|_| pair.len() == 2))
                .collect();
            String::from_utf8(bytes?).ok()
        }
        (Func::Escape, "html") => Some(
            s.chars()
                .map(|c| match c {
                    '&' => "&amp;".to_owned(),
                    '<' => "&lt;".to_owned(),
                    '>' => "&gt;".to_owned(),
                    '"' => "&quot;".to_owned(),
                    '\'' => "&#39;".to_owned(),
                    c => c.to_string(),
                })
                .collect(),
        ),
        (Func::Escape, "json") => {
            let quoted = serde_json::to_string(s).ok()?;
            quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).map(str::to_owned)
        }
        (Func::Unescape, "html") => Some(unescape_html(s)),
        (Func::Unescape, "json") => Some(unescape_json(s)),
        _ => None,
    }
}

fn base64_encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |i: u32| char::from(alphabet.get((i & 63) as usize).copied().unwrap_or(b'='));
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

fn base64_decode(s: &str, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        let v = u32::try_from(alphabet.iter().position(|a| *a == c)?).ok()?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(rest.get(..amp).unwrap_or(""));
        let tail = rest.get(amp..).unwrap_or("");
        let entity = tail.find(';').and_then(|end| tail.get(1..end).map(|name| (name, end)));
        let decoded = entity.and_then(|(name, end)| {
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = tail.get(end + 1..).unwrap_or("");
            }
            None => {
                out.push('&');
                rest = tail.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// JSON string escapes (`\"`, `\\`, `\n`, `\u0041`...) decoded; anything else kept as is.
fn unescape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}
