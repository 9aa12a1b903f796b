//! Every backport version × notification type × content level, checked as Inferno's server
//! suite checks a notification (INFERNO-SERVER-CHECKS.md block N, 3.1.2.03, 3.2.2.03,
//! 3.3.2.03, and its listener's tagging), plus the R4 status against its profile, the withheld
//! mark, and the byte writer against the `Value` builder.

use serde_json::{json, Value};

use super::profile::Profile;
use super::*;

const BASE: &str = "http://herald.test/fhir";
const SUB: &str = "s-1";
const TOPIC: &str = "http://herald.test/topics/encounter";

fn matrix_ctx<'a>(version: FhirVersion, status: SubStatus, content: ContentLevel, error: Option<&'a StoredError>) -> StatusContext<'a> {
    StatusContext {
        version,
        base_url: BASE,
        subscription_id: SUB,
        identifier: None,
        topic_url: TOPIC,
        status: status_of(status),
        events_since_start: 4,
        error: error.map(error_view),
        content,
    }
}

/// One event as the status lists it, in any version: focus, additional context, withheld.
#[derive(Debug)]
struct Listed {
    focus: Option<String>,
    context: Vec<String>,
    withheld: bool,
}

fn reference(v: &Value) -> String {
    v["reference"].as_str().unwrap_or_default().to_owned()
}

/// The status's `type`, `status`, subscription reference, topic and events, in any version.
fn read_status(version: FhirVersion, status: &Value) -> (String, String, String, Option<String>, Vec<Listed>) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    if version == FhirVersion::R4 {
        let params = status["parameter"].as_array().cloned().unwrap_or_default();
        let one = |name: &str| params.iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null);
        let events = params
            .iter()
            .filter(|p| p["name"] == "notification-event")
            .map(|p| {
                let parts = p["part"].as_array().cloned().unwrap_or_default();
                Listed {
                    focus: parts.iter().find(|x| x["name"] == "focus").map(|x| reference(&x["valueReference"])),
                    context: parts.iter().filter(|x| x["name"] == "additional-context").map(|x| reference(&x["valueReference"])).collect(),
                    withheld: p["extension"][0]["url"] == WITHHELD_URL,
                }
            })
            .collect();
        let topic = one("topic")["valueCanonical"].as_str().map(str::to_owned);
        (
            text(&one("type")["valueCode"]),
            text(&one("status")["valueCode"]),
            reference(&one("subscription")["valueReference"]),
            topic,
            events,
        )
    } else {
        let events = status["notificationEvent"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| Listed {
                focus: e.get("focus").map(reference),
                context: e["additionalContext"].as_array().into_iter().flatten().map(reference).collect(),
                withheld: e["extension"][0]["url"] == WITHHELD_URL,
            })
            .collect();
        (
            text(&status["type"]),
            text(&status["status"]),
            reference(&status["subscription"]),
            status["topic"].as_str().map(str::to_owned),
            events,
        )
    }
}

/// Inferno 3.3.2.03: a non-`urn:` reference matches an entry whose resource's `Type/id` it
/// contains.
fn resolves(bundle: &Value, reference: &str) -> bool {
    bundle["entry"].as_array().into_iter().flatten().skip(1).any(|e| {
        let r = &e["resource"];
        r.is_object()
            && reference.contains(&format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default()))
    })
}

/// Everything Inferno checks on a notification, for `kind` at `content`.
fn check_like_inferno(
    version: FhirVersion,
    kind: NotificationType,
    status_code: &str,
    content: ContentLevel,
    bundle: &Value,
    profile: &Profile,
) {
    let here = format!("{version:?} {kind:?} {content:?}");
    // N1-N3: a history Bundle with entries, declaring its backport profile.
    assert_eq!(bundle["resourceType"], "Bundle", "{here}");
    assert_eq!(bundle["type"], "history", "{here}");
    let profile_url =
        if version == FhirVersion::R4 { "backport-subscription-notification-r4" } else { "backport-subscription-notification" };
    assert!(bundle["meta"]["profile"][0].as_str().unwrap().ends_with(&format!("/{profile_url}")), "{here}");
    let entries = bundle["entry"].as_array().expect("entries");
    // N4, N5: request and response on every entry; the first reads the subscription's $status.
    for (i, e) in entries.iter().enumerate() {
        assert!(e["request"].is_object() && e["response"].is_object(), "{here}: entry {i} lacks request/response");
    }
    assert_eq!(entries[0]["request"], json!({ "method": "GET", "url": format!("{BASE}/Subscription/{SUB}/$status") }), "{here}");
    assert_eq!(entries[0]["response"], json!({ "status": "200" }), "{here}");
    assert!(entries[0]["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"), "{here}");
    let status = &entries[0]["resource"];
    // N6: the status resource of the version; the listener tags by the first Parameters.
    match version {
        FhirVersion::R4 => {
            assert_eq!(status["resourceType"], "Parameters", "{here}");
            assert_eq!(status["meta"]["profile"][0], STATUS_R4_PROFILE, "{here}");
            assert_eq!(profile.check(status), Vec::<String>::new(), "{here}: {status:#}");
        }
        _ => assert_eq!(status["resourceType"], "SubscriptionStatus", "{here}"),
    }
    assert_eq!(status["id"].as_str().map(|id| format!("urn:uuid:{id}")), entries[0]["fullUrl"].as_str().map(str::to_owned), "{here}");
    // N7, N8, and the listener's subscription id (the reference's last segment).
    let (ty, st, sub, topic, events) = read_status(version, status);
    assert_eq!((ty.as_str(), st.as_str()), (kind.code(), status_code), "{here}");
    assert_eq!(sub.rsplit('/').next(), Some(SUB), "{here}");
    if !matches!(kind, NotificationType::EventNotification | NotificationType::QueryEvent) {
        assert_eq!(entries.len(), 1, "{here}");
        return;
    }
    assert!(!events.is_empty(), "{here}: no notification-event");
    let shown: Vec<&Listed> = events.iter().filter(|e| !e.withheld).collect();
    match content {
        ContentLevel::Empty => {
            assert!(topic.is_none(), "{here}: a topic at empty");
            assert_eq!(entries.len(), 1, "{here}: entries besides the status at empty");
            assert!(events.iter().all(|e| e.focus.is_none() && e.context.is_empty()), "{here}: focus or context at empty");
        }
        ContentLevel::IdOnly => {
            assert_eq!(topic.as_deref(), Some(TOPIC), "{here}");
            assert!(events[0].focus.is_some(), "{here}: the first event has no focus");
            for (i, e) in entries.iter().enumerate().skip(1) {
                assert!(e.get("resource").is_none(), "{here}: entry {i} has a resource at id-only");
                assert!(e["fullUrl"].is_string(), "{here}: entry {i} has no fullUrl");
            }
        }
        ContentLevel::FullResource => {
            assert_eq!(topic.as_deref(), Some(TOPIC), "{here}");
            for e in &shown {
                let focus = e.focus.as_deref().expect("a focus at full-resource");
                // A deletion has no resource to carry: its entry is the DELETE alone.
                let deleted = entries.iter().any(|x| x["fullUrl"] == focus && x["request"]["method"] == "DELETE");
                assert!(deleted || resolves(bundle, focus), "{here}: focus {focus} resolves to no entry");
                for c in &e.context {
                    assert!(resolves(bundle, c), "{here}: additional-context {c} resolves to no entry");
                }
            }
        }
    }
}

/// Four events: a create with a Patient as context, an update, a delete, and a withheld one.
struct Fixture {
    events: Vec<EventRecord>,
    focus: Vec<Option<Version>>,
    context: Vec<Vec<Option<Version>>>,
}

fn fixture() -> Fixture {
    let mut events: Vec<EventRecord> = [(1, "create", "a"), (2, "update", "b"), (3, "delete", "c"), (4, "update", "d")]
        .into_iter()
        .map(|(n, interaction, id)| EventRecord {
            v: FORMAT,
            number: n,
            timestamp: 1_795_000_000_000,
            topic: TOPIC.into(),
            interaction: interaction.into(),
            focus_type: "Encounter".into(),
            focus_id: id.into(),
            focus_seq: 1,
            context: Vec::new(),
            incarnation: 0,
        })
        .collect();
    events[0].context = vec![ContextRef { resource_type: "Patient".into(), id: "p".into(), seq: 1 }];
    let encounter = |id: &str| Some(version_of("Encounter", id, 1, json!({ "resourceType": "Encounter", "id": id, "status": "planned" })));
    let mut deleted = record_of("Encounter", "c", 2, json!({}));
    deleted.deleted = true;
    deleted.resource = None;
    let deleted = share_version(deleted);
    Fixture {
        focus: vec![encounter("a"), encounter("b"), Some(deleted), encounter("d")],
        context: vec![vec![Some(version_of("Patient", "p", 1, json!({ "resourceType": "Patient", "id": "p" })))], vec![], vec![], vec![]],
        events,
    }
}

impl Fixture {
    fn with_versions(&self) -> Vec<EventView<'_>> {
        self.events
            .iter()
            .zip(&self.focus)
            .zip(&self.context)
            .map(|((event, v), context)| view_with(event, v.as_ref(), context, event.number == 4))
            .collect()
    }
}

#[test]
fn every_backport_notification_passes_inferno_checks_at_every_content_level() {
    let profile = Profile::load();
    let f = fixture();
    let events = f.with_versions();
    let mut checked = 0;
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        for content in [ContentLevel::Empty, ContentLevel::IdOnly, ContentLevel::FullResource] {
            for (kind, status) in [
                (NotificationType::Handshake, SubStatus::Requested),
                (NotificationType::Heartbeat, SubStatus::Active),
                (NotificationType::EventNotification, SubStatus::Active),
                (NotificationType::QueryEvent, SubStatus::Active),
                (NotificationType::QueryStatus, SubStatus::Error),
            ] {
                let err = StoredError { code: "no-response".into(), text: "timed out".into(), at: 0 };
                let c = matrix_ctx(version, status, content, Some(&err));
                let evs: &[EventView<'_>] =
                    if matches!(kind, NotificationType::EventNotification | NotificationType::QueryEvent) { &events } else { &[] };
                let bundle = notification_bundle(&c, kind, evs, 1_795_000_000_000);
                check_like_inferno(version, kind, status.code(), content, &bundle, &profile);
                // The bytes the lanes send are the same Bundle.
                let bytes: Value = serde_json::from_slice(&notification_bytes(&c, kind, evs, 1_795_000_000_000)).unwrap();
                assert_eq!(normalize(bytes), normalize(bundle.clone()));
                // An error status says why, in the version's shape.
                if status == SubStatus::Error {
                    let s = &bundle["entry"][0]["resource"];
                    let error = match version {
                        FhirVersion::R4 => s["parameter"].as_array().unwrap().iter().find(|p| p["name"] == "error").unwrap()
                            ["valueCodeableConcept"]
                            .clone(),
                        _ => s["error"][0].clone(),
                    };
                    assert_eq!(error["coding"][0]["code"], "no-response");
                    assert_eq!(error["text"], "timed out");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 3 * 5);
}

#[test]
fn a_withheld_event_keeps_its_number_and_loses_its_focus_in_r4_too() {
    let profile = Profile::load();
    let f = fixture();
    let events = f.with_versions();
    for version in [FhirVersion::R4, FhirVersion::R4B] {
        let bundle = notification_bundle(
            &matrix_ctx(version, SubStatus::Active, ContentLevel::FullResource, None),
            NotificationType::EventNotification,
            &events,
            0,
        );
        let status = &bundle["entry"][0]["resource"];
        let (_, _, _, _, listed) = read_status(version, status);
        assert_eq!(listed.len(), 4);
        assert!(listed[3].withheld && listed[3].focus.is_none() && listed[3].context.is_empty(), "{version:?}: {listed:?}");
        assert!(!bundle.to_string().contains("Encounter/d"), "{version:?}: the withheld focus was sent");
        if version == FhirVersion::R4 {
            let event = status["parameter"].as_array().unwrap().iter().filter(|p| p["name"] == "notification-event").nth(3).unwrap();
            assert_eq!(event["extension"], json!([{ "url": WITHHELD_URL, "valueCode": "not-authorized" }]));
            assert_eq!(event["part"][0], json!({ "name": "event-number", "valueString": "4" }));
            assert_eq!(profile.check(status), Vec::<String>::new());
        }
    }
}

#[test]
fn r4_reports_entered_in_error_as_off_and_r4b_as_it_is() {
    for (version, want) in [(FhirVersion::R4, "off"), (FhirVersion::R4B, "entered-in-error"), (FhirVersion::R5, "entered-in-error")] {
        let status = subscription_status(
            &matrix_ctx(version, SubStatus::EnteredInError, ContentLevel::IdOnly, None),
            NotificationType::QueryStatus,
            &[],
        );
        let (_, st, _, _, _) = read_status(version, &status);
        assert_eq!(st, want, "{version:?}");
    }
}

#[test]
fn the_subscription_identifier_is_echoed_in_every_version() {
    let identifier = json!({ "system": "urn:ietf:rfc:3986", "value": "urn:uuid:1" });
    for version in FhirVersion::ALL {
        let mut c = matrix_ctx(version, SubStatus::Active, ContentLevel::IdOnly, None);
        c.identifier = Some(&identifier);
        let status = subscription_status(&c, NotificationType::QueryStatus, &[]);
        let subscription = match version {
            FhirVersion::R4 => status["parameter"][0]["valueReference"].clone(),
            _ => status["subscription"].clone(),
        };
        assert_eq!(subscription, json!({ "reference": format!("{BASE}/Subscription/{SUB}"), "identifier": identifier }), "{version:?}");
    }
}

#[test]
fn r5_bundles_are_unchanged_by_the_backport() {
    let f = fixture();
    let events = f.with_versions();
    let bundle = notification_bundle(
        &matrix_ctx(FhirVersion::R5, SubStatus::Active, ContentLevel::IdOnly, None),
        NotificationType::EventNotification,
        &events,
        0,
    );
    assert_eq!(bundle["type"], "subscription-notification");
    assert!(bundle.get("meta").is_none());
    assert!(bundle["entry"][0].get("request").is_none() && bundle["entry"][0].get("response").is_none());
    assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "SubscriptionStatus");
}
