//! REST search through the real server: the queue-server polls, paging under concurrent
//! writes, sort, include/revinclude, `_summary=count`, `_elements`, strict and lenient
//! handling, chains, `_has`, `:in` against a ValueSet stored in Herald, and date prefixes.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestServer;

async fn task(server: &TestServer, body: Value) -> String {
    let mut t = json!({ "resourceType": "Task", "intent": "order", "status": "requested" });
    for (k, v) in body.as_object().unwrap() {
        t[k] = v.clone();
    }
    let (s, b) = server.post("Task", &t).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["id"].as_str().unwrap().to_string()
}

async fn search(server: &TestServer, query: &str) -> Value {
    let (s, b) = server.get(query).await;
    assert_eq!(s, StatusCode::OK, "{query}: {b}");
    assert_eq!(b["type"], "searchset");
    b
}

fn ids(bundle: &Value, mode: &str) -> Vec<String> {
    assert_ne!(bundle["entry"], serde_json::json!([]), "FHIR JSON has no empty arrays");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == relation).map(|l| l["url"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn queue_server_polls_by_owner_status_and_focus() {
    let server = TestServer::start().await;
    let a = task(&server, json!({ "owner": { "reference": "Organization/lab-1" }, "focus": { "reference": "ServiceRequest/42" } })).await;
    let b = task(&server, json!({ "owner": { "reference": "Organization/lab-1" }, "status": "in-progress" })).await;
    let c = task(&server, json!({ "owner": { "reference": "Organization/lab-2" }, "focus": { "reference": "ServiceRequest/42" } })).await;
    let d = task(&server, json!({ "owner": { "reference": format!("{}/Organization/lab-1", server.base) } })).await;

    let found = search(&server, "Task?owner=Organization/lab-1&status=requested").await;
    assert_eq!(sorted(ids(&found, "match")), sorted(vec![a.clone(), d.clone()]), "absolute references on Herald's base are local");
    assert_eq!(found["total"], 2);
    assert_eq!(found["entry"][0]["fullUrl"].as_str().unwrap(), format!("{}/Task/{}", server.base, ids(&found, "match")[0]));
    let focus = search(&server, "Task?focus=ServiceRequest/42").await;
    assert_eq!(sorted(ids(&focus, "match")), sorted(vec![a.clone(), c.clone()]));

    // Moving a task out of `requested` takes it out of the poll (the old index entry is gone).
    let (_, mut body) = server.get(&format!("Task/{a}")).await;
    body["status"] = json!("completed");
    let (s, _) = server.put(&format!("Task/{a}"), &body).await;
    assert_eq!(s, StatusCode::OK);
    let found = search(&server, "Task?owner=Organization/lab-1&status=requested").await;
    assert_eq!(ids(&found, "match"), vec![d.clone()]);
    server.delete(&format!("Task/{d}")).await;
    let found = search(&server, "Task?owner=Organization/lab-1&status=requested").await;
    assert!(ids(&found, "match").is_empty());
    assert_eq!(found["total"], 0);

    // POST _search with a form body is the same search.
    let resp = server
        .client
        .post(server.url("Task/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("owner=Organization%2Flab-1&status=in-progress")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let posted: Value = resp.json().await.unwrap();
    assert_eq!(ids(&posted, "match"), vec![b]);
}

#[tokio::test]
async fn paging_follows_next_links_without_duplicates_or_misses_under_writes() {
    let server = TestServer::start().await;
    let mut before = HashSet::new();
    for _ in 0..23 {
        before.insert(task(&server, json!({ "owner": { "reference": "Organization/lab-p" } })).await);
    }
    let other = task(&server, json!({ "owner": { "reference": "Organization/elsewhere" } })).await;
    let mut seen = Vec::new();
    let mut url = format!("{}/Task?owner=Organization/lab-p&_count=4", server.base);
    let mut pages = 0;
    loop {
        let page: Value = server.client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["type"], "searchset", "{page}");
        let got = ids(&page, "match");
        assert!(got.len() <= 4);
        seen.extend(got);
        pages += 1;
        // Writes between pages: new matches, and a non-match updated.
        task(&server, json!({ "owner": { "reference": "Organization/lab-p" } })).await;
        let (_, mut o) = server.get(&format!("Task/{other}")).await;
        o["status"] = json!(if pages % 2 == 0 { "requested" } else { "accepted" });
        server.put(&format!("Task/{other}"), &o).await;
        if pages == 2 {
            let prev = link(&page, "previous").expect("a second page links back");
            let back: Value = server.client.get(&prev).send().await.unwrap().json().await.unwrap();
            // The page just before this one in id order (new Tasks may have joined it meanwhile).
            let back = ids(&back, "match");
            let first_here = &ids(&page, "match")[0];
            assert_eq!(back.len(), 4, "{back:?}");
            assert!(back.windows(2).all(|w| w[0] < w[1]) && back.iter().all(|id| id < first_here), "{back:?} before {first_here}");
        }
        match link(&page, "next") {
            Some(next) => url = next,
            None => break,
        }
        assert!(pages < 50, "paging does not end");
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no resource twice: {seen:?}");
    assert!(before.is_subset(&unique), "every resource present before paging was seen once");
    assert!(!unique.contains(&other));
}

#[tokio::test]
async fn sort_include_revinclude_summary_and_elements() {
    let server = TestServer::start().await;
    let (s, sr) = server
        .post(
            "ServiceRequest",
            &json!({ "resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": { "reference": "Patient/p1" } }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let sr = sr["id"].as_str().unwrap().to_string();
    let focus = json!({ "reference": format!("ServiceRequest/{sr}") });
    let t1 = task(
        &server,
        json!({ "focus": focus, "authoredOn": "2026-03-02", "priority": "urgent", "owner": { "reference": "Organization/s" } }),
    )
    .await;
    let t2 = task(
        &server,
        json!({ "focus": focus, "authoredOn": "2026-01-15", "priority": "routine", "owner": { "reference": "Organization/s" } }),
    )
    .await;
    let t3 = task(&server, json!({ "authoredOn": "2026-02-10", "priority": "stat", "owner": { "reference": "Organization/s" } })).await;

    let by_date = search(&server, "Task?owner=Organization/s&_sort=-authored-on").await;
    assert_eq!(ids(&by_date, "match"), vec![t1.clone(), t3.clone(), t2.clone()]);
    let by_date = search(&server, "Task?owner=Organization/s&_sort=authored-on").await;
    assert_eq!(ids(&by_date, "match"), vec![t2.clone(), t3.clone(), t1.clone()]);
    let by_token = search(&server, "Task?owner=Organization/s&_sort=priority").await;
    assert_eq!(ids(&by_token, "match"), vec![t2.clone(), t3.clone(), t1.clone()], "routine < stat < urgent");
    // Newest first across pages. Writes in the same millisecond tie on _lastUpdated (then the
    // id decides), so the check is on the timestamps, not on creation order.
    let by_updated = search(&server, "Task?owner=Organization/s&_sort=-_lastUpdated&_count=2").await;
    assert_eq!(ids(&by_updated, "match").len(), 2);
    let rest: Value = server.client.get(link(&by_updated, "next").unwrap()).send().await.unwrap().json().await.unwrap();
    let pages = [&by_updated, &rest];
    let stamps: Vec<String> = pages
        .iter()
        .flat_map(|b| b["entry"].as_array().unwrap().iter().filter(|e| e["search"]["mode"] == "match"))
        .map(|e| e["resource"]["meta"]["lastUpdated"].as_str().unwrap().to_owned())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "not newest first: {stamps:?}");
    let all: Vec<String> = pages.iter().flat_map(|b| ids(b, "match")).collect();
    assert_eq!(sorted(all), sorted(vec![t1.clone(), t2.clone(), t3.clone()]), "every Task once across the pages");

    let inc = search(&server, "Task?owner=Organization/s&_include=Task:focus").await;
    assert_eq!(ids(&inc, "include"), vec![sr.clone()], "the shared focus is included once");
    let rev = search(&server, &format!("ServiceRequest?_id={sr}&_revinclude=Task:focus")).await;
    assert_eq!(ids(&rev, "match"), vec![sr.clone()]);
    assert_eq!(sorted(ids(&rev, "include")), sorted(vec![t1.clone(), t2.clone()]));
    // :iterate: from the ServiceRequest to its Tasks, then to what those Tasks focus on (already in).
    let iter = search(&server, &format!("ServiceRequest?_id={sr}&_revinclude:iterate=Task:focus&_include:iterate=Task:owner")).await;
    assert_eq!(ids(&iter, "include").len(), 2);

    let count = search(&server, "Task?owner=Organization/s&_summary=count").await;
    assert_eq!(count["total"], 3);
    assert!(count.get("entry").is_none(), "no matches, no entry (FHIR JSON has no empty arrays): {count}");
    let slim = search(&server, "Task?owner=Organization/s&_elements=status").await;
    let r = &slim["entry"][0]["resource"];
    assert!(r.get("status").is_some() && r.get("owner").is_none() && r.get("id").is_some(), "{r}");
    assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
    let none = search(&server, "Task?owner=Organization/s&_total=none").await;
    assert!(none.get("total").is_none());
}

#[tokio::test]
async fn unknown_parameters_are_reported_when_lenient_and_refused_when_strict() {
    let server = TestServer::start().await;
    let t = task(&server, json!({ "owner": { "reference": "Organization/u" } })).await;
    let lenient = search(&server, "Task?owner=Organization/u&colour=blue&_frobnicate=1").await;
    assert_eq!(ids(&lenient, "match"), vec![t.clone()]);
    let outcome = lenient["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").expect("an outcome entry");
    let text = outcome["resource"].to_string();
    assert!(text.contains("colour") && text.contains("_frobnicate"), "{text}");
    assert!(!link(&lenient, "self").unwrap().contains("colour"), "ignored parameters are left out of the links");

    let resp = server
        .client
        .get(server.url("Task?owner=Organization/u&colour=blue&status:frob=x"))
        .header("prefer", "handling=strict")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let oo: Value = resp.json().await.unwrap();
    let issues = oo["issue"].as_array().unwrap();
    assert_eq!(issues.len(), 2, "each bad clause named: {oo}");
    assert!(oo.to_string().contains("colour"));
    // An invalid value is refused even when lenient.
    let (s, oo) = server.get("Task?authored-on=not-a-date").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
}

#[tokio::test]
async fn chained_and_has_searches_resolve_through_the_store() {
    let server = TestServer::start().await;
    server.put("Organization/north", &json!({ "resourceType": "Organization", "id": "north", "name": "North Lab" })).await;
    server.put("Organization/south", &json!({ "resourceType": "Organization", "id": "south", "name": "South Lab" })).await;
    let n = task(&server, json!({ "owner": { "reference": "Organization/north" } })).await;
    task(&server, json!({ "owner": { "reference": "Organization/south" }, "status": "completed" })).await;
    let chained = search(&server, "Task?owner:Organization.name=north").await;
    assert_eq!(ids(&chained, "match"), vec![n]);
    let has = search(&server, "Organization?_has:Task:owner:status=completed").await;
    assert_eq!(ids(&has, "match"), vec!["south".to_string()]);
}

#[tokio::test]
async fn in_modifier_uses_a_value_set_posted_to_herald() {
    let server = TestServer::start().await;
    let vs = json!({
        "resourceType": "ValueSet", "url": "http://example.org/vs/open", "status": "active",
        "compose": { "include": [{ "system": "http://example.org/work", "concept": [{ "code": "draw" }, { "code": "spin" }] }] }
    });
    assert_eq!(server.post("ValueSet", &vs).await.0, StatusCode::CREATED);
    let code = |c: &str| json!({ "coding": [{ "system": "http://example.org/work", "code": c }] });
    let a = task(&server, json!({ "code": code("draw") })).await;
    let b = task(&server, json!({ "code": code("spin") })).await;
    let c = task(&server, json!({ "code": code("report") })).await;
    let open = search(&server, "Task?code:in=http://example.org/vs/open").await;
    assert_eq!(sorted(ids(&open, "match")), sorted(vec![a, b]));
    let closed = search(&server, "Task?code:not-in=http://example.org/vs/open").await;
    assert_eq!(ids(&closed, "match"), vec![c]);

    let filtered = json!({
        "resourceType": "ValueSet", "url": "http://example.org/vs/filtered", "status": "active",
        "compose": { "include": [{ "system": "http://loinc.org", "filter": [{ "property": "class", "op": "=", "value": "CHEM" }] }] }
    });
    assert_eq!(server.post("ValueSet", &filtered).await.0, StatusCode::CREATED);
    let (s, oo) = server.get("Task?code:in=http://example.org/vs/filtered").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert!(oo.to_string().contains("terminology server"), "{oo}");
}

#[tokio::test]
async fn date_prefixes_select_by_range() {
    let server = TestServer::start().await;
    let jan = task(&server, json!({ "authoredOn": "2026-01-15T10:00:00Z" })).await;
    let feb = task(&server, json!({ "authoredOn": "2026-02-01" })).await;
    let mar = task(&server, json!({ "authoredOn": "2026-03-20T08:30:00+01:00" })).await;
    let q = |p: &str| format!("Task?authored-on={p}");
    assert_eq!(ids(&search(&server, &q("2026-02")).await, "match"), vec![feb.clone()]);
    assert_eq!(sorted(ids(&search(&server, &q("gt2026-01-31")).await, "match")), sorted(vec![feb.clone(), mar.clone()]));
    assert_eq!(sorted(ids(&search(&server, &q("ge2026-02-01")).await, "match")), sorted(vec![feb.clone(), mar.clone()]));
    assert_eq!(ids(&search(&server, &q("lt2026-02-01")).await, "match"), vec![jan.clone()]);
    assert_eq!(sorted(ids(&search(&server, &q("le2026-02-01")).await, "match")), sorted(vec![jan.clone(), feb.clone()]));
    assert_eq!(ids(&search(&server, &q("sa2026-02-28")).await, "match"), vec![mar.clone()]);
    assert_eq!(ids(&search(&server, &q("eb2026-01-16")).await, "match"), vec![jan.clone()]);
    // The `+` of a time zone survives an unencoded query string.
    assert_eq!(ids(&search(&server, &q("ge2026-03-20T08:00:00+01:00")).await, "match"), vec![mar.clone()]);
    let both = search(&server, "Task?authored-on=ge2026-01-01&authored-on=lt2026-02-15").await;
    assert_eq!(sorted(ids(&both, "match")), sorted(vec![jan, feb]));
}

#[tokio::test]
async fn below_above_and_in_use_a_code_system_posted_to_herald() {
    let server = TestServer::start().await;
    let cs = json!({ "resourceType": "CodeSystem", "url": "http://example.org/cs/lab", "status": "active", "content": "complete",
        "concept": [{ "code": "chemistry", "concept": [{ "code": "lipids", "concept": [{ "code": "ldl" }, { "code": "hdl" }] }, { "code": "glucose" }] },
                    { "code": "haematology", "concept": [{ "code": "fbc" }] }] });
    assert_eq!(server.post("CodeSystem", &cs).await.0, StatusCode::CREATED);
    let vs = json!({ "resourceType": "ValueSet", "url": "http://example.org/vs/all-lab", "status": "active",
        "compose": { "include": [{ "system": "http://example.org/cs/lab" }] } });
    assert_eq!(server.post("ValueSet", &vs).await.0, StatusCode::CREATED);
    for (id, code) in [("t-ldl", "ldl"), ("t-glucose", "glucose"), ("t-fbc", "fbc"), ("t-chem", "chemistry")] {
        let body = json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order",
            "code": { "coding": [{ "system": "http://example.org/cs/lab", "code": code }] } });
        assert!(server.put(&format!("Task/{id}"), &body).await.0.is_success());
    }
    let found = |q: &'static str| {
        let server = &server;
        async move { sorted(ids(&search(server, q).await, "match")) }
    };
    assert_eq!(found("Task?code:below=http://example.org/cs/lab|lipids").await, ["t-ldl"]);
    assert_eq!(found("Task?code:below=http://example.org/cs/lab|chemistry").await, ["t-chem", "t-glucose", "t-ldl"]);
    assert_eq!(found("Task?code:above=http://example.org/cs/lab|ldl").await, ["t-chem", "t-ldl"]);
    assert_eq!(found("Task?code:in=http://example.org/vs/all-lab").await, ["t-chem", "t-fbc", "t-glucose", "t-ldl"]);
    // A code system Herald does not hold cannot answer subsumption: a clear refusal.
    let (s, oo) = server.get("Task?code:below=http://snomed.info/sct|404684003").await;
    assert!(s.is_client_error(), "{s} {oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("does not hold"), "{oo}");
}

#[tokio::test]
async fn lookups_on_unindexed_parameters_stop_at_the_scan_limit() {
    let server = TestServer::start_with(|cfg| cfg.search.max_scan = 10).await;
    assert!(server.put("Patient/p", &json!({ "resourceType": "Patient", "id": "p" })).await.0.is_success());
    // Communication.subject is not in the default index set: `_has` must read Communications.
    for i in 0..15 {
        let prov = json!({ "resourceType": "Communication", "status": "completed", "subject": { "reference": format!("Patient/p{i}") },
            "sender": { "reference": "Practitioner/x" } });
        assert_eq!(server.post("Communication", &prov).await.0, StatusCode::CREATED);
    }
    let (s, oo) = server.get("Patient?_has:Communication:subject:sender=Practitioner/x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "too-costly", "{oo}");
    // Under the limit the same lookup answers.
    let small = TestServer::start_with(|cfg| cfg.search.max_scan = 100).await;
    assert!(small.put("Patient/p", &json!({ "resourceType": "Patient", "id": "p" })).await.0.is_success());
    let prov = json!({ "resourceType": "Communication", "status": "completed", "subject": { "reference": "Patient/p" },
        "sender": { "reference": "Practitioner/x" } });
    assert_eq!(small.post("Communication", &prov).await.0, StatusCode::CREATED);
    assert_eq!(ids(&search(&small, "Patient?_has:Communication:subject:sender=Practitioner/x").await, "match"), ["p"]);
}
