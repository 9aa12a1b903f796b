//! Authorization is decided on the data a request touches, whatever spelling the request uses
//! (issue #17). One world: client A (API key) owns two Subscriptions with secret headers and
//! stores Observations for patients p1 and p2; client B (another API key) and a `patient/`
//! token for p1 are the attackers.
//!
//! `every_route_hides_and_keeps_what_the_caller_may_not_touch` walks `herald::api::ROUTES`:
//! each route and method (HEAD wherever GET is) gets requests aimed at the victim's data, in
//! spellings a property test generates (percent-encoding of any character of type and id, in
//! either case; id lists; `Parameters` and form bodies; batch and transaction entries). Each
//! answer is checked for the victim's ids and secrets, and at the end the victim's stored
//! versions and event counts are compared with those before. A route without a case fails the
//! test, so a new route cannot be added without saying how it is protected.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::security::token;
use crate::support::ws::{Binding, WsClient, WsEvent};
use crate::support::{versions, Receiver, TestServer};
use herald::api::{Needs, ROUTES};
use herald::config::ApiKeySetting;

const TOPIC: &str = "http://example.org/topics/access-task";
const SECRET_A: &str = "Bearer S3CRET-of-client-a";
const SECRET_WS: &str = "ws-tenant-secret-7";
/// What no answer to an attacker may hold, not even a refusal (ids may be echoed there).
const VALUES: [&str; 3] = [SECRET_A, SECRET_WS, "Fam-p2"];

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    A,
    B,
    /// A `patient/*.cruds` JWT for p1.
    P1,
}

struct World {
    server: TestServer,
    /// The FHIR version served; topics and Subscriptions take its shapes.
    version: &'static str,
    p1: String,
    /// A's rest-hook and websocket subscriptions.
    hook: String,
    ws: String,
    /// B's own websocket subscription.
    b_ws: String,
    _receiver: Receiver,
}

impl World {
    async fn call(&self, who: Who, method: Method, path: &str, body: Option<(&str, String)>) -> Answer {
        let url = format!("{}{}", self.server.base.trim_end_matches("/fhir"), path);
        let mut req = self.server.client.request(method.clone(), &url).header("accept", "application/fhir+json");
        req = match who {
            Who::A => req.header("x-api-key", "key-a"),
            Who::B => req.header("x-api-key", "key-b"),
            Who::P1 => req.bearer_auth(&self.p1),
        };
        if let Some((ct, text)) = body {
            req = req.header("content-type", ct).body(text);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer { method, path: path.to_owned(), status, headers, text }
    }

    /// A's view of everything the attackers must not change: each victim's current version
    /// and, for subscriptions, status, event count and whether its secret is still there.
    async fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        for path in
            [format!("/fhir/Subscription/{}", self.hook), format!("/fhir/Subscription/{}", self.ws), "/fhir/Observation/o-p2".into()]
        {
            let a = self.call(Who::A, Method::GET, &path, None).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text);
            let v = a.json();
            out.push(format!("{path} v{} {} {:?}", v["meta"]["versionId"], v["status"], versions::header_values(&v)));
        }
        for id in [&self.hook, &self.ws] {
            let st = self.call(Who::A, Method::GET, &format!("/fhir/Subscription/{id}/$status"), None).await.json();
            out.push(format!("{id} {:?}", versions::field(&st["entry"][0]["resource"], "events-since-subscription-start")));
        }
        let count = self.call(Who::A, Method::GET, "/fhir/Observation?_summary=count", None).await.json();
        out.push(format!("observations {}", count["total"]));
        out
    }
}

struct Answer {
    method: Method,
    path: String,
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Nothing of the victim's in the answer. A success must not hold any of `secrets`
    /// (ids, names, header values) in what it returns (a searchset's `link` echoes the
    /// query, so it is left out). A refusal carries no version headers and at most an
    /// OperationOutcome, which may echo the id that was asked for but no other secret.
    fn reveals_none(&self, secrets: &[&str]) -> &Self {
        let what = format!("{} {} -> {}", self.method, self.path, self.status);
        if self.status.is_success() {
            let mut body = self.json();
            if let Some(obj) = body.as_object_mut() {
                obj.remove("link");
                // OperationOutcomes (a batch entry's refusal, a search's notes) may echo the
                // asked-for id; what was returned is the rest.
                if let Some(entries) = obj.get_mut("entry").and_then(Value::as_array_mut) {
                    entries.retain(|e| e["resource"]["resourceType"] != "OperationOutcome");
                    for e in entries.iter_mut() {
                        if let Some(r) = e.get_mut("response").and_then(Value::as_object_mut) {
                            r.remove("outcome");
                        }
                    }
                }
            }
            let shown = if body.is_null() { self.text.clone() } else { body.to_string() };
            for s in secrets {
                assert!(!shown.contains(s), "{what} revealed {s}: {}", self.text);
            }
        } else {
            assert!(self.headers.get("etag").is_none(), "{what} with an ETag");
            assert!(self.headers.get("last-modified").is_none(), "{what} with Last-Modified");
            if !self.text.is_empty() {
                assert_eq!(self.json()["resourceType"], "OperationOutcome", "{what}: {}", self.text);
            }
            for s in secrets.iter().filter(|s| VALUES.contains(s)) {
                assert!(!self.text.contains(s), "{what} revealed {s}: {}", self.text);
            }
        }
        for (name, value) in &self.headers {
            for s in secrets {
                assert!(!value.to_str().unwrap_or("").contains(s), "{what} revealed {s} in {name}");
            }
        }
        self
    }

    /// A refusal that does not tell the target exists: 404 (HEAD: no body to check).
    fn not_found(&self) -> &Self {
        assert_eq!(self.status, StatusCode::NOT_FOUND, "{} {}: {}", self.method, self.path, self.text);
        self
    }

    fn refused(&self) -> &Self {
        assert!(self.status.is_client_error(), "{} {} was not refused: {} {}", self.method, self.path, self.status, self.text);
        self
    }
}

async fn world() -> World {
    world_in(versions::R5).await
}

async fn world_in(version: &'static str) -> World {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(|c| {
        c.fhir.version = version.into();
        c.auth.issuer = crate::security::ISSUER.into();
        c.auth.audience = crate::security::AUDIENCE.into();
        c.auth.hs256_secrets = vec![crate::security::SECRET.into()];
        c.auth.api_keys = vec![
            ApiKeySetting { client: "client-a".into(), sha256: herald::auth::api_key_digest("key-a"), scopes: "system/*.cruds".into() },
            ApiKeySetting { client: "client-b".into(), sha256: herald::auth::api_key_digest("key-b"), scopes: "system/*.cruds".into() },
        ];
    })
    .await;
    let p1 = token("portal", "patient/*.cruds", Some("p1"), 3600);
    let mut w = World { server, version, p1, hook: String::new(), ws: String::new(), b_ws: String::new(), _receiver: receiver };
    let (topic_type, topic) = versions::topic(version, TOPIC, "Task", &["status"]);
    let fhir = |v: &Value| Some(("application/fhir+json", v.to_string()));
    let created = w.call(Who::A, Method::POST, &format!("/fhir/{topic_type}"), fhir(&topic)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let hook = versions::subscription(version, TOPIC, &w._receiver.url, "id-only", "Task", &[], &[("Authorization", SECRET_A)]);
    let created = w.call(Who::A, Method::POST, "/fhir/Subscription", fhir(&hook)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    w.hook = created.json()["id"].as_str().unwrap().to_owned();
    let ws = |secret: &str| versions::websocket_subscription(version, TOPIC, "requested", &[("X-Tenant-Key", secret)]);
    let created = w.call(Who::A, Method::POST, "/fhir/Subscription", fhir(&ws(SECRET_WS))).await;
    w.ws = created.json()["id"].as_str().unwrap().to_owned();
    let created = w.call(Who::B, Method::POST, "/fhir/Subscription", fhir(&ws("b-own-secret"))).await;
    w.b_ws = created.json()["id"].as_str().unwrap().to_owned();
    for (id, patient) in [("o-p1", "p1"), ("o-p2", "p2")] {
        let obs = json!({ "resourceType": "Observation", "id": id, "status": "final", "code": { "text": "glucose" },
            "subject": { "reference": format!("Patient/{patient}") } });
        let put = w.call(Who::A, Method::PUT, &format!("/fhir/Observation/{id}"), fhir(&obs)).await;
        assert!(put.status.is_success(), "{}", put.text);
    }
    for patient in ["p1", "p2"] {
        let body = json!({ "resourceType": "Patient", "id": patient, "name": [{ "family": format!("Fam-{patient}") }] });
        assert!(w.call(Who::A, Method::PUT, &format!("/fhir/Patient/{patient}"), fhir(&body)).await.status.is_success());
    }
    // The rest-hook subscription settles (handshake) before anything is compared.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = w.call(Who::A, Method::GET, &format!("/fhir/Subscription/{}/$status", w.hook), None).await.json();
        if versions::field(&st["entry"][0]["resource"], "status").as_deref() == Some("active") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rest-hook subscription did not become active: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events for A's subscriptions, so that `$events` and counts have something to leak.
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
    assert_eq!(w.call(Who::A, Method::POST, "/fhir/Task", fhir(&task)).await.status, StatusCode::CREATED);
    w
}

/// `text` with the characters at the chosen positions percent-encoded, in upper or lower case.
fn spell(text: &str, encode: &[bool], upper: bool) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if encode.get(i).copied().unwrap_or(false) && c.is_ascii() {
            let hex = format!("%{:02X}", c as u32);
            out.push_str(&if upper { hex } else { hex.to_lowercase() });
        } else {
            out.push(c);
        }
    }
    out
}

/// One spelling of a target: masks for the type's and the id's characters, and the case.
#[derive(Clone, Debug)]
struct Spelling {
    ty: Vec<bool>,
    id: Vec<bool>,
    upper: bool,
}

impl Spelling {
    fn plain() -> Spelling {
        Spelling { ty: Vec::new(), id: Vec::new(), upper: true }
    }

    fn path(&self, template: &str, ty: &str, id: &str) -> String {
        template.replace("{type}", &spell(ty, &self.ty, self.upper)).replace("{id}", &spell(id, &self.id, self.upper))
    }
}

fn spellings() -> impl Strategy<Value = Spelling> {
    (prop::collection::vec(any::<bool>(), 0..16), prop::collection::vec(any::<bool>(), 0..40), any::<bool>())
        .prop_map(|(ty, id, upper)| Spelling { ty, id, upper })
}

/// A JSON Patch as a batch or transaction entry carries it.
fn json_patch_binary(ops: &Value) -> Value {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
    json!({ "resourceType": "Binary", "contentType": "application/json-patch+json", "data": data })
}

fn params(name: &str, values: &[&str]) -> String {
    let parameter: Vec<Value> = values.iter().map(|v| json!({ "name": name, "valueString": v })).collect();
    json!({ "resourceType": "Parameters", "parameter": parameter }).to_string()
}

const FHIR: &str = "application/fhir+json";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every request one route and method gets for one spelling, and what each must show.
async fn attack(w: &World, route: &str, method: &str, needs: Needs, sp: &Spelling) {
    let a_ids = [w.hook.as_str(), w.ws.as_str()];
    let mut a_secrets: Vec<&str> = vec![SECRET_A, SECRET_WS];
    a_secrets.extend(a_ids);
    let p2_secrets = ["o-p2", "Fam-p2"];
    let m = |name: &str| Method::from_bytes(name.as_bytes()).unwrap();
    let methods: Vec<Method> = if method == "GET" { vec![Method::GET, Method::HEAD] } else { vec![m(method)] };
    for method in methods {
        match needs {
            Needs::Nothing => {
                // Open routes hold no client data.
                if route.ends_with("metadata") {
                    w.call(Who::B, method.clone(), route, None).await.reveals_none(&a_secrets);
                }
            }
            Needs::Everything(_) => {
                // Side-car feeds and `$emit` write anything: a patient/ token may not use them.
                let bundle = json!({ "resourceType": "Bundle", "type": "history", "entry": [] }).to_string();
                w.call(Who::P1, method.clone(), route, Some((FHIR, bundle))).await.refused();
            }
            Needs::Type(perm) => {
                for id in a_ids {
                    type_level(w, &method, route, perm, "Subscription", id, Who::B, sp, &a_secrets).await;
                }
                type_level(w, &method, route, perm, "Observation", "o-p2", Who::P1, sp, &p2_secrets).await;
                type_level(w, &method, route, perm, "Patient", "p2", Who::P1, sp, &p2_secrets).await;
            }
            Needs::Instance(_) => {
                for id in a_ids {
                    instance(w, &method, route, "Subscription", id, Who::B, sp, &a_secrets).await;
                }
                instance(w, &method, route, "Observation", "o-p2", Who::P1, sp, &p2_secrets).await;
                instance(w, &method, route, "Patient", "p2", Who::P1, sp, &p2_secrets).await;
            }
            Needs::Subscriptions(_) => {
                let ids = [w.hook.as_str(), w.ws.as_str()];
                if route.contains("{id}") {
                    for id in ids {
                        let path = sp.path(route, "Subscription", id);
                        let body = (method == Method::POST).then(|| (FHIR, params("eventsSinceNumber", &["1"])));
                        w.call(Who::B, method.clone(), &path, body).await.not_found().reveals_none(&a_secrets);
                        // The patient token has no Subscription scope... and may not use them either.
                        w.call(Who::P1, method.clone(), &path, None).await.refused().reveals_none(&a_secrets);
                    }
                } else {
                    subscription_lists(w, &method, route, sp, &a_secrets).await;
                }
            }
            Needs::Entries => entries(w, &method, route, sp, &a_secrets, &p2_secrets).await,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn type_level(
    w: &World,
    method: &Method,
    route: &str,
    perm: herald::auth::Perm,
    ty: &str,
    id: &str,
    who: Who,
    sp: &Spelling,
    secrets: &[&str],
) {
    let path = sp.path(route, ty, id);
    // What a condition may try to reach the victim with: it searches only what the caller sees.
    let conditions = [
        format!("_id={id}"),
        "subject=Patient/p2".to_owned(),
        "subject:Patient.name=Fam-p2".to_owned(),
        "_has:Observation:subject:_id=o-p2".to_owned(),
    ];
    if perm == herald::auth::Perm::Create {
        // A create may not place a resource outside the patient's compartment.
        if matches!(who, Who::P1) && ty == "Observation" {
            let obs = json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p2" } });
            w.call(who, method.clone(), &path, Some((FHIR, obs.to_string()))).await.refused();
        }
        // If-None-Exist never matches the victim (which would answer 200 with it): the
        // condition matches nothing, and the create is refused for its invalid or foreign body.
        let body = match ty {
            "Observation" => {
                json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p2" } })
            }
            _ => json!({ "resourceType": ty, "name": "not a valid value" }),
        };
        for q in &conditions {
            let mut req = w.server.client.request(method.clone(), format!("{}{}", w.server.base.trim_end_matches("/fhir"), path));
            req = match who {
                Who::A => req.header("x-api-key", "key-a"),
                Who::B => req.header("x-api-key", "key-b"),
                Who::P1 => req.bearer_auth(&w.p1),
            };
            let resp = req.header("content-type", FHIR).header("if-none-exist", q).body(body.to_string()).send().await.unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert!(status.is_client_error(), "{method} {path} If-None-Exist {q}: {status} {text}");
            for s in secrets.iter().filter(|s| VALUES.contains(s)) {
                assert!(!text.contains(s), "{method} {path} If-None-Exist {q} revealed {s}: {text}");
            }
        }
        return;
    }
    if matches!(perm, herald::auth::Perm::Update | herald::auth::Perm::Delete) {
        // A conditional update or delete neither finds nor changes the victim: no match
        // (delete: 204, nothing deleted), and an update naming the victim's id is 404 (400:
        // a parameter the type does not have).
        let body = (*method == Method::PUT).then(|| {
            let mut v = match ty {
                "Subscription" => versions::websocket_subscription(w.version, TOPIC, "off", &[]),
                "Observation" => json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p1" } }),
                _ => json!({ "resourceType": ty, "name": [{ "family": "stolen" }] }),
            };
            v["id"] = json!(id);
            (FHIR, v.to_string())
        });
        for q in &conditions {
            let answer = w.call(who, method.clone(), &format!("{path}?{q}"), body.clone()).await;
            answer.reveals_none(secrets);
            let expected = if *method == Method::PUT {
                [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN, StatusCode::BAD_REQUEST]
            } else {
                [StatusCode::NO_CONTENT, StatusCode::FORBIDDEN, StatusCode::BAD_REQUEST]
            };
            assert!(expected.contains(&answer.status), "{method} {path}?{q}: {} {}", answer.status, answer.text);
        }
        return;
    }
    let queries = [
        format!("_id={id}"),
        "_summary=count".to_owned(),
        "_total=accurate".to_owned(),
        format!("_id={id}&_elements=id"),
        "_sort=-_lastUpdated&_count=1".to_owned(),
        "_revinclude=Observation:subject".to_owned(),
        "_include=Observation:subject".to_owned(),
        "_has:Observation:subject:status=final".to_owned(),
        "subject:Patient.name=Fam-p2".to_owned(),
        "subject=Patient/p2".to_owned(),
    ];
    for q in queries {
        let answer = if *method == Method::POST {
            w.call(who, method.clone(), &path, Some((FORM, q.clone()))).await
        } else {
            w.call(who, method.clone(), &format!("{path}?{q}"), None).await
        };
        answer.reveals_none(secrets);
        if answer.status.is_success() && *method != Method::HEAD {
            let found = answer.json();
            let shown = found["entry"].as_array().map_or(0, |e| e.iter().filter(|e| e["search"]["mode"] == "match").count());
            if let Some(total) = found["total"].as_u64() {
                // The count is of what the caller sees: B has one subscription, p1 one
                // Observation and one Patient, and at most those match.
                assert!(total <= 1, "{method} {path}?{q} counted {total}: {}", answer.text);
                if q != "_summary=count" {
                    assert!(total as usize >= shown, "{q}");
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn instance(w: &World, method: &Method, route: &str, ty: &str, id: &str, who: Who, sp: &Spelling, secrets: &[&str]) {
    let path = sp.path(route, ty, id).replace("{vid}", "1");
    let body = match *method {
        Method::PUT => {
            // A replacement that would move the target into the attacker's reach.
            let mut v = match ty {
                "Subscription" => versions::websocket_subscription(w.version, TOPIC, "off", &[]),
                "Observation" => {
                    json!({ "resourceType": "Observation", "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p1" } })
                }
                _ => json!({ "resourceType": ty, "name": [{ "family": "stolen" }] }),
            };
            v["id"] = json!(id);
            Some((FHIR, v.to_string()))
        }
        // A JSON Patch that would hand the target to the attacker, and a FHIRPath Patch; a
        // failed `test` must not tell the stored value either (404 before any operation runs).
        Method::PATCH if route.ends_with("{id}") => {
            let ops = json!([
                { "op": "test", "path": "/id", "value": id },
                { "op": "add", "path": "/subject", "value": { "reference": "Patient/p1" } },
                { "op": "add", "path": "/managingEntity", "value": { "reference": "Organization/b" } }
            ]);
            let fhirpath = json!({ "resourceType": "Parameters", "parameter": [{ "name": "operation", "part": [
                { "name": "type", "valueCode": "delete" }, { "name": "path", "valueString": format!("{ty}.meta") }
            ] }] });
            w.call(who, method.clone(), &path, Some((FHIR, fhirpath.to_string()))).await.not_found().reveals_none(secrets);
            Some(("application/json-patch+json", ops.to_string()))
        }
        _ => None,
    };
    let before = w.call(Who::A, Method::GET, &format!("/fhir/{ty}/{id}"), None).await.json()["meta"]["versionId"].clone();
    w.call(who, method.clone(), &path, body).await.not_found().reveals_none(secrets);
    let after = w.call(Who::A, Method::GET, &format!("/fhir/{ty}/{id}"), None).await.json()["meta"]["versionId"].clone();
    assert_eq!(before, after, "{method} {path} changed {ty}/{id}");
}

async fn subscription_lists(w: &World, method: &Method, route: &str, sp: &Spelling, secrets: &[&str]) {
    let spelled: Vec<String> = [&w.hook, &w.ws].iter().map(|id| spell(id, &sp.id, sp.upper)).collect();
    let (hook, ws) = (spelled[0].as_str(), spelled[1].as_str());
    let mut asks: Vec<(String, Option<(&str, String)>)> = vec![
        (format!("{route}?id={ws}"), None),
        (format!("{route}?id={ws},"), None),
        (format!("{route}?id={},{ws}", w.b_ws), None),
        (format!("{route}?id={hook}&id={ws}"), None),
    ];
    if *method == Method::POST {
        asks.push((route.to_owned(), Some((FHIR, params("id", &[&w.ws])))));
        asks.push((route.to_owned(), Some((FHIR, params("id", &[&w.b_ws, &w.ws])))));
        asks.push((route.to_owned(), Some((FORM, format!("id={}", w.ws)))));
    }
    let status_listing = route.ends_with("$status");
    if status_listing {
        asks.push((route.to_owned(), None));
    }
    for (path, body) in asks {
        let answer = w.call(Who::B, method.clone(), &path, body).await;
        answer.reveals_none(secrets);
        if status_listing {
            // `$status` lists what B owns and nothing else.
            if answer.status.is_success() && *method != Method::HEAD {
                let v = answer.json();
                let total = v["total"].as_u64().unwrap_or(0);
                assert!(total <= 1, "{path}: {}", answer.text);
            }
        } else {
            // A binding token is refused whenever any id is not the caller's.
            answer.refused();
            assert!(!answer.text.contains("\"token\""), "{path} issued a token: {}", answer.text);
        }
    }
}

async fn entries(w: &World, method: &Method, route: &str, sp: &Spelling, a_secrets: &[&str], p2_secrets: &[&str]) {
    for kind in ["batch", "transaction"] {
        for (who, ty, id, secrets) in [
            (Who::B, "Subscription", w.hook.as_str(), a_secrets),
            (Who::B, "Subscription", w.ws.as_str(), a_secrets),
            (Who::P1, "Observation", "o-p2", p2_secrets),
        ] {
            let url = format!("{}/{}", spell(ty, &sp.ty, sp.upper), spell(id, &sp.id, sp.upper));
            let replacement = match ty {
                "Subscription" => {
                    let mut s = versions::websocket_subscription(w.version, TOPIC, "off", &[]);
                    s["id"] = id.into();
                    s
                }
                _ => {
                    json!({ "resourceType": ty, "id": id, "status": "final", "code": { "text": "x" }, "subject": { "reference": "Patient/p1" } })
                }
            };
            let mut requests = vec![
                json!({ "request": { "method": "PUT", "url": url }, "resource": replacement }),
                json!({ "request": { "method": "DELETE", "url": url } }),
                json!({ "request": { "method": "PATCH", "url": url }, "resource": json_patch_binary(&json!([
                    { "op": "add", "path": "/subject", "value": { "reference": "Patient/p1" } }
                ])) }),
            ];
            if kind == "batch" {
                requests.push(json!({ "request": { "method": "GET", "url": url } }));
            }
            for entry in requests {
                let bundle = json!({ "resourceType": "Bundle", "type": kind, "entry": [entry] });
                let answer = w.call(who, method.clone(), route, Some((FHIR, bundle.to_string()))).await;
                answer.reveals_none(secrets);
                if kind == "transaction" {
                    answer.refused();
                } else {
                    let v = answer.json();
                    let status = v["entry"][0]["response"]["status"].as_str().unwrap_or("");
                    assert!(status.starts_with('4'), "{kind} entry {entry} answered {status}: {}", answer.text);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_hides_and_keeps_what_the_caller_may_not_touch() {
    route_walk(versions::R5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_hides_and_keeps_what_the_caller_may_not_touch_r4() {
    route_walk(versions::R4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_hides_and_keeps_what_the_caller_may_not_touch_r4b() {
    route_walk(versions::R4B).await;
}

async fn route_walk(version: &'static str) {
    let w = world_in(version).await;
    let before = w.snapshot().await;
    let cases: u32 = std::env::var("HERALD_ACCESS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let handle = tokio::runtime::Handle::current();
    for route in ROUTES {
        for &(method, needs) in route.methods {
            // The plain spelling, then generated ones (shrunk to the smallest on failure).
            attack(&w, route.path, method, needs, &Spelling::plain()).await;
            let mut runner = TestRunner::new(ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() });
            let result = runner.run(&spellings(), |sp| {
                tokio::task::block_in_place(|| handle.block_on(attack(&w, route.path, method, needs, &sp)));
                Ok(())
            });
            if let Err(e) = result {
                panic!("{method} {}: {e}", route.path);
            }
        }
    }
    assert_eq!(w.snapshot().await, before, "an attacker changed the victim's data");
    // The owner still reads its own secret: the walk changed nothing it should not have.
    let own = w.call(Who::A, Method::GET, &format!("/fhir/Subscription/{}", w.hook), None).await.json();
    assert_eq!(versions::header_values(&own), vec![SECRET_A.to_owned()]);
}

/// `%XX` for the first character of `id`.
fn encode_first(id: &str) -> String {
    spell(id, &[true], true)
}

#[tokio::test]
async fn percent_encoded_ids_reach_no_other_clients_data() {
    let w = world().await;
    let ws = encode_first(&w.ws);
    let hook = encode_first(&w.hook);
    for (method, path) in [
        (Method::GET, format!("/fhir/Subscription/{ws}")),
        (Method::GET, format!("/fhir/Subscription/{ws}/$get-ws-binding-token")),
        (Method::POST, format!("/fhir/Subscription/{ws}/$get-ws-binding-token")),
        (Method::GET, format!("/fhir/Subscription/{ws}/$events")),
        (Method::GET, format!("/fhir/Subscription/{ws}/$status")),
        (Method::GET, format!("/fhir/Subscription/{ws}/_history")),
        (Method::GET, format!("/fhir/Subscription/{ws}/_history/1")),
        (Method::POST, format!("/fhir/Subscription/{hook}/$resend")),
        (Method::GET, format!("/fhir/Subscription/{hook}/$dead-letters")),
    ] {
        let answer = w.call(Who::B, method, &path, None).await;
        answer.not_found().reveals_none(&[&w.ws, &w.hook, SECRET_A, SECRET_WS]);
    }
    // A patient/ token for p1 deletes nothing of p2's, however the id is spelled.
    let deleter = token("portal", "patient/Observation.d patient/Observation.rs", Some("p1"), 600);
    let url = format!("{}/Observation/o-%70%32", w.server.base);
    let resp = w.server.client.delete(url).bearer_auth(&deleter).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let still = w.call(Who::A, Method::GET, "/fhir/Observation/o-p2", None).await;
    assert_eq!(still.status, StatusCode::OK, "o-p2 was deleted: {}", still.text);
    assert_eq!(still.json()["meta"]["versionId"], "1");
}

#[tokio::test]
async fn id_lists_and_parameters_bodies_get_no_token_for_another_clients_subscription() {
    let w = world().await;
    let route = "/fhir/Subscription/$get-ws-binding-token";
    for (method, path, body) in [
        (Method::GET, format!("{route}?id={},", w.ws), None),
        (Method::GET, format!("{route}?id={},{}", w.b_ws, w.ws), None),
        (Method::POST, route.to_owned(), Some((FHIR, params("id", &[&w.ws])))),
        (
            Method::POST,
            route.to_owned(),
            Some((FHIR, json!({ "resourceType": "Parameters", "parameter": [{ "name": "id", "valueId": w.ws }] }).to_string())),
        ),
        (Method::POST, route.to_owned(), Some((FORM, format!("id={}", w.ws)))),
    ] {
        let answer = w.call(Who::B, method, &path, body).await;
        answer.not_found();
        assert!(!answer.text.contains("\"token\""), "{path}: {}", answer.text);
    }
    // B's own subscription still gets its token in every form.
    let own = w.call(Who::B, Method::POST, route, Some((FHIR, params("id", &[&w.b_ws])))).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
}

#[tokio::test]
async fn head_is_authorized_exactly_as_get() {
    let w = world().await;
    let head = w.call(Who::B, Method::HEAD, &format!("/fhir/Subscription/{}", w.ws), None).await;
    head.not_found().reveals_none(&[&w.ws]);
    let own = w.call(Who::A, Method::HEAD, &format!("/fhir/Subscription/{}", w.ws), None).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.headers.get("etag").is_some(), "the owner's HEAD keeps its headers");
    // Whether another patient's search matches does not show in the length of the answer:
    // `o-p2` (exists, p2's) and `o-p9` (does not exist) are spelled with as many characters.
    let length = |a: &Answer| a.headers.get("content-length").map(|v| v.to_str().unwrap().to_owned());
    let theirs = w.call(Who::P1, Method::HEAD, "/fhir/Observation?_id=o-p2", None).await;
    let nobody = w.call(Who::P1, Method::HEAD, "/fhir/Observation?_id=o-p9", None).await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(length(&theirs), length(&nobody));
    let mine = w.call(Who::P1, Method::HEAD, "/fhir/Observation?_id=o-p1", None).await;
    assert_ne!(length(&mine), length(&nobody), "the p1 search does match: the comparison can fail");
}

#[tokio::test]
async fn a_patient_scoped_update_cannot_replace_another_patients_resource() {
    let w = world().await;
    let writer = token("portal", "patient/Observation.cruds", Some("p1"), 600);
    let body = json!({ "resourceType": "Observation", "id": "o-p2", "status": "final", "code": { "text": "moved" },
        "subject": { "reference": "Patient/p1" } });
    let resp = w
        .server
        .client
        .put(format!("{}/Observation/o-p2", w.server.base))
        .bearer_auth(&writer)
        .header("content-type", FHIR)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let stored = w.call(Who::A, Method::GET, "/fhir/Observation/o-p2", None).await.json();
    assert_eq!(stored["meta"]["versionId"], "1");
    assert_eq!(stored["subject"]["reference"], "Patient/p2");
    // Its own resource it may update, within its compartment only.
    let mut own = json!({ "resourceType": "Observation", "id": "o-p1", "status": "amended", "code": { "text": "glucose" },
        "subject": { "reference": "Patient/p1" } });
    let put = |v: &Value| {
        w.server
            .client
            .put(format!("{}/Observation/o-p1", w.server.base))
            .bearer_auth(&writer)
            .header("content-type", FHIR)
            .body(v.to_string())
            .send()
    };
    assert_eq!(put(&own).await.unwrap().status(), StatusCode::OK);
    own["subject"]["reference"] = json!("Patient/p2");
    assert_eq!(put(&own).await.unwrap().status(), StatusCode::FORBIDDEN, "moving it out of the compartment");
}

#[tokio::test]
async fn a_binding_token_binds_only_what_its_holder_may_still_use() {
    let w = world().await;
    let fhir = |v: &Value| Some((FHIR, v.to_string()));
    // A takes a token for its websocket subscription, then deletes the subscription; B
    // creates one under the same id. A's token must not bind B's subscription.
    let issued = w.call(Who::A, Method::GET, &format!("/fhir/Subscription/{}/$get-ws-binding-token", w.ws), None).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text);
    let binding = Binding::from_parameters(&issued.json());
    assert_eq!(w.call(Who::A, Method::DELETE, &format!("/fhir/Subscription/{}", w.ws), None).await.status, StatusCode::NO_CONTENT);
    let reused = json!({ "resourceType": "Subscription", "id": w.ws, "status": "requested", "topic": TOPIC, "content": "full-resource",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" } });
    let put = w.call(Who::B, Method::PUT, &format!("/fhir/Subscription/{}", w.ws), fhir(&reused)).await;
    assert!(put.status.is_success(), "{}", put.text);
    let mut socket = WsClient::connect(&binding.url).await;
    socket.bind(&binding.token).await;
    match socket.next_within(Duration::from_secs(5)).await {
        WsEvent::Json(frame) => {
            assert_eq!(frame["resourceType"], "OperationOutcome", "bound someone else's subscription: {frame}");
            assert!(matches!(socket.next_within(Duration::from_secs(5)).await, WsEvent::Closed(Some(1008))));
        }
        WsEvent::Closed(code) => assert_eq!(code, Some(1008)),
    }
    // A Task change notifies B's subscription; nothing reached A's socket (it is closed), and
    // B's own token binds it.
    let b_token = w.call(Who::B, Method::GET, &format!("/fhir/Subscription/{}/$get-ws-binding-token", w.ws), None).await;
    assert_eq!(b_token.status, StatusCode::OK, "{}", b_token.text);
}

#[tokio::test]
async fn topic_criteria_cannot_spell_out_another_clients_secret() {
    let w = world().await;
    // The reproduction: a topic on Subscription whose criteria test A's header value.
    let probe = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/probe", "status": "active",
        "resourceTrigger": [{ "resource": "Subscription", "supportedInteraction": ["create", "update"],
            "fhirPathCriteria": "%current.parameter.where(name='Authorization').value.startsWith('Bearer S3')" }] });
    let refused = w.call(Who::B, Method::POST, "/fhir/SubscriptionTopic", Some((FHIR, probe.to_string()))).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.text.contains("Subscription"), "{}", refused.text);
    // Nor through a topic on Task that follows a reference into a Subscription: criteria see
    // it redacted, so a Task naming A's subscription never matches a test of its secret.
    let via_task = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/probe-2", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create"],
            "fhirPathCriteria": "%current.focus.resolve().parameter.where(name='Authorization').value.startsWith('Bearer S3')" }] });
    let created = w.call(Who::B, Method::POST, "/fhir/SubscriptionTopic", Some((FHIR, via_task.to_string()))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": "http://example.org/topics/probe-2", "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" } });
    let mine = w.call(Who::B, Method::POST, "/fhir/Subscription", Some((FHIR, sub.to_string()))).await.json();
    let id = mine["id"].as_str().unwrap();
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order", "focus": { "reference": format!("Subscription/{}", w.hook) } });
    assert_eq!(w.call(Who::B, Method::POST, "/fhir/Task", Some((FHIR, task.to_string()))).await.status, StatusCode::CREATED);
    let status = w.call(Who::B, Method::GET, &format!("/fhir/Subscription/{id}/$status"), None).await.json();
    assert_eq!(status["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "0", "the secret was tested: {status}");
    // The same criteria on a value that is not secret do match: the test can fail.
    let control = json!({ "resourceType": "SubscriptionTopic", "url": "http://example.org/topics/probe-3", "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create"],
            "fhirPathCriteria": "%current.focus.resolve().parameter.where(name='Authorization').exists()" }] });
    assert_eq!(
        w.call(Who::B, Method::POST, "/fhir/SubscriptionTopic", Some((FHIR, control.to_string()))).await.status,
        StatusCode::CREATED
    );
    let mut sub = sub;
    sub["topic"] = json!("http://example.org/topics/probe-3");
    let control_id =
        w.call(Who::B, Method::POST, "/fhir/Subscription", Some((FHIR, sub.to_string()))).await.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(w.call(Who::B, Method::POST, "/fhir/Task", Some((FHIR, task.to_string()))).await.status, StatusCode::CREATED);
    let status = w.call(Who::B, Method::GET, &format!("/fhir/Subscription/{control_id}/$status"), None).await.json();
    assert_eq!(status["entry"][0]["resource"]["eventsSinceSubscriptionStart"], "1", "{status}");
}
