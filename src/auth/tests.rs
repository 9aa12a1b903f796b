use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn authenticator(keys: &[(String, String, String)]) -> Authenticator {
    configured(keys, &[]).unwrap().unwrap()
}

fn configured(keys: &[(String, String, String)], aliases: &[String]) -> Result<Option<Authenticator>, String> {
    let secrets = vec!["test-hs256-secret-0123456789abcdef".to_string()];
    Authenticator::from_config(&AuthConfig {
        issuer: "https://issuer.example",
        audience: "http://herald.test/fhir",
        jwks_file: "",
        hs256_secrets: &secrets,
        leeway: Duration::from_secs(5),
        api_keys: keys,
        jwt_as_api_key_clients: aliases,
    })
}

fn etl_key() -> Vec<(String, String, String)> {
    vec![("etl".to_string(), api_key_digest("k-123"), "system/*.cruds".to_string())]
}

/// The client a valid token with these claims (besides iss, aud, exp) authenticates as.
fn token_client(auth: &Authenticator, claims: serde_json::Value) -> String {
    let mut all = json!({ "iss": "https://issuer.example", "aud": "http://herald.test/fhir", "exp": now() + 60 });
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    auth.authenticate(Some(&format!("Bearer {}", token(all))), None).unwrap().client.unwrap()
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
    assert_eq!(p.client.as_deref(), Some("jwt:lab"));
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
    let auth = authenticator(&etl_key());
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

#[test]
fn a_token_client_is_named_by_its_kind_unless_the_operator_aliased_it() {
    let auth = authenticator(&etl_key());
    assert_eq!(token_client(&auth, json!({ "client_id": "etl" })), "jwt:etl", "not the API key's client");
    assert_eq!(token_client(&auth, json!({ "azp": "app" })), "jwt:app");
    assert_eq!(token_client(&auth, json!({ "sub": "svc" })), "jwt:svc");
    assert_eq!(token_client(&auth, json!({ "client_id": "jwt:etl" })), "jwt:jwt:etl", "a prefix in the claim buys nothing");
    assert_eq!(auth.authenticate(None, Some("k-123")).unwrap().client.as_deref(), Some("etl"));

    let aliased = configured(&etl_key(), &["etl".to_string()]).unwrap().unwrap();
    assert_eq!(token_client(&aliased, json!({ "client_id": "etl" })), "etl");
    assert_eq!(token_client(&aliased, json!({ "client_id": "other" })), "jwt:other");
}

#[test]
fn a_jwt_name_never_picks_up_an_api_keys_scopes() {
    let auth = authenticator(&etl_key());
    assert!(auth.client_scopes("etl").allows("Task", Perm::Read));
    assert!(!auth.client_scopes("jwt:etl").allows("Task", Perm::Read));
}

#[test]
fn api_key_names_with_the_jwt_prefix_and_malformed_aliases_are_refused_at_startup() {
    let keys = vec![("jwt:etl".to_string(), api_key_digest("k-123"), "system/*.cruds".to_string())];
    let err = configured(&keys, &[]).err().unwrap();
    assert!(err.contains("auth.api_keys[0].client"), "{err}");
    for bad in ["", "jwt:etl"] {
        let err = configured(&etl_key(), &["etl".to_string(), bad.to_string()]).err().unwrap();
        assert!(err.contains("auth.jwt_as_api_key_clients[1]"), "{bad}: {err}");
    }
}

#[test]
fn subscriptions_are_managed_by_the_same_kind_and_name_only() {
    let entity = crate::config::EntitySetting { reference: "Organization/lab".into(), clients: vec!["etl".into(), "jwt:app".into()] };
    let plain = Entities::new(std::slice::from_ref(&entity), &[]);
    assert!(plain.may_manage(Some("etl"), None, "etl"));
    assert!(!plain.may_manage(Some("etl"), None, "jwt:etl"), "a token named like the key is another client");
    assert!(!plain.may_manage(Some("jwt:etl"), None, "etl"));
    assert!(plain.may_manage(None, None, "jwt:etl"), "anonymous subscriptions are anyone's");
    assert!(plain.member("Organization/lab", "jwt:app") && plain.member("Organization/lab", "etl"));
    assert!(!plain.member("Organization/lab", "app") && !plain.member("Organization/lab", "jwt:etl"));
    assert!(plain.may_manage(Some("someone"), Some("Organization/lab"), "jwt:app"));

    // Aliased: the token's client is the bare name, which also answers for its `jwt:` name.
    let aliased = Entities::new(std::slice::from_ref(&entity), &["etl".to_string()]);
    assert!(aliased.may_manage(Some("etl"), None, "etl"));
    assert!(aliased.may_manage(Some("jwt:etl"), None, "etl"));
    assert!(!aliased.may_manage(Some("jwt:app"), None, "app"), "only listed ids");
    assert!(!aliased.may_manage(Some("jwt:etl"), None, "other"));
}
