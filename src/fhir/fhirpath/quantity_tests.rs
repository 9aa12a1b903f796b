//! Quantity cases from the FHIRPath R5 suite (testQuantity, equality/comparison on
//! Observation.value, Comparable, toQuantity/toString, boundaries) and the spec's examples.

use std::cmp::Ordering::{Greater, Less};
use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;

fn q(v: &str, unit: &str) -> Quantity {
    Quantity::new(Decimal::from_str(v).unwrap(), unit)
}

fn show(r: Option<Quantity>) -> Option<String> {
    r.map(|x| x.to_fhirpath_string())
}

#[test]
fn the_suite_quantity_group() {
    // testQuantity1-8
    assert_eq!(q("4.0000", "g").equal(&q("4000.0", "mg")), Some(true));
    assert!(q("4", "g").equivalent(&q("4000", "mg")));
    assert_eq!(q("4", "g").equal(&q("4040", "mg")), Some(false));
    assert!(q("4", "g").equivalent(&q("4040", "mg")));
    assert_eq!(q("7", "days").equal(&q("1", "week")), Some(true));
    assert_eq!(q("7", "days").equal(&q("1", "wk")), Some(true));
    assert_eq!(q("6", "days").compare(&q("1", "week")), Some(Less));
    assert_eq!(q("8", "days").compare(&q("1", "week")), Some(Greater));
    // testQuantity9-11
    let product = q("2.0", "cm").mul(&q("2.0", "m")).unwrap();
    assert_eq!(product.equal(&q("0.040", "m2")), Some(true));
    let quotient = q("4.0", "g").div(&q("2.0", "m")).unwrap();
    assert_eq!(quotient.unit, "g/m");
    assert_eq!(quotient.equal(&q("2", "g/m")), Some(true));
    assert_eq!(q("1.0", "m").div(&q("1.0", "m")).unwrap().equal(&q("1", "1")), Some(true));
}

#[test]
fn observation_value_against_pounds() {
    // testEquality28, testEquivalent22, testNEquality24, testLessThan22, testLessOrEqual22,
    // testGreatorOrEqual22, testGreaterThan22 (Observation.value is 185 [lb_av])
    let weight = q("185", "[lb_av]");
    assert_eq!(weight.equal(&q("185", "[lb_av]")), Some(true));
    assert!(weight.equivalent(&q("185", "[lb_av]")));
    assert_eq!(weight.equal(&q("185", "kg")), Some(false));
    assert_eq!(weight.compare(&q("200", "[lb_av]")), Some(Less));
    assert_eq!(weight.compare(&q("100", "[lb_av]")), Some(Greater));
    assert_eq!(weight.compare(&q("80", "kg")), Some(Greater));
}

#[test]
fn comparable_needs_commensurable_units() {
    // Comparable1-3
    assert!(q("1", "cm").comparable(&q("1", "[in_i]")));
    assert!(!q("1", "cm").comparable(&q("1", "[s]")));
    assert!(!q("1", "cm").comparable(&q("1", "s")));
    assert!(!q("1", "year").comparable(&q("1", "a")));
}

#[test]
fn to_quantity_strings() {
    // testStringIntegerLiteralToQuantity, testStringQuantityLiteralToQuantity,
    // testStringQuantityWeekConvertsToQuantity(False), testStringDecimalLiteralConvertsToQuantity(False)
    assert_eq!(Quantity::parse("1"), Some(q("1", "1")));
    assert_eq!(Quantity::parse("1 day"), Some(q("1", "day")));
    assert_eq!(Quantity::parse("1 'wk'"), Some(q("1", "wk")));
    assert_eq!(Quantity::parse("4.5 'mg'"), Some(q("4.5", "mg")));
    assert_eq!(Quantity::parse("-4.5'mg'"), Some(q("-4.5", "mg")));
    assert_eq!(Quantity::parse("4 days"), Some(q("4", "days")));
    assert_eq!(Quantity::parse("10 'mm[Hg]'"), Some(q("10", "mm[Hg]")));
    assert_eq!(Quantity::parse("1.0"), Some(q("1.0", "1")));
    for bad in ["1 wk", "1.a", "", "'g'", "1 'g", "1 ''", "1 'a'b'", "1 days x", "1.", "abc", "1 2"] {
        assert_eq!(Quantity::parse(bad), None, "{bad}");
    }
    // testStringQuantityDayLiteralToQuantity (contested): '1 day'.toQuantity() = 1 'd'
    assert_eq!(Quantity::parse("1 day").unwrap().equal(&q("1", "d")), Some(true));
    // testStringQuantityWeekLiteralToQuantity
    assert_eq!(Quantity::parse("1 'wk'").unwrap().equal(&q("1", "week")), Some(true));
    // testStringQuantityMonthLiteralToQuantity, testStringQuantityYearLiteralToQuantity: empty
    assert_eq!(Quantity::parse("1 'mo'").unwrap().equal(&q("1", "month")), None);
    assert_eq!(Quantity::parse("1 'a'").unwrap().equal(&q("1", "year")), None);
    // testStringDecimalLiteralToQuantity, testDecimalLiteralToQuantity
    assert!(Quantity::parse("1.0").unwrap().equivalent(&q("1", "1")));
    assert_eq!(q("1.0", "1").equal(&q("1.0", "1")), Some(true));
}

#[test]
fn to_string_quotes_ucum_units_only() {
    // testQuantityLiteralWkToString, testQuantityLiteralWeekToString, LowBoundaryQuantity output
    assert_eq!(q("1", "wk").to_fhirpath_string(), "1 'wk'");
    assert_eq!(q("1", "week").to_fhirpath_string(), "1 week");
    assert_eq!(q("4", "days").to_fhirpath_string(), "4 days");
    assert_eq!(q("1", "1").to_fhirpath_string(), "1 '1'");
    assert_eq!(q("1.58650000", "cm").to_fhirpath_string(), "1.58650000 'cm'");
}

#[test]
fn boundaries_and_precision_on_the_value() {
    // LowBoundaryQuantity, HighBoundaryQuantity
    assert_eq!(show(q("1.587", "cm").low_boundary(Some(8))).as_deref(), Some("1.58650000 'cm'"));
    assert_eq!(show(q("1.587", "m").high_boundary(Some(8))).as_deref(), Some("1.58750000 'm'"));
    assert_eq!(q("1.587", "m").high_boundary(Some(29)), None);
    assert_eq!(q("1.58700", "m").precision(), 5);
}

#[test]
fn spec_equality_examples() {
    assert_eq!(q("1", "cm").equal(&q("10.0", "mm")), Some(true));
    assert_eq!(q("1", "cm").equal(&q("1", "m")), Some(false));
    assert_eq!(q("1", "cm").equal(&q("1", "s")), None);
    assert_eq!(q("23", "Cel").equal(&q("73.4", "[degF]")), Some(true));
    assert!(q("23", "Cel").equivalent(&q("73.4", "[degF]")));
    assert_eq!(q("1", "h").equal(&q("3600", "s")), Some(true));
    assert_eq!(q("1", "hour").equal(&q("3600", "s")), Some(true));
    assert_eq!(q("1", "year").equal(&q("1", "a")), None);
    assert_eq!(q("1", "year").equal(&q("12", "months")), Some(true));
    assert_eq!(q("1", "year").equal(&q("12", "mo")), None);
    assert_eq!(q("1", "year").equal(&q("365", "days")), Some(true));
    assert_eq!(q("1", "year").equal(&q("360", "days")), Some(false));
    assert_eq!(q("1", "week").equal(&q("1", "wk")), Some(true));
    assert_eq!(q("1", "second").equal(&q("1", "s")), Some(true));
    assert_eq!(q("1", "week").equal(&q("7", "d")), Some(true));
    assert_eq!(q("1", "day").equal(&q("1", "days")), Some(true));
    assert_eq!(q("1", "[iU]").equal(&q("1", "mg")), None);
    assert_eq!(q("5", "mmol/L").equal(&q("5", "mmol/L")), Some(true));
    assert_eq!(q("5", "mmol/L").equal(&q("5000", "umol/L")), Some(true));
    assert_eq!(q("5", "{opaque}").equal(&q("5", "1")), Some(true));
    assert_eq!(q("5", "x_unknown").equal(&q("5", "x_unknown")), Some(true));
    assert_eq!(q("5", "x_unknown").equal(&q("5", "g")), None);
}

#[test]
fn spec_equivalence_examples() {
    assert!(q("2.1", "cm").equivalent(&q("21", "mm")));
    assert!(q("21", "mm").equivalent(&q("2", "cm")));
    assert!(q("1", "[in_i]").equivalent(&q("2.5", "cm")));
    assert!(q("1", "year").equivalent(&q("1", "a")));
    assert!(q("1", "year").equivalent(&q("12", "mo")));
    assert!(q("1", "year").equivalent(&q("11", "months")));
    assert!(q("1", "second").equivalent(&q("1", "s")));
    assert!(!q("1", "g").equivalent(&q("1", "m")));
}

#[test]
fn spec_comparison_examples() {
    assert_eq!(q("1", "year").compare(&q("1", "a")), None);
    assert_eq!(q("10", "seconds").compare(&q("1", "s")), Some(Greater));
    assert_eq!(q("2", "year").convert_to("a").unwrap().compare(&q("1", "a")), Some(Greater));
    assert_eq!(q("6", "months").compare(&q("1", "year")), Some(Less));
    assert_eq!(q("4", "m").compare(&q("4", "cm")), Some(Greater));
    assert_eq!(q("1", "day").compare(&q("23", "h")), Some(Greater));
}

#[test]
fn addition_and_subtraction() {
    let s = |r: Option<Quantity>| show(r).unwrap_or_else(|| "{}".into());
    assert_eq!(s(q("3", "m").add(&q("3", "cm"))), "303 'cm'");
    assert_eq!(s(q("3", "cm").add(&q("3", "m"))), "303 'cm'");
    assert_eq!(s(q("2", "1").add(&q("2", "cm"))), "{}");
    assert_eq!(s(q("2", "1").add(&q("2", "1"))), "4 '1'");
    assert_eq!(s(q("2", "minutes").add(&q("60", "seconds"))), "180 seconds");
    assert_eq!(s(q("60", "s").add(&q("2", "minutes"))), "180 seconds");
    assert_eq!(s(q("1", "wk").add(&q("2", "days"))), "9 days");
    assert_eq!(s(q("1", "year").add(&q("12", "months"))), "{}");
    assert_eq!(s(q("1", "year").add(&q("12", "mo"))), "{}");
    assert_eq!(s(q("1", "year").add(&q("1", "year"))), "2 year");
    assert_eq!(s(q("1", "year").convert_to("month").unwrap().add(&q("12", "months"))), "24 month");
    assert_eq!(s(q("1", "week").add(&q("14", "days"))), "21 days");
    assert_eq!(s(q("3", "d").add(&q("1", "wk"))), "10 'd'");
    assert_eq!(s(q("3", "m").sub(&q("3", "cm"))), "297 'cm'");
    assert_eq!(s(q("3", "cm").sub(&q("3", "m"))), "-297 'cm'");
    assert_eq!(s(q("1", "m").add(&q("1", "g"))), "{}");
    assert_eq!(s(q("20", "Cel").add(&q("1", "Cel"))), "{}");
    assert_eq!(s(q("79228162514264337593543950335", "g").add(&q("1", "g"))), "{}");
}

#[test]
fn multiplication_and_division() {
    let s = |r: Option<Quantity>| show(r).unwrap_or_else(|| "{}".into());
    assert_eq!(s(q("12", "cm").mul(&q("3", "cm"))), "36 'cm2'");
    assert_eq!(s(q("3", "cm").mul(&q("12", "cm2"))), "36 'cm3'");
    assert_eq!(s(q("10", "m/s").mul(&q("10", "s"))), "100 'm'");
    assert_eq!(s(q("3", "1").mul(&q("2", "cm"))), "6 'cm'");
    assert_eq!(s(q("2", "days").mul(&q("3", "1"))), "6 days");
    assert_eq!(s(q("12", "day").mul(&q("45", "m"))), "{}");
    assert_eq!(s(q("12", "cm2").div(&q("3", "cm"))), "4 'cm'");
    assert_eq!(s(q("120", "m").div(&q("60", "s"))), "2 'm/s'");
    assert_eq!(s(q("60", "1").div(&q("1", "s"))), "60 '/s'");
    assert_eq!(s(q("60", "s").div(&q("2", "1"))), "30 's'");
    assert_eq!(s(q("4", "g").div(&q("0", "m"))), "{}");
    assert_eq!(s(q("4", "Cel").mul(&q("2", "m"))), "{}");
    assert_eq!(s(q("4", "kg").div(&q("2", "(m.s)2"))), "2 'kg/m2/s2'");
    assert_eq!(s(q("79228162514264337593543950335", "g").mul(&q("2", "g"))), "{}");
}

#[test]
fn explicit_conversion() {
    let s = |r: Option<Quantity>| show(r).unwrap_or_else(|| "{}".into());
    assert_eq!(s(q("52", "cm").convert_to("m")), "0.52 'm'");
    assert_eq!(s(q("45", "1").convert_to("m")), "{}");
    assert_eq!(s(q("24", "m").convert_to("kg")), "{}");
    assert_eq!(s(q("1", "a").convert_to("d")), "365.25 'd'");
    assert_eq!(s(q("1", "wk").convert_to("d")), "7 'd'");
    assert_eq!(q("7", "days").convert_to("wk").unwrap().value, Decimal::ONE);
    assert_eq!(q("182.5", "days").convert_to("a").unwrap().value, Decimal::from_str("0.5").unwrap());
    assert_eq!(q("1", "year").convert_to("a").unwrap().equal(&q("1", "a")), Some(true));
    assert_eq!(s(q("2", "[in_i]").convert_to("cm")), "5.08 'cm'");
    assert_eq!(q("10", "mg/dL").convert_to("g/L").unwrap().value, Decimal::from_str("0.1").unwrap());
    assert!(q("10", "Cel").convert_to("[degF]").is_some());
}

#[test]
fn hostile_units_do_not_panic() {
    for unit in ["((((((m))))))", "m(", ")", "m..s", "/", "{", "}", "m{", "10*99", "m999999999999", "s-2147483648", "µg", "é", "[", "kg/"]
    {
        let a = q("1", unit);
        let _ = a.equal(&q("1", "m"));
        let _ = a.mul(&a);
        let _ = a.div(&q("2", "m"));
        let _ = a.add(&q("1", "g"));
    }
    let long = "m.".repeat(200);
    assert_eq!(q("1", &long).equal(&q("1", "m")), None);
}
