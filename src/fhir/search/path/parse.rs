//! Precedence-climbing parser for the FHIRPath subset.
//!
//! In: expression text (lexed by `lex`). Out: an [`Expr`] tree, or a [`PathError`] at the offending byte.
//! Size is checked before lexing; recursion is counted on every nested expression and every
//! tree node records its height, so no input can overflow the stack here or in the evaluator.
//! Operators and functions outside the subset are errors, reported where they appear.

use super::super::types;
use super::lex::{lex, Tok, Token};
use super::{
    Call, Expr, ExprKind, Func, LogicOp, PathError, PathErrorKind, Step, SystemType, Term, TypeSpec, MAX_DEPTH, MAX_EXPRESSION_LEN,
};

pub(super) fn parse(source: &str) -> Result<Expr, PathError> {
    if source.len() > MAX_EXPRESSION_LEN {
        return Err(PathError::new(MAX_EXPRESSION_LEN, PathErrorKind::TooLong { max: MAX_EXPRESSION_LEN }));
    }
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.expression(0)?;
    match parser.peek() {
        Tok::Eof => Ok(expr),
        other => Err(parser.error_here(PathErrorKind::Expected { expected: "end of expression", found: other.describe() })),
    }
}

/// Binary operators with their FHIRPath precedence level (higher binds tighter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Logic(LogicOp),
    Equal,
    NotEqual,
    Union,
    Is,
    As,
    Unsupported(&'static str),
}

fn binary_op(tok: &Tok) -> Option<(BinOp, u8)> {
    let op = match tok {
        Tok::Ident(word) => match word.as_str() {
            "implies" => (BinOp::Logic(LogicOp::Implies), 1),
            "or" => (BinOp::Logic(LogicOp::Or), 2),
            "xor" => (BinOp::Logic(LogicOp::Xor), 2),
            "and" => (BinOp::Logic(LogicOp::And), 3),
            "in" => (BinOp::Unsupported("in"), 4),
            "contains" => (BinOp::Unsupported("contains"), 4),
            "is" => (BinOp::Is, 8),
            "as" => (BinOp::As, 8),
            "div" => (BinOp::Unsupported("div"), 10),
            "mod" => (BinOp::Unsupported("mod"), 10),
            _ => return None,
        },
        Tok::Punct(p) => match *p {
            "=" => (BinOp::Equal, 5),
            "!=" => (BinOp::NotEqual, 5),
            "~" | "!~" => (BinOp::Unsupported(p), 5),
            "<" | ">" | "<=" | ">=" => (BinOp::Unsupported(p), 6),
            "|" => (BinOp::Union, 7),
            "+" | "-" | "&" => (BinOp::Unsupported(p), 9),
            "*" | "/" => (BinOp::Unsupported(p), 10),
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.at).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens.get(self.at + ahead).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.at).or_else(|| self.tokens.last()).map_or(0, |t| t.pos)
    }

    fn bump(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        tok
    }

    fn error_here(&self, kind: PathErrorKind) -> PathError {
        PathError::new(self.pos(), kind)
    }

    fn expect(&mut self, punct: &'static str) -> Result<(), PathError> {
        if *self.peek() == Tok::Punct(punct) {
            self.bump();
            Ok(())
        } else {
            Err(self.error_here(PathErrorKind::Expected { expected: punct, found: self.peek().describe() }))
        }
    }

    /// A full expression nested `depth` levels deep.
    fn expression(&mut self, depth: usize) -> Result<Expr, PathError> {
        if depth > MAX_DEPTH {
            return Err(self.error_here(PathErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        self.binary(1, depth)
    }

    fn binary(&mut self, min_level: u8, depth: usize) -> Result<Expr, PathError> {
        let mut lhs = self.path(depth)?;
        while let Some((op, level)) = binary_op(self.peek()) {
            if level < min_level {
                break;
            }
            let pos = self.pos();
            self.bump();
            lhs = match op {
                BinOp::Unsupported(name) => return Err(PathError::new(pos, PathErrorKind::UnsupportedOperator(name.to_owned()))),
                BinOp::Is | BinOp::As => {
                    let ty = self.type_spec()?;
                    let kind = ExprKind::TypeOp { test_only: op == BinOp::Is, operand: Box::new(lhs), ty };
                    node(kind, pos)?
                }
                BinOp::Union => {
                    let rhs = self.binary(level + 1, depth)?;
                    match lhs.kind {
                        ExprKind::Union(mut items) => {
                            items.push(rhs);
                            node(ExprKind::Union(items), lhs.pos)?
                        }
                        kind => {
                            let first = Expr { kind, ..lhs };
                            node(ExprKind::Union(vec![first, rhs]), pos)?
                        }
                    }
                }
                BinOp::Equal | BinOp::NotEqual => {
                    let rhs = self.binary(level + 1, depth)?;
                    let kind = ExprKind::Equality { negated: op == BinOp::NotEqual, lhs: Box::new(lhs), rhs: Box::new(rhs) };
                    node(kind, pos)?
                }
                BinOp::Logic(logic) => {
                    let rhs = self.binary(level + 1, depth)?;
                    let kind = ExprKind::Logic { op: logic, lhs: Box::new(lhs), rhs: Box::new(rhs) };
                    node(kind, pos)?
                }
            };
        }
        Ok(lhs)
    }

    /// A term and its `.member`, `.function()` and `[index]` steps.
    fn path(&mut self, depth: usize) -> Result<Expr, PathError> {
        let pos = self.pos();
        let start = self.term(depth)?;
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Tok::Punct(".") => {
                    self.bump();
                    let name_pos = self.pos();
                    let name = self.identifier("a member or function name after '.'")?;
                    if *self.peek() == Tok::Punct("(") {
                        steps.push(Step::Call(self.call(name, name_pos, depth)?));
                    } else {
                        steps.push(Step::Member(name));
                    }
                }
                Tok::Punct("[") => {
                    self.bump();
                    let index_pos = self.pos();
                    let index = match self.bump() {
                        Tok::Num(text) => text.parse::<usize>().ok(),
                        _ => None,
                    };
                    let index = index.ok_or_else(|| {
                        PathError::new(
                            index_pos,
                            PathErrorKind::Expected { expected: "a non-negative integer index", found: "something else".to_owned() },
                        )
                    })?;
                    self.expect("]")?;
                    steps.push(Step::Index(index));
                }
                _ => break,
            }
        }
        match start {
            // Parentheses alone add no level, so they do not count against the tree height.
            Term::Paren(inner) if steps.is_empty() => Ok(*inner),
            start => node(ExprKind::Path { start, steps }, pos),
        }
    }

    fn identifier(&mut self, expected: &'static str) -> Result<String, PathError> {
        match self.peek().clone() {
            Tok::Ident(name) | Tok::Quoted(name) => {
                self.bump();
                Ok(name)
            }
            other => Err(self.error_here(PathErrorKind::Expected { expected, found: other.describe() })),
        }
    }

    fn term(&mut self, depth: usize) -> Result<Term, PathError> {
        let pos = self.pos();
        match self.bump() {
            Tok::Ident(word) => match word.as_str() {
                "true" => Ok(Term::Bool(true)),
                "false" => Ok(Term::Bool(false)),
                _ if *self.peek() == Tok::Punct("(") => Ok(Term::Call(self.call(word, pos, depth)?)),
                _ => Ok(Term::Identifier(word)),
            },
            Tok::Quoted(name) => Ok(Term::Identifier(name)),
            Tok::Str(text) => Ok(Term::Str(text)),
            Tok::Num(text) => {
                text.parse::<f64>().map(Term::Num).map_err(|_| PathError::new(pos, PathErrorKind::UnsupportedLiteral(text.clone())))
            }
            Tok::Dollar(name) if name == "this" => Ok(Term::This),
            Tok::Percent(name) => match name.as_str() {
                "resource" | "rootResource" | "context" => Ok(Term::Root),
                "ucum" => Ok(Term::Str("http://unitsofmeasure.org".to_owned())),
                "sct" => Ok(Term::Str("http://snomed.info/sct".to_owned())),
                "loinc" => Ok(Term::Str("http://loinc.org".to_owned())),
                _ => Err(PathError::new(pos, PathErrorKind::UnsupportedVariable(format!("%{name}")))),
            },
            Tok::Dollar(name) => Err(PathError::new(pos, PathErrorKind::UnsupportedVariable(format!("${name}")))),
            Tok::Punct("(") => {
                let inner = self.expression(depth + 1)?;
                self.expect(")")?;
                Ok(Term::Paren(Box::new(inner)))
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                Ok(Term::Empty)
            }
            Tok::Punct(p) if binary_op(&Tok::Punct(p)).is_some() => {
                Err(PathError::new(pos, PathErrorKind::UnsupportedOperator(p.to_owned())))
            }
            other => Err(PathError::new(pos, PathErrorKind::Expected { expected: "an expression", found: other.describe() })),
        }
    }

    /// `name(` has been seen (the `(` is next); parse the arguments this subset allows.
    fn call(&mut self, name: String, pos: usize, depth: usize) -> Result<Call, PathError> {
        self.expect("(")?;
        let arguments = |expected| PathErrorKind::Arguments { function: name.clone(), expected };
        let func = match name.as_str() {
            "where" | "select" | "exists" => {
                if name == "exists" && *self.peek() == Tok::Punct(")") {
                    Func::Exists(None)
                } else {
                    let criteria = Box::new(self.expression(depth + 1)?);
                    match name.as_str() {
                        "where" => Func::Where(criteria),
                        "select" => Func::Select(criteria),
                        _ => Func::Exists(Some(criteria)),
                    }
                }
            }
            "empty" => Func::Empty,
            "first" => Func::First,
            "last" => Func::Last,
            "not" => Func::Not,
            "hasValue" => Func::HasValue,
            "resolve" => Func::Resolve,
            "ofType" => Func::OfType(self.type_spec()?),
            "as" => Func::As(self.type_spec()?),
            "is" => Func::Is(self.type_spec()?),
            "extension" => match self.bump() {
                Tok::Str(url) => Func::Extension(url),
                _ => return Err(PathError::new(pos, arguments("one string literal (the url)"))),
            },
            _ => return Err(PathError::new(pos, PathErrorKind::UnsupportedFunction(name))),
        };
        if *self.peek() != Tok::Punct(")") {
            let expected = match func {
                Func::Where(_) | Func::Select(_) => "one expression",
                Func::Exists(_) => "at most one expression",
                Func::OfType(_) | Func::As(_) | Func::Is(_) => "one type name",
                Func::Extension(_) => "one string literal (the url)",
                _ => "no arguments",
            };
            return Err(PathError::new(pos, arguments(expected)));
        }
        self.bump();
        Ok(Call { func, pos })
    }

    /// `Patient`, `FHIR.Patient`, `System.String`.
    fn type_spec(&mut self) -> Result<TypeSpec, PathError> {
        let pos = self.pos();
        let first = self.identifier("a type name")?;
        let qualified = matches!(first.as_str(), "FHIR" | "System")
            && *self.peek() == Tok::Punct(".")
            && matches!(self.peek_at(1), Tok::Ident(_) | Tok::Quoted(_));
        let name = if qualified {
            self.bump();
            self.identifier("a type name")?
        } else {
            first.clone()
        };
        if !qualified || first == "FHIR" {
            let known =
                types::is_data_type(&name) || types::is_resource_type(&name) || matches!(name.as_str(), "Resource" | "DomainResource");
            return if known { Ok(TypeSpec::Fhir(name)) } else { Err(PathError::new(pos, PathErrorKind::UnknownType(name))) };
        }
        let system = match name.as_str() {
            "Boolean" => SystemType::Boolean,
            "String" => SystemType::String,
            "Integer" => SystemType::Integer,
            "Decimal" => SystemType::Decimal,
            _ => {
                return Err(PathError::new(
                    pos,
                    PathErrorKind::Expected {
                        expected: "System.Boolean, System.String, System.Integer or System.Decimal",
                        found: format!("System.{name}"),
                    },
                ))
            }
        };
        Ok(TypeSpec::System(system))
    }
}

/// Build a node, computing its height and enforcing [`MAX_DEPTH`] on it.
fn node(kind: ExprKind, pos: usize) -> Result<Expr, PathError> {
    let children = match &kind {
        ExprKind::Path { start, steps } => {
            let from_start = match start {
                Term::Call(call) => call_depth(call),
                Term::Paren(inner) => inner.depth,
                _ => 0,
            };
            steps
                .iter()
                .map(|step| match step {
                    Step::Call(call) => call_depth(call),
                    Step::Member(_) | Step::Index(_) => 0,
                })
                .fold(from_start, usize::max)
        }
        ExprKind::Union(items) => items.iter().map(|e| e.depth).max().unwrap_or(0),
        ExprKind::Equality { lhs, rhs, .. } | ExprKind::Logic { lhs, rhs, .. } => lhs.depth.max(rhs.depth),
        ExprKind::TypeOp { operand, .. } => operand.depth,
    };
    let depth = children + 1;
    if depth > MAX_DEPTH {
        return Err(PathError::new(pos, PathErrorKind::TooDeep { max: MAX_DEPTH }));
    }
    Ok(Expr { kind, pos, depth })
}

fn call_depth(call: &Call) -> usize {
    match &call.func {
        Func::Where(e) | Func::Select(e) | Func::Exists(Some(e)) => e.depth,
        _ => 0,
    }
}
