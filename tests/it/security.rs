//! Authentication and authorization through the real server (issue #11): bearer JWTs and API
//! keys, SMART scopes on REST interactions and transactions, the patient compartment, and
//! Subscriptions that only their creator can see or use.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::TestServer;
use herald::config::ApiKeySetting;

pub(crate) const SECRET: &str = "security-test-hs256-secret-0123456789";
pub(crate) const ISSUER: &str = "https://issuer.example";
pub(crate) const AUDIENCE: &str = "https://herald.example/fhir";
const TOPIC: &str = "http://example.org/topics/task-changed";

pub(crate) fn token(client: &str, scope: &str, patient: Option<&str>, ttl: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut claims = json!({ "iss": ISSUER, "aud": AUDIENCE, "exp": now + ttl, "client_id": client, "scope": scope });
    if let Some(p) = patient {
        claims["patient"] = json!(p);
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

pub(crate) async fn secured() -> TestServer {
    TestServer::start_with(|c| {
        c.auth.issuer = ISSUER.into();
        c.auth.audience = AUDIENCE.into();
        c.auth.hs256_secrets = vec![SECRET.into()];
        c.auth.api_keys = vec![ApiKeySetting {
            client: "etl".into(),
            sha256: herald::auth::api_key_digest("etl-key-1"),
            scopes: "system/*.cruds".into(),
        }];
    })
    .await
}

pub(crate) async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = server.client.request(method, server.url(path)).header("accept", "application/fhir+json");
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/fhir+json").body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn task(owner: &str) -> Value {
    json!({ "resourceType": "Task", "status": "requested", "intent": "order", "owner": { "reference": owner } })
}

#[tokio::test]
async fn credentials_are_required_and_scopes_decide_what_is_allowed() {
    let server = secured().await;
    // Anonymous: 401 with a challenge; the CapabilityStatement stays open and names SMART.
    let resp = server.client.get(server.url("Task")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (s, cs) = call(&server, Method::GET, "metadata", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cs["rest"][0]["security"]["service"][0]["coding"][0]["code"], "SMART-on-FHIR");

    // Bad tokens: expired, wrong secret.
    let expired = token("lab", "system/Task.cruds", None, -3600);
    assert_eq!(call(&server, Method::GET, "Task", Some(&expired), None).await.0, StatusCode::UNAUTHORIZED);
    let forged = encode(
        &Header::default(),
        &json!({ "iss": ISSUER, "aud": AUDIENCE, "exp": 9_999_999_999u64, "client_id": "x" }),
        &EncodingKey::from_secret(b"wrong-secret-wrong-secret-wrong"),
    )
    .unwrap();
    assert_eq!(call(&server, Method::GET, "Task", Some(&forged), None).await.0, StatusCode::UNAUTHORIZED);

    // Read-only scope: search yes, create no.
    let reader = token("reader", "system/Task.rs", None, 600);
    assert_eq!(call(&server, Method::GET, "Task", Some(&reader), None).await.0, StatusCode::OK);
    let (s, oo) = call(&server, Method::POST, "Task", Some(&reader), Some(&task("Organization/lab"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("create on Task"), "{oo}");

    // Writer: creates; a transaction with an entry outside its scopes is refused whole.
    let writer = token("writer", "system/Task.cruds", None, 600);
    let (s, created) = call(&server, Method::POST, "Task", Some(&writer), Some(&task("Organization/lab"))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let tx = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "resource": task("Organization/lab"), "request": { "method": "POST", "url": "Task" } },
        { "resource": { "resourceType": "Patient" }, "request": { "method": "POST", "url": "Patient" } } ] });
    let (s, oo) = call(&server, Method::POST, "", Some(&writer), Some(&tx)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "Bundle.entry[1]");
    let (_, found) = call(&server, Method::GET, "Task?_summary=count", Some(&writer), None).await;
    assert_eq!(found["total"], 1, "the refused transaction wrote nothing");

    // API key, as X-API-Key or as a bearer.
    let resp = server.client.get(server.url("Patient")).header("x-api-key", "etl-key-1").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(call(&server, Method::GET, "Patient", Some("etl-key-1"), None).await.0, StatusCode::OK);
    assert_eq!(call(&server, Method::GET, "Patient", Some("etl-key-2"), None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_subscription_is_visible_and_usable_only_by_its_creator() {
    let server = secured().await;
    let a = token("client-a", "system/*.cruds", None, 600);
    let b = token("client-b", "system/*.cruds", None, 600);
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(call(&server, Method::POST, "SubscriptionTopic", Some(&a), Some(&topic)).await.0, StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" },
        "parameter": [{ "name": "X-Tenant-Key", "value": "tenant-secret-9" }] });
    let (s, created) = call(&server, Method::POST, "Subscription", Some(&a), Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // Its owner reads its own header value back; the create response and searches redact it.
    let (_, own) = call(&server, Method::GET, &format!("Subscription/{id}"), Some(&a), None).await;
    assert_eq!(own["parameter"][0]["value"], "tenant-secret-9", "{own}");
    assert_ne!(created["parameter"][0]["value"], "tenant-secret-9");
    let (s, mine) = call(&server, Method::POST, "Subscription", Some(&b), Some(&sub)).await;
    assert_eq!(s, StatusCode::CREATED);
    let b_id = mine["id"].as_str().unwrap().to_string();

    // The owner sees and uses it.
    for path in [
        format!("Subscription/{id}"),
        format!("Subscription/{id}/$status"),
        format!("Subscription/{id}/$events"),
        format!("Subscription/{id}/$get-ws-binding-token"),
    ] {
        assert_eq!(call(&server, Method::GET, &path, Some(&a), None).await.0, StatusCode::OK, "{path}");
    }
    // Another client: not found on reads, operations and writes alike, absent from lists.
    for path in [
        format!("Subscription/{id}"),
        format!("Subscription/{id}/$status"),
        format!("Subscription/{id}/$events"),
        format!("Subscription/{id}/$get-ws-binding-token"),
        format!("Subscription/{id}/_history"),
        format!("Subscription/$get-ws-binding-token?id={id}"),
    ] {
        assert_eq!(call(&server, Method::GET, &path, Some(&b), None).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let mut edited = created.clone();
    edited["status"] = json!("off");
    assert_eq!(call(&server, Method::PUT, &format!("Subscription/{id}"), Some(&b), Some(&edited)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&server, Method::DELETE, &format!("Subscription/{id}"), Some(&b), None).await.0, StatusCode::NOT_FOUND);
    let (_, listed) = call(&server, Method::GET, "Subscription", Some(&b), None).await;
    let ids: Vec<&str> = listed["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, [b_id.as_str()], "{listed}");
    let (_, statuses) = call(&server, Method::GET, "Subscription/$status", Some(&b), None).await;
    let refs: Vec<&str> =
        statuses["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["subscription"]["reference"].as_str()).collect();
    assert!(refs.iter().all(|r| !r.ends_with(&id)), "{statuses}");
    // The owner still can; its change went through.
    assert_eq!(call(&server, Method::PUT, &format!("Subscription/{id}"), Some(&a), Some(&edited)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn patient_scopes_are_limited_to_the_patient_compartment() {
    let server = secured().await;
    let admin = token("admin", "system/*.cruds", None, 600);
    for (id, patient) in [("o1", "p1"), ("o2", "p2")] {
        let obs = json!({ "resourceType": "Observation", "id": id, "status": "final", "code": { "text": "x" }, "subject": { "reference": format!("Patient/{patient}") } });
        assert!(call(&server, Method::PUT, &format!("Observation/{id}"), Some(&admin), Some(&obs)).await.0.is_success());
    }
    let p1 = token("portal", "patient/Observation.rs", Some("p1"), 600);
    assert_eq!(call(&server, Method::GET, "Observation/o1", Some(&p1), None).await.0, StatusCode::OK);
    assert_eq!(call(&server, Method::GET, "Observation/o2", Some(&p1), None).await.0, StatusCode::NOT_FOUND);
    let (_, found) = call(&server, Method::GET, "Observation", Some(&p1), None).await;
    let ids: Vec<&str> = found["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["id"].as_str()).collect();
    assert_eq!(ids, ["o1"], "{found}");
    let no_patient = token("portal", "patient/Observation.rs", None, 600);
    assert_eq!(call(&server, Method::GET, "Observation/o1", Some(&no_patient), None).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn herald_refuses_to_serve_anonymously_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("HERALD_LOG__LEVEL", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-anonymous"), "{err}");
}

#[tokio::test]
async fn clients_over_the_rate_limit_get_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.auth.rate_limit = 0.5;
        c.auth.rate_burst = 3.0;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = server.client.get(server.url("Task")).send().await.unwrap();
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(resp.headers()["retry-after"], "2");
            let oo: Value = resp.json().await.unwrap();
            assert_eq!(oo["issue"][0]["code"], "throttled");
        }
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
}

#[tokio::test]
async fn full_resource_needs_https_beyond_private_networks() {
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    let sub = |endpoint: &str, content: &str| {
        json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": content, "endpoint": endpoint,
                "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" } })
    };
    // A public address (documentation-free, globally routed literal) over plain http.
    let (s, oo) = server.post("Subscription", &sub("http://93.184.216.34/hook", "full-resource")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "Subscription.endpoint");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("https"));
    // id-only over http, full-resource over https, and full-resource to an allowed loopback
    // receiver are accepted.
    assert_eq!(server.post("Subscription", &sub("http://93.184.216.34/hook", "id-only")).await.0, StatusCode::CREATED);
    assert_eq!(server.post("Subscription", &sub("https://93.184.216.34/hook", "full-resource")).await.0, StatusCode::CREATED);
    assert_eq!(server.post("Subscription", &sub("http://127.0.0.1:9/hook", "full-resource")).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn clients_the_operator_maps_to_a_managing_entity_share_its_subscriptions() {
    let server = TestServer::start_with(|c| {
        c.auth.issuer = ISSUER.into();
        c.auth.audience = AUDIENCE.into();
        c.auth.hs256_secrets = vec![SECRET.into()];
        c.auth.entities = vec![herald::config::EntitySetting {
            reference: "Organization/acme-lab".into(),
            clients: vec!["jwt:lab-app".into(), "jwt:lab-etl".into()],
        }];
    })
    .await;
    let app = token("lab-app", "system/*.cruds", None, 600);
    let etl = token("lab-etl", "system/*.cruds", None, 600);
    let outsider = token("placer", "system/*.cruds", None, 600);
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(call(&server, Method::POST, "SubscriptionTopic", Some(&app), Some(&topic)).await.0, StatusCode::CREATED);
    let sub = |entity: &str| {
        json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
            "managingEntity": { "reference": entity },
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" },
            "parameter": [{ "name": "X-Lab-Key", "value": "lab-shared-secret-4" }] })
    };
    let (s, created) = call(&server, Method::POST, "Subscription", Some(&app), Some(&sub("Organization/acme-lab"))).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // The other client of the entity reads it (secrets included), uses it and changes it.
    let (s, seen) = call(&server, Method::GET, &format!("Subscription/{id}"), Some(&etl), None).await;
    assert_eq!(s, StatusCode::OK, "{seen}");
    assert_eq!(seen["parameter"][0]["value"], "lab-shared-secret-4");
    assert_eq!(call(&server, Method::GET, &format!("Subscription/{id}/$status"), Some(&etl), None).await.0, StatusCode::OK);
    let (_, found) = call(&server, Method::GET, "Subscription", Some(&etl), None).await;
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    let mut changed = seen.clone();
    changed["status"] = json!("off");
    assert_eq!(call(&server, Method::PUT, &format!("Subscription/{id}"), Some(&etl), Some(&changed)).await.0, StatusCode::OK);

    // Anyone else: not found, not listed, not changeable (as if it did not exist).
    assert_eq!(call(&server, Method::GET, &format!("Subscription/{id}"), Some(&outsider), None).await.0, StatusCode::NOT_FOUND);
    let (_, found) = call(&server, Method::GET, "Subscription", Some(&outsider), None).await;
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 0, "{found}");
    assert_eq!(call(&server, Method::DELETE, &format!("Subscription/{id}"), Some(&outsider), None).await.0, StatusCode::NOT_FOUND);

    // Naming an entity one does not act for is refused; an unmapped reference changes nothing.
    let (s, oo) = call(&server, Method::POST, "Subscription", Some(&outsider), Some(&sub("Organization/acme-lab"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("managingEntity"), "{oo}");
    let (s, own) = call(&server, Method::POST, "Subscription", Some(&outsider), Some(&sub("Organization/elsewhere"))).await;
    assert_eq!(s, StatusCode::CREATED, "{own}");
    let own_id = own["id"].as_str().unwrap();
    assert_eq!(call(&server, Method::GET, &format!("Subscription/{own_id}"), Some(&etl), None).await.0, StatusCode::NOT_FOUND);

    // The entity's client deletes it.
    assert!(call(&server, Method::DELETE, &format!("Subscription/{id}"), Some(&etl), None).await.0.is_success());
}

#[tokio::test]
async fn a_subscription_needs_a_grant_that_can_read_what_its_topic_notifies_about() {
    let server = secured().await;
    let admin = token("admin", "system/*.cruds", None, 600);
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    assert_eq!(call(&server, Method::POST, "SubscriptionTopic", Some(&admin), Some(&topic)).await.0, StatusCode::CREATED);
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" } });
    let blind = token("blind", "system/Subscription.cruds system/Patient.rs", None, 600);
    let (s, oo) = call(&server, Method::POST, "Subscription", Some(&blind), Some(&sub)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{oo}");
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("may not read Task"), "{oo}");
    let searcher = token("searcher", "system/Subscription.cruds system/Task.s", None, 600);
    assert_eq!(call(&server, Method::POST, "Subscription", Some(&searcher), Some(&sub)).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_refused_endpoint_host_does_not_reveal_what_it_resolves_to() {
    // No private allowlist: `localhost` resolves to loopback, which is refused; the refusal
    // names the host, never the address, so creation cannot be used to resolve names.
    let server = TestServer::start_with(|c| c.delivery.allow_private_networks.clear()).await;
    server.task_topic(TOPIC).await;
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
        "endpoint": "http://localhost:9/hook" });
    let (s, oo) = server.post("Subscription", &sub).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["issue"][0]["expression"][0], "Subscription.endpoint");
    let text = oo.to_string();
    assert!(text.contains("localhost") && text.contains("not public"), "{text}");
    assert!(!text.contains("127.0.0.1") && !text.contains("::1"), "{text}");
}

/// `secured()`, with `aliases` as `auth.jwt_as_api_key_clients`.
async fn secured_with_aliases(aliases: &[&str]) -> TestServer {
    let aliases: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
    TestServer::start_with(move |c| {
        c.auth.issuer = ISSUER.into();
        c.auth.audience = AUDIENCE.into();
        c.auth.hs256_secrets = vec![SECRET.into()];
        c.auth.api_keys = vec![ApiKeySetting {
            client: "etl".into(),
            sha256: herald::auth::api_key_digest("etl-key-1"),
            scopes: "system/*.cruds".into(),
        }];
        c.auth.jwt_as_api_key_clients = aliases;
    })
    .await
}

#[tokio::test]
async fn a_token_named_like_an_api_key_client_is_another_client_unless_the_operator_aliases_it() {
    const KEY: &str = "etl-key-1";
    const HEADER_SECRET: &str = "etl-header-secret-73";
    let topic =
        json!({ "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active", "resourceTrigger": [{ "resource": "Task" }] });
    let sub = json!({ "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
        "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" },
        "parameter": [{ "name": "X-Etl-Key", "value": HEADER_SECRET }] });
    for aliased in [false, true] {
        let server = secured_with_aliases(if aliased { &["etl"] } else { &[] }).await;
        // A token whose client_id is the API key's client name.
        let jwt = token("etl", "system/*.cruds", None, 600);
        assert_eq!(call(&server, Method::POST, "SubscriptionTopic", Some(KEY), Some(&topic)).await.0, StatusCode::CREATED);
        let (s, created) = call(&server, Method::POST, "Subscription", Some(KEY), Some(&sub)).await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let path = format!("Subscription/{id}");
        let (s, seen) = call(&server, Method::GET, &path, Some(&jwt), None).await;
        let (_, listed) = call(&server, Method::GET, "Subscription", Some(&jwt), None).await;
        let mut edited = created.clone();
        edited["status"] = json!("off");
        if !aliased {
            assert_eq!(s, StatusCode::NOT_FOUND, "{seen}");
            assert_eq!(listed["entry"].as_array().map_or(0, Vec::len), 0, "{listed}");
            assert!(!seen.to_string().contains(HEADER_SECRET) && !listed.to_string().contains(HEADER_SECRET));
            assert_eq!(call(&server, Method::PUT, &path, Some(&jwt), Some(&edited)).await.0, StatusCode::NOT_FOUND);
            assert_eq!(call(&server, Method::DELETE, &path, Some(&jwt), None).await.0, StatusCode::NOT_FOUND);
            // Nor the other way round: the key's client does not see the token client's.
            let (s, theirs) = call(&server, Method::POST, "Subscription", Some(&jwt), Some(&sub)).await;
            assert_eq!(s, StatusCode::CREATED, "{theirs}");
            let theirs = format!("Subscription/{}", theirs["id"].as_str().unwrap());
            assert_eq!(call(&server, Method::GET, &theirs, Some(KEY), None).await.0, StatusCode::NOT_FOUND);
            // The key's client still has its own, secret included.
            let (s, own) = call(&server, Method::GET, &path, Some(KEY), None).await;
            assert_eq!((s, own["parameter"][0]["value"].as_str()), (StatusCode::OK, Some(HEADER_SECRET)), "{own}");
        } else {
            assert_eq!(s, StatusCode::OK, "{seen}");
            assert_eq!(seen["parameter"][0]["value"], HEADER_SECRET, "the same client reads its secrets");
            assert_eq!(listed["entry"].as_array().map_or(0, Vec::len), 1, "{listed}");
            assert_eq!(call(&server, Method::PUT, &path, Some(&jwt), Some(&edited)).await.0, StatusCode::OK);
            assert!(call(&server, Method::DELETE, &path, Some(&jwt), None).await.0.is_success());
        }
    }
}
