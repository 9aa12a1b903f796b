//! Cursor paging at queue-server scale (issue #23): a page comes from the index from the
//! cursor onwards, so searches matching more than `search.max_scan` answer pages instead of
//! `too-costly`; totals are computed only when asked and bounded by `search.max_total`; a
//! cursor is only a position, so a garbled one is 400 and a forged one reaches nothing the
//! query and the caller would not.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::security::token;
use crate::support::TestServer;

/// Stores Tasks `{prefix}-000..` in one batch: (id, status, owner) each.
async fn load(server: &TestServer, tasks: &[(String, &str, &str)]) {
    let entries: Vec<Value> = tasks
        .iter()
        .map(|(id, status, owner)| {
            json!({ "resource": { "resourceType": "Task", "id": id, "status": status, "intent": "order",
                "owner": { "reference": owner } }, "request": { "method": "PUT", "url": format!("Task/{id}") } })
        })
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
    let resp =
        server.client.post(&server.base).header("content-type", "application/fhir+json").body(bundle.to_string()).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    for e in body["entry"].as_array().unwrap() {
        assert!(e["response"]["status"].as_str().unwrap().starts_with("20"), "{e}");
    }
}

/// `n` Tasks: every third `accepted`, the rest `requested`; owners `lab-0`..`lab-4` in turn,
/// except that `Organization/rare` owns the first two.
fn tasks(n: usize) -> Vec<(String, &'static str, &'static str)> {
    const OWNERS: [&str; 5] =
        ["Organization/lab-0", "Organization/lab-1", "Organization/lab-2", "Organization/lab-3", "Organization/lab-4"];
    (0..n)
        .map(|i| {
            let status = if i % 3 == 2 { "accepted" } else { "requested" };
            let owner = if i < 2 { "Organization/rare" } else { OWNERS[i % 5] };
            (format!("t-{i:04}"), status, owner)
        })
        .collect()
}

fn matches(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"].as_array()?.iter().find(|l| l["relation"] == relation).map(|l| l["url"].as_str().unwrap().to_owned())
}

async fn get_url(server: &TestServer, url: &str) -> Value {
    let resp = server.client.get(url).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    body
}

/// Every match of `query`, following `next` links; also the number of pages and each page's size.
async fn every_page(server: &TestServer, query: &str) -> (Vec<String>, Vec<usize>) {
    let mut url = format!("{}/{query}", server.base);
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = get_url(server, &url).await;
        let here = matches(&page);
        sizes.push(here.len());
        seen.extend(here);
        match link(&page, "next") {
            Some(next) => url = next,
            None => return (seen, sizes),
        }
        assert!(sizes.len() < 500, "{query}: paging does not end");
    }
}

fn expected(all: &[(String, &str, &str)], keep: impl Fn(&(String, &str, &str)) -> bool) -> Vec<String> {
    let mut ids: Vec<String> = all.iter().filter(|t| keep(t)).map(|t| t.0.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn paging_with_count_returns_every_match_exactly_once_in_id_order() {
    let server = TestServer::start().await;
    let all = tasks(150);
    load(&server, &all).await;
    let requested = expected(&all, |t| t.1 == "requested");
    let (seen, sizes) = every_page(&server, "Task?status=requested&_count=7").await;
    assert_eq!(seen, requested);
    assert!(sizes.iter().rev().skip(1).all(|&n| n == 7), "every page but the last is full: {sizes:?}");
    // Two values of one clause: the index walk merges them in id order.
    let (seen, _) = every_page(&server, "Task?status=requested,accepted&_count=11").await;
    assert_eq!(seen, expected(&all, |_| true));
    // No clause: the type's ids are walked.
    let (seen, _) = every_page(&server, "Task?_count=13").await;
    assert_eq!(seen, expected(&all, |_| true));
    // Two clauses: the smaller drives, the other filters.
    let (seen, _) = every_page(&server, "Task?status=requested&owner=Organization/lab-3&_count=4").await;
    assert_eq!(seen, expected(&all, |t| t.1 == "requested" && t.2 == "Organization/lab-3"));
    // `previous` leads back to exactly the page before.
    let first = get_url(&server, &format!("{}/Task?status=requested&_count=5", server.base)).await;
    let second = get_url(&server, &link(&first, "next").unwrap()).await;
    let third = get_url(&server, &link(&second, "next").unwrap()).await;
    let back = get_url(&server, &link(&third, "previous").unwrap()).await;
    assert_eq!(matches(&back), matches(&second));
    assert_eq!(matches(&third), requested[10..15]);
}

#[tokio::test]
async fn searches_matching_more_than_max_scan_answer_pages_not_too_costly() {
    let server = TestServer::start_with(|c| c.search.max_scan = 25).await;
    let all = tasks(120);
    load(&server, &all).await;
    let (seen, sizes) = every_page(&server, "Task?status=requested&_count=10").await;
    assert_eq!(seen, expected(&all, |t| t.1 == "requested"));
    assert!(sizes.iter().rev().skip(1).all(|&n| n == 10), "{sizes:?}");
    let (seen, _) = every_page(&server, "Task?_count=10").await;
    assert_eq!(seen, expected(&all, |_| true));
    // Sparse matches found only by reading resources (`intent` is not indexed): a page stops
    // after `max_scan` candidates, short, and links on from there; nothing is lost.
    let (s, _) =
        server.put("Task/t-0117", &json!({ "resourceType": "Task", "id": "t-0117", "status": "requested", "intent": "plan" })).await;
    assert!(s.is_success());
    let (seen, sizes) = every_page(&server, "Task?intent=plan&_count=10").await;
    assert_eq!(seen, ["t-0117"]);
    assert!(sizes.len() > 1, "the walk stopped at max_scan and linked on: {sizes:?}");
    let first = get_url(&server, &format!("{}/Task?intent=plan", server.base)).await;
    let note = first["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").expect("a note on the short page");
    assert!(note.to_string().contains("search.max_scan"), "{note}");
    // Another order than id order still reads every candidate, and stays bounded.
    let (s, oo) = server.get("Task?status=requested&_sort=-_lastUpdated").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "too-costly", "{oo}");
    let rare = get_url(&server, &format!("{}/Task?owner=Organization/rare&_sort=-_lastUpdated", server.base)).await;
    assert_eq!(matches(&rare), ["t-0001", "t-0000"]);
}

#[tokio::test]
async fn totals_are_given_when_asked_bounded_by_max_total_and_estimated_beyond() {
    let server = TestServer::start_with(|c| {
        c.search.max_total = 20;
        c.search.cheap_total = 10;
    })
    .await;
    let all = tasks(90);
    load(&server, &all).await;
    let requested = expected(&all, |t| t.1 == "requested").len();
    let get = |q: &'static str| {
        let server = &server;
        async move { get_url(server, &format!("{}/{q}", server.base)).await }
    };
    // Free or cheap: the whole result on the first page, or few candidates.
    assert_eq!(get("Task?owner=Organization/rare").await["total"], 2);
    assert_eq!(get("Task?owner=Organization/rare&_count=1").await["total"], 2);
    // Not asked and not cheap: no total.
    assert!(get("Task?status=requested&_count=5").await.get("total").is_none());
    assert!(get("Task?owner=Organization/rare&_total=none").await.get("total").is_none());
    // Accurate within max_total; beyond it a refusal that says what to do.
    assert_eq!(get("Task?owner=Organization/lab-3&_total=accurate&_count=1").await["total"], 18);
    let (s, oo) = server.get("Task?status=requested&_total=accurate").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    assert_eq!(oo["issue"][0]["code"], "too-costly");
    assert!(oo.to_string().contains("_total=estimate"), "{oo}");
    // `_summary=count` and `_total=estimate` beyond max_total: estimated (here every candidate
    // of the driving clause matches, so the estimate is exact) and said to be an estimate.
    let count = get("Task?status=requested&_summary=count").await;
    assert_eq!(count["total"], requested, "{count}");
    assert!(count.to_string().contains("estimate"), "{count}");
    assert!(matches(&count).is_empty());
    let count = get("Task?_summary=count").await;
    assert_eq!(count["total"], 90, "{count}");
    let estimate = get("Task?status=requested&_total=estimate&_count=3").await;
    assert_eq!(estimate["total"], requested);
    assert_eq!(matches(&estimate).len(), 3);
    // Small enough: exact, no note.
    let count = get("Task?owner=Organization/lab-1&_summary=count").await;
    assert_eq!(count["total"], expected(&all, |t| t.2 == "Organization/lab-1").len());
    assert!(count.get("entry").is_none(), "{count}");
    let (s, oo) = server.get("Task?status=requested&_summary=count&_total=accurate").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
}

#[tokio::test]
async fn a_garbled_cursor_is_400_and_a_forged_one_reaches_nothing_the_caller_may_not_read() {
    let server = TestServer::start_with(|c| {
        c.auth.issuer = crate::security::ISSUER.into();
        c.auth.audience = crate::security::AUDIENCE.into();
        c.auth.hs256_secrets = vec![crate::security::SECRET.into()];
    })
    .await;
    let admin = token("admin", "system/*.cruds", None, 3600);
    let p1 = token("portal", "patient/*.cruds", Some("p1"), 3600);
    let call = |t: &str, url: String| {
        let req = server.client.get(url).bearer_auth(t);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    for i in 0..12 {
        let patient = if i % 2 == 0 { "p1" } else { "p2" };
        let obs = json!({ "resourceType": "Observation", "id": format!("o-{i:02}"), "status": "final", "code": { "text": "glucose" },
            "subject": { "reference": format!("Patient/{patient}") } });
        let resp = server
            .client
            .put(format!("{}/Observation/o-{i:02}", server.base))
            .bearer_auth(&admin)
            .header("content-type", "application/fhir+json")
            .body(obs.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    // Garbled, truncated, or well-formed but not Herald's: 400 with an OperationOutcome.
    let cursor = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    for bad in
        ["%%%".to_owned(), "bm90LWpzb24".to_owned(), cursor(r#"["c1","a",[],"../x"]"#), cursor(r#"["c9","a",[],"o-01"]"#), "A".repeat(5000)]
    {
        let (s, oo) = call(&admin, format!("{}/Observation?status=final&_page={bad}", server.base)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
    }
    // The patient pages through what it may read only; a forged position changes nothing.
    let mut url = format!("{}/Observation?status=final&_count=2", server.base);
    let mut seen = Vec::new();
    loop {
        let (s, page) = call(&p1, url.clone()).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        seen.extend(matches(&page));
        match link(&page, "next") {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(seen, ["o-00", "o-02", "o-04", "o-06", "o-08", "o-10"]);
    for forged in [cursor(r#"["c1","a",[],"o-00"]"#), cursor(r#"["c1","b",[],"o-99"]"#), cursor(r#"["c1","a",[],"o-08"]"#)] {
        let (s, page) = call(&p1, format!("{}/Observation?status=final&_page={forged}", server.base)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let got = matches(&page);
        assert!(got.iter().all(|id| ["o-00", "o-02", "o-04", "o-06", "o-08", "o-10"].contains(&id.as_str())), "{got:?}");
    }
}
