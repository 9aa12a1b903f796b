//! Hardened edges (issue #11) through the real server: TLS on Herald's own listener (HTTPS,
//! rest-hook delivery behind it, wss, bad handshakes, refused settings), the per-client
//! connection bound, the search parameter bound and the JSON nesting bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use herald::config::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::support::server::test_config;
use crate::support::ws::{kind, Binding};
use crate::support::{Receiver, TestCert, TestServer};

const TOPIC: &str = "http://example.org/topics/task-changed";
const T: Duration = Duration::from_secs(5);

fn addr_of(server: &TestServer) -> SocketAddr {
    let url = url::Url::parse(&server.base).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap()).parse().unwrap()
}

/// `herald_connections_rejected_total{reason}` from `/metrics` (loopback needs no token).
async fn rejected(server: &TestServer, reason: &str) -> u64 {
    let text = server.client.get(server.base.replace("/fhir", "/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("herald_connections_rejected_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

fn issue_code(outcome: &Value) -> &str {
    outcome["issue"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn https_listener_serves_fhir_and_rest_hook_delivery_still_works() {
    let (server, _cert) = TestServer::start_tls(|_| {}).await;
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let health = server.client.get(server.base.replace("/fhir", "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let rx = Receiver::start().await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe(TOPIC, &rx.url, json!({ "content": "id-only" })).await;
    assert_eq!(rx.next_within(T).await.kind(), "handshake");
    server.wait_status(&id, "active", T).await;
    let task = server.create_task("requested", "Organization/lab").await;
    let event = rx.next_of("event-notification", T).await;
    assert_eq!(event.event_numbers(), vec![1]);
    // The derived base URL follows the listener: https, so references point back over TLS.
    assert_eq!(event.status()["notificationEvent"][0]["focus"]["reference"], format!("{}/Task/{task}", server.base));
    let ws = server.subscribe_ws(TOPIC, json!({})).await;
    let binding = server.ws_token(&ws).await;
    assert!(binding.url.starts_with("wss://127.0.0.1:"), "{}", binding.url);
}

#[tokio::test]
async fn plain_http_and_garbage_on_the_tls_port_fail_without_stopping_the_server() {
    let (server, cert) = TestServer::start_tls(|_| {}).await;
    let addr = addr_of(&server);
    let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(plain.is_err() || !plain.as_ref().unwrap().status().is_success(), "plain HTTP was served on the TLS port: {plain:?}");
    // Bytes that are no TLS record at all, and a connection that says nothing and leaves.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xff; 64]).await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(T, garbage.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a connection with a broken handshake is closed");
    // A client that connects and says nothing holds only its own handshake, not the accept
    // loop: HTTPS is served meanwhile, well before the handshake times out.
    // A new client, so that the request needs a new connection and handshake.
    let silent = TcpStream::connect(addr).await.unwrap();
    let fresh = cert.client().get(server.url("metadata")).send();
    let resp = tokio::time::timeout(T, fresh).await.expect("served while a handshake is pending").unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the server still serves HTTPS");
    drop(silent);
    let deadline = Instant::now() + T;
    while rejected(&server, "tls_handshake").await < 2 {
        assert!(Instant::now() < deadline, "the failed handshakes were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wss_binds_and_streams_events_over_tls() {
    let (server, cert) = TestServer::start_tls(|_| {}).await;
    server.task_topic(TOPIC).await;
    let id = server.subscribe_ws(TOPIC, json!({})).await;
    let Binding { token, url, .. } = server.ws_token(&id).await;
    let tcp = TcpStream::connect(addr_of(&server)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cert.rustls_client()).connect(name, tcp).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(url.as_str(), tls).await.unwrap();
    socket.send(Message::text(format!("bind-with-token {token}"))).await.unwrap();
    assert_eq!(kind(&next_frame(&mut socket).await), "handshake");
    server.create_task("requested", "Organization/lab").await;
    let event = next_frame(&mut socket).await;
    assert_eq!(kind(&event), "event-notification");
    assert_eq!(event["entry"][0]["resource"]["notificationEvent"][0]["eventNumber"], "1");
}

/// The next text frame as JSON, skipping pings; fails on a close or after 5 s.
async fn next_frame<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Value {
    loop {
        match tokio::time::timeout(T, socket.next()).await.expect("a frame within 5 s") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn startup_refuses_half_or_unusable_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::write(dir.path());
    let run = |adjust: &dyn Fn(&mut Config)| {
        let mut cfg = test_config(&dir.path().join("store"));
        adjust(&mut cfg);
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let out = tokio::time::timeout(T, herald::run(cfg, listener, std::future::pending())).await;
            let err = out.expect("startup stops at once").expect_err("startup must fail");
            let mut text = err.to_string();
            let mut src = std::error::Error::source(&err);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            text
        }
    };
    let cert_path = cert.cert_path.display().to_string();
    let key_path = cert.key_path.display().to_string();
    let only_cert = run(&|c| c.server.tls_cert = cert_path.clone()).await;
    assert!(only_cert.contains("server.tls_key"), "{only_cert}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let garbage = run(&|c| {
        c.server.tls_cert = not_pem.display().to_string();
        c.server.tls_key = key_path.clone();
    })
    .await;
    assert!(garbage.contains("server.tls_cert") && garbage.contains("not.pem"), "{garbage}");
    let missing = run(&|c| {
        c.server.tls_cert = cert_path.clone();
        c.server.tls_key = dir.path().join("absent.pem").display().to_string();
    })
    .await;
    assert!(missing.contains("server.tls_key") && missing.contains("absent.pem"), "{missing}");
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestCert::write(other_dir.path());
    let mismatch = run(&|c| {
        c.server.tls_cert = cert_path.clone();
        c.server.tls_key = other.key_path.display().to_string();
    })
    .await;
    assert!(mismatch.contains("server.tls_key") && mismatch.contains("does not fit"), "{mismatch}");
    // The binary says so before doing anything else.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("HERALD_SERVER__TLS_CERT", &cert_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("server.tls_key"), "{:?}: {stderr}", out.status);
}

/// A connection from `from` (another loopback address than the test client's 127.0.0.1, so
/// only these connections count against that client's quota).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends `GET /healthz` on a kept-alive connection; `true` when a 200 came back, `false`
/// when the server closed it instead.
async fn healthz_on(conn: &mut TcpStream) -> bool {
    if conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: herald\r\n\r\n").await.is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(T, conn.read(&mut buf)).await.expect("an answer or a close within 5 s") {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            return got.starts_with(b"HTTP/1.1 200");
        }
    }
}

#[tokio::test]
async fn a_client_over_its_connection_quota_is_closed_at_once_and_served_again_after_closing_some() {
    let server = TestServer::start_with(|c| c.server.max_connections_per_client = 3).await;
    let addr = addr_of(&server);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect_from("127.0.0.2", addr).await;
        assert!(healthz_on(&mut conn).await, "a connection within the quota is served");
        held.push(conn);
    }
    let mut extra = connect_from("127.0.0.2", addr).await;
    assert!(!healthz_on(&mut extra).await, "the fourth connection of one client is closed");
    let (s, _) = server.get("metadata").await;
    assert_eq!(s, StatusCode::OK, "another client is not affected");
    assert!(rejected(&server, "per_client").await >= 1);
    drop(held.pop());
    // The server frees the slot once it sees the close: retry until then.
    let deadline = Instant::now() + T;
    loop {
        let mut conn = connect_from("127.0.0.2", addr).await;
        if healthz_on(&mut conn).await {
            break;
        }
        assert!(Instant::now() < deadline, "no connection was served again within {T:?} after one closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for conn in &mut held {
        assert!(healthz_on(conn).await, "connections within the quota keep being served");
    }
}

#[tokio::test]
async fn searches_over_the_parameter_bound_get_400_too_costly() {
    let server = TestServer::start().await;
    let max = Config::load(None, Vec::<(String, String)>::new(), &herald::config::Overrides::default()).unwrap().search.max_params;
    let query = |n: usize| (0..n).map(|i| format!("_id=t{i}")).collect::<Vec<_>>().join("&");
    let (s, b) = server.get(&format!("Task?{}", query(max))).await;
    assert_eq!(s, StatusCode::OK, "{max} parameters are fine: {b}");
    let (s, b) = server.get(&format!("Task?{}", query(max + 1))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["resourceType"], "OperationOutcome");
    assert_eq!(issue_code(&b), "too-costly");
    assert!(b["issue"][0]["diagnostics"].as_str().unwrap().contains("search.max_params"), "{b}");
    // Includes and a form body count too.
    let includes = (0..max).map(|_| "_include=Task:owner").collect::<Vec<_>>().join("&");
    let resp = server
        .client
        .post(server.url(&format!("Task/_search?{includes}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("status=requested")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(issue_code(&b), "too-costly", "{b}");
}

#[tokio::test]
async fn json_nested_1000_deep_gets_400_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let deep = format!(r#"{{"resourceType":"Basic","extension":{}{}}}"#, "[".repeat(1000), "]".repeat(1000));
    let resp = server.client.post(server.url("Basic")).header("content-type", "application/fhir+json").body(deep).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["resourceType"], "OperationOutcome");
    assert_eq!(issue_code(&b), "too-costly", "{b}");
    assert!(b["issue"][0]["diagnostics"].as_str().unwrap().contains("128"), "{b}");
    // Just inside the bound: whatever Herald makes of it, it answers and lives on.
    let nested = format!(r#"{{"resourceType":"Basic","code":{{"text":"x"}},"x":{}1{}}}"#, "[".repeat(120), "]".repeat(120));
    let resp = server.client.post(server.url("Basic")).header("content-type", "application/fhir+json").body(nested).send().await.unwrap();
    assert!(resp.status().is_client_error() || resp.status().is_success(), "{}", resp.status());
    let (s, _) = server.get("metadata").await;
    assert_eq!(s, StatusCode::OK);
}

/// A gauge of `/metrics` (loopback needs no token); 0 when absent.
/// A `PUT /fhir/<path>` of `body` on a raw connection, its headers and first 1,000 bytes sent;
/// the caller sends the rest (`body[1000..]`) when it chooses.
pub(crate) async fn half_sent_put(addr: SocketAddr, path: &str, body: &[u8]) -> TcpStream {
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /fhir/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..1000]).await.unwrap();
    slow
}

async fn gauge(server: &TestServer, name: &str) -> i64 {
    let text = server.client.get(server.base.replace("/fhir", "/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// `server.max_body_memory_mib`: a request whose body does not fit in what is left of the
/// budget waits, its body unread, until an earlier request is answered; then it goes through
/// (slowed, never refused), and the budget is whole again.
#[tokio::test]
async fn a_body_that_does_not_fit_the_body_memory_budget_waits_for_room_then_goes_through() {
    let server = TestServer::start_with(|c| {
        c.server.max_body_memory_mib = 1;
        c.server.max_body_bytes = 2 * 1024 * 1024;
    })
    .await;
    let task = |id: &str, pad: usize| json!({ "resourceType": "Task", "id": id, "status": "requested", "intent": "order", "description": "x".repeat(pad) });
    // A client declares a body of about 900 KiB and sends its headers and a first part only.
    let big = serde_json::to_vec(&task("slow", 900 * 1024)).unwrap();
    let mut slow = half_sent_put(addr_of(&server), "Task/slow", &big).await;
    let share = i64::try_from(big.len().div_ceil(1024) * 1024).unwrap();
    crate::support::until("the slow body holds its share", || async { gauge(&server, "herald_body_memory_bytes").await == share }).await;

    // A second write of 200 KiB does not fit in what is left: it waits.
    let (client, url, body) = (server.client.clone(), format!("{}/Task/quick", server.base), task("quick", 200 * 1024));
    let quick = tokio::spawn(async move { client.put(url).header("content-type", "application/fhir+json").json(&body).send().await });
    crate::support::until("the second write waits for room", || async { gauge(&server, "herald_body_memory_waiting").await == 1 }).await;
    assert!(!quick.is_finished(), "the second write was answered while the budget was spent");

    // The first body completes: both writes are answered, and the budget is whole again.
    slow.write_all(&big[1000..]).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(T, slow.read(&mut answer)).await.unwrap().unwrap();
    let status_line = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(status_line.starts_with("HTTP/1.1 201"), "{status_line}");
    let quick = tokio::time::timeout(T, quick).await.unwrap().unwrap().unwrap();
    assert_eq!(quick.status(), StatusCode::CREATED);
    crate::support::until("the budget is whole again", || async {
        gauge(&server, "herald_body_memory_bytes").await == 0 && gauge(&server, "herald_body_memory_waiting").await == 0
    })
    .await;
    let (status, stored) = server.get("/Task/slow").await;
    assert_eq!((status, stored["description"].as_str().map(str::len)), (StatusCode::OK, Some(900 * 1024)));
}
