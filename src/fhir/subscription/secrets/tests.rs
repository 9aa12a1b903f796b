//! Signing-secret parsing.

use serde_json::{json, Value};

use super::*;

/// 32 bytes, padded, and the same without padding.
const S1: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
const S1_UNPADDED: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo";

fn ext(value: &str) -> Value {
    json!({ "url": SIGNING_SECRET_URL, "valueString": value })
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
