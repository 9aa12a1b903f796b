//! The elements of an R5 `SubscriptionTopic`, as a table: what the R4 `Basic` form carries as
//! cross-version extensions (`basic`) and what R4B lacks (`r4b`).
//!
//! Each element has its R5 name, its FHIR type (the `value[x]` an extension carries it in),
//! whether it repeats, and for backbone elements their children. The table is the one place
//! that knows the shape; the converters walk it.

/// An element's content.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// A single-typed element: its FHIR type name as in `value<Type>` (`Uri`, `String`,
    /// `CodeableConcept`).
    Typed(&'static str),
    /// A choice `name[x]` with the types it allows (`versionAlgorithm[x]`).
    Choice(&'static [&'static str]),
    /// A backbone element with these children.
    Backbone(&'static [Element]),
}

/// One element of the table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Element {
    pub name: &'static str,
    pub shape: Shape,
    pub repeats: bool,
}

const fn one(name: &'static str, ty: &'static str) -> Element {
    Element { name, shape: Shape::Typed(ty), repeats: false }
}

const fn many(name: &'static str, ty: &'static str) -> Element {
    Element { name, shape: Shape::Typed(ty), repeats: true }
}

const QUERY_CRITERIA: &[Element] = &[
    one("previous", "String"),
    one("resultForCreate", "Code"),
    one("current", "String"),
    one("resultForDelete", "Code"),
    one("requireBoth", "Boolean"),
];

const RESOURCE_TRIGGER: &[Element] = &[
    one("description", "Markdown"),
    one("resource", "Uri"),
    many("supportedInteraction", "Code"),
    Element { name: "queryCriteria", shape: Shape::Backbone(QUERY_CRITERIA), repeats: false },
    one("fhirPathCriteria", "String"),
];

const EVENT_TRIGGER: &[Element] = &[one("description", "Markdown"), one("event", "CodeableConcept"), one("resource", "Uri")];

const CAN_FILTER_BY: &[Element] = &[
    one("description", "Markdown"),
    one("resource", "Uri"),
    one("filterParameter", "String"),
    one("filterDefinition", "Uri"),
    many("comparator", "Code"),
    many("modifier", "Code"),
];

const NOTIFICATION_SHAPE: &[Element] = &[one("resource", "Uri"), many("include", "String"), many("revInclude", "String")];

/// Every element R5 `SubscriptionTopic` adds to `DomainResource`, in definition order.
pub(super) const TOPIC: &[Element] = &[
    one("url", "Uri"),
    many("identifier", "Identifier"),
    one("version", "String"),
    Element { name: "versionAlgorithm", shape: Shape::Choice(&["String", "Coding"]), repeats: false },
    one("name", "String"),
    one("title", "String"),
    many("derivedFrom", "Canonical"),
    one("status", "Code"),
    one("experimental", "Boolean"),
    one("date", "DateTime"),
    one("publisher", "String"),
    many("contact", "ContactDetail"),
    one("description", "Markdown"),
    many("useContext", "UsageContext"),
    many("jurisdiction", "CodeableConcept"),
    one("purpose", "Markdown"),
    one("copyright", "Markdown"),
    one("copyrightLabel", "String"),
    one("approvalDate", "Date"),
    one("lastReviewDate", "Date"),
    one("effectivePeriod", "Period"),
    Element { name: "resourceTrigger", shape: Shape::Backbone(RESOURCE_TRIGGER), repeats: true },
    Element { name: "eventTrigger", shape: Shape::Backbone(EVENT_TRIGGER), repeats: true },
    Element { name: "canFilterBy", shape: Shape::Backbone(CAN_FILTER_BY), repeats: true },
    Element { name: "notificationShape", shape: Shape::Backbone(NOTIFICATION_SHAPE), repeats: true },
];

/// The element of `table` named `name`.
pub(super) fn find(table: &'static [Element], name: &str) -> Option<&'static Element> {
    table.iter().find(|e| e.name == name)
}

/// Comparator codes (R5 `search-comparator`), which R4B lists among `canFilterBy.modifier`.
pub(super) const COMPARATORS: [&str; 9] = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

/// The R4B `subscription-search-modifier` codes that are modifiers in R5 too.
pub(super) const R4B_MODIFIERS: [&str; 5] = ["above", "below", "in", "not-in", "of-type"];

/// Splits `canFilterBy` modifier codes written in the R4B way (comparators and modifiers in
/// one list, `=` for plain equality) into R5's `comparator` and `modifier`, in place. An R5
/// entry is left as it is.
pub(super) fn split_r4b_modifiers(filter: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let Some(Value::Array(codes)) = filter.remove("modifier") else {
        return;
    };
    let mut comparators: Vec<Value> = match filter.remove("comparator") {
        Some(Value::Array(c)) => c,
        _ => Vec::new(),
    };
    let mut modifiers = Vec::new();
    for code in codes {
        match code.as_str() {
            // `=`: plain equality, which every filter allows in R5.
            Some("=") => {}
            Some(c) if COMPARATORS.contains(&c) => {
                if !comparators.contains(&code) {
                    comparators.push(code);
                }
            }
            _ => modifiers.push(code),
        }
    }
    if !comparators.is_empty() {
        filter.insert("comparator".into(), Value::Array(comparators));
    }
    if !modifiers.is_empty() {
        filter.insert("modifier".into(), Value::Array(modifiers));
    }
}
