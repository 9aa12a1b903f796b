//! `WsClient`: a websocket client (tokio-tungstenite) speaking Herald's websocket channel, and
//! the helpers that create websocket subscriptions and fetch binding tokens over REST.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestServer;

/// What arrived on the socket.
#[derive(Debug)]
pub enum WsEvent {
    /// A text frame, parsed as JSON.
    Json(Value),
    /// The server closed, with its close code (if any).
    Closed(Option<u16>),
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A token answer: `token`, `expiration`, `subscription` ids and `websocket-url`.
pub struct Binding {
    pub token: String,
    pub expiration: String,
    pub subscriptions: Vec<String>,
    pub url: String,
}

pub fn param<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params["parameter"].as_array()?.iter().find(|p| p["name"] == name)
}

impl Binding {
    pub fn from_parameters(p: &Value) -> Binding {
        Binding {
            token: param(p, "token").unwrap()["valueString"].as_str().unwrap().to_string(),
            expiration: param(p, "expiration").unwrap()["valueDateTime"].as_str().unwrap().to_string(),
            subscriptions: p["parameter"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["name"] == "subscription")
                .map(|x| x["valueString"].as_str().unwrap().to_string())
                .collect(),
            url: param(p, "websocket-url").unwrap()["valueUrl"].as_str().unwrap().to_string(),
        }
    }
}

/// The notification type of a Bundle frame (`handshake`, `event-notification`, ...).
pub fn kind(bundle: &Value) -> &str {
    super::status::kind(&bundle["entry"][0]["resource"])
}

/// The subscription id a Bundle frame is for.
pub fn subscription_of(bundle: &Value) -> String {
    super::status::subscription_id(&bundle["entry"][0]["resource"])
}

/// Event numbers a Bundle frame carries.
pub fn event_numbers(bundle: &Value) -> Vec<u64> {
    super::status::event_numbers(&bundle["entry"][0]["resource"])
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        WsClient { stream }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send text");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream.send(Message::binary(bytes)).await.expect("send binary");
    }

    /// `bind-with-token <token>` (the plain text form).
    pub async fn bind(&mut self, token: &str) {
        self.send_text(&format!("bind-with-token {token}")).await;
    }

    /// The next text frame or the close, skipping pings and pongs; fails after `d`.
    pub async fn next_within(&mut self, d: Duration) -> WsEvent {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let next =
                tokio::time::timeout_at(deadline, self.stream.next()).await.unwrap_or_else(|_| panic!("nothing arrived within {d:?}"));
            match next {
                Some(Ok(Message::Text(t))) => return WsEvent::Json(serde_json::from_str(t.as_str()).expect("frames are JSON")),
                Some(Ok(Message::Close(frame))) => return WsEvent::Closed(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsEvent::Closed(None),
            }
        }
    }

    /// The next JSON frame; fails on a close.
    pub async fn next_json(&mut self, d: Duration) -> Value {
        match self.next_within(d).await {
            WsEvent::Json(v) => v,
            WsEvent::Closed(code) => panic!("socket closed ({code:?}) while a frame was expected"),
        }
    }

    /// The next Bundle of `kind`, skipping others (heartbeats, say).
    pub async fn next_of(&mut self, want: &str, d: Duration) -> Value {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_json(left).await;
            if kind(&v) == want {
                return v;
            }
        }
    }

    /// Event notifications until `n` events have arrived, in arrival order.
    pub async fn events(&mut self, n: usize, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        let mut count = 0;
        while count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next_of("event-notification", left).await;
            count += event_numbers(&v).len();
            out.push(v);
        }
        out
    }

    /// Waits for the server's close and returns its code.
    pub async fn closed(&mut self, d: Duration) -> Option<u16> {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let WsEvent::Closed(code) = self.next_within(left).await {
                return code;
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

impl TestServer {
    /// Creates a websocket subscription (active at once); `extra` is merged into the resource.
    pub async fn subscribe_ws(&self, topic: &str, extra: Value) -> String {
        let mut sub = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "topic": topic,
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" },
            "content": "id-only"
        });
        if let (Some(obj), Some(extra)) = (sub.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let (s, b) = self.post("Subscription", &sub).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["status"], "active", "a websocket subscription is active at creation: {b}");
        b["id"].as_str().unwrap().to_string()
    }

    /// `$get-ws-binding-token` for one subscription.
    pub async fn ws_token(&self, id: &str) -> Binding {
        let (s, b) = self.get(&format!("Subscription/{id}/$get-ws-binding-token")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        Binding::from_parameters(&b)
    }

    /// A socket bound to `ids` with one token; the handshakes are read (one per id).
    pub async fn ws_bound(&self, ids: &[&str]) -> WsClient {
        let (s, b) = self.get(&format!("Subscription/$get-ws-binding-token?id={}", ids.join(","))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let binding = Binding::from_parameters(&b);
        let mut ws = WsClient::connect(&binding.url).await;
        ws.bind(&binding.token).await;
        for _ in ids {
            let hs = ws.next_of("handshake", Duration::from_secs(5)).await;
            assert!(ids.contains(&subscription_of(&hs).as_str()));
        }
        ws
    }
}
