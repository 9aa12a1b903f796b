use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn authenticator(keys: &[(String, String, String)]) -> Authenticator {
    let secrets = vec!["test-hs256-secret-0123456789abcdef".to_string()];
    Authenticator::from_config(&AuthConfig {
        issuer: "https://issuer.example",
        audience: "http://herald.test/fhir",
        jwks_file: "",
        hs256_secrets: &secrets,
        leeway: Duration::from_secs(5),
        api_keys: keys,
    })
    .unwrap()
    .unwrap()
}

fn token(claims: serde_json::Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(b"test-hs256-secret-0123456789abcdef")).unwrap()
}

#[test]
fn scopes_parse_v2_and_v1_forms_and_refuse_malformed_ones() {
    let s = Scopes::parse("openid fhirUser system/Task.cruds user/Observation.rs patient/*.read launch").unwrap();
    assert!(s.allows("Task", Perm::Delete));
    assert!(s.allows("Observation", Perm::Search) && !s.allows("Observation", Perm::Update));
    assert!(s.allows("Condition", Perm::Read) && s.needs_compartment("Condition", Perm::Read));
    assert!(!s.needs_compartment("Task", Perm::Read));
    assert!(!s.allows("Condition", Perm::Create));
    assert!(Scopes::parse("system/Task.dc").is_err(), "v2 letters come in order");
    assert!(Scopes::parse("system/Nope.r").is_err());
    assert!(Scopes::parse("system/Task.x").is_err());
    assert!(!Scopes::parse("system/Observation.rs?category=laboratory").unwrap().allows("Observation", Perm::Read));
}

#[test]
fn jwts_are_checked_for_issuer_audience_expiry_and_signature() {
    let auth = authenticator(&[]);
    let good = json!({ "iss": "https://issuer.example", "aud": "http://herald.test/fhir", "exp": now() + 60,
                       "client_id": "lab", "scope": "system/Task.rs" });
    let p = auth.authenticate(Some(&format!("Bearer {}", token(good.clone()))), None).unwrap();
    assert_eq!(p.client.as_deref(), Some("lab"));
    assert!(p.may("Task", Perm::Read) && !p.may("Task", Perm::Update));

    for (field, value) in [("iss", json!("https://other")), ("aud", json!("http://elsewhere")), ("exp", json!(now() - 600))] {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(matches!(auth.authenticate(Some(&format!("Bearer {}", token(bad))), None), Err(AuthError::Invalid(_))), "{field}");
    }
    let mut early = good.clone();
    early["nbf"] = json!(now() + 600);
    assert!(auth.authenticate(Some(&format!("Bearer {}", token(early))), None).is_err());
    let forged = encode(&Header::default(), &good, &EncodingKey::from_secret(b"another-secret-entirely-0000000")).unwrap();
    assert!(auth.authenticate(Some(&format!("Bearer {forged}")), None).is_err());
    assert_eq!(auth.authenticate(None, None).unwrap_err(), AuthError::Missing);
}

#[test]
fn api_keys_are_matched_by_digest() {
    let keys = vec![("etl".to_string(), api_key_digest("k-123"), "system/*.cruds".to_string())];
    let auth = authenticator(&keys);
    let p = auth.authenticate(None, Some("k-123")).unwrap();
    assert_eq!(p.client.as_deref(), Some("etl"));
    assert!(auth.authenticate(Some("Bearer k-123"), None).is_ok());
    assert!(auth.authenticate(None, Some("k-124")).is_err());
}

#[test]
fn patient_compartment_membership() {
    assert!(in_compartment(&json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" } }), "p1"));
    assert!(in_compartment(&json!({ "resourceType": "Task", "for": { "reference": "http://h/fhir/Patient/p1" } }), "p1"));
    assert!(!in_compartment(&json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p2" } }), "p1"));
    assert!(in_compartment(&json!({ "resourceType": "Patient", "id": "p1" }), "p1"));
}
