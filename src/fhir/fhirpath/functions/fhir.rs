//! The FHIR additions to FHIRPath (`extension`, `hasValue`, `getValue`, `resolve`,
//! `conformsTo`, `htmlChecks`, `memberOf`), the 2.1 `lowBoundary`/`highBoundary`/
//! `precision`/`comparable`, the type functions (`is`, `as`, `type`), `not`, and the clock.
//!
//! `resolve()` looks in the resource's own `contained` list (`#` alone is the resource
//! itself) and, for a Bundle, its entries, before asking the environment's
//! [`Resolver`](super::super::Resolver) (Herald's store, the resources of the transaction
//! being committed, or search's type-only resolver, which also reads `Reference.type`). A
//! reference that cannot be resolved yields nothing, as the spec requires.

use std::rc::Rc;

use rust_decimal::Decimal;
use serde_json::Value;

use super::super::ast::Func;
use super::super::decimal::{decimal_high_boundary, decimal_low_boundary, decimal_precision};
use super::super::error::{ErrorKind, FhirPathError};
use super::super::eval::R;
use super::super::ops::to_bool;
use super::super::temporal::{Date, DateTime, Time};
use super::super::types;
use super::super::value::{Collection, Item, Node};
use super::Call;

pub(super) fn call<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Option<Collection<'a>>> {
    let out = match cx.func {
        Func::Extension => {
            let Some(url) = cx.arg_str(0)? else {
                return Ok(Some(Vec::new()));
            };
            let mut out = Vec::new();
            for item in input {
                if let Item::Node(node) = item {
                    let mut extensions = Vec::new();
                    extension_nodes(node, &mut extensions);
                    out.extend(extensions.into_iter().filter(|e| match e {
                        Item::Node(n) => n.value.and_then(|v| v.get("url")).and_then(Value::as_str) == Some(url.as_ref()),
                        _ => false,
                    }));
                }
            }
            out
        }
        Func::HasValue => vec![Item::Bool(
            matches!(input, [Item::Node(n)] if n.system().is_some()) || matches!(input, [item] if !matches!(item, Item::Node(_))),
        )],
        Func::GetValue => match input {
            [Item::Node(n)] => n.system().into_iter().collect(),
            _ => Vec::new(),
        },
        Func::Resolve => {
            let mut out = Vec::new();
            for item in input {
                if let Some(target) = target_of(item) {
                    cx.ev.tick(16, cx.pos)?;
                    if let Some(found) = resolve(cx, &target) {
                        out.push(Item::Node(Node { strict: false, ..Node::resource(found) }));
                    }
                }
            }
            out
        }
        Func::MemberOf => {
            // Terminology services are out of Herald's scope: membership is unknown.
            Vec::new()
        }
        Func::ConformsTo => {
            let Some(url) = cx.arg_str(0)? else {
                return Ok(Some(Vec::new()));
            };
            let Some(name) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/").filter(|n| types::is_fhir_type(n)) else {
                return Err(cx.error(&format!("conformsTo(): unknown profile {url}")));
            };
            let mut out = Vec::new();
            for item in input {
                let (_, ty) = item.type_name();
                out.push(Item::Bool(types::is_fhir_subtype(&ty, name)));
            }
            out
        }
        Func::HtmlChecks => match cx.single(input)? {
            None => Vec::new(),
            Some(Item::Str(s)) => vec![Item::Bool(html_is_safe(&s))],
            Some(_) => Vec::new(),
        },
        Func::Comparable => match (cx.single(input)?.and_then(|i| i.as_quantity()), cx.arg_single(0)?.and_then(|i| i.as_quantity())) {
            (Some(a), Some(b)) => vec![Item::Bool(a.comparable(&b))],
            _ => Vec::new(),
        },
        Func::LowBoundary | Func::HighBoundary => {
            let Some(item) = cx.single(input)? else {
                return Ok(Some(Vec::new()));
            };
            let digits = cx.arg_int(0)?;
            boundary(&item, digits, cx.func == Func::HighBoundary).into_iter().collect()
        }
        Func::Precision => match cx.single(input)? {
            None => Vec::new(),
            Some(item) => precision(&item).map(Item::Int).into_iter().collect(),
        },
        Func::Is => match (input, cx.ty) {
            ([], _) => Vec::new(),
            ([item], Some(ty)) => vec![Item::Bool(types::item_is(item, ty, false))],
            ([_], None) => return Err(cx.semantic("is() needs a type")),
            (many, _) => return Err(FhirPathError::execution(cx.pos, ErrorKind::NotSingleton(many.len()))),
        },
        Func::As => match (input, cx.ty) {
            ([], _) => Vec::new(),
            ([item], Some(ty)) => input.iter().filter(|_| types::item_is(item, ty, true)).cloned().collect(),
            ([_], None) => return Err(cx.semantic("as() needs a type")),
            (many, _) => return Err(FhirPathError::execution(cx.pos, ErrorKind::NotSingleton(many.len()))),
        },
        Func::Type => input
            .iter()
            .map(|item| {
                let (namespace, name) = item.type_name();
                Item::Type { namespace, name: Rc::from(name) }
            })
            .collect(),
        Func::Not => to_bool(input.to_vec(), cx.pos)?.map(|b| Item::Bool(!b)).into_iter().collect(),
        Func::Now => vec![Item::DateTime(DateTime::now())],
        Func::Today => vec![Item::Date(Date::today())],
        Func::TimeOfDay => vec![Item::Time(Time::now())],
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// The `extension` children of an element: for a primitive, those in its `_name` shadow.
fn extension_nodes<'a>(node: &Node<'a>, out: &mut Collection<'a>) {
    let holder = match node.value {
        Some(Value::Object(_)) => node.value,
        _ => node.shadow,
    };
    let ty = types::static_type_name("Extension");
    if let Some(list) = holder.and_then(|h| h.get("extension")).and_then(Value::as_array) {
        out.extend(list.iter().map(|v| Item::Node(Node { value: Some(v), shadow: None, ty, strict: true })));
    }
}

/// What an item says about a reference's target: a string (a reference or canonical), or a
/// `Reference` element's `reference` and `type`.
struct Target<'a> {
    reference: Option<String>,
    type_hint: Option<&'a str>,
    /// Whether the item is a `Reference`-shaped object rather than a string.
    element: bool,
}

fn target_of<'a>(item: &Item<'a>) -> Option<Target<'a>> {
    let string = |s: &str| Some(Target { reference: Some(s.to_owned()), type_hint: None, element: false });
    match item {
        Item::Str(s) => string(s),
        Item::Node(node) => match node.value? {
            Value::String(s) => string(s),
            Value::Object(obj) => {
                let reference = obj.get("reference").and_then(Value::as_str).map(str::to_owned);
                let type_hint = obj.get("type").and_then(Value::as_str);
                (reference.is_some() || type_hint.is_some()).then_some(Target { reference, type_hint, element: true })
            }
            _ => None,
        },
        _ => None,
    }
}

fn resolve<'a>(cx: &Call<'_, 'a, '_>, target: &Target<'_>) -> Option<&'a Value> {
    let env = cx.ev.env;
    let root = env.root_resource.or(env.resource);
    if let Some(reference) = target.reference.as_deref() {
        if let Some(id) = reference.strip_prefix('#') {
            // FHIR: `#` alone refers to the containing resource itself.
            if id.is_empty() {
                return root;
            }
            let contained = root?.get("contained")?.as_array()?;
            return contained.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(id));
        }
        if let Some(bundle) = root.filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Bundle")) {
            let entries = bundle.get("entry").and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                let full_url = entry.get("fullUrl").and_then(Value::as_str).unwrap_or("");
                let resource = entry.get("resource");
                let typed = resource.and_then(|r| Some(format!("{}/{}", r.get("resourceType")?.as_str()?, r.get("id")?.as_str()?)));
                if full_url == reference
                    || (!reference.contains("://") && typed.as_deref() == Some(reference))
                    || full_url.ends_with(&format!("/{reference}"))
                {
                    return resource;
                }
            }
        }
    }
    let resolver = env.resolver?;
    match (target.element, target.reference.as_deref()) {
        (true, reference) => resolver.resolve_reference(reference, target.type_hint),
        (false, Some(reference)) => resolver.resolve(reference),
        (false, None) => None,
    }
}

/// Elements FHIR narrative may use (the XHTML subset of the FHIR narrative rules: no
/// scripts, forms, frames, objects, head or body).
const NARRATIVE_ELEMENTS: [&str; 52] = [
    "a",
    "abbr",
    "acronym",
    "address",
    "b",
    "bdo",
    "big",
    "blockquote",
    "br",
    "caption",
    "center",
    "cite",
    "code",
    "col",
    "colgroup",
    "dd",
    "del",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "font",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
];
const NARRATIVE_ELEMENTS_MORE: [&str; 6] = ["thead", "tr", "tt", "u", "ul", "var"];

/// `htmlChecks()`: narrative XHTML uses only the allowed elements and carries no event
/// attributes (`onclick`) or `javascript:` links.
fn html_is_safe(xhtml: &str) -> bool {
    let lower = xhtml.to_ascii_lowercase();
    if lower.contains("javascript:") {
        return false;
    }
    let mut rest = lower.as_str();
    while let Some(open) = rest.find('<') {
        let tag_and_after = rest.get(open + 1..).unwrap_or("");
        let end = tag_and_after.find('>').unwrap_or(tag_and_after.len());
        let tag = tag_and_after.get(..end).unwrap_or("");
        rest = tag_and_after.get(end..).unwrap_or("");
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let body = tag.strip_prefix('/').unwrap_or(tag);
        let name: String = body.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == ':').collect();
        let name = name.rsplit(':').next().unwrap_or("");
        if !NARRATIVE_ELEMENTS.contains(&name) && !NARRATIVE_ELEMENTS_MORE.contains(&name) {
            return false;
        }
        let event = body.split(|c: char| c.is_ascii_whitespace()).skip(1).any(|attr| attr.starts_with("on"));
        if event {
            return false;
        }
    }
    true
}

fn boundary<'a>(item: &Item<'a>, digits: Option<i64>, high: bool) -> Option<Item<'a>> {
    let dec = |d: &Decimal| if high { decimal_high_boundary(d, digits) } else { decimal_low_boundary(d, digits) };
    // Dates and times take a digit count; a negative one has no answer.
    let date_digits = match digits {
        Some(d) => Some(u32::try_from(d).ok()?),
        None => None,
    };
    match item.to_system() {
        Item::Int(i) | Item::Long(i) => dec(&Decimal::from(i)).map(Item::Dec),
        Item::Dec(d) => dec(&d).map(Item::Dec),
        Item::Date(d) => (if high { d.high_boundary(date_digits) } else { d.low_boundary(date_digits) }).map(Item::Date),
        Item::DateTime(d) => (if high { d.high_boundary(date_digits) } else { d.low_boundary(date_digits) }).map(Item::DateTime),
        Item::Time(t) => (if high { t.high_boundary(date_digits) } else { t.low_boundary(date_digits) }).map(Item::Time),
        other => {
            let q = other.as_quantity()?;
            (if high { q.high_boundary(digits) } else { q.low_boundary(digits) }).map(Item::Quantity)
        }
    }
}

/// `precision()`: significant decimal places of a Decimal, digits of a date or time.
fn precision(item: &Item<'_>) -> Option<i64> {
    match item.to_system() {
        Item::Dec(d) => Some(i64::from(decimal_precision(&d))),
        Item::Int(_) | Item::Long(_) => Some(0),
        Item::Date(d) => Some(i64::from(d.precision_digits())),
        Item::DateTime(d) => Some(i64::from(d.precision_digits())),
        Item::Time(t) => Some(i64::from(t.precision_digits())),
        other => other.as_quantity().map(|q| i64::from(q.precision())),
    }
}
