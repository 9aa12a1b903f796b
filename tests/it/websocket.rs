//! The websocket channel end to end: `$get-ws-binding-token`, binding, handshakes, ordered
//! events, several subscriptions and sockets, renewal, bad tokens and frames, expiry,
//! reconnect with catch-up, slow clients, and `$events`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::ws::{event_numbers, kind, subscription_of, Binding, WsEvent};
use crate::support::{TestServer, WsClient};

const TOPIC: &str = "http://example.org/topics/ws-task";
const WAIT: Duration = Duration::from_secs(10);

async fn server_with_topic() -> TestServer {
    let server = TestServer::start().await;
    server.task_topic(TOPIC).await;
    server
}

fn owner_filter(owner: &str) -> Value {
    json!({ "filterBy": [{ "filterParameter": "owner", "value": owner }] })
}

/// Sends a JSON ping and returns the next frame, which must be the pong: proves nothing else
/// was queued on this socket before it.
async fn assert_nothing_queued(ws: &mut WsClient) {
    ws.send_text(r#"{"type":"ping"}"#).await;
    let next = ws.next_json(WAIT).await;
    assert_eq!(next["type"], "pong", "expected nothing but the pong, got {next}");
}

#[tokio::test]
async fn websocket_subscription_is_active_at_creation_and_numbers_events_while_unbound() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    for _ in 0..2 {
        server.create_task("requested", "Organization/a").await;
    }
    let status = server.status_of(&id).await;
    assert_eq!(status["status"], "active", "nobody is connected, and that is no error: {status}");
    assert_eq!(status["eventsSinceSubscriptionStart"], "2");

    let binding = server.ws_token(&id).await;
    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind(&binding.token).await;
    let hs = ws.next_json(WAIT).await;
    assert_eq!(hs["type"], "subscription-notification");
    assert_eq!(kind(&hs), "handshake");
    assert_eq!(subscription_of(&hs), id);
    assert_eq!(hs["entry"][0]["resource"]["status"], "active");
    assert_eq!(hs["entry"].as_array().unwrap().len(), 1);

    // The events that waited arrive first, in order, then the live ones.
    server.create_task("requested", "Organization/a").await;
    let numbers: Vec<u64> = ws.events(3, WAIT).await.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let last = server.status_of(&id).await;
    assert_eq!(last["eventsSinceSubscriptionStart"], "3");
}

#[tokio::test]
async fn binding_token_operation_answers_parameters_and_refuses_what_it_cannot_bind() {
    let server = server_with_topic().await;
    let a = server.subscribe_ws(TOPIC, json!({})).await;
    let b = server.subscribe_ws(TOPIC, json!({})).await;

    let resp = server.client.get(server.url(&format!("Subscription/{a}/$get-ws-binding-token"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let params: Value = resp.json().await.unwrap();
    assert_eq!(params["resourceType"], "Parameters");
    let first = Binding::from_parameters(&params);
    assert!(first.token.len() >= 32, "at least 128 random bits");
    assert_eq!(first.subscriptions, vec![a.clone()]);
    assert!(first.url.starts_with("ws://") && first.url.ends_with("/fhir/$subscription-ws"), "{}", first.url);
    let expires = time::OffsetDateTime::parse(&first.expiration, &time::format_description::well_known::Rfc3339).unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::seconds(200) && left <= time::Duration::seconds(301), "default lifetime 300 s: {left}");

    // Not idempotent: another call, another token.
    let (s, again) = server.post(&format!("Subscription/{a}/$get-ws-binding-token"), &json!({ "resourceType": "Parameters" })).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(Binding::from_parameters(&again).token, first.token);

    let (s, both) = server.get(&format!("Subscription/$get-ws-binding-token?id={a}&id={b}")).await;
    assert_eq!(s, StatusCode::OK, "{both}");
    assert_eq!(Binding::from_parameters(&both).subscriptions, vec![a.clone(), b.clone()]);
    let body =
        json!({ "resourceType": "Parameters", "parameter": [{ "name": "id", "valueString": a }, { "name": "id", "valueString": b }] });
    let (s, posted) = server.post("Subscription/$get-ws-binding-token", &body).await;
    assert_eq!(s, StatusCode::OK, "{posted}");
    assert_eq!(Binding::from_parameters(&posted).subscriptions.len(), 2);

    let (s, oo) = server.get("Subscription/nope/$get-ws-binding-token").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let (s, oo) = server.get(&format!("Subscription/$get-ws-binding-token?id={a}&id=nope")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{oo}");
    let (s, oo) = server.get("Subscription/$get-ws-binding-token").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{oo}");
    let rx = crate::support::Receiver::start().await;
    let rest = server.subscribe(TOPIC, &rx.url, json!({})).await;
    let (s, oo) = server.get(&format!("Subscription/{rest}/$get-ws-binding-token")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{oo}");
    assert_eq!(oo["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn two_subscriptions_on_one_socket_each_arrive_in_event_order() {
    let server = server_with_topic().await;
    let a = server.subscribe_ws(TOPIC, owner_filter("Organization/a")).await;
    let b = server.subscribe_ws(TOPIC, json!({ "content": "empty" })).await;
    let mut ws = server.ws_bound(&[&a, &b]).await;
    for i in 0..6 {
        let owner = if i % 2 == 0 { "Organization/a" } else { "Organization/z" };
        server.create_task("requested", owner).await;
    }
    // a sees the three Tasks of Organization/a; b (no filter) sees all six.
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_a.len() < 3 || seen_b.len() < 6 {
        let frame = ws.next_of("event-notification", WAIT).await;
        let numbers = event_numbers(&frame);
        if subscription_of(&frame) == a {
            seen_a.extend(numbers);
        } else {
            assert_eq!(subscription_of(&frame), b);
            assert_eq!(frame["entry"].as_array().unwrap().len(), 1, "content empty: the status entry only");
            seen_b.extend(numbers);
        }
    }
    assert_eq!(seen_a, vec![1, 2, 3]);
    assert_eq!(seen_b, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn every_socket_bound_to_a_subscription_gets_the_stream() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let mut one = server.ws_bound(&[&id]).await;
    let mut two = server.ws_bound(&[&id]).await;
    server.create_task("requested", "Organization/a").await;
    server.create_task("requested", "Organization/a").await;
    for ws in [&mut one, &mut two] {
        let numbers: Vec<u64> = ws.events(2, WAIT).await.iter().flat_map(event_numbers).collect();
        assert_eq!(numbers, vec![1, 2]);
    }
    // Shutdown closes bound sockets with 1001 rather than waiting for their clients to leave.
    tokio::time::timeout(Duration::from_secs(20), server.stop()).await.expect("shutdown with sockets open");
    assert_eq!(one.closed(WAIT).await, Some(1001));
}

#[tokio::test]
async fn renewal_rebinds_once_and_unbind_stops_the_stream() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let first = server.ws_token(&id).await;
    let mut ws = WsClient::connect(&first.url).await;
    ws.send_text(&format!("bind-with-token: {}", first.token)).await;
    assert_eq!(kind(&ws.next_json(WAIT).await), "handshake");

    // Renewal: a new token on the same socket gets a new handshake, and no second stream.
    let second = server.ws_token(&id).await;
    ws.send_text(&json!({ "type": "bind-with-token", "payload": { "token": second.token } }).to_string()).await;
    assert_eq!(kind(&ws.next_json(WAIT).await), "handshake");
    server.create_task("requested", "Organization/a").await;
    assert_eq!(event_numbers(&ws.next_of("event-notification", WAIT).await), vec![1]);
    assert_nothing_queued(&mut ws).await;

    // Unbinding the first token leaves the binding the second one made.
    ws.send_text(&format!("unbind-from-token {}", first.token)).await;
    server.create_task("requested", "Organization/a").await;
    assert_eq!(event_numbers(&ws.next_of("event-notification", WAIT).await), vec![2]);

    // Unbinding the second ends the stream: event 3 waits for the next socket.
    ws.send_text(&json!({ "type": "unbind-from-token", "payload": { "token": second.token } }).to_string()).await;
    assert_nothing_queued(&mut ws).await;
    server.create_task("requested", "Organization/a").await;
    let mut other = server.ws_bound(&[&id]).await;
    assert_eq!(event_numbers(&other.next_of("event-notification", WAIT).await), vec![3]);
    assert_nothing_queued(&mut ws).await;

    // Unbinding a token this socket never used is an error frame, not a close.
    ws.send_text("unbind-from-token 0123").await;
    assert_eq!(ws.next_json(WAIT).await["resourceType"], "OperationOutcome");
    assert_nothing_queued(&mut ws).await;
}

#[tokio::test]
async fn an_invalid_token_gets_an_error_frame_and_a_1008_close_when_nothing_is_bound() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let binding = server.ws_token(&id).await;

    let mut ws = WsClient::connect(&binding.url).await;
    ws.bind("not-a-token").await;
    let oo = ws.next_json(WAIT).await;
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "security");
    assert!(!oo.to_string().contains("not-a-token"), "the token is not echoed");
    assert_eq!(ws.closed(WAIT).await, Some(1008));

    // With a binding in place, a bad token is only an error frame.
    let mut ws = server.ws_bound(&[&id]).await;
    ws.bind("not-a-token").await;
    assert_eq!(ws.next_json(WAIT).await["issue"][0]["code"], "security");
    server.create_task("requested", "Organization/a").await;
    assert_eq!(event_numbers(&ws.next_of("event-notification", WAIT).await), vec![1]);

    // A token for a subscription deleted since cannot bind it.
    let gone = server.subscribe_ws(TOPIC, json!({})).await;
    let stale = server.ws_token(&gone).await;
    let (s, _) = server.delete(&format!("Subscription/{gone}")).await;
    assert!(s.is_success());
    let mut ws = WsClient::connect(&stale.url).await;
    ws.bind(&stale.token).await;
    assert_eq!(ws.next_json(WAIT).await["issue"][0]["code"], "not-found");
    assert_eq!(ws.closed(WAIT).await, Some(1008));
}

#[tokio::test]
async fn an_expired_token_binds_nothing_but_an_earlier_binding_keeps_streaming() {
    let server = TestServer::start_with(|cfg| cfg.websocket.token_lifetime = "1s".into()).await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let binding = server.ws_token(&id).await;
    let mut early = WsClient::connect(&binding.url).await;
    early.bind(&binding.token).await;
    assert_eq!(kind(&early.next_json(WAIT).await), "handshake");

    // Try the same token on new sockets until it stops working.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = WsClient::connect(&binding.url).await;
        ws.bind(&binding.token).await;
        match ws.next_within(WAIT).await {
            WsEvent::Json(v) if kind(&v) == "handshake" => {}
            WsEvent::Json(v) => {
                assert_eq!(v["issue"][0]["code"], "security", "{v}");
                assert_eq!(ws.closed(WAIT).await, Some(1008));
                break;
            }
            WsEvent::Closed(code) => panic!("closed ({code:?}) without an error frame"),
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.create_task("requested", "Organization/a").await;
    assert_eq!(event_numbers(&early.next_of("event-notification", WAIT).await), vec![1]);
}

#[tokio::test]
async fn binary_garbage_oversized_frames_and_abrupt_disconnects_do_not_hurt_the_server() {
    let server = TestServer::start_with(|cfg| cfg.websocket.max_message_bytes = 1024).await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let mut ws = server.ws_bound(&[&id]).await;

    ws.send_binary(vec![0, 159, 146, 150]).await;
    assert_eq!(ws.next_json(WAIT).await["issue"][0]["code"], "not-supported");
    for garbage in ["hello", "{\"type\":", "{\"type\":\"bind-with-token\",\"payload\":{\"token\":7}}", ""] {
        ws.send_text(garbage).await;
        assert_eq!(ws.next_json(WAIT).await["resourceType"], "OperationOutcome", "{garbage:?}");
    }
    // An oversized message ends that connection (and only it).
    ws.send_text(&"x".repeat(4096)).await;
    ws.closed(WAIT).await;

    // Bound sockets dropped without a close.
    for _ in 0..3 {
        let dropped = server.ws_bound(&[&id]).await;
        drop(dropped);
    }
    let mut ws = server.ws_bound(&[&id]).await;
    for n in 1..=2 {
        server.create_task("requested", "Organization/a").await;
        assert_eq!(event_numbers(&ws.next_of("event-notification", WAIT).await), vec![n]);
    }
    let (s, _) = server.get("metadata").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_reconnects_catches_up_by_bind_replay_and_by_events() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({ "content": "full-resource" })).await;
    let mut ws = server.ws_bound(&[&id]).await;
    server.create_task("requested", "Organization/a").await;
    server.create_task("requested", "Organization/a").await;
    let numbers: Vec<u64> = ws.events(2, WAIT).await.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, vec![1, 2]);
    ws.close().await;

    // While away: two more events, numbered and kept.
    server.create_task("requested", "Organization/a").await;
    server.create_task("requested", "Organization/a").await;
    assert_eq!(server.status_of(&id).await["eventsSinceSubscriptionStart"], "4");

    // $events fills the gap whatever was delivered.
    let (s, events) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=2")).await;
    assert_eq!(s, StatusCode::OK, "{events}");
    assert_eq!(event_numbers(&events), vec![2, 3, 4]);

    // Binding again: events that were never delivered come by themselves...
    let mut back = server.ws_bound(&[&id]).await;
    let numbers: Vec<u64> = back.events(2, WAIT).await.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, vec![3, 4]);

    // ...and a bind may ask for a replay from a number, served from the stored events.
    let binding = server.ws_token(&id).await;
    let mut replay = WsClient::connect(&binding.url).await;
    let bind = json!({ "type": "bind-with-token", "payload": { "token": binding.token, "eventsSinceNumber": "2" } });
    replay.send_text(&bind.to_string()).await;
    assert_eq!(kind(&replay.next_json(WAIT).await), "handshake");
    let numbers: Vec<u64> = replay.events(3, WAIT).await.iter().flat_map(event_numbers).collect();
    assert_eq!(numbers, vec![2, 3, 4]);
    server.create_task("requested", "Organization/a").await;
    assert_eq!(event_numbers(&replay.next_of("event-notification", WAIT).await), vec![5]);
}

#[tokio::test]
async fn heartbeats_keep_a_bound_socket_from_going_silent() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({ "heartbeatPeriod": 1 })).await;
    let mut ws = server.ws_bound(&[&id]).await;
    let hb = ws.next_json(Duration::from_secs(5)).await;
    assert_eq!(kind(&hb), "heartbeat");
    assert_eq!(subscription_of(&hb), id);
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_counted_without_holding_the_lane() {
    let server = TestServer::start_with(|cfg| {
        cfg.websocket.send_buffer = 2;
        cfg.websocket.send_timeout = "200ms".into();
    })
    .await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe_ws(TOPIC, json!({ "content": "full-resource" })).await;
    let _slow = server.ws_bound(&[&id]).await; // never reads again
    let before = herald::channels::websocket::slow_disconnects_total();
    let big = "x".repeat(256 * 1024);
    let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order", "description": big });
    let deadline = Instant::now() + Duration::from_secs(60);
    while herald::channels::websocket::slow_disconnects_total() == before {
        let (s, b) = server.post("Task", &task).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert!(Instant::now() < deadline, "the slow socket was never disconnected");
    }
    // The lane moved on: a socket that reads gets the events that follow.
    let mut reader = server.ws_bound(&[&id]).await;
    server.create_task("requested", "Organization/a").await;
    let frame = reader.next_of("event-notification", Duration::from_secs(20)).await;
    assert!(!event_numbers(&frame).is_empty());
}

#[tokio::test]
async fn events_operation_renders_the_version_each_event_saw_at_any_content_level() {
    let server = server_with_topic().await;
    let id = server.subscribe_ws(TOPIC, json!({ "content": "full-resource" })).await;
    let task = server.create_task("requested", "Organization/a").await;
    for (version, status) in [("1", "accepted"), ("2", "completed")] {
        let body =
            json!({ "resourceType": "Task", "id": task, "status": status, "intent": "order", "owner": { "reference": "Organization/a" } });
        let resp = server
            .client
            .put(server.url(&format!("Task/{task}")))
            .header("content-type", "application/fhir+json")
            .header("if-match", format!("W/\"{version}\""))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let (s, all) = server.get(&format!("Subscription/{id}/$events")).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all["type"], "subscription-notification");
    let status = &all["entry"][0]["resource"];
    assert_eq!(status["type"], "query-event");
    assert_eq!(status["eventsSinceSubscriptionStart"], "3");
    assert_eq!(event_numbers(&all), vec![1, 2, 3]);
    let statuses: Vec<&str> = all["entry"].as_array().unwrap()[1..].iter().map(|e| e["resource"]["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["requested", "accepted", "completed"], "each event shows the version it saw");

    let (_, one) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=2&eventsUntilNumber=2")).await;
    assert_eq!(event_numbers(&one), vec![2]);
    assert_eq!(one["entry"][1]["resource"]["status"], "accepted");
    assert_eq!(one["entry"][1]["resource"]["meta"]["versionId"], "2");

    let (_, empty) = server.get(&format!("Subscription/{id}/$events?content=empty")).await;
    assert_eq!(empty["entry"].as_array().unwrap().len(), 1, "empty: the status entry only");
    assert!(empty["entry"][0]["resource"]["notificationEvent"][0].get("focus").is_none());
    let (_, ids) = server.get(&format!("Subscription/{id}/$events?content=id-only&eventsUntilNumber=1")).await;
    assert_eq!(event_numbers(&ids), vec![1]);
    assert!(ids["entry"][1].get("resource").is_none(), "id-only: no resource");
    assert!(ids["entry"][1]["fullUrl"].as_str().unwrap().ends_with(&format!("Task/{task}")));

    let body = json!({ "resourceType": "Parameters", "parameter": [{ "name": "eventsSinceNumber", "valueString": "3" }] });
    let (s, posted) = server.post(&format!("Subscription/{id}/$events"), &body).await;
    assert_eq!(s, StatusCode::OK, "{posted}");
    assert_eq!(event_numbers(&posted), vec![3]);
    let (_, beyond) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=9")).await;
    assert!(event_numbers(&beyond).is_empty());

    for bad in ["eventsSinceNumber=3&eventsUntilNumber=1", "eventsSinceNumber=x", "eventsUntilNumber=-2", "content=all", "since=1"] {
        let (s, oo) = server.get(&format!("Subscription/{id}/$events?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome");
    }
    let (s, _) = server.get("Subscription/nope/$events").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn events_are_capped_per_call_and_the_rest_read_from_the_last_number() {
    let server = TestServer::start_with(|cfg| cfg.subscriptions.max_events_per_query = 2).await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    for _ in 0..3 {
        server.create_task("requested", "Organization/a").await;
    }
    let (_, page) = server.get(&format!("Subscription/{id}/$events")).await;
    assert_eq!(event_numbers(&page), vec![1, 2]);
    let (_, rest) = server.get(&format!("Subscription/{id}/$events?eventsSinceNumber=3")).await;
    assert_eq!(event_numbers(&rest), vec![3]);
}
