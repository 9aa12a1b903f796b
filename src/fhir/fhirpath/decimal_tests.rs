//! Decimal cases from the FHIRPath R5 suite (LowBoundary, HighBoundary, Precision, equivalence,
//! toString) and the spec's examples.

use std::str::FromStr;

use rust_decimal::Decimal;

use super::*;

fn dec(s: &str) -> Decimal {
    parse_decimal(s).unwrap_or_else(|| panic!("decimal {s}"))
}

fn low(s: &str, p: Option<i64>) -> Option<String> {
    decimal_low_boundary(&dec(s), p).map(|d| decimal_to_string(&d))
}

fn high(s: &str, p: Option<i64>) -> Option<String> {
    decimal_high_boundary(&dec(s), p).map(|d| decimal_to_string(&d))
}

#[test]
fn low_boundary_matches_the_suite() {
    let cases: [(&str, Option<i64>, Option<&str>); 19] = [
        ("1.587", None, Some("1.58650000")),
        ("1.587", Some(6), Some("1.586500")),
        ("1.587", Some(2), Some("1.58")),
        ("1.587", Some(-1), None),
        ("1.587", Some(0), Some("1")),
        ("1.587", Some(32), None),
        ("-1.587", None, Some("-1.58750000")),
        ("-1.587", Some(6), Some("-1.587500")),
        ("-1.587", Some(2), Some("-1.59")),
        ("-1.587", Some(-1), None),
        ("-1.587", Some(0), Some("-2")),
        ("1.587", Some(39), None),
        ("1", None, Some("0.50000000")),
        ("1", Some(0), Some("0")),
        ("1", Some(5), Some("0.50000")),
        ("12.587", Some(2), Some("12.58")),
        ("12.500", Some(4), Some("12.4995")),
        ("120", Some(2), Some("119.50")),
        ("-120", Some(2), Some("-120.50")),
    ];
    for (v, p, expected) in cases {
        assert_eq!(low(v, p).as_deref(), expected, "{v}.lowBoundary({p:?})");
    }
    assert_eq!(low("0.0034", Some(1)).as_deref(), Some("0.0"));
    assert_eq!(low("-0.0034", Some(1)).as_deref(), Some("-0.0"));
}

#[test]
fn high_boundary_matches_the_suite() {
    let cases: [(&str, Option<i64>, Option<&str>); 15] = [
        ("1.587", None, Some("1.58750000")),
        ("1.587", Some(2), Some("1.59")),
        ("1.587", Some(6), Some("1.587500")),
        ("1.587", Some(-1), None),
        ("-1.587", None, Some("-1.58650000")),
        ("-1.587", Some(2), Some("-1.58")),
        ("-1.587", Some(6), Some("-1.586500")),
        ("1.587", Some(39), None),
        ("1", None, Some("1.50000000")),
        ("1", Some(0), Some("2")),
        ("1", Some(5), Some("1.50000")),
        ("12.587", Some(2), Some("12.59")),
        ("12.500", Some(4), Some("12.5005")),
        ("120", Some(2), Some("120.50")),
        ("0.0034", Some(1), Some("0.0")),
    ];
    for (v, p, expected) in cases {
        assert_eq!(high(v, p).as_deref(), expected, "{v}.highBoundary({p:?})");
    }
    // HighBoundaryDecimal14/16 apply unary minus to the boundary: -(120.50), -(0.0)
    let neg = |s: &str, p| decimal_to_string(&negate_decimal(decimal_high_boundary(&dec(s), p).unwrap()));
    assert_eq!(neg("120", Some(2)), "-120.50");
    assert_eq!(neg("0.0034", Some(1)), "0.0");
    // the spec's examples
    assert_eq!(high("1.587", Some(0)).as_deref(), Some("2"));
    assert_eq!(high("-1.587", Some(0)).as_deref(), Some("-1"));
}

#[test]
fn rendering_keeps_the_scale() {
    // testToString4, testDecimalLiteralToString, LowBoundary outputs
    for s in ["1.0", "0.0", "1.58650000", "-1.5", "1234567890987654321.0", "0.00000001", "1"] {
        assert_eq!(decimal_to_string(&dec(s)), s);
    }
    assert_eq!(decimal_to_string(&negate_decimal(dec("0.0"))), "0.0");
    assert_eq!(decimal_to_string(&negate_decimal(dec("2.50"))), "-2.50");
}

#[test]
fn parsing_literals_and_strings() {
    // testLiteralDecimal*, testToDecimal*, testStringLiteralConvertsToDecimalFalse
    assert_eq!(parse_decimal("+1.5"), Some(dec("1.5")));
    assert_eq!(parse_decimal("-0.1").map(|d| d.to_string()), Some("-0.1".into()));
    for bad in ["1.a", "st", "", ".5", "1.", "1e3", " 1", "1 ", "--1", "+-1", "1.2.3", "0x10", "99999999999999999999999999999999"] {
        assert_eq!(parse_decimal(bad), None, "{bad}");
    }
    assert_eq!(parse_json_decimal("185"), Some(dec("185")));
    assert_eq!(parse_json_decimal("-0.25").map(|d| d.to_string()), Some("-0.25".into()));
    assert_eq!(parse_json_decimal("1.5e2"), Some(dec("150")));
    assert_eq!(parse_json_decimal("1E-2"), Some(dec("0.01")));
    for bad in ["+1", "01", "1e", "1e+", ".5", "1.e3", "NaN", "1e99999"] {
        assert_eq!(parse_json_decimal(bad), None, "{bad}");
    }
    assert_eq!(Decimal::from_str("1.0").map(|d| decimal_precision(&d)), Ok(1));
}

#[test]
fn precision_counts_written_digits() {
    // PrecisionDecimal and the spec's 100.precision()
    assert_eq!(decimal_precision(&dec("1.58700")), 5);
    assert_eq!(decimal_precision(&dec("100")), 0);
}

#[test]
fn equivalence_rounds_to_the_less_precise_operand() {
    // testEquivalent8-13, testNotEquivalent8-13
    let div = dec("1.2") / dec("1.8");
    assert!(decimals_equivalent(&div, &dec("0.67")));
    assert!(!decimals_equivalent(&div, &dec("0.6")));
    assert!(decimals_equivalent(&dec("1.10"), &dec("1.1")));
    assert!(decimals_equivalent(&dec("0.0"), &dec("0")));
    assert!(decimals_equivalent(&dec("1.1"), &dec("1.1")));
    assert!(!decimals_equivalent(&dec("1.1"), &dec("1.2")));
}
