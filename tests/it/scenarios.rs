//! The end-to-end clinical order workflow scenarios of issue #6, each the same sequence as a
//! walkthrough section of `docs/workflows.md` ("End-to-end scenarios"), run through the real
//! server with real receivers and the built-in topics.
//!
//! As in `workflows.rs`, negative cases never sleep: a subscription's events are numbered in
//! commit order, so each scenario ends with a change that must arrive, and an unwanted event
//! would show up as a wrong focus or a wrong number in the checked sequence.
//!
//! The built-in topics' `notificationShape` includes travel with each event: the order a Task
//! is for (`Task:focus`) and its outputs (`Task:output`) are in `additionalContext` and, at
//! full-resource, in the Bundle, as they were when the event happened.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{Receiver, TestServer};
use crate::workflows::{by, keys, next_events, owner, put, subscribed, task, T, TASK_CODES};

/// The events of one notification: number, focus `Type/id`, the focus as the event saw it.
fn events_of(bundle: &Value) -> Vec<(u64, String, Value)> {
    let status = &bundle["entry"][0]["resource"];
    let mut out = Vec::new();
    for (i, ev) in status["notificationEvent"].as_array().unwrap().iter().enumerate() {
        let focus = bundle["entry"][i + 1]["resource"].clone();
        let key = format!("{}/{}", focus["resourceType"].as_str().unwrap(), focus["id"].as_str().unwrap());
        out.push((ev["eventNumber"].as_str().unwrap().parse().unwrap(), key, focus));
    }
    out
}

/// The entry of `bundle` whose fullUrl is `url`.
fn entry<'b>(bundle: &'b Value, url: &str) -> &'b Value {
    let entries = bundle["entry"].as_array().unwrap();
    entries.iter().find(|e| e["fullUrl"] == url).unwrap_or_else(|| panic!("no entry {url} in {bundle}"))
}

/// Every focus and additionalContext reference of the status resolves to an entry (the check
/// the Inferno test kit makes on full-resource notifications).
fn assert_every_reference_has_an_entry(bundle: &Value) {
    let status = &bundle["entry"][0]["resource"];
    for ev in status["notificationEvent"].as_array().unwrap() {
        let refs = std::iter::once(&ev["focus"]).chain(ev["additionalContext"].as_array().into_iter().flatten());
        for r in refs {
            let url = r["reference"].as_str().unwrap();
            let e = entry(bundle, url);
            assert!(e["resource"].is_object(), "{url} has no resource in {bundle}");
        }
    }
}

fn code(c: &str) -> Value {
    json!({ "coding": [{ "system": TASK_CODES, "code": c }] })
}

/// The stored Task `id`, with `status` and the fields of `extra` set, PUT back.
async fn move_task(server: &TestServer, id: &str, status: &str, extra: Value) -> Value {
    let (s, mut t) = server.get(&format!("Task/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    t["status"] = json!(status);
    t.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    t.as_object_mut().unwrap().remove("meta");
    put(server, t.clone()).await;
    t
}

/// Statuses of the focus resources of `events`, in order.
fn statuses(events: &[(u64, String, Value)]) -> Vec<&str> {
    events.iter().map(|(_, _, f)| f["status"].as_str().unwrap()).collect()
}

/// Option C with a coordination Task: the placer posts the order and its Task in one
/// transaction, the lab is told, works the Task to completion with a DiagnosticReport as
/// output, and the placer is told of every step in order.
#[tokio::test]
async fn option_c_placer_and_lab_are_told_each_step_in_order() {
    let server = TestServer::start().await;
    let (lab, placer) = (Receiver::start().await, Receiver::start().await);
    subscribed(&server, "task-assigned", &lab, json!([by("owner", "Organization/lab")])).await;
    subscribed(&server, "coordination-task-changed", &placer, json!([by("requester", "Organization/placer")])).await;

    let sr_ref = "urn:uuid:0b6a5c1e-3f4d-4c53-9d1e-2a4f0c9e7a11";
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "fullUrl": sr_ref,
          "resource": { "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                        "code": { "concept": { "text": "Lipid panel" } }, "subject": { "reference": "Patient/pat-1" },
                        "requester": { "reference": "Organization/placer" }, "performer": [{ "reference": "Organization/lab" }] },
          "request": { "method": "POST", "url": "ServiceRequest" } },
        { "resource": { "resourceType": "Task", "status": "requested", "intent": "order", "code": code("fulfill"),
                        "focus": { "reference": sr_ref }, "for": { "reference": "Patient/pat-1" },
                        "requester": { "reference": "Organization/placer" }, "owner": owner("lab") },
          "request": { "method": "POST", "url": "Task" } } ] });
    let (s, resp) = server.post("", &tx).await;
    assert_eq!(s, StatusCode::OK, "{resp}");
    let sr_id = resp["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let task_id = resp["entry"][1]["resource"]["id"].as_str().unwrap().to_string();
    let task_key = format!("Task/{task_id}");

    // The lab is told of the new Task, which points at the order; the order (created in the
    // same transaction) travels with it, so the lab need not read it back.
    let bundle = lab.next_within(T).await.body;
    let told = events_of(&bundle);
    assert_eq!(keys(&told), [(1, task_key.as_str())]);
    assert_eq!(told[0].2["focus"]["reference"], format!("ServiceRequest/{sr_id}"));
    let sr_url = server.url(&format!("ServiceRequest/{sr_id}"));
    assert_eq!(bundle["entry"][0]["resource"]["notificationEvent"][0]["additionalContext"], json!([{ "reference": sr_url }]));
    assert_eq!(entry(&bundle, &sr_url)["resource"]["requester"]["reference"], "Organization/placer");
    assert_every_reference_has_an_entry(&bundle);

    // The lab works it: accepted, in-progress, then completed with its report as output.
    move_task(&server, &task_id, "accepted", json!({})).await;
    move_task(&server, &task_id, "in-progress", json!({})).await;
    let report = json!({ "resourceType": "DiagnosticReport", "status": "final", "code": { "text": "Lipid panel" },
                         "subject": { "reference": "Patient/pat-1" }, "basedOn": [{ "reference": format!("ServiceRequest/{sr_id}") }],
                         "performer": [{ "reference": "Organization/lab" }] });
    let (s, dr) = server.post("DiagnosticReport", &report).await;
    assert_eq!(s, StatusCode::CREATED, "{dr}");
    let dr_ref = format!("DiagnosticReport/{}", dr["id"].as_str().unwrap());
    let output = json!([{ "type": { "text": "result" }, "valueReference": { "reference": dr_ref } }]);
    move_task(&server, &task_id, "completed", json!({ "output": output })).await;

    // The placer saw all four versions, numbered consecutively, as full resources; the last
    // carries the order and the report it points at ("output included at full-resource").
    let bundles: Vec<Value> = placer.events(4, T).await.into_iter().map(|r| r.body).collect();
    let seen: Vec<_> = bundles.iter().flat_map(events_of).collect();
    let k = task_key.as_str();
    assert_eq!(keys(&seen), [(1, k), (2, k), (3, k), (4, k)]);
    assert_eq!(statuses(&seen), ["requested", "accepted", "in-progress", "completed"]);
    let versions: Vec<&str> = seen.iter().map(|(_, _, f)| f["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1", "2", "3", "4"]);
    assert_eq!(seen[3].2["output"][0]["valueReference"]["reference"], dr_ref.as_str());
    let last = bundles
        .iter()
        .find(|b| b["entry"][0]["resource"]["notificationEvent"].as_array().unwrap().iter().any(|e| e["eventNumber"] == "4"))
        .unwrap();
    let dr_url = server.url(&dr_ref);
    let event = last["entry"][0]["resource"]["notificationEvent"].as_array().unwrap().iter().find(|e| e["eventNumber"] == "4").unwrap();
    assert_eq!(event["additionalContext"], json!([{ "reference": sr_url }, { "reference": dr_url }]));
    assert_eq!(entry(last, &dr_url)["resource"]["status"], "final");
    assert_every_reference_has_an_entry(last);

    // The lab's own updates kept the owner, so its next event is the next order it is given.
    put(&server, task("order-2-task", "requested", json!({ "owner": owner("lab") }))).await;
    assert_eq!(keys(&next_events(&lab, 1).await), [(2, "Task/order-2-task")]);
}

/// Bids: one Task per potential fulfiller for the same order; one is accepted, the placer
/// cancels the others as "not selected"; each fulfiller is told only of its own Task.
#[tokio::test]
async fn bid_flow_tells_each_fulfiller_only_of_its_own_task() {
    let server = TestServer::start().await;
    let labs = ["lab-a", "lab-b", "lab-c"];
    let mut rxs = Vec::new();
    for l in labs {
        let rx = Receiver::start().await;
        subscribed(&server, "coordination-task-changed", &rx, json!([by("owner", &format!("Organization/{l}"))])).await;
        rxs.push(rx);
    }
    let placer = Receiver::start().await;
    subscribed(&server, "coordination-task-changed", &placer, json!([by("requester", "Organization/placer")])).await;

    let sr = json!({ "resourceType": "ServiceRequest", "id": "bid-order", "status": "active", "intent": "order",
                     "code": { "concept": { "text": "MRI knee" } }, "subject": { "reference": "Patient/pat-1" } });
    put(&server, sr).await;
    let bid = |l: &str| json!({ "owner": owner(l), "focus": { "reference": "ServiceRequest/bid-order" }, "code": code("fulfill") });
    for l in labs {
        put(&server, task(&format!("bid-{l}"), "requested", bid(l))).await;
    }
    move_task(&server, "bid-lab-a", "accepted", json!({})).await;
    let not_selected = json!({ "statusReason": { "concept": { "text": "not selected" } } });
    move_task(&server, "bid-lab-b", "cancelled", not_selected.clone()).await;
    move_task(&server, "bid-lab-c", "cancelled", not_selected).await;
    // Closing moves, one per fulfiller, that must arrive: lab-a starts work; lab-b and lab-c
    // get their next orders.
    move_task(&server, "bid-lab-a", "in-progress", json!({})).await;
    put(&server, task("next-lab-b", "requested", json!({ "owner": owner("lab-b") }))).await;
    put(&server, task("next-lab-c", "requested", json!({ "owner": owner("lab-c") }))).await;

    let a = next_events(&rxs[0], 3).await;
    assert_eq!(keys(&a), [(1, "Task/bid-lab-a"), (2, "Task/bid-lab-a"), (3, "Task/bid-lab-a")]);
    assert_eq!(statuses(&a), ["requested", "accepted", "in-progress"]);
    for (l, rx) in labs.iter().zip(&rxs).skip(1) {
        let (mine, next) = (format!("Task/bid-{l}"), format!("Task/next-{l}"));
        let events = next_events(rx, 3).await;
        assert_eq!(keys(&events), [(1, mine.as_str()), (2, mine.as_str()), (3, next.as_str())], "{l}");
        assert_eq!(statuses(&events)[..2], ["requested", "cancelled"]);
        assert_eq!(events[1].2["statusReason"]["concept"]["text"], "not selected");
    }
    // The placer, who requested them all, saw every step.
    let all = next_events(&placer, 9).await;
    let ids: Vec<&str> = all.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        ids,
        [
            "Task/bid-lab-a",
            "Task/bid-lab-b",
            "Task/bid-lab-c",
            "Task/bid-lab-a",
            "Task/bid-lab-b",
            "Task/bid-lab-c",
            "Task/bid-lab-a",
            "Task/next-lab-b",
            "Task/next-lab-c"
        ]
    );
}

/// Placer-owned cancellation: the placer (who owns the request) cancels the coordination
/// Task before the lab started; the lab is told.
#[tokio::test]
async fn cancellation_placer_owned_tells_the_lab() {
    let server = TestServer::start().await;
    let lab = Receiver::start().await;
    subscribed(&server, "task-cancellation-requested", &lab, json!([by("owner", "Organization/lab")])).await;

    let coord = json!({ "owner": owner("lab"), "focus": { "reference": "ServiceRequest/order-c1" }, "code": code("fulfill") });
    put(&server, task("task-c1", "requested", coord)).await; // created: not a cancellation
    move_task(&server, "task-c1", "cancelled", json!({})).await; // 1

    let events = next_events(&lab, 1).await;
    assert_eq!(keys(&events), [(1, "Task/task-c1")]);
    assert_eq!((events[0].2["status"].as_str(), events[0].2["meta"]["versionId"].as_str()), (Some("cancelled"), Some("2")));
}

/// Filler-owned cancellation: the lab is working the Task, so the placer asks it to stop with
/// an `abort` Task owned by the lab whose focus is the coordination Task; the lab is told,
/// agrees, and the placer sees the outcome.
#[tokio::test]
async fn cancellation_filler_owned_goes_through_an_abort_task() {
    let server = TestServer::start().await;
    let (lab, placer) = (Receiver::start().await, Receiver::start().await);
    subscribed(&server, "task-cancellation-requested", &lab, json!([by("owner", "Organization/lab")])).await;
    subscribed(&server, "coordination-task-changed", &placer, json!([by("requester", "Organization/placer")])).await;

    let coord = json!({ "owner": owner("lab"), "focus": { "reference": "ServiceRequest/order-c2" }, "code": code("fulfill") });
    put(&server, task("task-c2", "in-progress", coord)).await; // placer 1
    let abort = json!({ "owner": owner("lab"), "focus": { "reference": "Task/task-c2" }, "code": code("abort") });
    put(&server, task("abort-c2", "requested", abort)).await; // lab 1, placer 2

    let told = next_events(&lab, 1).await;
    assert_eq!(keys(&told), [(1, "Task/abort-c2")]);
    assert_eq!(told[0].2["focus"]["reference"], "Task/task-c2");

    // The lab agrees: it completes the abort request and cancels its Task.
    move_task(&server, "abort-c2", "completed", json!({})).await; // placer 3
    move_task(&server, "task-c2", "cancelled", json!({})).await; // placer 4 (and lab 2: a Task went to cancelled)
    let seen = next_events(&placer, 4).await;
    assert_eq!(keys(&seen), [(1, "Task/task-c2"), (2, "Task/abort-c2"), (3, "Task/abort-c2"), (4, "Task/task-c2")]);
    assert_eq!(statuses(&seen), ["in-progress", "requested", "completed", "cancelled"]);
    assert_eq!(keys(&next_events(&lab, 1).await), [(2, "Task/task-c2")], "completing the abort Task must not notify the lab");
}

/// The status of a workflow by REST: the Tasks of an order, found by their focus.
#[tokio::test]
async fn workflow_status_by_rest_lists_the_tasks_of_an_order() {
    let server = TestServer::start().await;
    for o in ["order-x", "order-y"] {
        put(
            &server,
            json!({ "resourceType": "ServiceRequest", "id": o, "status": "active", "intent": "order",
                             "code": { "concept": { "text": "CBC" } }, "subject": { "reference": "Patient/pat-1" } }),
        )
        .await;
    }
    let on =
        |o: &str, l: &str| json!({ "owner": owner(l), "focus": { "reference": format!("ServiceRequest/{o}") }, "code": code("fulfill") });
    put(&server, task("x-lab-a", "accepted", on("order-x", "lab-a"))).await;
    put(&server, task("x-lab-b", "cancelled", on("order-x", "lab-b"))).await;
    put(&server, task("y-lab-a", "requested", on("order-y", "lab-a"))).await;

    let found = |b: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = b["entry"]
            .as_array()
            .map(|a| {
                a.iter().map(|e| (e["resource"]["id"].as_str().unwrap().into(), e["resource"]["status"].as_str().unwrap().into())).collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let (s, b) = server.get("Task?focus=ServiceRequest/order-x").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(found(&b), [("x-lab-a".into(), "accepted".into()), ("x-lab-b".into(), "cancelled".into())]);
    let (_, b) = server.get("Task?focus=ServiceRequest/order-x&status=accepted").await;
    assert_eq!(found(&b), [("x-lab-a".to_string(), "accepted".to_string())]);
}

/// No polling: a placer with 500 open orders (beside another placer's 500) holds one
/// subscription and is told of changes to its own Tasks only.
#[tokio::test]
async fn five_hundred_open_orders_one_subscription_only_own_changes() {
    let server = TestServer::start().await;
    for (prefix, requester) in [("p", "Organization/placer"), ("o", "Organization/other-placer")] {
        let entries: Vec<Value> = (0..500)
            .map(|i| {
                let id = format!("{prefix}-{i}");
                let t = task(
                    &id,
                    "requested",
                    json!({ "requester": { "reference": requester }, "owner": owner("lab"),
                            "focus": { "reference": format!("ServiceRequest/{id}") }, "code": code("fulfill") }),
                );
                json!({ "resource": t, "request": { "method": "PUT", "url": format!("Task/{id}") } })
            })
            .collect();
        let (s, b) = server.post("", &json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let placer = Receiver::start().await;
    subscribed(&server, "coordination-task-changed", &placer, json!([by("requester", "Organization/placer")])).await;

    move_task(&server, "p-7", "accepted", json!({})).await; // 1
    move_task(&server, "o-7", "accepted", json!({})).await;
    move_task(&server, "o-250", "cancelled", json!({})).await;
    move_task(&server, "p-250", "in-progress", json!({})).await; // 2
    move_task(&server, "o-499", "accepted", json!({})).await;
    move_task(&server, "o-0", "in-progress", json!({})).await;
    // The placer's third change comes last: any of the other placer's changes, had it leaked,
    // would have taken one of the numbers 1-3.
    move_task(&server, "p-499", "accepted", json!({})).await; // 3

    let events = next_events(&placer, 3).await;
    assert_eq!(keys(&events), [(1, "Task/p-7"), (2, "Task/p-250"), (3, "Task/p-499")]);
    assert_eq!(statuses(&events), ["accepted", "in-progress", "accepted"]);
}

/// Shared outputs: the lab's report is a completed Task's output; the placer amends it and
/// says so with `X-Provenance` on the same PUT; the lab, its originator, is told, with the
/// Provenance Herald stored (its target set to the amended version) and the Task.
#[tokio::test]
async fn shared_outputs_the_originator_is_told_when_the_placer_amends_its_report() {
    let server = TestServer::start().await;
    let lab = Receiver::start().await;
    subscribed(&server, "output-modified", &lab, json!([by("originator", "Organization/lab")])).await;

    let mut report = json!({ "resourceType": "DiagnosticReport", "id": "lipids", "status": "final", "code": { "text": "Lipid panel" },
                             "subject": { "reference": "Patient/pat-1" }, "performer": [{ "reference": "Organization/lab" }],
                             "conclusion": "LDL 3.1 mmol/L" });
    put(&server, report.clone()).await;
    let output = json!([{ "type": { "text": "result" }, "valueReference": { "reference": "DiagnosticReport/lipids" } }]);
    put(&server, task("order-1-task", "completed", json!({ "owner": owner("lab"), "output": output }))).await;

    report["status"] = json!("amended");
    report["conclusion"] = json!("LDL 3.1 mmol/L; patient on statins since 2025 (placer addendum)");
    let prov = json!({ "resourceType": "Provenance", "recorded": "2026-11-27T10:00:00Z",
                       "activity": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE" }] },
                       "agent": [{ "who": { "reference": "Organization/placer" } }] });
    let resp = server
        .client
        .put(server.url("DiagnosticReport/lipids"))
        .header("content-type", "application/fhir+json")
        .header("x-provenance", prov.to_string())
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let bundle = lab.next_within(T).await.body;
    let event = &bundle["entry"][0]["resource"]["notificationEvent"][0];
    assert_eq!(event["eventNumber"], "1");
    assert_eq!(event["focus"]["reference"], server.url("DiagnosticReport/lipids"));
    assert_eq!(entry(&bundle, &server.url("DiagnosticReport/lipids"))["resource"]["status"], "amended");
    let context = event["additionalContext"].as_array().unwrap();
    let prov_url = context[0]["reference"].as_str().unwrap();
    let stored = &entry(&bundle, prov_url)["resource"];
    assert_eq!(stored["resourceType"], "Provenance");
    assert_eq!(stored["target"], json!([{ "reference": "DiagnosticReport/lipids/_history/2" }]));
    assert_eq!(stored["agent"][0]["who"]["reference"], "Organization/placer");
    assert_eq!(context[1]["reference"], server.url("Task/order-1-task"));
    assert_every_reference_has_an_entry(&bundle);

    // A malformed X-Provenance is refused, and the write with it.
    let resp = server
        .client
        .put(server.url("DiagnosticReport/lipids"))
        .header("content-type", "application/fhir+json")
        .header("x-provenance", "{\"resourceType\":\"Patient\"}")
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (_, now) = server.get("DiagnosticReport/lipids").await;
    assert_eq!(now["meta"]["versionId"], "2");
}
