//! The items a FHIRPath collection holds: System values (Boolean, String, Integer, Long,
//! Decimal, Date, DateTime, Time, Quantity) computed during evaluation, and FHIR elements,
//! which stay borrowed views into the resource's JSON with the FHIR type the model gives them.
//!
//! A FHIR primitive (`Patient.birthDate`) is a [`Node`] whose JSON is the primitive value and
//! whose `shadow` is the `_birthDate` object carrying its `id` and `extension`; it turns into a
//! System value ([`Node::system`]) only when an operator or function needs one. Nothing is
//! copied out of the resource to navigate it.

use std::rc::Rc;

use rust_decimal::Decimal;
use serde_json::Value;

use super::decimal::parse_json_decimal;
use super::quantity::Quantity;
use super::temporal::{Date, DateTime, Time};

pub(super) type Collection<'a> = Vec<Item<'a>>;

#[derive(Debug, Clone)]
pub(super) enum Item<'a> {
    Bool(bool),
    Int(i64),
    Long(i64),
    Dec(Decimal),
    Str(Rc<str>),
    Date(Date),
    DateTime(DateTime),
    Time(Time),
    Quantity(Quantity),
    /// The result of `type()`: a namespace (`System` or `FHIR`) and a type name.
    Type {
        namespace: &'static str,
        name: Rc<str>,
    },
    Node(Node<'a>),
}

/// A FHIR element inside a resource.
#[derive(Debug, Clone, Copy)]
pub(super) struct Node<'a> {
    /// The JSON value; `None` for a primitive that only has `_name` data (an extension
    /// without a value).
    pub value: Option<&'a Value>,
    /// The `_name` object of a primitive: its `id` and `extension`.
    pub shadow: Option<&'a Value>,
    /// The FHIR type the model gives this element (`Patient`, `HumanName`, `date`, a backbone
    /// path such as `Patient.contact`), or `None` where the model has nothing to say.
    pub ty: Option<&'static str>,
    /// Whether the type is known statically, from a path of named elements starting at a
    /// resource. Navigating to an element the type lacks is then a semantic error (the
    /// expression is wrong); on a node reached through `children()`, `descendants()`,
    /// `resolve()` or a `Resource`-typed element it simply selects nothing.
    pub strict: bool,
}

/// The FHIR primitive types and the System type each one evaluates as.
pub(super) fn primitive_system_type(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "boolean" => "Boolean",
        "integer" | "positiveInt" | "unsignedInt" => "Integer",
        "integer64" => "Long",
        "decimal" => "Decimal",
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "markdown" | "base64Binary" | "xhtml" => "String",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        _ => {
            // System types named in the model for primitive `value` and `id` elements.
            return ty.strip_prefix("System.").and_then(|s| match s {
                "Boolean" => Some("Boolean"),
                "Integer" => Some("Integer"),
                "Long" => Some("Long"),
                "Decimal" => Some("Decimal"),
                "String" => Some("String"),
                "Date" => Some("Date"),
                "DateTime" => Some("DateTime"),
                "Time" => Some("Time"),
                _ => None,
            });
        }
    })
}

impl<'a> Node<'a> {
    pub(super) fn resource(value: &'a Value) -> Node<'a> {
        let ty = value.get("resourceType").and_then(Value::as_str).and_then(super::types::static_type_name);
        Node { value: Some(value), shadow: None, ty, strict: true }
    }

    /// This element as a System value, when it is a primitive that has a value. Untyped
    /// JSON scalars (outside the model) convert by their JSON kind.
    pub(super) fn system(&self) -> Option<Item<'a>> {
        let value = self.value?;
        let sys = match self.ty {
            Some(ty) => primitive_system_type(ty),
            None => match value {
                Value::Bool(_) => Some("Boolean"),
                Value::Number(n) if n.is_i64() => Some("Integer"),
                Value::Number(_) => Some("Decimal"),
                Value::String(_) => Some("String"),
                _ => None,
            },
        }?;
        scalar(sys, value)
    }

    /// True for a FHIR Quantity (or a type derived from it), which compares as a System
    /// Quantity.
    pub(super) fn quantity(&self) -> Option<Quantity> {
        let ty = self.ty?;
        if !super::types::is_fhir_subtype(ty, "Quantity") {
            return None;
        }
        let obj = self.value?;
        let value = parse_json_decimal(&number_text(obj.get("value")?)?)?;
        let unit = match (obj.get("system").and_then(Value::as_str), obj.get("code").and_then(Value::as_str)) {
            (Some("http://unitsofmeasure.org"), Some(code)) => code.to_owned(),
            _ => obj.get("unit").and_then(Value::as_str).or_else(|| obj.get("code").and_then(Value::as_str)).unwrap_or("1").to_owned(),
        };
        Some(Quantity { value, unit })
    }
}

/// The literal text of a JSON number (exact with serde_json's `arbitrary_precision`).
pub(super) fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON scalar read as the System type `sys`.
fn scalar<'a>(sys: &str, value: &Value) -> Option<Item<'a>> {
    Some(match (sys, value) {
        ("Boolean", Value::Bool(b)) => Item::Bool(*b),
        ("Integer", Value::Number(n)) => Item::Int(n.as_i64()?),
        ("Long", Value::String(s)) => Item::Long(s.parse().ok()?),
        ("Long", Value::Number(n)) => Item::Long(n.as_i64()?),
        ("Decimal", Value::Number(_)) => Item::Dec(parse_json_decimal(&number_text(value)?)?),
        ("String", Value::String(s)) => Item::Str(Rc::from(s.as_str())),
        ("Date", Value::String(s)) => Item::Date(Date::parse(s)?),
        ("DateTime", Value::String(s)) => {
            // A FHIR dateTime may hold just a date; it still is a DateTime.
            Item::DateTime(DateTime::parse(s).or_else(|| Date::parse(s).map(|d| DateTime::from_date(&d)))?)
        }
        ("Time", Value::String(s)) => Item::Time(Time::parse(s)?),
        _ => return None,
    })
}

impl<'a> Item<'a> {
    pub(super) fn str(s: &str) -> Item<'a> {
        Item::Str(Rc::from(s))
    }

    /// The item with FHIR primitives turned into System values; FHIR Quantities stay nodes
    /// (use [`Item::as_quantity`]) and complex elements stay as they are.
    pub(super) fn to_system(&self) -> Item<'a> {
        match self {
            Item::Node(node) => node.system().unwrap_or_else(|| self.clone()),
            other => other.clone(),
        }
    }

    pub(super) fn as_quantity(&self) -> Option<Quantity> {
        match self {
            Item::Quantity(q) => Some(q.clone()),
            Item::Node(node) => node.quantity(),
            _ => None,
        }
    }

    /// The item's type as `(namespace, name)`.
    pub(super) fn type_name(&self) -> (&'static str, String) {
        let system = |name: &str| ("System", name.to_owned());
        match self {
            Item::Bool(_) => system("Boolean"),
            Item::Int(_) => system("Integer"),
            Item::Long(_) => system("Long"),
            Item::Dec(_) => system("Decimal"),
            Item::Str(_) => system("String"),
            Item::Date(_) => system("Date"),
            Item::DateTime(_) => system("DateTime"),
            Item::Time(_) => system("Time"),
            Item::Quantity(_) => system("Quantity"),
            Item::Type { .. } => system("TypeInfo"),
            Item::Node(node) => match node.ty {
                Some(ty) => match ty.strip_prefix("System.") {
                    Some(sys) => system(sys),
                    None => ("FHIR", ty.to_owned()),
                },
                None => match node.system() {
                    Some(item) => item.type_name(),
                    None => ("FHIR", "Element".to_owned()),
                },
            },
        }
    }

    /// The item as a JSON value, for results handed back to Rust callers.
    pub(super) fn to_json(&self) -> Value {
        match self {
            Item::Bool(b) => Value::Bool(*b),
            Item::Int(i) | Item::Long(i) => Value::from(*i),
            Item::Dec(d) => serde_json::from_str(&super::decimal::decimal_to_string(d)).unwrap_or_else(|_| Value::String(d.to_string())),
            Item::Str(s) => Value::String(s.to_string()),
            Item::Date(d) => Value::String(d.to_fhirpath_string()),
            Item::DateTime(d) => Value::String(d.to_fhirpath_string()),
            Item::Time(t) => Value::String(t.to_fhirpath_string()),
            Item::Quantity(q) => serde_json::json!({ "value": q.value.to_string(), "unit": q.unit }),
            Item::Type { namespace, name } => serde_json::json!({ "namespace": namespace, "name": name.as_ref() }),
            Item::Node(node) => node.value.cloned().unwrap_or(Value::Null),
        }
    }
}
