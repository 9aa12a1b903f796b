use serde_json::{json, Value};

use super::*;
use crate::auth::{Scopes, SendGrant};
use crate::channels::render::{screen, send_grant};
use crate::fhir::subscription::ContentLevel;
use crate::notify::tests::view_with;
use crate::notify::{notification_bundle, EventView, NotificationType, Status, StatusContext};
use crate::outbox::Version;
use crate::store::records::FORMAT;
use crate::store::{ContextRef, EventRecord, GrantSource, StoredGrant};

const BASE: &str = "http://herald.test/fhir";

fn version(ty: &str, id: &str, resource: Value) -> Version {
    crate::notify::tests::version_of(ty, id, 1, resource)
}

fn task_event(number: u64, context: Vec<ContextRef>) -> EventRecord {
    EventRecord {
        v: FORMAT,
        number,
        timestamp: 0,
        topic: "http://herald.test/topic".into(),
        interaction: "update".into(),
        focus_type: "Task".into(),
        focus_id: "t".into(),
        focus_seq: 1,
        context,
        incarnation: 0,
    }
}

fn task_for(patient: &str) -> Version {
    version("Task", "t", json!({ "resourceType": "Task", "id": "t", "for": { "reference": format!("Patient/{patient}") } }))
}

fn render(content: ContentLevel, events: &[EventView<'_>]) -> Value {
    let ctx = StatusContext {
        version: crate::fhir::version::FhirVersion::R5,
        base_url: BASE,
        subscription_id: "s",
        identifier: None,
        topic_url: "http://herald.test/topic",
        status: Status::Active,
        events_since_start: 2,
        error: None,
        content,
    };
    notification_bundle(&ctx, NotificationType::EventNotification, events, 0)
}

fn grant(scopes: &str, patient: Option<&str>) -> SendGrant {
    SendGrant::new(Scopes::parse(scopes).unwrap(), patient.map(str::to_owned))
}

#[test]
fn an_uncovered_focus_is_withheld_with_its_number_and_without_focus_context_or_entries() {
    let g = grant("patient/Task.rs patient/Patient.r", Some("p1"));
    let patient = ContextRef { resource_type: "Patient".into(), id: "p2".into(), seq: 1 };
    let (mine, theirs) = (task_event(1, Vec::new()), task_event(2, vec![patient]));
    let (v1, v2) = (task_for("p1"), task_for("p2"));
    let mut c1: Vec<Option<Version>> = Vec::new();
    let mut c2 = vec![Some(version("Patient", "p2", json!({ "resourceType": "Patient", "id": "p2" })))];
    assert!(!screen(&g, &mine, Some(&v1), &mut c1));
    assert!(screen(&g, &theirs, Some(&v2), &mut c2));
    assert!(c2.iter().all(Option::is_none), "a withheld event shows no context");
    let events = [view_with(&mine, Some(&v1), &c1, false), view_with(&theirs, Some(&v2), &c2, true)];
    let bundle = render(ContentLevel::FullResource, &events);
    let list = &bundle["entry"][0]["resource"]["notificationEvent"];
    assert_eq!(list[0]["eventNumber"], "1");
    assert!(list[0].get("focus").is_some() && list[0].get("extension").is_none());
    assert_eq!(list[1]["eventNumber"], "2");
    assert!(list[1].get("focus").is_none() && list[1].get("additionalContext").is_none(), "{bundle}");
    assert_eq!(list[1]["extension"], json!([{ "url": WITHHELD_URL, "valueCode": "not-authorized" }]));
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "the status and the covered focus only: {bundle}");
    assert_eq!(entries[1]["resource"]["for"]["reference"], "Patient/p1");
}

#[test]
fn context_the_grant_cannot_read_is_left_out_at_every_level() {
    let g = grant("system/Task.rs system/Patient.r", None);
    let refs = vec![
        ContextRef { resource_type: "Patient".into(), id: "p1".into(), seq: 1 },
        ContextRef { resource_type: "Practitioner".into(), id: "dr".into(), seq: 1 },
    ];
    let e = task_event(1, refs);
    let focus = task_for("p1");
    let mut context = vec![
        Some(version("Patient", "p1", json!({ "resourceType": "Patient", "id": "p1" }))),
        Some(version("Practitioner", "dr", json!({ "resourceType": "Practitioner", "id": "dr" }))),
    ];
    assert!(!screen(&g, &e, Some(&focus), &mut context));
    assert!(context[0].is_some() && context[1].is_none());
    let events = [view_with(&e, Some(&focus), &context, false)];
    for content in [ContentLevel::IdOnly, ContentLevel::FullResource] {
        let bundle = render(content, &events);
        let text = bundle.to_string();
        assert!(!text.contains("Practitioner"), "{content:?}: {bundle}");
        assert_eq!(
            bundle["entry"][0]["resource"]["notificationEvent"][0]["additionalContext"],
            json!([{ "reference": format!("{BASE}/Patient/p1") }])
        );
        assert_eq!(bundle["entry"].as_array().unwrap().len(), 3, "status, Task, Patient");
    }
}

#[test]
fn no_recorded_grant_or_no_auth_checks_nothing_and_api_keys_use_todays_configuration() {
    use crate::auth::{AuthConfig, Authenticator};
    let keys = vec![("etl".to_string(), crate::auth::api_key_digest("k"), "system/Observation.rs".to_string())];
    let auth = Authenticator::from_config(&AuthConfig {
        issuer: "",
        audience: "",
        jwks_file: "",
        hs256_secrets: &[],
        leeway: std::time::Duration::ZERO,
        api_keys: &keys,
        jwt_as_api_key_clients: &[],
    })
    .unwrap()
    .unwrap();
    let recorded = StoredGrant { via: GrantSource::ApiKey, scopes: "system/*.rs".into(), patient: None };
    assert!(send_grant(Some("etl"), None, Some(&auth)).is_none());
    assert!(send_grant(Some("etl"), Some(&recorded), None).is_none());
    let now = send_grant(Some("etl"), Some(&recorded), Some(&auth)).unwrap();
    assert!(now.may_read("Observation", None) && !now.may_read("Task", None), "the key's scopes today, not the snapshot");
    let gone = send_grant(Some("removed"), Some(&recorded), Some(&auth)).unwrap();
    assert!(!gone.may_read("Observation", None), "a client with no key left reads nothing");
    let jwt = StoredGrant { via: GrantSource::Jwt, scopes: "system/Task.r".into(), patient: None };
    assert!(send_grant(Some("app"), Some(&jwt), Some(&auth)).unwrap().may_read("Task", None));
}
