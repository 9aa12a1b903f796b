//! FHIRPath operators: equality and equivalence, comparison, arithmetic, string
//! concatenation, membership, three-valued logic and union.
//!
//! Operands are collections; each operator applies the spec's singleton and empty-collection
//! rules before looking at item types. Mismatched types are an execution error where the spec
//! says so (`1 < 'a'`), an empty result where it says the answer is unknown (dates of
//! different precision, integer overflow, division by zero).

use std::cmp::Ordering;
use std::rc::Rc;

use rust_decimal::Decimal;

use super::ast::{BinOp, Expr};
use super::decimal::{decimals_equivalent, negate_decimal};
use super::error::{ErrorKind, FhirPathError};
use super::eval::{Evaluator, Scope, R};
use super::quantity::Quantity;
use super::temporal::{self, DateTime};
use super::value::{Collection, Item};

pub(super) fn binary<'a>(
    ev: &Evaluator<'a, '_>,
    op: BinOp,
    lhs: &Expr,
    rhs: &Expr,
    focus: &[Item<'a>],
    scope: &Scope<'a>,
    pos: usize,
) -> R<Collection<'a>> {
    // The logic operators may stop after the left operand.
    if matches!(op, BinOp::And | BinOp::Or | BinOp::Implies) {
        let left = to_bool(ev.eval(lhs, focus, scope)?, pos)?;
        match (op, left) {
            (BinOp::And, Some(false)) => return Ok(vec![Item::Bool(false)]),
            (BinOp::Or, Some(true)) => return Ok(vec![Item::Bool(true)]),
            (BinOp::Implies, Some(false)) => return Ok(vec![Item::Bool(true)]),
            _ => {}
        }
        let right = to_bool(ev.eval(rhs, focus, scope)?, pos)?;
        let result = match op {
            BinOp::And => match (left, right) {
                (Some(true), Some(true)) => Some(true),
                (_, Some(false)) => Some(false),
                _ => None,
            },
            BinOp::Or => match (left, right) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            _ => match (left, right) {
                (_, Some(true)) => Some(true),
                (Some(true), r) => r,
                _ => None,
            },
        };
        return Ok(result.map(Item::Bool).into_iter().collect());
    }
    let left = ev.eval(lhs, focus, scope)?;
    let right = ev.eval(rhs, focus, scope)?;
    match op {
        BinOp::Xor => {
            let (l, r) = (to_bool(left, pos)?, to_bool(right, pos)?);
            Ok(l.zip(r).map(|(l, r)| Item::Bool(l != r)).into_iter().collect())
        }
        BinOp::Eq => Ok(equal_collections(ev, &left, &right, pos)?.map(Item::Bool).into_iter().collect()),
        BinOp::Ne => Ok(equal_collections(ev, &left, &right, pos)?.map(|b| Item::Bool(!b)).into_iter().collect()),
        BinOp::Equiv => Ok(vec![Item::Bool(equivalent_collections(ev, &left, &right, pos)?)]),
        BinOp::NotEquiv => Ok(vec![Item::Bool(!equivalent_collections(ev, &left, &right, pos)?)]),
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(l), Some(r)) = (singleton(&left, pos)?, singleton(&right, pos)?) else {
                return Ok(Vec::new());
            };
            let ord = compare(&l, &r).map_err(|_| operands(op.symbol(), &l, &r, pos))?;
            Ok(ord
                .map(|o| {
                    Item::Bool(match op {
                        BinOp::Lt => o == Ordering::Less,
                        BinOp::Gt => o == Ordering::Greater,
                        BinOp::Le => o != Ordering::Greater,
                        _ => o != Ordering::Less,
                    })
                })
                .into_iter()
                .collect())
        }
        BinOp::In | BinOp::Contains => {
            let (item, set) = if op == BinOp::In { (&left, &right) } else { (&right, &left) };
            let Some(item) = singleton(item, pos)? else {
                return Ok(Vec::new());
            };
            ev.tick(set.len() as u64, pos)?;
            let found = set.iter().any(|other| item_equal(&item, other) == Some(true));
            Ok(vec![Item::Bool(found)])
        }
        BinOp::Concat => {
            let text = |c: &Collection<'a>| -> R<String> {
                match singleton(c, pos)? {
                    None => Ok(String::new()),
                    Some(Item::Str(s)) => Ok(s.to_string()),
                    Some(other) => Err(operands("&", &other, &other, pos)),
                }
            };
            let joined = text(&left)? + &text(&right)?;
            ev.tick(joined.len() as u64 / 64, pos)?;
            Ok(vec![Item::Str(Rc::from(joined))])
        }
        _ => {
            let (Some(l), Some(r)) = (singleton(&left, pos)?, singleton(&right, pos)?) else {
                return Ok(Vec::new());
            };
            let result = arithmetic(op, &l, &r, pos)?;
            if let Some(Item::Str(s)) = &result {
                ev.tick(s.len() as u64 / 64, pos)?;
            }
            Ok(result.into_iter().collect())
        }
    }
}

fn operands(op: &str, l: &Item<'_>, r: &Item<'_>, pos: usize) -> FhirPathError {
    let (_, ln) = l.type_name();
    let (_, rn) = r.type_name();
    FhirPathError::execution(pos, ErrorKind::Operands { operation: format!("'{op}'"), operands: format!("{ln} and {rn}") })
}

/// The single item of a collection (as a System value where it is a FHIR primitive); `None`
/// for an empty collection; an error for more than one item.
pub(super) fn singleton<'a>(items: &[Item<'a>], pos: usize) -> R<Option<Item<'a>>> {
    match items {
        [] => Ok(None),
        [item] => Ok(Some(item.to_system())),
        many => Err(FhirPathError::execution(pos, ErrorKind::NotSingleton(many.len()))),
    }
}

/// Singleton evaluation of a collection as a Boolean (FHIRPath §4.5): empty is unknown, a
/// single Boolean is itself, any other single item is `true`, more than one is an error.
pub(super) fn to_bool(items: Collection<'_>, pos: usize) -> R<Option<bool>> {
    Ok(singleton(&items, pos)?.map(|item| match item {
        Item::Bool(b) => b,
        _ => true,
    }))
}

pub(super) fn negate<'a>(ev: &Evaluator<'a, '_>, items: Collection<'a>, pos: usize) -> R<Collection<'a>> {
    let _ = ev;
    let Some(item) = singleton(&items, pos)? else {
        return Ok(Vec::new());
    };
    let negated = match item {
        Item::Int(i) => i.checked_neg().map(Item::Int),
        Item::Long(i) => i.checked_neg().map(Item::Long),
        Item::Dec(d) => Some(Item::Dec(negate_decimal(d))),
        Item::Quantity(q) => Some(Item::Quantity(Quantity { value: -q.value, unit: q.unit })),
        other => {
            let q = other.as_quantity();
            match q {
                Some(q) => Some(Item::Quantity(Quantity { value: -q.value, unit: q.unit })),
                None => return Err(operands("unary -", &other, &other, pos)),
            }
        }
    };
    Ok(negated.into_iter().collect())
}

/// Add to `out` the items of `part` not already in it (`|` and `union()`).
pub(super) fn union_into<'a>(ev: &Evaluator<'a, '_>, out: &mut Collection<'a>, part: Collection<'a>, pos: usize) -> R<()> {
    let mut seen = Dedup::of(out);
    for item in part {
        seen.insert(ev, out, item, pos)?;
    }
    ev.check_size(out.len(), pos)
}

/// A coarse key that equal items always share: Strings, numbers and Booleans by value,
/// everything else by kind. Items are compared with [`item_equal`] only within a bucket, so
/// de-duplicating a thousand codes costs a thousand hash look-ups, not half a million
/// comparisons.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Str(Rc<str>),
    Num(Decimal),
    Bool(bool),
    Other(u8),
}

fn key(item: &Item<'_>) -> Key {
    match item.to_system() {
        Item::Str(s) => Key::Str(s),
        Item::Bool(b) => Key::Bool(b),
        Item::Int(i) | Item::Long(i) => Key::Num(Decimal::from(i).normalize()),
        Item::Dec(d) => Key::Num(d.normalize()),
        Item::Date(_) | Item::DateTime(_) => Key::Other(1),
        Item::Time(_) => Key::Other(2),
        Item::Quantity(_) => Key::Other(3),
        Item::Type { .. } => Key::Other(4),
        Item::Node(n) if n.quantity().is_some() => Key::Other(3),
        Item::Node(_) => Key::Other(0),
    }
}

/// The items of a collection being built without duplicates, bucketed by [`Key`].
pub(super) struct Dedup {
    buckets: std::collections::HashMap<Key, Vec<usize>>,
}

impl Dedup {
    pub(super) fn of(items: &[Item<'_>]) -> Dedup {
        let mut buckets: std::collections::HashMap<Key, Vec<usize>> = std::collections::HashMap::new();
        for (i, item) in items.iter().enumerate() {
            buckets.entry(key(item)).or_default().push(i);
        }
        Dedup { buckets }
    }

    /// Push `item` onto `out` unless an equal item is there; true if it was pushed.
    pub(super) fn insert<'a>(&mut self, ev: &Evaluator<'a, '_>, out: &mut Collection<'a>, item: Item<'a>, pos: usize) -> R<bool> {
        let bucket = self.buckets.entry(key(&item)).or_default();
        ev.tick(bucket.len() as u64 / 4 + 1, pos)?;
        if bucket.iter().any(|i| out.get(*i).is_some_and(|o| item_equal(o, &item) == Some(true))) {
            return Ok(false);
        }
        bucket.push(out.len());
        out.push(item);
        Ok(true)
    }
}

/// `=` on collections: empty if either side is empty, false on different lengths, else
/// item by item in order.
pub(super) fn equal_collections(ev: &Evaluator<'_, '_>, left: &[Item<'_>], right: &[Item<'_>], pos: usize) -> R<Option<bool>> {
    if left.is_empty() || right.is_empty() {
        return Ok(None);
    }
    if left.len() != right.len() {
        return Ok(Some(false));
    }
    ev.tick(left.len() as u64, pos)?;
    let mut unknown = false;
    for (l, r) in left.iter().zip(right) {
        match item_equal(l, r) {
            Some(false) => return Ok(Some(false)),
            None => unknown = true,
            Some(true) => {}
        }
    }
    Ok(if unknown { None } else { Some(true) })
}

/// `~` on collections: both empty is true; otherwise same size and every item has an
/// equivalent partner, in any order.
pub(super) fn equivalent_collections(ev: &Evaluator<'_, '_>, left: &[Item<'_>], right: &[Item<'_>], pos: usize) -> R<bool> {
    if left.len() != right.len() {
        return Ok(false);
    }
    ev.tick((left.len() * right.len()) as u64, pos)?;
    let mut used = vec![false; right.len()];
    for l in left {
        let partner = right.iter().enumerate().position(|(i, r)| !used.get(i).copied().unwrap_or(true) && item_equivalent(l, r));
        match partner.and_then(|i| used.get_mut(i)) {
            Some(slot) => *slot = true,
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Equality of two items: `None` when the answer is unknown (temporal values of different
/// precision).
pub(super) fn item_equal(l: &Item<'_>, r: &Item<'_>) -> Option<bool> {
    if let (Item::Node(a), Item::Node(b)) = (l, r) {
        if a.system().is_none() && b.system().is_none() {
            if let (Some(qa), Some(qb)) = (a.quantity(), b.quantity()) {
                return qa.equal(&qb);
            }
            return Some(a.value == b.value && a.shadow == b.shadow);
        }
    }
    let (l, r) = (l.to_system(), r.to_system());
    match (&l, &r) {
        (Item::Bool(a), Item::Bool(b)) => Some(a == b),
        (Item::Str(a), Item::Str(b)) => Some(a == b),
        (Item::Type { namespace: na, name: a }, Item::Type { namespace: nb, name: b }) => Some(na == nb && a == b),
        (Item::Date(a), Item::Date(b)) => temporal::dates_equal(a, b),
        (Item::DateTime(a), Item::DateTime(b)) => temporal::datetimes_equal(a, b),
        (Item::Date(a), Item::DateTime(b)) => temporal::datetimes_equal(&DateTime::from_date(a), b),
        (Item::DateTime(a), Item::Date(b)) => temporal::datetimes_equal(a, &DateTime::from_date(b)),
        (Item::Time(a), Item::Time(b)) => temporal::times_equal(a, b),
        _ => {
            if let (Some(a), Some(b)) = (number(&l), number(&r)) {
                return Some(a == b);
            }
            match (l.as_quantity(), r.as_quantity()) {
                (Some(a), Some(b)) => a.equal(&b),
                _ => Some(false),
            }
        }
    }
}

/// Equivalence of two items: never unknown.
pub(super) fn item_equivalent(l: &Item<'_>, r: &Item<'_>) -> bool {
    if let (Item::Node(a), Item::Node(b)) = (l, r) {
        if a.system().is_none() && b.system().is_none() {
            if let (Some(qa), Some(qb)) = (a.quantity(), b.quantity()) {
                return qa.equivalent(&qb);
            }
            return a.value == b.value;
        }
    }
    let (l, r) = (l.to_system(), r.to_system());
    match (&l, &r) {
        (Item::Str(a), Item::Str(b)) => normalise(a) == normalise(b),
        (Item::Date(a), Item::Date(b)) => temporal::dates_equivalent(a, b),
        (Item::DateTime(a), Item::DateTime(b)) => temporal::datetimes_equivalent(a, b),
        (Item::Date(a), Item::DateTime(b)) => temporal::datetimes_equivalent(&DateTime::from_date(a), b),
        (Item::DateTime(a), Item::Date(b)) => temporal::datetimes_equivalent(a, &DateTime::from_date(b)),
        (Item::Time(a), Item::Time(b)) => temporal::times_equivalent(a, b),
        _ => {
            if let (Some(a), Some(b)) = (number(&l), number(&r)) {
                // Decimals are equivalent when equal at the precision of the less precise one.
                return decimals_equivalent(&a, &b);
            }
            match (l.as_quantity(), r.as_quantity()) {
                (Some(a), Some(b)) => a.equivalent(&b),
                _ => item_equal(&l, &r) == Some(true),
            }
        }
    }
}

/// Strings compared for equivalence: case-insensitive, whitespace runs folded to one space.
fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// An Integer, Long or Decimal as a Decimal.
pub(super) fn number(item: &Item<'_>) -> Option<Decimal> {
    match item {
        Item::Int(i) | Item::Long(i) => Some(Decimal::from(*i)),
        Item::Dec(d) => Some(*d),
        _ => None,
    }
}

/// Ordering of two System values: `Ok(None)` when unknown (precision), `Err` when the types
/// cannot be compared at all.
pub(super) fn compare(l: &Item<'_>, r: &Item<'_>) -> Result<Option<Ordering>, ()> {
    let (l, r) = (l.to_system(), r.to_system());
    match (&l, &r) {
        (Item::Str(a), Item::Str(b)) => Ok(Some(a.cmp(b))),
        (Item::Date(a), Item::Date(b)) => Ok(temporal::compare_dates(a, b)),
        (Item::DateTime(a), Item::DateTime(b)) => Ok(temporal::compare_datetimes(a, b)),
        (Item::Date(a), Item::DateTime(b)) => Ok(temporal::compare_datetimes(&DateTime::from_date(a), b)),
        (Item::DateTime(a), Item::Date(b)) => Ok(temporal::compare_datetimes(a, &DateTime::from_date(b))),
        (Item::Time(a), Item::Time(b)) => Ok(temporal::compare_times(a, b)),
        _ => {
            if let (Some(a), Some(b)) = (number(&l), number(&r)) {
                return Ok(Some(a.cmp(&b)));
            }
            match (l.as_quantity(), r.as_quantity()) {
                (Some(a), Some(b)) => Ok(a.compare(&b)),
                _ => Err(()),
            }
        }
    }
}

fn arithmetic<'a>(op: BinOp, l: &Item<'a>, r: &Item<'a>, pos: usize) -> R<Option<Item<'a>>> {
    let fail = || operands(op.symbol(), l, r, pos);
    // Integer (and Long) arithmetic stays integral except for `/`.
    let ints = match (l, r) {
        (Item::Int(a), Item::Int(b)) => Some((*a, *b, false)),
        (Item::Long(a) | Item::Int(a), Item::Long(b) | Item::Int(b)) => Some((*a, *b, true)),
        _ => None,
    };
    if let Some((a, b, long)) = ints {
        let wrap = |v: Option<i64>| v.map(|v| if long { Item::Long(v) } else { Item::Int(v) });
        let int32 = |v: Option<i64>| v.filter(|v| long || i32::try_from(*v).is_ok());
        return Ok(match op {
            BinOp::Add => wrap(int32(a.checked_add(b))),
            BinOp::Sub => wrap(int32(a.checked_sub(b))),
            BinOp::Mul => wrap(int32(a.checked_mul(b))),
            BinOp::IntDiv => wrap(if b == 0 { None } else { a.checked_div(b) }),
            BinOp::Mod => wrap(if b == 0 { None } else { a.checked_rem(b) }),
            BinOp::Div => {
                if b == 0 {
                    None
                } else {
                    Decimal::from(a).checked_div(Decimal::from(b)).map(|d| Item::Dec(d.normalize()))
                }
            }
            _ => return Err(fail()),
        });
    }
    if let (Some(a), Some(b)) = (number(l), number(r)) {
        return Ok(match op {
            BinOp::Add => a.checked_add(b).map(Item::Dec),
            BinOp::Sub => a.checked_sub(b).map(Item::Dec),
            BinOp::Mul => a.checked_mul(b).map(Item::Dec),
            BinOp::Div => {
                if b.is_zero() {
                    None
                } else {
                    a.checked_div(b).map(|d| Item::Dec(d.normalize()))
                }
            }
            BinOp::IntDiv => {
                if b.is_zero() {
                    None
                } else {
                    a.checked_div(b).and_then(|d| i64::try_from(d.trunc()).ok()).map(Item::Int)
                }
            }
            BinOp::Mod => {
                if b.is_zero() {
                    None
                } else {
                    a.checked_rem(b).map(Item::Dec)
                }
            }
            _ => return Err(fail()),
        });
    }
    match (op, l, r) {
        (BinOp::Add, Item::Str(a), Item::Str(b)) => return Ok(Some(Item::Str(Rc::from(format!("{a}{b}"))))),
        (BinOp::Add | BinOp::Sub, Item::Date(_) | Item::DateTime(_) | Item::Time(_), _) => {
            let q = r.as_quantity().ok_or_else(fail)?;
            let negate = op == BinOp::Sub;
            let result = match l {
                Item::Date(d) => temporal::add_to_date(d, &q, negate).map(|o| o.map(Item::Date)),
                Item::DateTime(d) => temporal::add_to_datetime(d, &q, negate).map(|o| o.map(Item::DateTime)),
                Item::Time(t) => temporal::add_to_time(t, &q, negate).map(|o| o.map(Item::Time)),
                _ => return Err(fail()),
            };
            return result.map_err(|e| FhirPathError::execution(pos, ErrorKind::Invalid(e.to_string())));
        }
        _ => {}
    }
    let as_q = |i: &Item<'a>| i.as_quantity().or_else(|| number(i).map(|value| Quantity { value, unit: "1".to_owned() }));
    match (l.as_quantity().is_some() || r.as_quantity().is_some(), as_q(l), as_q(r)) {
        (true, Some(a), Some(b)) => {
            let q = match op {
                BinOp::Add => a.add(&b),
                BinOp::Sub => a.sub(&b),
                BinOp::Mul => a.mul(&b),
                BinOp::Div => a.div(&b),
                _ => return Err(fail()),
            };
            Ok(q.map(Item::Quantity))
        }
        _ => Err(fail()),
    }
}
