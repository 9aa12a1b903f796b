//! The FHIRPath syntax tree and the table of functions the engine knows.
//!
//! Function names are resolved when compiling, so an unknown function or a wrong argument
//! count is reported against the expression text, never discovered per event. Type names in
//! `is`, `as` and `ofType` are resolved then too.

use rust_decimal::Decimal;

use super::quantity::Quantity;
use super::temporal::{Date, DateTime, Time};

#[derive(Debug, Clone)]
pub(super) struct Expr {
    pub kind: ExprKind,
    /// Byte offset of the construct in the expression text.
    pub pos: usize,
    /// Height of this subtree, so that compiling can refuse trees the recursive evaluator
    /// could not walk within its stack.
    pub height: usize,
}

impl Expr {
    pub(super) fn new(kind: ExprKind, pos: usize) -> Expr {
        let below = match &kind {
            ExprKind::Literal(_) | ExprKind::This | ExprKind::Index | ExprKind::Total | ExprKind::Var(_) => 0,
            ExprKind::Member { target, .. } => target.as_ref().map_or(0, |t| t.height),
            ExprKind::Call { target, args, .. } => {
                args.iter().map(|a| a.height).chain(target.as_ref().map(|t| t.height)).max().unwrap_or(0)
            }
            ExprKind::Indexer { target, index } => target.height.max(index.height),
            ExprKind::Negate(e) | ExprKind::Is { operand: e, .. } | ExprKind::As { operand: e, .. } => e.height,
            ExprKind::Binary { lhs, rhs, .. } => lhs.height.max(rhs.height),
            ExprKind::Union(items) => items.iter().map(|a| a.height).max().unwrap_or(0),
        };
        Expr { kind, pos, height: below + 1 }
    }
}

#[derive(Debug, Clone)]
pub(super) enum ExprKind {
    Literal(Literal),
    This,
    Index,
    Total,
    /// `%name`: environment and `defineVariable` variables.
    Var(String),
    /// `target.name`, or a bare `name` evaluated against the focus.
    Member {
        target: Option<Box<Expr>>,
        name: String,
    },
    /// `target.f(args)`, or a bare `f(args)` on the focus. Arguments stay unevaluated: most
    /// functions evaluate them per input item with `$this` bound.
    Call {
        target: Option<Box<Expr>>,
        func: Func,
        args: Vec<Expr>,
        ty: Option<TypeName>,
    },
    Indexer {
        target: Box<Expr>,
        index: Box<Expr>,
    },
    Negate(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `a | b | c`, flattened so long unions do not nest.
    Union(Vec<Expr>),
    Is {
        operand: Box<Expr>,
        ty: TypeName,
    },
    As {
        operand: Box<Expr>,
        ty: TypeName,
    },
}

#[derive(Debug, Clone)]
pub(super) enum Literal {
    Empty,
    Bool(bool),
    Str(String),
    Int(i64),
    Long(i64),
    Dec(Decimal),
    Date(Date),
    DateTime(DateTime),
    Time(Time),
    Quantity(Quantity),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

impl BinOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::IntDiv => "div",
            BinOp::Mod => "mod",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Concat => "&",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Equiv => "~",
            BinOp::NotEquiv => "!~",
            BinOp::In => "in",
            BinOp::Contains => "contains",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Implies => "implies",
        }
    }
}

/// A type named in `is`, `as` or `ofType`: `Patient`, `FHIR.Patient`, `System.String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TypeName {
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for TypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

macro_rules! functions {
    ($($variant:ident = $name:literal ($min:literal, $max:literal),)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Func { $($variant,)* }

        impl Func {
            /// The function called `name`, with its minimum and maximum argument counts.
            pub(super) fn lookup(name: &str) -> Option<(Func, usize, usize)> {
                match name {
                    $($name => Some((Func::$variant, $min, $max)),)*
                    _ => None,
                }
            }

            pub(super) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name,)* }
            }
        }
    };
}

functions! {
    // existence
    Empty = "empty" (0, 0),
    Exists = "exists" (0, 1),
    All = "all" (1, 1),
    AllTrue = "allTrue" (0, 0),
    AnyTrue = "anyTrue" (0, 0),
    AllFalse = "allFalse" (0, 0),
    AnyFalse = "anyFalse" (0, 0),
    SubsetOf = "subsetOf" (1, 1),
    SupersetOf = "supersetOf" (1, 1),
    Count = "count" (0, 0),
    Distinct = "distinct" (0, 0),
    IsDistinct = "isDistinct" (0, 0),
    // filtering and projection
    Where = "where" (1, 1),
    Select = "select" (1, 1),
    Repeat = "repeat" (1, 1),
    RepeatAll = "repeatAll" (1, 1),
    OfType = "ofType" (1, 1),
    // subsetting
    Single = "single" (0, 0),
    First = "first" (0, 0),
    Last = "last" (0, 0),
    Tail = "tail" (0, 0),
    Skip = "skip" (1, 1),
    Take = "take" (1, 1),
    Intersect = "intersect" (1, 1),
    Exclude = "exclude" (1, 1),
    // combining
    Union = "union" (1, 1),
    Combine = "combine" (1, 1),
    // conversion
    Iif = "iif" (2, 3),
    ToBoolean = "toBoolean" (0, 0),
    ConvertsToBoolean = "convertsToBoolean" (0, 0),
    ToInteger = "toInteger" (0, 0),
    ConvertsToInteger = "convertsToInteger" (0, 0),
    ToLong = "toLong" (0, 0),
    ConvertsToLong = "convertsToLong" (0, 0),
    ToDate = "toDate" (0, 0),
    ConvertsToDate = "convertsToDate" (0, 0),
    ToDateTime = "toDateTime" (0, 0),
    ConvertsToDateTime = "convertsToDateTime" (0, 0),
    ToDecimal = "toDecimal" (0, 0),
    ConvertsToDecimal = "convertsToDecimal" (0, 0),
    ToQuantity = "toQuantity" (0, 1),
    ConvertsToQuantity = "convertsToQuantity" (0, 1),
    ToString = "toString" (0, 0),
    ConvertsToString = "convertsToString" (0, 0),
    ToTime = "toTime" (0, 0),
    ConvertsToTime = "convertsToTime" (0, 0),
    // strings
    IndexOf = "indexOf" (1, 1),
    LastIndexOf = "lastIndexOf" (1, 1),
    Substring = "substring" (1, 2),
    StartsWith = "startsWith" (1, 1),
    EndsWith = "endsWith" (1, 1),
    ContainsStr = "contains" (1, 1),
    Upper = "upper" (0, 0),
    Lower = "lower" (0, 0),
    Replace = "replace" (2, 2),
    Matches = "matches" (1, 2),
    MatchesFull = "matchesFull" (1, 2),
    ReplaceMatches = "replaceMatches" (2, 3),
    Length = "length" (0, 0),
    ToChars = "toChars" (0, 0),
    Encode = "encode" (1, 1),
    Decode = "decode" (1, 1),
    Escape = "escape" (1, 1),
    Unescape = "unescape" (1, 1),
    Trim = "trim" (0, 0),
    Split = "split" (1, 1),
    Join = "join" (0, 1),
    // math
    Abs = "abs" (0, 0),
    Ceiling = "ceiling" (0, 0),
    Exp = "exp" (0, 0),
    Floor = "floor" (0, 0),
    Ln = "ln" (0, 0),
    Log = "log" (1, 1),
    Power = "power" (1, 1),
    Round = "round" (0, 1),
    Sqrt = "sqrt" (0, 0),
    Truncate = "truncate" (0, 0),
    // tree navigation
    Children = "children" (0, 0),
    Descendants = "descendants" (0, 0),
    // utility
    Trace = "trace" (1, 2),
    Now = "now" (0, 0),
    TimeOfDay = "timeOfDay" (0, 0),
    Today = "today" (0, 0),
    DefineVariable = "defineVariable" (1, 2),
    Aggregate = "aggregate" (1, 2),
    Sort = "sort" (0, 16),
    // types and booleans
    Is = "is" (1, 1),
    As = "as" (1, 1),
    Type = "type" (0, 0),
    Not = "not" (0, 0),
    // FHIR additions
    Extension = "extension" (1, 1),
    HasValue = "hasValue" (0, 0),
    GetValue = "getValue" (0, 0),
    Resolve = "resolve" (0, 0),
    MemberOf = "memberOf" (1, 1),
    ConformsTo = "conformsTo" (1, 1),
    HtmlChecks = "htmlChecks" (0, 0),
    Comparable = "comparable" (1, 1),
    LowBoundary = "lowBoundary" (0, 1),
    HighBoundary = "highBoundary" (0, 1),
    Precision = "precision" (0, 0),
}

impl Func {
    /// Functions whose single argument is a type specifier rather than an expression.
    pub(super) fn takes_type(self) -> bool {
        matches!(self, Func::Is | Func::As | Func::OfType)
    }
}
