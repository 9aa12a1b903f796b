//! Splits a SearchParameter expression into its top-level union branches and names the
//! resource type each branch starts from.
//!
//! In: expression text. Out: branch slices of that text with their root types. Shared
//! parameters (`clinical-patient`: `AllergyIntolerance.patient | CarePlan.subject.where(...)
//! | ...`) are compiled per base type from the branches that can apply to it: the FHIRPath
//! engine would skip the other branches anyway (a leading type name filters the focus), but a
//! type's expression stays small, cheap to evaluate and readable in error messages. This is a lexical scan
//! (strings, quoted identifiers, comments and brackets respected), not a parse: it never
//! fails, and when the top level holds an operator weaker than `|` the whole text is one
//! branch.

use crate::fhir::fhirpath::MAX_DEPTH;

/// One top-level branch of a union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Branch<'s> {
    pub text: &'s str,
    /// Type names the branch starts from; empty when it starts from the context itself
    /// (`requestedPeriod`, `$this`, a function call), which applies to any type.
    pub roots: Vec<&'s str>,
}

impl Branch<'_> {
    /// Whether this branch can select anything in a resource of type `resource_type`.
    /// `is_domain` says whether that type derives from DomainResource.
    pub fn applies_to(&self, resource_type: &str, is_domain: bool) -> bool {
        self.roots.is_empty()
            || self.roots.iter().any(|root| *root == resource_type || *root == "Resource" || (*root == "DomainResource" && is_domain))
    }
}

/// The top-level union branches of `expr`, trimmed, in order.
pub(crate) fn split_union(expr: &str) -> Vec<Branch<'_>> {
    split(expr, 0)
}

fn split(expr: &str, depth: usize) -> Vec<Branch<'_>> {
    let Some(cuts) = top_level_bars(expr) else {
        return vec![branch(expr.trim(), depth)];
    };
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(expr.len())) {
        if let Some(text) = expr.get(start..cut) {
            out.push(branch(text.trim(), depth));
        }
        start = cut + 1;
    }
    out
}

fn branch(text: &str, depth: usize) -> Branch<'_> {
    Branch { text, roots: roots(text, depth) }
}

/// The types a branch starts from. `(A.x | B.y).first()` starts from both A and B.
fn roots(text: &str, depth: usize) -> Vec<&str> {
    if let Some(inner) = text.strip_prefix('(') {
        if depth >= MAX_DEPTH {
            return Vec::new();
        }
        let Some(close) = matching_paren(inner) else {
            return Vec::new();
        };
        let inner = inner.get(..close).unwrap_or("");
        let branches = split(inner, depth + 1);
        if branches.iter().any(|b| b.roots.is_empty()) {
            return Vec::new();
        }
        return branches.into_iter().flat_map(|b| b.roots).collect();
    }
    let len = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len());
    let word = text.get(..len).unwrap_or("");
    let next = text.get(len..).unwrap_or("").trim_start();
    if word.starts_with(|c: char| c.is_ascii_uppercase()) && !next.starts_with('(') {
        vec![word]
    } else {
        Vec::new()
    }
}

/// Byte offset of the `)` closing a group whose `(` precedes `text`.
fn matching_paren(text: &str) -> Option<usize> {
    let mut scan = Scanner::default();
    for (i, c) in text.char_indices() {
        if scan.is_code(c) {
            match c {
                '(' | '[' | '{' => scan.depth += 1,
                ')' | ']' | '}' if scan.depth == 0 => return (c == ')').then_some(i),
                ')' | ']' | '}' => scan.depth -= 1,
                _ => {}
            }
        }
    }
    None
}

/// Offsets of the `|` operators at nesting level 0, or `None` when the top level also holds
/// an operator that binds more weakly than `|` (then splitting would change the meaning).
fn top_level_bars(expr: &str) -> Option<Vec<usize>> {
    const WEAKER_WORDS: [&str; 6] = ["and", "or", "xor", "implies", "in", "contains"];
    let mut scan = Scanner::default();
    let mut bars = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut before_word = ' ';
    let mut last_code = ' ';
    for (i, c) in expr.char_indices().chain(std::iter::once((expr.len(), ' '))) {
        let code = scan.is_code(c);
        let word_char = code && (c.is_ascii_alphanumeric() || c == '_');
        if let (Some(start), false) = (word_start, word_char) {
            let word = expr.get(start..i).unwrap_or("");
            if scan.depth == 0 && before_word != '.' && WEAKER_WORDS.contains(&word) {
                return None;
            }
            word_start = None;
        }
        if !code {
            continue;
        }
        if word_char && word_start.is_none() {
            word_start = Some(i);
            before_word = last_code;
        }
        match c {
            '(' | '[' | '{' => scan.depth += 1,
            ')' | ']' | '}' => scan.depth = scan.depth.saturating_sub(1),
            '|' if scan.depth == 0 => bars.push(i),
            '=' | '<' | '>' | '~' if scan.depth == 0 => return None,
            _ => {}
        }
        if !c.is_whitespace() {
            last_code = c;
        }
    }
    if bars.is_empty() {
        None
    } else {
        Some(bars)
    }
}

/// Tracks whether a character is code or inside a string, quoted identifier or comment.
#[derive(Default)]
struct Scanner {
    depth: usize,
    quote: Option<char>,
    escaped: bool,
    line_comment: bool,
    block_comment: bool,
    previous: char,
}

impl Scanner {
    /// Feed the next character; true when it is code (outside strings and comments).
    fn is_code(&mut self, c: char) -> bool {
        let previous = std::mem::replace(&mut self.previous, c);
        if self.line_comment {
            self.line_comment = c != '\n';
            return false;
        }
        if self.block_comment {
            if previous == '*' && c == '/' {
                self.block_comment = false;
                self.previous = ' ';
            }
            return false;
        }
        if let Some(quote) = self.quote {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == quote {
                self.quote = None;
            }
            return false;
        }
        match c {
            '\'' | '`' | '"' => {
                self.quote = Some(c);
                false
            }
            '/' if previous == '/' => {
                self.line_comment = true;
                false
            }
            '*' if previous == '/' => {
                self.block_comment = true;
                self.previous = ' ';
                false
            }
            _ => true,
        }
    }
}
