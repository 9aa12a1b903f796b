//! FHIR JSON intake fuzzed through the real server (issue #11): random resources, Bundles,
//! side-car feeds, search strings and raw bytes posted to a running Herald. Whatever comes in,
//! the answer is a success or a 4xx OperationOutcome (never a 5xx, a dropped connection or a
//! hang), every accepted resource reads back as it was answered, and the server stays ready.
//!
//! `HERALD_FUZZ_CASES` sets the number of requests (default 96 in CI); a long run by hand:
//! `HERALD_FUZZ_CASES=200000 cargo nextest run --release --features load -E 'test(fuzz_intake)'`.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestServer;

const TYPES: &[&str] = &[
    "Task",
    "Patient",
    "Observation",
    "ServiceRequest",
    "DiagnosticReport",
    "Provenance",
    "Subscription",
    "SubscriptionTopic",
    "SearchParameter",
    "Bundle",
    "Basic",
    "Nope",
    "",
];

const KEYS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "versionId",
    "status",
    "intent",
    "owner",
    "reference",
    "subject",
    "for",
    "focus",
    "code",
    "coding",
    "system",
    "value",
    "display",
    "text",
    "div",
    "identifier",
    "basedOn",
    "output",
    "input",
    "valueReference",
    "extension",
    "url",
    "valueString",
    "effectiveDateTime",
    "authoredOn",
    "lastModified",
    "target",
    "agent",
    "who",
    "entry",
    "request",
    "method",
    "fullUrl",
    "resource",
    "type",
    "topic",
    "channelType",
    "endpoint",
    "content",
    "filterBy",
    "resourceTrigger",
    "expression",
    "base",
    "name",
    "contained",
    "_status",
    "period",
    "start",
    "end",
    "valueQuantity",
    "unit",
    "performer",
    "result",
];

const STRINGS: &[&str] = &[
    "requested",
    "completed",
    "order",
    "Patient/p1",
    "Task/t1",
    "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
    "Organization/lab",
    "POST",
    "PUT",
    "DELETE",
    "GET",
    "Task",
    "Task/t1",
    "transaction",
    "batch",
    "history",
    "final",
    "2026-02-30",
    "2026-01-01T00:00:00Z",
    "http://loinc.org",
    "1234-5",
    "Task.owner",
    "rest-hook",
    "http://127.0.0.1:1/x",
    "full-resource",
    "",
    "\u{0}",
    "\u{202e}x",
    "%",
    "../..",
    "Task?status=x",
    "\\",
    "1e400",
    "-0",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        ".{0,16}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn resource() -> impl Strategy<Value = Value> {
    (prop::sample::select(TYPES), value()).prop_map(|(ty, v)| {
        let mut obj = match v {
            Value::Object(o) => o,
            other => [("text".to_owned(), other)].into_iter().collect(),
        };
        obj.insert("resourceType".into(), json!(ty));
        Value::Object(obj)
    })
}

fn bundle() -> impl Strategy<Value = Value> {
    let entry = (
        resource(),
        prop::sample::select(&["POST", "PUT", "DELETE", "GET", "PATCH", ""][..]),
        prop::sample::select(STRINGS),
        any::<bool>(),
    )
        .prop_map(|(r, method, url, full)| {
            let ty = r["resourceType"].as_str().unwrap_or_default().to_owned();
            let mut e = json!({ "resource": r, "request": { "method": method, "url": if url.is_empty() { ty } else { url.to_owned() } } });
            if full {
                e["fullUrl"] = json!("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a");
            }
            e
        });
    (
        prop::sample::select(&["transaction", "batch", "history", "subscription-notification", "searchset"][..]),
        prop::collection::vec(entry, 0..5),
    )
        .prop_map(|(ty, entries)| json!({ "resourceType": "Bundle", "type": ty, "entry": entries }))
}

/// One request: where it goes and what it carries.
#[derive(Debug, Clone)]
enum Case {
    Create(Value),
    Update(String, Value),
    Bundle(Value),
    Ingest(Value),
    Search(String, String),
    Raw(String, Vec<u8>),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        3 => resource().prop_map(Case::Create),
        2 => ("[A-Za-z0-9.-]{1,8}|.{0,10}", resource()).prop_map(|(id, r)| Case::Update(id, r)),
        2 => bundle().prop_map(Case::Bundle),
        1 => bundle().prop_map(Case::Ingest),
        2 => (prop::sample::select(TYPES), prop::collection::vec(prop::sample::select(&["status", "=", "&", "owner", ":missing", "true", "_include", "Task:owner", "_count", "-1", ",", "|", "_sort", "date", "ge2026", "%zz", "_has:Task:focus:status", "x"][..]), 0..12)).prop_map(|(ty, parts)| Case::Search(ty.to_owned(), parts.concat())),
        1 => (prop::sample::select(&["Task", "", "$ingest", "Subscription/$status"][..]), prop_oneof![prop::collection::vec(any::<u8>(), 0..64), Just(b"[".repeat(3000)), Just(b"{\"resourceType\":\"Task\",\"a\":".repeat(200))]).prop_map(|(p, b)| Case::Raw(p.to_owned(), b)),
    ]
}

/// Answers seen, by status code (reported at the end, to show what the cases reached).
static STATUSES: std::sync::Mutex<std::collections::BTreeMap<u16, u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

async fn send(server: &TestServer, case: &Case) -> Result<(), TestCaseError> {
    let c = &server.client;
    let req = match case {
        Case::Create(r) => c.post(server.url(r["resourceType"].as_str().unwrap_or("Task"))).body(r.to_string()),
        Case::Update(id, r) => {
            let path = format!("{}/{}", r["resourceType"].as_str().unwrap_or("Task"), urlencoding(id));
            c.put(server.url(&path)).body(r.to_string())
        }
        Case::Bundle(b) => c.post(server.base.clone()).body(b.to_string()),
        Case::Ingest(b) => c.post(server.url("$ingest")).body(b.to_string()),
        Case::Search(ty, q) => c.get(format!("{}?{q}", server.url(ty))),
        Case::Raw(path, bytes) => c.post(server.url(path)).body(bytes.clone()),
    };
    let resp =
        req.header("content-type", "application/fhir+json").send().await.map_err(|e| TestCaseError::fail(format!("{case:?}: {e}")))?;
    let status = resp.status();
    *STATUSES.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    let text = resp.text().await.map_err(|e| TestCaseError::fail(format!("{case:?}: body: {e}")))?;
    prop_assert!(!status.is_server_error(), "{case:?} got {status}: {text}");
    let body: Value =
        serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{case:?} answered {status} with non-JSON ({e}): {text}")))?;
    if status.is_client_error() {
        prop_assert_eq!(&body["resourceType"], "OperationOutcome", "{:?} got {}: {}", case, status, text);
    }
    // What was accepted reads back as it was answered.
    if matches!(case, Case::Create(_) | Case::Update(..)) && status.is_success() && body["resourceType"] != "OperationOutcome" {
        let (ty, id, vid) = (
            body["resourceType"].as_str().unwrap_or(""),
            body["id"].as_str().unwrap_or(""),
            body["meta"]["versionId"].as_str().unwrap_or(""),
        );
        let back = c.get(server.url(&format!("{ty}/{id}/_history/{vid}"))).send().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.status(), StatusCode::OK, "{:?}: accepted {}/{} v{} does not read back", case, ty, id, vid);
        let back: Value = back.json().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &body, "{:?}: stored version differs from the answer", case);
    }
    Ok(())
}

fn urlencoding(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[test]
fn fuzz_intake_answers_every_request_cleanly_and_keeps_what_it_accepted() {
    let cases = std::env::var("HERALD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start());
    let mut runner = TestRunner::new(RunnerConfig { cases, failure_persistence: None, ..RunnerConfig::default() });
    let started = std::time::Instant::now();
    let result = runner.run(&case(), |c| rt.block_on(send(&server, &c)));
    let ready = rt.block_on(async { server.client.get(server.base.replace("/fhir", "/readyz")).send().await.map(|r| r.status()) });
    eprintln!("fuzz_intake: {cases} cases in {:.1} s; answers by status: {:?}", started.elapsed().as_secs_f64(), STATUSES.lock().unwrap());
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(ready.unwrap(), StatusCode::OK, "Herald is not ready after the fuzzing");
    rt.block_on(server.stop());
}
