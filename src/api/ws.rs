//! The websocket channel's HTTP side.
//!
//! `$get-ws-binding-token` (R5 `OperationDefinition/Subscription-get-ws-binding-token`; the
//! Backport IG's `backport-subscription-get-ws-binding-token` has the same parameters):
//! `GET|POST /fhir/Subscription/{id}/$get-ws-binding-token`, or at type level with `id`
//! (repeatable, comma-separable; at least one: Herald does not hand out tokens for "every
//! subscription"). Every id must be a websocket subscription (404 unknown, 422 another
//! channel). Answers a `Parameters` with `token`, `expiration`, one `subscription` per id
//! (valueString) and `websocket-url`; not idempotent, never cached, the token never logged.
//!
//! `GET /fhir/$subscription-ws`: the websocket itself. One task per connection reads client
//! messages (`channels::websocket::protocol`), binds through the `Hub`, and writes the frames
//! the lanes queue. Bad input never ends the server: an invalid message gets an
//! OperationOutcome frame; an unknown or expired token too, and the socket is closed with
//! 1008 if nothing is bound on it; binary frames get an error frame; messages over
//! `websocket.max_message_bytes` end the connection. A socket a lane gave up on (too slow) is
//! closed with 1008; on shutdown every socket is closed with 1001.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tracing::Instrument;

use super::access::{Access, Caller};
use super::outcome::{fhir_response, ApiError};
use super::rest::check_id;
use super::Shared;
use crate::auth::{Perm, Principal};
use crate::channels::websocket::protocol::{self, ClientMessage};
use crate::channels::websocket::tokens::{digest, TokenError};
use crate::channels::websocket::{Frame, Socket};
use crate::fhir::instant::format_millis;
use crate::fhir::IssueType;

/// Most subscriptions one token may name.
const MAX_IDS: usize = 100;

/// Per-connection read buffer, in bytes.
const READ_BUFFER: usize = 4096;

/// How long closing a socket may take before it is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

fn is_websocket(resource: &Value) -> bool {
    crate::fhir::subscription::fields::channel_code(resource) == Some("websocket")
}

/// A token for `ids`, every one of them a websocket subscription the caller may use (404 for
/// an unknown one and for another client's alike).
fn issue_token(state: &Shared, principal: Arc<Principal>, ids: Vec<String>) -> Result<Response, ApiError> {
    let access = Access::new(state, &principal);
    access.require("Subscription", Perm::Read)?;
    let mut unique = BTreeSet::new();
    let ids: Vec<String> = ids.into_iter().filter(|id| unique.insert(id.clone())).collect();
    if ids.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::Required, "name the subscription(s) with 'id'"));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueType::TooCostly, format!("at most {MAX_IDS} subscriptions per token")));
    }
    for id in &ids {
        check_id(id)?;
        let (resource, _) = access.subscription(id, Perm::Read)?;
        if !is_websocket(&resource) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueType::BusinessRule,
                format!("Subscription/{id} is not a websocket subscription; binding tokens are only for websocket"),
            ));
        }
    }
    let issued = state.hub.tokens().issue(ids.clone(), principal.clone()).map_err(|e| match e {
        TokenError::Full => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient, e.to_string()),
        TokenError::Random(_) => ApiError::internal(&e),
    })?;
    let mut parameter = vec![
        json!({ "name": "token", "valueString": issued.token.expose() }),
        json!({ "name": "expiration", "valueDateTime": format_millis(issued.expires_at) }),
    ];
    parameter.extend(ids.iter().map(|id| json!({ "name": "subscription", "valueString": id })));
    parameter.push(json!({ "name": "websocket-url", "valueUrl": state.hub.config().url }));
    let mut resp = fhir_response(StatusCode::OK, &json!({ "resourceType": "Parameters", "parameter": parameter }));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn ids_from(pairs: Vec<(String, String)>) -> Result<Vec<String>, ApiError> {
    let mut ids = Vec::new();
    for (k, v) in pairs {
        if k != "id" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                IssueType::NotSupported,
                format!("$get-ws-binding-token takes 'id', not '{k}'"),
            ));
        }
        ids.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string));
    }
    Ok(ids)
}

fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

pub(super) async fn token_instance(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Caller(principal): Caller,
) -> Result<Response, ApiError> {
    issue_token(&state, principal, vec![id])
}

pub(super) async fn token_type_level(
    State(state): State<Shared>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    issue_token(&state, principal, ids_from(query_pairs(raw))?)
}

/// POST takes the ids in the query, a `Parameters` body (`id` as valueString/valueId), or a form.
pub(super) async fn token_type_level_post(
    State(state): State<Shared>,
    Caller(principal): Caller,
    RawQuery(raw): RawQuery,
    body: String,
) -> Result<Response, ApiError> {
    let mut pairs = query_pairs(raw);
    if let Ok(params) = serde_json::from_str::<Value>(&body) {
        for p in params.get("parameter").and_then(Value::as_array).into_iter().flatten() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = ["valueString", "valueId"].iter().find_map(|k| p.get(*k).and_then(Value::as_str)).unwrap_or_default();
            pairs.push((name.to_string(), value.to_string()));
        }
    } else if !body.trim().is_empty() {
        pairs.extend(url::form_urlencoded::parse(body.as_bytes()).into_owned());
    }
    issue_token(&state, principal, ids_from(pairs)?)
}

/// `GET /fhir/$subscription-ws`: upgrades, within `websocket.max_connections`.
pub(super) async fn upgrade(State(state): State<Shared>, ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let text = format!("this is the websocket endpoint; connect with a websocket client ({})", rejection.body_text());
            return ApiError::new(rejection.status(), IssueType::Invalid, text).into_response();
        }
    };
    let Some(socket) = state.hub.open_socket() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient, "too many websocket connections; retry later")
            .into_response();
    };
    let max = state.hub.config().max_message_bytes;
    let tracker = state.hub.sockets().clone();
    // Small per-connection buffers (the library's defaults are 128 KiB each): clients send
    // short control messages, and every frame Herald writes is flushed as one message.
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |ws| tracker.track_future(serve(state, ws, socket)))
}

async fn send_close(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
}

async fn send_text(ws: &mut WebSocket, text: String) -> bool {
    ws.send(Message::Text(Utf8Bytes::from(text))).await.is_ok()
}

/// What the socket does after a client message.
enum Flow {
    Continue,
    Close(u16, &'static str),
}

/// One connection's bindings: subscription to the tokens (by digest) that bound it here.
#[derive(Default)]
struct Bindings {
    by_sub: BTreeMap<String, BTreeSet<[u8; 32]>>,
}

impl Bindings {
    fn is_empty(&self) -> bool {
        self.by_sub.is_empty()
    }
}

async fn on_text(state: &Shared, ws: &mut WebSocket, socket: &Socket, bindings: &mut Bindings, text: &str) -> Flow {
    let hub = &state.hub;
    match protocol::parse(text) {
        ClientMessage::Ping => {
            send_text(ws, protocol::pong_frame()).await;
            Flow::Continue
        }
        ClientMessage::Invalid(why) => {
            send_text(ws, protocol::error_frame(IssueType::Invalid, why)).await;
            Flow::Continue
        }
        ClientMessage::Bind { token, since } => {
            let Some(redeemed) = hub.tokens().redeem(&token) else {
                tracing::debug!("bind refused: unknown or expired token");
                send_text(ws, protocol::error_frame(IssueType::Security, "the binding token is unknown or expired")).await;
                return if bindings.is_empty() { Flow::Close(1008, "invalid or expired binding token") } else { Flow::Continue };
            };
            let key = digest(&token);
            let access = Access::new(state, &redeemed.holder);
            for sub in redeemed.subscriptions {
                // Checked again now: the holder may have lost the subscription (deleted, its
                // id reused by another client) since the token was issued.
                if access.subscription(&sub, Perm::Read).is_err() {
                    send_text(ws, protocol::error_frame(IssueType::NotFound, format!("Subscription/{sub} not found"))).await;
                    continue;
                }
                match hub.bind(&sub, &socket.handle, since).await {
                    Ok(()) => {
                        bindings.by_sub.entry(sub).or_default().insert(key);
                    }
                    Err(e) => {
                        send_text(ws, protocol::error_frame(IssueType::NotFound, e.to_string())).await;
                    }
                }
            }
            if bindings.is_empty() {
                Flow::Close(1008, "nothing could be bound")
            } else {
                Flow::Continue
            }
        }
        ClientMessage::Unbind { token } => {
            let key = digest(&token);
            let mut found = false;
            bindings.by_sub.retain(|sub, keys| {
                if keys.remove(&key) {
                    found = true;
                    if keys.is_empty() {
                        hub.unbind(sub, socket.handle.id);
                        return false;
                    }
                }
                true
            });
            if !found {
                send_text(ws, protocol::error_frame(IssueType::NotFound, "nothing on this socket was bound with that token")).await;
            }
            Flow::Continue
        }
    }
}

fn text_of(frame: Frame) -> Option<Message> {
    Utf8Bytes::try_from(frame).ok().map(Message::Text)
}

async fn serve(state: Shared, mut ws: WebSocket, mut socket: Socket) {
    let span = tracing::info_span!("ws.connection", socket = socket.handle.id);
    async move {
        tracing::debug!("websocket open");
        let shutdown = state.hub.shutdown().clone();
        let kicked = socket.kicked.clone();
        let mut bindings = Bindings::default();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    send_close(&mut ws, 1001, "server shutting down").await;
                    break;
                }
                () = kicked.cancelled() => {
                    send_close(&mut ws, 1008, "too slow: send queue stayed full").await;
                    break;
                }
                frame = socket.frames.recv() => {
                    let Some(message) = frame.and_then(text_of) else { continue };
                    // A write blocked by a client that does not read ends when a lane gives up
                    // on the socket, or at shutdown.
                    let sent = tokio::select! {
                        r = ws.send(message) => r.is_ok(),
                        () = kicked.cancelled() => false,
                        () = shutdown.cancelled() => false,
                    };
                    if !sent {
                        break;
                    }
                }
                message = ws.recv() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Flow::Close(code, reason) = on_text(&state, &mut ws, &socket, &mut bindings, text.as_str()).await {
                            send_close(&mut ws, code, reason).await;
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        send_text(&mut ws, protocol::error_frame(IssueType::NotSupported, "binary frames are not supported; send text")).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed (oversized or malformed frame, or reset)");
                        send_close(&mut ws, 1009, "message too big or malformed").await;
                        break;
                    }
                },
            }
        }
        for sub in bindings.by_sub.keys() {
            state.hub.unbind(sub, socket.handle.id);
        }
        tracing::debug!("websocket closed");
    }
    .instrument(span)
    .await
}
