//! Herald's built-in clinical order workflow topics (issue #6), end to end: each topic fires
//! when its description says and not otherwise, through real subscriptions and receivers; and
//! the built-ins are listed, searchable by url, advertised and read-only. (Installing them once
//! and re-versioning them when the shipped definition changes is tested beside the code, in
//! `ingest::builtin::tests`.) `output-modified` is tested in every FHIR version in
//! `workflows::output_modified`.
//!
//! Negative cases never sleep: each scenario ends with a change that must fire, and since a
//! subscription's events arrive numbered in commit order, an unwanted event would show up as
//! a wrong focus or a wrong number in the checked sequence.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};

mod output_modified;

pub(crate) const T: Duration = Duration::from_secs(10);
const BASE: &str = "http://herald.dev/fhir/SubscriptionTopic/";
pub(crate) const TASK_CODES: &str = "http://hl7.org/fhir/CodeSystem/task-code";
const ACTIONABLE: &str = "http://terminology.hl7.org/CodeSystem/common-tags";

const BUILTIN_IDS: [&str; 6] = [
    "herald-coordination-task-changed",
    "herald-task-assigned",
    "herald-task-cancellation-requested",
    "herald-actionable-request-placed",
    "herald-request-completed-or-revoked",
    "herald-output-modified",
];

/// Subscribes `rx` to the built-in topic `name` with `filters` (full-resource); waits until active.
pub(crate) async fn subscribed(server: &TestServer, name: &str, rx: &Receiver, filters: Value) {
    let topic = format!("{BASE}{name}");
    let id = server.subscribe(&topic, &rx.url, json!({ "content": "full-resource", "filterBy": filters })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
}

pub(crate) fn by(param: &str, value: &str) -> Value {
    json!({ "filterParameter": param, "value": value })
}

/// The next `n` events: event number, focus `Type/id`, and the focus as the event saw it.
pub(crate) async fn next_events(rx: &Receiver, n: usize) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for r in rx.events(n, T).await {
        for (i, number) in r.event_numbers().into_iter().enumerate() {
            let focus = r.body["entry"][i + 1]["resource"].clone();
            let key = format!("{}/{}", focus["resourceType"].as_str().unwrap_or("?"), focus["id"].as_str().unwrap_or("?"));
            out.push((number, key, focus));
        }
    }
    out
}

/// Numbers and focus keys only.
pub(crate) fn keys(events: &[(u64, String, Value)]) -> Vec<(u64, &str)> {
    events.iter().map(|(n, k, _)| (*n, k.as_str())).collect()
}

/// PUTs `resource` (type and id taken from it); fails the test on an error status.
pub(crate) async fn put(server: &TestServer, resource: Value) {
    let path = format!("{}/{}", resource["resourceType"].as_str().unwrap(), resource["id"].as_str().unwrap());
    let (s, b) = server.put(&path, &resource).await;
    assert!(s.is_success(), "PUT {path}: {s} {b}");
}

pub(crate) fn task(id: &str, status: &str, extra: Value) -> Value {
    let mut t = json!({ "resourceType": "Task", "id": id, "status": status, "intent": "order",
                        "requester": { "reference": "Organization/placer" } });
    t.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    t
}

pub(crate) fn owner(org: &str) -> Value {
    json!({ "reference": format!("Organization/{org}") })
}

#[tokio::test]
async fn builtin_topics_are_listed_searchable_advertised_and_read_only() {
    let server = TestServer::start().await;
    let (s, bundle) = server.get("SubscriptionTopic?_count=50").await;
    assert_eq!(s, StatusCode::OK, "{bundle}");
    let mut ids: Vec<&str> = bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = BUILTIN_IDS.to_vec();
    want.sort_unstable();
    assert_eq!(ids, want);

    let url = format!("{BASE}task-assigned");
    let (_, found) = server.get(&format!("SubscriptionTopic?url={url}")).await;
    let entries = found["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{found}");
    assert_eq!(
        (entries[0]["resource"]["id"].as_str(), entries[0]["resource"]["version"].as_str()),
        (Some("herald-task-assigned"), Some("1.0.0"))
    );

    let (_, cs) = server.get("metadata").await;
    let text = cs.to_string();
    for id in BUILTIN_IDS {
        let url = format!("{BASE}{}", id.trim_start_matches("herald-"));
        assert!(text.contains(&format!("\"valueCanonical\":\"{url}\"")), "{url} not advertised");
    }

    // Protected: update and delete answer 405 with an OperationOutcome and change nothing.
    let (_, stored) = server.get("SubscriptionTopic/herald-task-assigned").await;
    let mut edited = stored.clone();
    edited["status"] = json!("retired");
    let resp = server
        .client
        .put(server.url("SubscriptionTopic/herald-task-assigned"))
        .header("content-type", "application/fhir+json")
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET");
    let oo: Value = resp.json().await.unwrap();
    assert_eq!((oo["resourceType"].as_str(), oo["issue"][0]["code"].as_str()), (Some("OperationOutcome"), Some("not-supported")), "{oo}");
    let (s, oo) = server.delete("SubscriptionTopic/herald-task-assigned").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    // The reserved id space and url space are refused too, also inside a transaction.
    let (s, _) = server.put("SubscriptionTopic/herald-mine", &json!({ "resourceType": "SubscriptionTopic", "id": "herald-mine" })).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let shadow = json!({ "resourceType": "SubscriptionTopic", "url": url, "status": "active",
                         "resourceTrigger": [{ "resource": "Task" }] });
    let (s, oo) = server.post("SubscriptionTopic", &shadow).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "SubscriptionTopic.url");
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "request": { "method": "DELETE", "url": "SubscriptionTopic/herald-task-assigned" } } ] });
    let (s, oo) = server.post("", &tx).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{oo}");
    let (_, after) = server.get("SubscriptionTopic/herald-task-assigned").await;
    assert_eq!(after, stored, "a refused write changed the built-in topic");
}

#[tokio::test]
async fn coordination_task_changed_fires_on_create_and_on_status_business_status_owner_or_output_changes() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribed(&server, "coordination-task-changed", &rx, json!([by("requester", "Organization/placer")])).await;

    let base = json!({ "owner": owner("lab"), "focus": { "reference": "ServiceRequest/order-1" } });
    put(&server, task("t", "requested", base.clone())).await; // 1: created
    put(
        &server,
        task(
            "t",
            "requested",
            json!({ "owner": owner("lab"), "focus": { "reference": "ServiceRequest/order-1" }, "description": "fasting" }),
        ),
    )
    .await;
    put(&server, task("t", "accepted", base.clone())).await; // 2: status
    put(&server, task("t", "accepted", json!({ "owner": owner("lab"), "note": [{ "text": "call first" }] }))).await;
    let busy = json!({ "text": "specimen received" });
    put(&server, task("t", "accepted", json!({ "owner": owner("lab"), "businessStatus": busy }))).await; // 3: businessStatus
    put(&server, task("t", "accepted", json!({ "owner": owner("lab-2"), "businessStatus": busy }))).await; // 4: owner
    let output = json!([{ "type": { "text": "result" }, "valueReference": { "reference": "DiagnosticReport/r1" } }]);
    put(&server, task("t", "accepted", json!({ "owner": owner("lab-2"), "businessStatus": busy, "output": output }))).await; // 5: output
    put(&server, task("t", "accepted", json!({ "owner": owner("lab-2"), "businessStatus": busy, "output": output }))).await; // same again
                                                                                                                             // Another placer's Task: filtered out. Then a last change that must fire.
    put(&server, task("other", "requested", json!({ "requester": { "reference": "Organization/someone-else" } }))).await;
    put(&server, task("t", "in-progress", json!({ "owner": owner("lab-2"), "businessStatus": busy, "output": output }))).await; // 6

    let events = next_events(&rx, 6).await;
    assert_eq!(keys(&events), [(1, "Task/t"), (2, "Task/t"), (3, "Task/t"), (4, "Task/t"), (5, "Task/t"), (6, "Task/t")]);
    let versions: Vec<&str> = events.iter().map(|(_, _, f)| f["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "3", "5", "6", "7", "9"], "the description, note and identical re-save versions (2, 4, 8) must not notify");
}

#[tokio::test]
async fn task_assigned_tells_the_new_owner_and_named_performers_only() {
    let server = TestServer::start().await;
    let (lab_a, lab_b, lab_c) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    subscribed(&server, "task-assigned", &lab_a, json!([by("owner", "Organization/lab-a")])).await;
    subscribed(&server, "task-assigned", &lab_b, json!([by("owner", "Organization/lab-b")])).await;
    subscribed(&server, "task-assigned", &lab_c, json!([by("requestedperformer-reference", "Organization/lab-c")])).await;

    put(&server, task("x", "requested", json!({}))).await; // no owner, no performer: nobody
    put(&server, task("x", "requested", json!({ "owner": owner("lab-a") }))).await; // lab-a 1: owner set
    put(&server, task("x", "accepted", json!({ "owner": owner("lab-a") }))).await; // same owner: nothing
    put(&server, task("x", "accepted", json!({ "owner": owner("lab-b") }))).await; // lab-b 1: reassigned
                                                                                   // A bid: a new Task naming lab-c as a potential fulfiller.
    let bid = json!({ "code": { "coding": [{ "system": TASK_CODES, "code": "fulfill" }] },
                      "requestedPerformer": [{ "reference": { "reference": "Organization/lab-c" } }] });
    put(&server, task("bid", "requested", bid)).await; // lab-c 1
    put(&server, task("y", "requested", json!({ "owner": owner("lab-a") }))).await; // lab-a 2: created with owner

    assert_eq!(keys(&next_events(&lab_a, 2).await), [(1, "Task/x"), (2, "Task/y")], "re-saving with the same owner must not notify");
    let b = next_events(&lab_b, 1).await;
    assert_eq!((keys(&b), b[0].2["meta"]["versionId"].as_str()), (vec![(1, "Task/x")], Some("4")));
    assert_eq!(keys(&next_events(&lab_c, 1).await), [(1, "Task/bid")]);
    // lab-b's and lab-c's next events prove nothing else was queued for them before.
    put(&server, task("z", "requested", json!({ "owner": owner("lab-b") }))).await;
    assert_eq!(keys(&next_events(&lab_b, 1).await), [(2, "Task/z")]);
}

#[tokio::test]
async fn cancellation_requested_fires_for_abort_tasks_and_for_tasks_moving_to_cancelled() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribed(&server, "task-cancellation-requested", &rx, json!([by("owner", "Organization/lab")])).await;

    // The lab's coordination Task: created and worked on, no event.
    put(&server, task("coord", "in-progress", json!({ "owner": owner("lab") }))).await;
    // The placer asks the lab to cancel it (placer-initiated fulfilment cancellation): 1.
    let abort = |focus: &str, to: &str| json!({ "code": { "coding": [{ "system": TASK_CODES, "code": "abort" }] }, "focus": { "reference": focus }, "owner": owner(to) });
    put(&server, task("cancel-1", "requested", abort("Task/coord", "lab"))).await;
    // An abort addressed to someone else: filtered out. The lab rejects the request (an update
    // of an abort Task): no event.
    put(&server, task("cancel-x", "requested", abort("Task/elsewhere", "other-lab"))).await;
    put(&server, task("cancel-1", "rejected", abort("Task/coord", "lab"))).await;
    // A placer-owned cancellation before work started: the Task moves to cancelled: 2.
    put(&server, task("early", "requested", json!({ "owner": owner("lab") }))).await;
    put(&server, task("early", "cancelled", json!({ "owner": owner("lab") }))).await;
    // Edited while cancelled: no event. A new abort for the lab ends the scenario: 3.
    put(&server, task("early", "cancelled", json!({ "owner": owner("lab"), "description": "duplicate order" }))).await;
    put(&server, task("cancel-2", "requested", abort("ServiceRequest/order-9", "lab"))).await;

    let events = next_events(&rx, 3).await;
    assert_eq!(keys(&events), [(1, "Task/cancel-1"), (2, "Task/early"), (3, "Task/cancel-2")]);
    assert_eq!(events[0].2["focus"]["reference"], "Task/coord");
    assert_eq!(events[1].2["meta"]["versionId"], "2");
}

fn tagged() -> Value {
    json!({ "tag": [{ "system": ACTIONABLE, "code": "actionable" }] })
}

#[tokio::test]
async fn actionable_request_placed_needs_the_tag_and_a_performer_and_filters_across_request_types() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    // One filter without resourceType: it applies to every Request type the topic declares it for.
    subscribed(&server, "actionable-request-placed", &rx, json!([by("performer", "Organization/lab")])).await;

    let sr = |id: &str, meta: Value, performer: Option<&str>| {
        let mut r = json!({ "resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order",
                            "subject": { "reference": "Patient/p" }, "meta": meta });
        if let Some(p) = performer {
            r["performer"] = json!([{ "reference": p }]);
        }
        r
    };
    let mr = |id: &str, performer: &str| {
        json!({ "resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order", "meta": tagged(),
                "subject": { "reference": "Patient/p" }, "performer": [{ "reference": performer }],
                "medication": { "concept": { "text": "amoxicillin" } } })
    };
    put(&server, sr("untagged", json!({}), Some("Organization/lab"))).await;
    put(&server, sr("no-performer", tagged(), None)).await;
    put(&server, sr("elsewhere", tagged(), Some("Organization/other-lab"))).await;
    put(&server, mr("med-elsewhere", "Organization/other-lab")).await;
    put(&server, sr("order", tagged(), Some("Organization/lab"))).await; // 1
    put(&server, mr("med", "Organization/lab")).await; // 2
    let device = json!({ "resourceType": "DeviceRequest", "id": "dev", "status": "active", "intent": "order", "meta": tagged(),
                         "subject": { "reference": "Patient/p" }, "code": { "concept": { "text": "walker" } },
                         "performer": { "reference": { "reference": "Organization/lab" } } });
    put(&server, device).await; // 3
                                // Tagging an untagged order later is an update with the tag: 4.
    put(&server, sr("untagged", tagged(), Some("Organization/lab"))).await;

    let events = next_events(&rx, 4).await;
    assert_eq!(
        keys(&events),
        [(1, "ServiceRequest/order"), (2, "MedicationRequest/med"), (3, "DeviceRequest/dev"), (4, "ServiceRequest/untagged")]
    );
}

#[tokio::test]
async fn request_completed_or_revoked_fires_on_the_status_transition_only() {
    let server = TestServer::start().await;
    let rx = Receiver::start().await;
    subscribed(&server, "request-completed-or-revoked", &rx, json!([by("performer", "Organization/lab")])).await;

    let sr = |id: &str, status: &str, note: Option<&str>| {
        let mut r = json!({ "resourceType": "ServiceRequest", "id": id, "status": status, "intent": "order",
                            "subject": { "reference": "Patient/p" }, "performer": [{ "reference": "Organization/lab" }] });
        if let Some(n) = note {
            r["note"] = json!([{ "text": n }]);
        }
        r
    };
    put(&server, sr("s1", "active", None)).await; // created: not a trigger
    put(&server, sr("s1", "active", Some("bring results"))).await; // other update: nothing
    put(&server, sr("s1", "on-hold", None)).await; // status change, not to an end state: nothing
    put(&server, sr("s1", "completed", None)).await; // 1
    put(&server, sr("s1", "completed", Some("signed"))).await; // still completed: nothing
    put(&server, sr("s2", "completed", None)).await; // created completed: not an update, nothing
    put(&server, sr("s3", "active", None)).await;
    put(&server, sr("s3", "revoked", None)).await; // 2
                                                   // R5 MedicationRequest has no `revoked`: it ends as completed, cancelled (before any
                                                   // administration), stopped (after some), ended (no more specific reason) or entered-in-error.
    let mr = |id: &str, status: &str| {
        json!({ "resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
                "subject": { "reference": "Patient/p" }, "performer": [{ "reference": "Organization/lab" }],
                "medication": { "concept": { "text": "amoxicillin" } } })
    };
    put(&server, mr("m1", "active")).await;
    put(&server, mr("m1", "entered-in-error")).await; // 3
    put(&server, mr("m2", "active")).await;
    put(&server, mr("m2", "on-hold")).await; // not an end state: nothing
    put(&server, mr("m2", "cancelled")).await; // 4
    for (n, end) in [(3, "stopped"), (4, "ended"), (5, "completed")] {
        put(&server, mr(&format!("m{n}"), "active")).await;
        put(&server, mr(&format!("m{n}"), end)).await; // 5, 6, 7
    }

    let events = next_events(&rx, 7).await;
    assert_eq!(
        keys(&events),
        [
            (1, "ServiceRequest/s1"),
            (2, "ServiceRequest/s3"),
            (3, "MedicationRequest/m1"),
            (4, "MedicationRequest/m2"),
            (5, "MedicationRequest/m3"),
            (6, "MedicationRequest/m4"),
            (7, "MedicationRequest/m5")
        ]
    );
    let statuses: Vec<&str> = events.iter().map(|(_, _, f)| f["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "revoked", "entered-in-error", "cancelled", "stopped", "ended", "completed"]);
    assert_eq!(events[0].2["meta"]["versionId"], "4");
}

/// A Provenance for `target` by `agent`, as the body of a POST.
pub(crate) fn provenance(target: &str, agent: &str) -> Value {
    json!({ "resourceType": "Provenance", "target": [{ "reference": target }], "recorded": "2026-11-27T10:00:00Z",
            "activity": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE" }] },
            "agent": [{ "who": { "reference": agent } }] })
}
