//! Precedence-climbing parser for FHIRPath (N1, with the 2.1 additions the R5 suite uses).
//!
//! In: expression text. Out: an [`Expr`] tree, or a [`FhirPathError`] naming the offending
//! byte. The text length is checked before lexing and the height of every subtree is checked
//! as it is built, so no input can overflow the stack here or later in the evaluator.
//! Functions and type names are resolved here; nothing is evaluated.

use rust_decimal::Decimal;

use super::ast::{BinOp, Expr, ExprKind, Func, Literal, TypeName};
use super::error::{ErrorKind, FhirPathError};
use super::lex::{lex, Tok, Token};
use super::quantity::Quantity;
use super::temporal::{Date, DateTime, Time};
use super::types::known_type;
use super::{MAX_DEPTH, MAX_EXPRESSION_LEN};

pub(super) fn parse(source: &str) -> Result<Expr, FhirPathError> {
    if source.len() > MAX_EXPRESSION_LEN {
        return Err(FhirPathError::syntax(MAX_EXPRESSION_LEN, ErrorKind::TooLong { max: MAX_EXPRESSION_LEN }));
    }
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.expression(0)?;
    match parser.peek() {
        Tok::Eof => Ok(expr),
        other => {
            Err(parser.syntax_here(ErrorKind::Expected { expected: "an operator or the end of the expression", found: other.describe() }))
        }
    }
}

/// Parser recursion allowed before giving up, in frames (each of `expression`, `binary`,
/// `unary`, `postfix`, `term` and `call` is one). The tallest trees [`MAX_DEPTH`] allows cost
/// at most six frames per level (`(1 + (1 + ...))`, `iif(true, iif(true, ...))`); redundant
/// parentheses add frames but no height, and are what this bound stops. In a debug build a
/// frame takes about 3.5 KiB, so the bound keeps parsing within about 1.5 MiB of stack.
const MAX_PARSE_DEPTH: usize = 7 * MAX_DEPTH;

/// Calendar duration keywords that may follow a number to make a quantity (`4 days`).
pub(super) const CALENDAR_UNITS: [&str; 16] = [
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

/// Words that cannot start a term unless quoted with backticks (FHIRPath grammar:
/// `identifier` admits only `as`, `contains`, `in` and `is` among the keywords).
const RESERVED: [&str; 6] = ["and", "or", "xor", "implies", "div", "mod"];

enum Infix {
    Bin(BinOp),
    Union,
    Is,
    As,
}

/// Binary operators with their precedence level (higher binds tighter), per FHIRPath §
/// "Operator precedence".
fn infix(tok: &Tok) -> Option<(Infix, u8)> {
    let op = match tok {
        Tok::Ident(word) => match word.as_str() {
            "implies" => (Infix::Bin(BinOp::Implies), 1),
            "or" => (Infix::Bin(BinOp::Or), 2),
            "xor" => (Infix::Bin(BinOp::Xor), 2),
            "and" => (Infix::Bin(BinOp::And), 3),
            "in" => (Infix::Bin(BinOp::In), 4),
            "contains" => (Infix::Bin(BinOp::Contains), 4),
            "is" => (Infix::Is, 8),
            "as" => (Infix::As, 8),
            "div" => (Infix::Bin(BinOp::IntDiv), 10),
            "mod" => (Infix::Bin(BinOp::Mod), 10),
            _ => return None,
        },
        Tok::Punct(p) => match *p {
            "=" => (Infix::Bin(BinOp::Eq), 5),
            "!=" => (Infix::Bin(BinOp::Ne), 5),
            "~" => (Infix::Bin(BinOp::Equiv), 5),
            "!~" => (Infix::Bin(BinOp::NotEquiv), 5),
            "<" => (Infix::Bin(BinOp::Lt), 6),
            ">" => (Infix::Bin(BinOp::Gt), 6),
            "<=" => (Infix::Bin(BinOp::Le), 6),
            ">=" => (Infix::Bin(BinOp::Ge), 6),
            "|" => (Infix::Union, 7),
            "+" => (Infix::Bin(BinOp::Add), 9),
            "-" => (Infix::Bin(BinOp::Sub), 9),
            "&" => (Infix::Bin(BinOp::Concat), 9),
            "*" => (Infix::Bin(BinOp::Mul), 10),
            "/" => (Infix::Bin(BinOp::Div), 10),
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

    fn syntax_here(&self, kind: ErrorKind) -> FhirPathError {
        FhirPathError::syntax(self.pos(), kind)
    }

    fn expect(&mut self, punct: &'static str) -> Result<(), FhirPathError> {
        if *self.peek() == Tok::Punct(punct) {
            self.bump();
            Ok(())
        } else {
            Err(self.syntax_here(ErrorKind::Expected { expected: punct, found: self.peek().describe() }))
        }
    }

    /// One more parser frame: `depth + 1`, or an error past [`MAX_PARSE_DEPTH`]. Checked on
    /// entry to every recursive step, before it recurses further.
    fn enter(&self, depth: usize) -> Result<usize, FhirPathError> {
        if depth >= MAX_PARSE_DEPTH {
            return Err(self.syntax_here(ErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        Ok(depth + 1)
    }

    /// Wrap `kind` in a node, refusing trees taller than [`MAX_DEPTH`].
    fn node(&self, kind: ExprKind, pos: usize) -> Result<Expr, FhirPathError> {
        let expr = Expr::new(kind, pos);
        if expr.height > MAX_DEPTH {
            return Err(FhirPathError::syntax(pos, ErrorKind::TooDeep { max: MAX_DEPTH }));
        }
        Ok(expr)
    }

    /// A full expression `depth` parser frames deep. The frame guard ([`Parser::enter`]) only
    /// keeps the recursion off the end of the stack; the height check in [`Parser::node`] is
    /// the limit on what is accepted.
    fn expression(&mut self, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        self.binary(1, depth)
    }

    fn binary(&mut self, min_level: u8, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        let mut lhs = self.unary(depth)?;
        while let Some((op, level)) = infix(self.peek()) {
            if level < min_level {
                break;
            }
            let pos = self.pos();
            self.bump();
            lhs = match op {
                Infix::Is | Infix::As => {
                    let ty = self.type_name()?;
                    let operand = Box::new(lhs);
                    let kind = if matches!(op, Infix::Is) { ExprKind::Is { operand, ty } } else { ExprKind::As { operand, ty } };
                    self.node(kind, pos)?
                }
                Infix::Union => {
                    let rhs = self.binary(level + 1, depth)?;
                    let items = match lhs.kind {
                        ExprKind::Union(mut items) => {
                            items.push(rhs);
                            items
                        }
                        _ => vec![lhs, rhs],
                    };
                    self.node(ExprKind::Union(items), pos)?
                }
                Infix::Bin(op) => {
                    let rhs = self.binary(level + 1, depth)?;
                    self.node(ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, pos)?
                }
            };
        }
        Ok(lhs)
    }

    /// `+x` and `-x` bind looser than invocation: `-1.convertsToInteger()` negates a Boolean.
    fn unary(&mut self, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        let pos = self.pos();
        match self.peek() {
            Tok::Punct("-") => {
                self.bump();
                let operand = self.unary(depth)?;
                self.node(ExprKind::Negate(Box::new(operand)), pos)
            }
            Tok::Punct("+") => {
                self.bump();
                self.unary(depth)
            }
            _ => self.postfix(depth),
        }
    }

    /// A term followed by `.member`, `.function(...)` and `[index]`.
    fn postfix(&mut self, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        let mut expr = self.term(depth)?;
        loop {
            match self.peek() {
                Tok::Punct(".") => {
                    self.bump();
                    let pos = self.pos();
                    let name = match self.bump() {
                        Tok::Ident(name) | Tok::Quoted(name) => name,
                        other => {
                            return Err(FhirPathError::syntax(pos, ErrorKind::Expected { expected: "a name", found: other.describe() }))
                        }
                    };
                    expr = if *self.peek() == Tok::Punct("(") {
                        self.call(Some(expr), &name, pos, depth)?
                    } else {
                        self.node(ExprKind::Member { target: Some(Box::new(expr)), name }, pos)?
                    };
                }
                Tok::Punct("[") => {
                    let pos = self.pos();
                    self.bump();
                    let index = self.expression(depth)?;
                    self.expect("]")?;
                    expr = self.node(ExprKind::Indexer { target: Box::new(expr), index: Box::new(index) }, pos)?;
                }
                _ => return Ok(expr),
            }
        }
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        let pos = self.pos();
        let literal = |p: &Parser, lit| p.node(ExprKind::Literal(lit), pos);
        match self.bump() {
            Tok::Punct("(") => {
                let inner = self.expression(depth)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                literal(self, Literal::Empty)
            }
            Tok::Str(s) => literal(self, Literal::Str(s)),
            Tok::Num(text) => {
                let unit = match self.peek() {
                    Tok::Str(unit) => Some(unit.clone()),
                    Tok::Ident(word) if CALENDAR_UNITS.contains(&word.as_str()) => Some(word.clone()),
                    _ => None,
                };
                if let Some(unit) = unit {
                    self.bump();
                    let value = text.parse::<Decimal>().map_err(|_| FhirPathError::syntax(pos, ErrorKind::BadLiteral(text.clone())))?;
                    return literal(self, Literal::Quantity(Quantity { value, unit }));
                }
                let lit = if text.contains('.') {
                    Literal::Dec(text.parse().map_err(|_| FhirPathError::syntax(pos, ErrorKind::BadLiteral(text.clone())))?)
                } else {
                    Literal::Int(text.parse().map_err(|_| FhirPathError::syntax(pos, ErrorKind::BadLiteral(text.clone())))?)
                };
                literal(self, lit)
            }
            Tok::Long(text) => {
                let value = text.parse().map_err(|_| FhirPathError::syntax(pos, ErrorKind::BadLiteral(format!("{text}L"))))?;
                literal(self, Literal::Long(value))
            }
            Tok::DateTime(text) => {
                let bad = || FhirPathError::syntax(pos, ErrorKind::BadLiteral(format!("@{text}")));
                let lit = if let Some(time) = text.strip_prefix('T') {
                    Literal::Time(Time::parse(time).ok_or_else(bad)?)
                } else if text.contains('T') {
                    Literal::DateTime(DateTime::parse(&text).ok_or_else(bad)?)
                } else {
                    Literal::Date(Date::parse(&text).ok_or_else(bad)?)
                };
                literal(self, lit)
            }
            Tok::Dollar(name) => match name.as_str() {
                "this" => self.node(ExprKind::This, pos),
                "index" => self.node(ExprKind::Index, pos),
                "total" => self.node(ExprKind::Total, pos),
                _ => Err(FhirPathError::syntax(pos, ErrorKind::UnknownVariable(format!("${name}")))),
            },
            Tok::Percent(name) => self.node(ExprKind::Var(name), pos),
            Tok::Ident(word) if word == "true" || word == "false" => literal(self, Literal::Bool(word == "true")),
            Tok::Ident(word) if RESERVED.contains(&word.as_str()) => {
                Err(FhirPathError::syntax(pos, ErrorKind::Expected { expected: "an expression", found: format!("keyword {word:?}") }))
            }
            Tok::Ident(name) | Tok::Quoted(name) => {
                if *self.peek() == Tok::Punct("(") {
                    self.call(None, &name, pos, depth)
                } else {
                    self.node(ExprKind::Member { target: None, name }, pos)
                }
            }
            other => Err(FhirPathError::syntax(pos, ErrorKind::Expected { expected: "an expression", found: other.describe() })),
        }
    }

    /// `name(args)` with the opening parenthesis next. Resolves the function and checks its
    /// argument count; `is`, `as` and `ofType` take a type name, not an expression.
    fn call(&mut self, target: Option<Expr>, name: &str, pos: usize, depth: usize) -> Result<Expr, FhirPathError> {
        let depth = self.enter(depth)?;
        self.expect("(")?;
        let (func, min, max) =
            Func::lookup(name).ok_or_else(|| FhirPathError::semantic(pos, ErrorKind::UnknownFunction(name.to_owned())))?;
        let mut args = Vec::new();
        let mut ty = None;
        if func.takes_type() {
            ty = Some(self.type_name()?);
            self.expect(")")?;
        } else if *self.peek() == Tok::Punct(")") {
            self.bump();
        } else {
            loop {
                args.push(self.expression(depth)?);
                match self.bump() {
                    Tok::Punct(",") => continue,
                    Tok::Punct(")") => break,
                    other => {
                        return Err(FhirPathError::syntax(
                            self.pos(),
                            ErrorKind::Expected { expected: "',' or ')'", found: other.describe() },
                        ))
                    }
                }
            }
        }
        let count = if ty.is_some() { 1 } else { args.len() };
        if count < min || count > max {
            let expected = match (min, max) {
                (0, 0) => "no arguments",
                (1, 1) => "one argument",
                (2, 2) => "two arguments",
                (0, 1) => "zero or one argument",
                (1, 2) => "one or two arguments",
                (2, 3) => "two or three arguments",
                _ => "a different number of arguments",
            };
            return Err(FhirPathError::semantic(pos, ErrorKind::Arguments { function: name.to_owned(), expected }));
        }
        self.node(ExprKind::Call { target: target.map(Box::new), func, args, ty }, pos)
    }

    /// `Name`, `Namespace.Name`, with backticks allowed; checked against the model.
    fn type_name(&mut self) -> Result<TypeName, FhirPathError> {
        let pos = self.pos();
        let first = match self.bump() {
            Tok::Ident(name) | Tok::Quoted(name) => name,
            other => return Err(FhirPathError::syntax(pos, ErrorKind::Expected { expected: "a type name", found: other.describe() })),
        };
        let ty = if *self.peek() == Tok::Punct(".") && matches!(self.peek_at(1), Tok::Ident(_) | Tok::Quoted(_)) {
            self.bump();
            match self.bump() {
                Tok::Ident(name) | Tok::Quoted(name) => TypeName { namespace: Some(first), name },
                _ => return Err(FhirPathError::syntax(pos, ErrorKind::Expected { expected: "a type name", found: String::new() })),
            }
        } else {
            TypeName { namespace: None, name: first }
        };
        if !known_type(&ty) {
            return Err(FhirPathError::semantic(pos, ErrorKind::UnknownType(ty.to_string())));
        }
        Ok(ty)
    }
}
