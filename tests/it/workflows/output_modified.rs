//! The built-in `output-modified` topic in every FHIR version: a Provenance by someone other
//! than the originator of a resource a Task lists in `Task.output` fires, with the Provenance
//! and the Task as context; the originator's own Provenance, a Provenance by an agent on
//! another server, a Provenance for a resource no Task lists, and a change without a
//! Provenance do not.
//!
//! R4 and R4B core define no Task `output` search parameter (R5 does); Herald ships its own
//! (`http://herald.dev/fhir/SearchParameter/Task-output`, docs/workflows.md), which is how it
//! finds the Tasks listing an output and how the R4/R4B built-ins include `Task:output`. The
//! R4 and R4B runs also check that `coordination-task-changed` carries the Task's outputs,
//! that `Task?output=` searches, and that every resource written and every notification is
//! valid in the version (when `../shared` holds its definitions).

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{by, owner, provenance, put, task, T};
use crate::support::profile::Definitions;
use crate::support::status::{events, events_since_start};
use crate::support::versions::{self, R4, R4B, R5};
use crate::support::{Receiver, TestServer};

const BASE: &str = "http://herald.dev/fhir/SubscriptionTopic/";

#[tokio::test]
async fn output_modified_fires_for_provenance_by_someone_other_than_the_originator_of_a_task_output() {
    output_modified(R5).await;
}

#[tokio::test]
async fn output_modified_fires_for_provenance_by_someone_other_than_the_originator_of_a_task_output_r4() {
    output_modified(R4).await;
}

#[tokio::test]
async fn output_modified_fires_for_provenance_by_someone_other_than_the_originator_of_a_task_output_r4b() {
    output_modified(R4B).await;
}

/// The version's base definitions (R4, R4B), if `../shared` has them.
fn definitions(version: &str) -> Option<&'static Definitions> {
    match version {
        R4 => Definitions::of("r4"),
        R4B => Definitions::of("r4b"),
        _ => None,
    }
}

/// Fails when `resource` is not a valid instance of its type in `version` (R4, R4B).
fn assert_valid(version: &str, resource: &Value) {
    if let Some(defs) = definitions(version) {
        let errors = defs.check_base(resource);
        assert!(errors.is_empty(), "{version} {}: {errors:#?}", resource["resourceType"]);
    }
}

/// Subscribes `rx` to the built-in topic `name`, full-resource, filtered by `param=value` on
/// `resource` (R5: a `filterBy` for every type, as the R5 workflow tests subscribe; R4/R4B: a
/// backport filter-criteria `resource?param=value`); waits until active; returns its id.
async fn subscribed(server: &TestServer, name: &str, rx: &Receiver, resource: &str, param: &str, value: &str) -> String {
    let topic = format!("{BASE}{name}");
    let id = if server.version == R5 {
        server.subscribe(&topic, &rx.url, json!({ "content": "full-resource", "filterBy": [by(param, value)] })).await
    } else {
        let sub = versions::subscription(&server.version, &topic, &rx.url, "full-resource", resource, &[(param, value)], &[]);
        let (s, b) = server.post("Subscription", &sub).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    id
}

/// The entry of `bundle` whose `fullUrl` is `url`.
fn entry<'a>(bundle: &'a Value, url: &str) -> &'a Value {
    bundle["entry"].as_array().unwrap().iter().find(|e| e["fullUrl"] == url).unwrap_or_else(|| panic!("no entry {url}: {bundle}"))
}

async fn output_modified(version: &str) {
    let server = TestServer::start_with(|c| c.fhir.version = version.into()).await;
    let (lab, other_lab, placer) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    subscribed(&server, "output-modified", &lab, "DiagnosticReport", "originator", "Organization/lab").await;
    let other_lab_id = subscribed(&server, "output-modified", &other_lab, "DiagnosticReport", "originator", "Organization/lab-2").await;
    subscribed(&server, "coordination-task-changed", &placer, "Task", "owner", "Organization/lab").await;

    let report = |id: &str, performer: &str, conclusion: &str| {
        json!({ "resourceType": "DiagnosticReport", "id": id, "status": "final", "code": { "text": "Lipid panel" },
                "performer": [{ "reference": performer }], "conclusion": conclusion })
    };
    let output = json!([{ "type": { "text": "result" }, "valueReference": { "reference": "DiagnosticReport/dr-out" } }]);
    let listing = task("t-out", "completed", json!({ "owner": owner("lab"), "output": output }));
    for resource in [&report("dr-out", "Organization/lab", "normal"), &listing, &provenance("DiagnosticReport/dr-out", "Organization/x")] {
        assert_valid(version, resource);
    }
    put(&server, report("dr-out", "Organization/lab", "normal")).await;
    put(&server, report("dr-loose", "Organization/lab", "normal")).await; // not any Task's output
    put(&server, listing).await;
    put(&server, task("t-other", "requested", json!({ "owner": owner("lab-2") }))).await; // lists no output

    // The Task's outputs are searchable and travel with coordination-task-changed (`Task:output`).
    let (s, found) = server.get("Task?output=DiagnosticReport/dr-out&_count=10").await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let ids: Vec<&str> = found["entry"].as_array().into_iter().flatten().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, ["t-out"], "{found}");
    let created = placer.events(1, T).await.remove(0);
    let listed = events(created.status());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].focus.as_deref(), Some(server.url("Task/t-out").as_str()));
    assert_eq!(listed[0].context, [server.url("DiagnosticReport/dr-out")], "Task:output included");
    assert_eq!(entry(&created.body, &server.url("DiagnosticReport/dr-out"))["resource"]["conclusion"], "normal");

    // Herald's Task output parameter cannot be shadowed by a stored one.
    let shadow = json!({ "resourceType": "SearchParameter", "url": "http://example.org/fhir/SearchParameter/Task-output",
        "name": "TaskOutput", "status": "active", "description": "Resources a Task lists in Task.output",
        "code": "output", "base": ["Task"], "type": "reference", "expression": "Task.output.value.ofType(Reference)" });
    let (s, oo) = server.post("SearchParameter", &shadow).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");

    // None of these fire: the originator's own Provenance, a Provenance with no agent on our
    // base, a Provenance for a resource no Task lists, and a change with no Provenance.
    let post = |body: Value| {
        let server = &server;
        async move {
            let (s, b) = server.post("Provenance", &body).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    };
    post(provenance("DiagnosticReport/dr-out", "Organization/lab")).await;
    post(provenance("DiagnosticReport/dr-out", "http://elsewhere.example/fhir/Organization/x")).await;
    post(provenance("DiagnosticReport/dr-loose", "Organization/placer")).await;
    put(&server, report("dr-out", "Organization/lab", "amended without provenance")).await;
    // The placer amends the output (the amendment keeps the lab as performer): it fires, for
    // the lab only, with the Provenance and the Task as context.
    put(&server, report("dr-out", "Organization/lab", "amended by the placer")).await;
    let (s, prov) = server.post("Provenance", &provenance("DiagnosticReport/dr-out/_history/3", "Organization/placer")).await;
    assert_eq!(s, StatusCode::CREATED, "{prov}");
    // Even if the amender also rewrites the performer, the originator stays the first version's.
    put(&server, report("dr-out", "Organization/lab-2", "performer rewritten")).await;
    post(provenance("DiagnosticReport/dr-out", "Organization/placer")).await;

    let got = lab.events(2, T).await;
    let first = events(got[0].status());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].number, 1);
    assert_eq!(first[0].focus.as_deref(), Some(server.url("DiagnosticReport/dr-out").as_str()));
    let prov_url = server.url(&format!("Provenance/{}", prov["id"].as_str().unwrap()));
    assert_eq!(first[0].context, [prov_url.clone(), server.url("Task/t-out")]);
    // The focus is the version the Provenance names, even after later changes.
    let focus = entry(&got[0].body, &server.url("DiagnosticReport/dr-out"));
    assert_eq!(focus["resource"]["conclusion"], "amended by the placer");
    assert_eq!(focus["request"]["method"], "GET");
    // The context resources are in the notification: the Provenance and the Task listing the output.
    assert_eq!(entry(&got[0].body, &prov_url)["resource"]["agent"][0]["who"]["reference"], "Organization/placer");
    let context_task = &entry(&got[0].body, &server.url("Task/t-out"))["resource"];
    assert_eq!(context_task["output"][0]["valueReference"]["reference"], "DiagnosticReport/dr-out");
    assert_eq!(events(got[1].status())[0].number, 2);
    for notification in [&created, &got[0], &got[1]] {
        assert_valid(version, &notification.body);
    }

    // lab-2 became the performer only in a later version: it is not the originator.
    let status = server.status_of(&other_lab_id).await;
    assert_eq!(events_since_start(&status), "0", "{status}");
}
