//! Content negotiation, honestly: Herald produces and accepts JSON only. XML in `Accept` or
//! `_format` is refused with 406, an XML (or any non-JSON) body with 415, each with a JSON
//! OperationOutcome naming what Herald does serve; `_format=json` and `_pretty` are honoured;
//! `_summary` and `_elements` shape reads and vreads as they shape searches; `Prefer: return=`
//! decides what every write answers with. Run on R5 and R4.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::versions::{self, R4, R5};
use crate::support::TestServer;

async fn server(version: &str) -> TestServer {
    let v = version.to_owned();
    TestServer::start_with(move |c| c.fhir.version = v).await
}

fn patient(id: Option<&str>) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Ada</div>" },
        "active": true,
        "gender": "female",
        "name": [{ "family": "Lovelace" }]
    });
    if let Some(id) = id {
        p["id"] = json!(id);
    }
    p
}

struct Answer {
    status: StatusCode,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A 406/415 answer: a JSON OperationOutcome whose text names `names`.
    fn refused(&self, status: StatusCode, names: &[&str]) {
        assert_eq!(self.status, status, "{}", self.text);
        assert!(self.content_type.starts_with("application/fhir+json"), "{}", self.content_type);
        let oo = self.json();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
        assert_eq!(oo["issue"][0]["code"], "not-supported", "{oo}");
        let text = oo["issue"][0]["diagnostics"].as_str().unwrap();
        for name in names {
            assert!(text.contains(name), "'{text}' does not name {name}");
        }
    }
}

async fn call(server: &TestServer, method: Method, path: &str, headers: &[(&str, &str)], body: Option<String>) -> Answer {
    let mut req = server.client.request(method, server.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    Answer { status, content_type, text: resp.text().await.unwrap() }
}

async fn create_patient(server: &TestServer) -> String {
    let (s, b) = server.post("Patient", &patient(None)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

const JSON: &[&str] = &["application/fhir+json", "application/json"];

async fn xml_is_refused_everywhere(version: &str) {
    let server = server(version).await;
    let id = create_patient(&server).await;
    let paths = [
        format!("Patient/{id}"),
        format!("Patient/{id}/_history/1"),
        format!("Patient/{id}/_history"),
        "Patient?gender=female".to_owned(),
        "metadata".to_owned(),
        "Subscription/$status".to_owned(),
        "Patient/no-such-id".to_owned(),
    ];
    for path in &paths {
        for accept in ["application/fhir+xml", "application/xml", "text/xml", "application/fhir+xml, application/json;q=0"] {
            call(&server, Method::GET, path, &[("accept", accept)], None).await.refused(StatusCode::NOT_ACCEPTABLE, JSON);
        }
        for format in ["xml", "application/fhir+xml", "text/xml", "ttl"] {
            let sep = if path.contains('?') { '&' } else { '?' };
            call(&server, Method::GET, &format!("{path}{sep}_format={format}"), &[], None).await.refused(StatusCode::NOT_ACCEPTABLE, JSON);
        }
        // JSON or a wildcard beside XML, or XML at q=0: served as JSON.
        for accept in ["application/fhir+xml, application/fhir+json;q=0.5", "application/xml, */*;q=0.1", "application/fhir+xml;q=0"] {
            let a = call(&server, Method::GET, path, &[("accept", accept)], None).await;
            assert_ne!(a.status, StatusCode::NOT_ACCEPTABLE, "{path} {accept}: {}", a.text);
            assert!(a.content_type.starts_with("application/fhir+json"), "{path} {accept}: {}", a.content_type);
        }
    }
    // Writes too, before anything is written: the 406 is decided on the request alone.
    let body = serde_json::to_string(&patient(None)).unwrap();
    let ct = ("content-type", "application/fhir+json");
    call(&server, Method::POST, "Patient", &[ct, ("accept", "application/fhir+xml")], Some(body.clone()))
        .await
        .refused(StatusCode::NOT_ACCEPTABLE, JSON);
    call(&server, Method::POST, "Patient?_format=xml", &[ct], Some(body.clone())).await.refused(StatusCode::NOT_ACCEPTABLE, JSON);
    let (_, all) = server.get("Patient").await;
    assert_eq!(all["entry"].as_array().map_or(0, Vec::len), 1, "a refused create wrote nothing: {all}");

    // Bodies: XML or anything not JSON is 415, naming what is accepted.
    let xml = "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/></Patient>".to_owned();
    for ct in ["application/fhir+xml", "application/xml", "text/xml", "text/plain"] {
        call(&server, Method::POST, "Patient", &[("content-type", ct)], Some(xml.clone()))
            .await
            .refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, JSON);
        call(&server, Method::PUT, &format!("Patient/{id}"), &[("content-type", ct)], Some(xml.clone()))
            .await
            .refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, JSON);
        call(&server, Method::POST, "", &[("content-type", ct)], Some(xml.clone())).await.refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, JSON);
    }

    // A Subscription asking for XML notifications is refused where it says so.
    let mut sub =
        versions::subscription(version, "http://example.org/topics/none", "https://example.org/hook", "id-only", "Task", &[], &[]);
    let at = if version == R5 {
        sub["contentType"] = json!("application/fhir+xml");
        "Subscription.contentType"
    } else {
        sub["channel"]["payload"] = json!("application/fhir+xml");
        "Subscription.channel.payload"
    };
    let (s, oo) = server.post("Subscription", &sub).await;
    assert!(s.is_client_error(), "{s} {oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"].as_array().unwrap().iter().any(|i| i["expression"][0] == at || i["diagnostics"].as_str().unwrap_or("").contains(at)),
        "{oo}"
    );
}

#[tokio::test]
async fn xml_is_refused_with_406_and_415_r5() {
    xml_is_refused_everywhere(R5).await;
}

#[tokio::test]
async fn xml_is_refused_with_406_and_415_r4() {
    xml_is_refused_everywhere(R4).await;
}

async fn format_and_pretty(version: &str) {
    let server = server(version).await;
    let id = create_patient(&server).await;
    for format in ["json", "application/json", "application/fhir+json"] {
        // `_format` overrides an XML Accept.
        let a = call(&server, Method::GET, &format!("Patient/{id}?_format={format}"), &[("accept", "application/fhir+xml")], None).await;
        assert_eq!(a.status, StatusCode::OK, "{format}: {}", a.text);
        assert_eq!(a.json()["id"], id.as_str());
        let a = call(&server, Method::GET, &format!("Patient?_format={format}"), &[], None).await;
        assert_eq!(a.status, StatusCode::OK, "{format}: {}", a.text);
        // Answered in the format asked for: plain JSON for `json` and `application/json`.
        let expected = if format == "application/fhir+json" { "application/fhir+json" } else { "application/json" };
        assert!(a.content_type.starts_with(expected) && a.content_type.contains("charset=utf-8"), "{format}: {}", a.content_type);
        let a = call(&server, Method::GET, &format!("Patient/nope?_format={format}"), &[], None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert!(a.content_type.starts_with(expected), "errors too, {format}: {}", a.content_type);
        let body = patient(None).to_string();
        let ct = ("content-type", "application/fhir+json");
        let a = call(&server, Method::POST, &format!("Patient?_format={format}"), &[ct], Some(body)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert!(a.content_type.starts_with(expected), "writes too, {format}: {}", a.content_type);
    }
    // Without `_format`, or with `Accept: application/json`, the default stays.
    let a = call(&server, Method::GET, &format!("Patient/{id}"), &[("accept", "application/json")], None).await;
    assert!(a.content_type.starts_with("application/fhir+json"), "{}", a.content_type);
    let pretty = call(&server, Method::GET, &format!("Patient/{id}?_pretty=true"), &[], None).await;
    assert_eq!(pretty.status, StatusCode::OK);
    assert!(pretty.text.contains("\n  \"resourceType\": \"Patient\""), "{}", pretty.text);
    let compact = call(&server, Method::GET, &format!("Patient/{id}?_pretty=false"), &[], None).await;
    assert!(!compact.text.contains('\n'), "{}", compact.text);
    assert_eq!(pretty.json(), compact.json());
    let plain = call(&server, Method::GET, &format!("Patient/{id}"), &[], None).await;
    assert!(!plain.text.contains('\n'));
    // Searches, operations, the CapabilityStatement and errors alike.
    for path in ["Patient?_pretty=true", "metadata?_pretty=true", "Subscription/$status?_pretty=true", "Patient/nope?_pretty=true"] {
        let a = call(&server, Method::GET, path, &[], None).await;
        assert!(a.text.starts_with("{\n  \"resourceType\""), "{path}: {}", a.text);
    }
    let a =
        call(&server, Method::POST, "Patient?_pretty=true", &[("content-type", "application/fhir+json")], Some(patient(None).to_string()))
            .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.text.contains('\n'));

    // The CapabilityStatement says the same.
    let (_, cs) = server.get("metadata").await;
    assert_eq!(cs["format"], json!(["application/fhir+json", "json"]));
    assert_eq!(cs["patchFormat"], json!(["application/json-patch+json", "application/fhir+json"]));
    assert_eq!(cs["fhirVersion"], version);
}

#[tokio::test]
async fn format_and_pretty_r5() {
    format_and_pretty(R5).await;
}

#[tokio::test]
async fn format_and_pretty_r4() {
    format_and_pretty(R4).await;
}

fn subsetted(r: &Value) -> bool {
    r["meta"]["tag"].as_array().is_some_and(|t| t.iter().any(|t| t["code"] == "SUBSETTED"))
}

async fn summary_and_elements(version: &str) {
    let server = server(version).await;
    let id = create_patient(&server).await;
    let (s, _) =
        server.put(&format!("Patient/{id}"), &json!({ "resourceType": "Patient", "id": id, "active": false, "gender": "male" })).await;
    assert_eq!(s, StatusCode::OK);
    for path in [format!("Patient/{id}/_history/1"), format!("Patient/{id}")] {
        let (s, whole) = server.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!subsetted(&whole), "{whole}");
        let (s, r) = server.get(&format!("{path}?_elements=gender")).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["gender"], whole["gender"]);
        assert!(r.get("active").is_none() && r.get("name").is_none(), "{r}");
        assert_eq!(r["id"], id.as_str());
        assert_eq!(r["meta"]["versionId"], whole["meta"]["versionId"]);
        assert!(subsetted(&r), "{r}");
        let (s, r) = server.get(&format!("{path}?_summary=false")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(r, whole);
        for bad in ["count", "bogus"] {
            let (s, oo) = server.get(&format!("{path}?_summary={bad}")).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {oo}");
            assert_eq!(oo["resourceType"], "OperationOutcome");
        }
    }
    // Version 1 has a narrative: `_summary=data` drops it and marks the resource.
    let (_, v1) = server.get(&format!("Patient/{id}/_history/1")).await;
    assert!(v1.get("text").is_some());
    let (s, r) = server.get(&format!("Patient/{id}/_history/1?_summary=data")).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r.get("text").is_none() && r["name"] == v1["name"], "{r}");
    assert!(subsetted(&r), "{r}");
    // Version 2 has none: nothing is missing, nothing is marked.
    let (_, r) = server.get(&format!("Patient/{id}?_summary=data")).await;
    assert!(!subsetted(&r), "{r}");
}

#[tokio::test]
async fn summary_and_elements_on_read_and_vread_r5() {
    summary_and_elements(R5).await;
}

#[tokio::test]
async fn summary_and_elements_on_read_and_vread_r4() {
    summary_and_elements(R4).await;
}

fn informational(oo: &Value, words: &str) {
    assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
    assert_eq!(oo["issue"][0]["severity"], "information", "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains(words), "{oo}");
}

async fn prefer_return(version: &str) {
    let server = server(version).await;
    let ct = ("content-type", "application/fhir+json");
    let body = patient(None).to_string();
    // create
    let minimal = call(&server, Method::POST, "Patient", &[ct, ("prefer", "return=minimal")], Some(body.clone())).await;
    assert_eq!(minimal.status, StatusCode::CREATED);
    assert!(minimal.text.is_empty(), "{}", minimal.text);
    let rep = call(&server, Method::POST, "Patient", &[ct, ("prefer", "return=representation")], Some(body.clone())).await;
    assert_eq!(rep.status, StatusCode::CREATED);
    let id = rep.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(rep.json()["resourceType"], "Patient");
    let oo =
        call(&server, Method::POST, "Patient", &[ct, ("prefer", "handling=strict, return=OperationOutcome")], Some(body.clone())).await;
    assert_eq!(oo.status, StatusCode::CREATED);
    informational(&oo.json(), "created Patient/");
    // update
    let put = |v: &str| json!({ "resourceType": "Patient", "id": id, "gender": v }).to_string();
    let path = format!("Patient/{id}");
    let a = call(&server, Method::PUT, &path, &[ct, ("prefer", "return=minimal")], Some(put("male"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text.is_empty());
    let a = call(&server, Method::PUT, &path, &[ct, ("prefer", "return=OperationOutcome")], Some(put("other"))).await;
    assert_eq!(a.status, StatusCode::OK);
    informational(&a.json(), &format!("updated Patient/{id} (version 3)"));
    let a = call(&server, Method::PUT, &path, &[ct], Some(put("unknown"))).await;
    assert_eq!(a.json()["gender"], "unknown");
    // delete
    let a = call(&server, Method::DELETE, &path, &[("prefer", "return=OperationOutcome")], None).await;
    assert_eq!(a.status, StatusCode::OK);
    informational(&a.json(), &format!("deleted Patient/{id}"));
    let other = create_patient(&server).await;
    for prefer in ["return=minimal", "return=representation"] {
        let a = call(&server, Method::DELETE, &format!("Patient/{other}"), &[("prefer", prefer)], None).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert!(a.text.is_empty());
    }
    // batch and transaction entries
    for kind in ["batch", "transaction"] {
        let bundle = json!({ "resourceType": "Bundle", "type": kind, "entry": [
            { "request": { "method": "POST", "url": "Patient" }, "resource": patient(None) }
        ]})
        .to_string();
        let a = call(&server, Method::POST, "", &[ct, ("prefer", "return=minimal")], Some(bundle.clone())).await;
        let e = &a.json()["entry"][0];
        assert!(e["response"]["status"].as_str().unwrap().starts_with("201"), "{e}");
        assert!(e.get("resource").is_none(), "{e}");
        let a = call(&server, Method::POST, "", &[ct, ("prefer", "return=OperationOutcome")], Some(bundle.clone())).await;
        let e = &a.json()["entry"][0];
        assert!(e.get("resource").is_none(), "{e}");
        informational(&e["response"]["outcome"], "created Patient/");
        let a = call(&server, Method::POST, "", &[ct], Some(bundle)).await;
        assert_eq!(a.json()["entry"][0]["resource"]["resourceType"], "Patient");
    }
}

#[tokio::test]
async fn prefer_return_on_every_write_r5() {
    prefer_return(R5).await;
}

#[tokio::test]
async fn prefer_return_on_every_write_r4() {
    prefer_return(R4).await;
}
