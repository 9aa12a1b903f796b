//! Signing-secret parsing, redaction, and keeping stored secrets across a read/write round trip.

use serde_json::{json, Value};

use super::*;

/// 32 bytes, padded, and the same without padding.
const S1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
const S1_UNPADDED: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo";
const S2: &str = "whsec_c2Vjb25kLXNpZ25pbmcta2V5LWZvci1yb3RhdGlvbg==";
const S3: &str = "whsec_dGhpcmQtc2lnbmluZy1rZXktYWZ0ZXItcm90YXRpb24=";

fn ext(value: &str) -> Value {
    json!({ "url": SIGNING_SECRET_URL, "valueString": value })
}

fn stored() -> Value {
    json!({
        "resourceType": "Subscription",
        "parameter": [{ "name": "Authorization", "value": "Bearer tok-1" }, { "name": "X-Tenant", "value": "north" }],
        "extension": [{ "url": "http://example.org/other", "valueString": "kept" }, ext(S1), ext(S2)]
    })
}

#[test]
fn signing_secrets_are_whsec_standard_base64_of_24_to_64_bytes() {
    assert_eq!(SigningKey::parse(S1).unwrap().expose().len(), 32);
    assert_eq!(SigningKey::parse(S1).unwrap(), SigningKey::parse(S1_UNPADDED).unwrap());
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",                  // no prefix
        "whsec_c2hvcnQ=",                                    // 5 bytes
        "whsec_not base64!",                                 // not base64
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw-_KQ9r8GKYo", // URL-safe alphabet
        &format!("whsec_{}", "QUFB".repeat(22)),             // 66 bytes
        REDACTED,
    ] {
        let why = SigningKey::parse(bad).unwrap_err();
        assert!(!why.contains(bad.trim_start_matches("whsec_")), "the message echoes the value: {why}");
    }
    assert!(!format!("{:?}", SigningKey::parse(S1).unwrap()).contains("MfKQ"));
}

#[test]
fn each_bad_signing_secret_is_reported_at_its_path_without_its_value() {
    let sub = json!({ "extension": [ext(S1), { "url": "http://example.org/x" }, ext("whsec_c2hvcnQ="), { "url": SIGNING_SECRET_URL }] });
    let mut issues = Vec::new();
    let keys = signing_keys(&sub, &mut issues);
    assert_eq!(keys.len(), 1);
    let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.as_deref()).collect();
    assert_eq!(paths, ["Subscription.extension[2].valueString", "Subscription.extension[3]"]);
    assert!(issues.iter().all(|i| !i.diagnostics.contains("c2hvcnQ")));
    let many = json!({ "extension": vec![ext(S1); MAX_SIGNING_SECRETS + 1] });
    let mut issues = Vec::new();
    signing_keys(&many, &mut issues);
    assert_eq!(issues[0].expression.as_deref(), Some("Subscription.extension"));
}

#[test]
fn redact_blanks_parameter_values_and_signing_secrets_only() {
    let mut sub = stored();
    redact(&mut sub);
    assert_eq!(sub["parameter"][0], json!({ "name": "Authorization", "value": REDACTED }));
    assert_eq!(sub["parameter"][1]["value"], REDACTED);
    assert_eq!(sub["extension"][0]["valueString"], "kept");
    assert_eq!(sub["extension"][1]["valueString"], REDACTED);
    assert_eq!(sub["extension"][2]["valueString"], REDACTED);
    let mut task = json!({ "resourceType": "Task", "parameter": [{ "value": "x" }] });
    redact(&mut task);
    assert_eq!(task["parameter"][0]["value"], "x");
}

#[test]
fn redacted_copies_subscriptions_only() {
    let sub = stored();
    let seen = redacted(&sub);
    assert!(matches!(seen, Cow::Owned(_)));
    assert!(!seen.to_string().contains("tok-1") && !seen.to_string().contains(S1));
    assert_eq!(sub["parameter"][0]["value"], "Bearer tok-1", "the original is untouched");
    let task = json!({ "resourceType": "Task", "parameter": [{ "value": "x" }] });
    assert!(matches!(redacted(&task), Cow::Borrowed(t) if std::ptr::eq(t, &task)));
}

#[test]
fn a_redacted_round_trip_keeps_every_stored_secret() {
    let mut sub = stored();
    redact(&mut sub);
    keep_stored(&mut sub, Some(&stored())).unwrap();
    assert_eq!(sub, stored());
}

#[test]
fn placeholders_keep_parameters_by_name_and_secrets_by_position() {
    // Headers reordered, one replaced; a new secret added after the kept one (rotation).
    let mut sub = json!({
        "resourceType": "Subscription",
        "parameter": [{ "name": "x-tenant", "value": REDACTED }, { "name": "Authorization", "value": "Bearer tok-2" }],
        "extension": [ext(REDACTED), ext(REDACTED), ext(S3)]
    });
    keep_stored(&mut sub, Some(&stored())).unwrap();
    assert_eq!(sub["parameter"][0]["value"], "north");
    assert_eq!(sub["parameter"][1]["value"], "Bearer tok-2");
    assert_eq!(sub["extension"][0]["valueString"], S1);
    assert_eq!(sub["extension"][1]["valueString"], S2);
    assert_eq!(sub["extension"][2]["valueString"], S3);
}

#[test]
fn placeholders_with_nothing_unambiguous_to_keep_are_refused_at_their_path() {
    // A create: nothing stored.
    let mut sub = stored();
    redact(&mut sub);
    let issues = keep_stored(&mut sub, None).unwrap_err();
    let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.as_deref()).collect();
    assert_eq!(
        paths,
        [
            "Subscription.parameter[0].value",
            "Subscription.parameter[1].value",
            "Subscription.extension[1].valueString",
            "Subscription.extension[2].valueString"
        ]
    );
    // Two secrets stored, one placeholder sent: which one stays is ambiguous.
    let mut shrunk = json!({ "resourceType": "Subscription", "extension": [ext(REDACTED)] });
    let issues = keep_stored(&mut shrunk, Some(&stored())).unwrap_err();
    assert_eq!(issues[0].expression.as_deref(), Some("Subscription.extension[0].valueString"));
    assert!(issues[0].diagnostics.contains("ambiguous"));
    // A header name that is not stored.
    let mut other = json!({ "resourceType": "Subscription", "parameter": [{ "name": "X-Other", "value": REDACTED }] });
    assert!(keep_stored(&mut other, Some(&stored())).is_err());
    // Dropping a secret in full is fine.
    let mut dropped = json!({ "resourceType": "Subscription", "extension": [ext(S2)] });
    keep_stored(&mut dropped, Some(&stored())).unwrap();
    assert_eq!(dropped["extension"][0]["valueString"], S2);
}

/// An R4/R4B (Backport IG) Subscription: headers are `Name: value` strings.
fn stored_r4() -> Value {
    json!({
        "resourceType": "Subscription",
        "criteria": "http://t",
        "channel": {
            "type": "rest-hook",
            "header": ["Authorization: Bearer tok-1", "X-Tenant:north", "Authorization: Bearer tok-2"]
        },
        "extension": [ext(S1)]
    })
}

#[test]
fn r4_header_strings_keep_their_names_and_lose_their_values() {
    let mut sub = stored_r4();
    redact(&mut sub);
    assert_eq!(sub["channel"]["header"], json!(["Authorization: [redacted]", "X-Tenant: [redacted]", "Authorization: [redacted]"]));
    assert_eq!(sub["extension"][0]["valueString"], REDACTED);
    assert_eq!(sub["channel"]["type"], "rest-hook");
    let seen = redacted(&stored_r4()).to_string();
    assert!(!seen.contains("tok-1") && !seen.contains("north"));
    // A string without a colon (never stored: the parser refuses it) is blanked whole.
    let mut odd = json!({ "resourceType": "Subscription", "channel": { "header": ["Bearer tok-3"] } });
    redact(&mut odd);
    assert_eq!(odd["channel"]["header"][0], REDACTED);
}

#[test]
fn r4_header_placeholders_keep_the_stored_values_by_name_and_position() {
    let mut sub = stored_r4();
    redact(&mut sub);
    keep_stored(&mut sub, Some(&stored_r4())).unwrap();
    assert_eq!(
        sub["channel"]["header"],
        json!(["Authorization: Bearer tok-1", "X-Tenant: north", "Authorization: Bearer tok-2"]),
        "kept values, written back as 'Name: value'"
    );
    assert_eq!(sub["extension"][0]["valueString"], S1);

    // Reordered and respelled names, one value replaced, a header added.
    let mut sub = stored_r4();
    sub["channel"]["header"] = json!(["x-tenant:[redacted]", "Authorization: Bearer new", "AUTHORIZATION:  [redacted] ", "X-New: v"]);
    keep_stored(&mut sub, Some(&stored_r4())).unwrap();
    assert_eq!(
        sub["channel"]["header"],
        json!(["x-tenant: north", "Authorization: Bearer new", "AUTHORIZATION: Bearer tok-2", "X-New: v"]),
        "the second Authorization keeps the second stored one"
    );
    // A third Authorization placeholder has nothing stored at its position.
    let mut sub = stored_r4();
    redact(&mut sub);
    sub["channel"]["header"].as_array_mut().unwrap().push(json!("Authorization: [redacted]"));
    let issues = keep_stored(&mut sub, Some(&stored_r4())).unwrap_err();
    assert_eq!(issues[0].expression.as_deref(), Some("Subscription.channel.header[3]"));
}

#[test]
fn r4_header_placeholders_with_nothing_to_keep_are_refused_at_their_path() {
    let mut sub = stored_r4();
    redact(&mut sub);
    let issues = keep_stored(&mut sub, None).unwrap_err();
    let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.as_deref()).collect();
    assert_eq!(
        paths,
        [
            "Subscription.channel.header[0]",
            "Subscription.channel.header[1]",
            "Subscription.channel.header[2]",
            "Subscription.extension[0].valueString"
        ]
    );
    // One of two stored Authorization headers dropped, the other sent as a placeholder.
    let mut shrunk = json!({ "resourceType": "Subscription", "channel": { "header": ["Authorization: [redacted]"] } });
    let issues = keep_stored(&mut shrunk, Some(&stored_r4())).unwrap_err();
    assert!(issues[0].diagnostics.contains("ambiguous"), "{issues:?}");
    assert!(issues.iter().all(|i| !i.diagnostics.contains("tok-")));
}
