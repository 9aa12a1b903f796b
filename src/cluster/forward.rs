//! A follower forwards writes to the writer (the outermost layer of its router).
//!
//! Decisions:
//! - **What is forwarded** is decided on the method and the decoded path alone: every request
//!   that is not a read (`GET`/`HEAD`, or a `POST` to `_search`, `$status` or `$events`), and
//!   every binding-token request (tokens live in the writer's websocket hub, which delivers).
//!   Authorization does not depend on it: the node that serves a request authenticates and
//!   authorizes it as always, and a write that reached a follower's own handlers finds no
//!   committer there and answers 503.
//! - **Where**: the writer's `advertise_url`, read from the writer lease's value when a write
//!   arrives (one KV read). No writer, or a writer that does not answer within
//!   `cluster.forward_timeout`: 503 `transient` with `Retry-After`, and the client retries
//!   (the write may or may not have happened, as with any timeout; conditional creates and
//!   `If-Match` make a retry safe). A forwarded request carries `x-herald-forwarded-by` and is
//!   never forwarded twice.
//! - **Read your writes**: after the writer answered with a success, the follower waits until
//!   its own store has applied the stream's last sequence as it then is (which covers the
//!   write's commit), bounded by the forward timeout, and only then answers.
//! - **Read your writes on any node**: the writer stamps every answer with
//!   `X-Herald-Log-Seq`, the commit seq its store had applied when it answered (a write's own
//!   commit or later). A read sent to a follower with `X-Herald-Min-Log-Seq: N` is served once
//!   that follower applied commit N, or answered 503 with `Retry-After` if it did not within
//!   `cluster.forward_timeout`. The writer serves such a read at once.
//! - Headers go through as they are, but for the hop-by-hop ones and `Host`; the caller's
//!   credentials reach the writer, which checks them.
//! - **Websockets**: the writer delivers, so a websocket opened on a follower's
//!   `$subscription-ws` is relayed, message by message in both directions, to the writer's
//!   endpoint (`ws://` or `wss://` of its advertise URL, same path and query); the binding
//!   token the client sends is the writer's to check. The upstream connection is made before
//!   the client's upgrade is accepted, so a writer that does not answer gives 503. When either
//!   side closes, or the follower's role ends, both are closed (1001 for the client then: it
//!   reconnects, and a new binding replays what it missed).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Applied, Node, FORWARDED, WRITER_LEASE};
use crate::api::outcome::ApiError;
use crate::fhir::IssueType;

pub struct Forwarder {
    pub node: Arc<Node>,
    pub client: reqwest::Client,
    pub applied: Applied,
    pub max_body_bytes: usize,
    /// Cancelled when this node's follower role ends (it won the lease, or failed): forwards
    /// still waiting answer 503 at once, so that the new role does not wait for them.
    pub ended: tokio_util::sync::CancellationToken,
}

/// The path with `%24` read as `$` (operation names may come either way).
fn decoded_path(path: &str) -> String {
    path.replace("%24", "$")
}

/// Whether a follower serves this request itself (module doc).
pub fn served_locally(method: &Method, path: &str) -> bool {
    let path = decoded_path(path);
    if path.contains("$get-ws-binding-token") {
        return false;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    *method == Method::POST && (path.ends_with("/_search") || path.ends_with("/$status") || path.ends_with("/$events"))
}

const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host", "content-length"];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn unavailable(why: impl Into<String>) -> Response {
    let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient, why).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

impl Forwarder {
    /// The writer's URL, from its lease (`None`: no writer now, or it is this node).
    async fn writer_url(&self) -> Option<String> {
        let holder = self.node.leases.holder(WRITER_LEASE).await.ok()??;
        let (node, url) = holder.split_once(' ')?;
        (node != self.node.node_id).then(|| url.trim_end_matches('/').to_owned())
    }
}

/// Whether this is a websocket upgrade of the notification endpoint.
fn websocket(req: &Request) -> bool {
    decoded_path(req.uri().path()).ends_with("/$subscription-ws")
        && req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The answer header naming the writer's applied commit seq.
pub const LOG_SEQ: &str = "x-herald-log-seq";
/// The request header asking a node to have applied at least this commit seq first.
pub const MIN_LOG_SEQ: &str = "x-herald-min-log-seq";

/// The writer's layer: stamps every answer with its store's applied log seq.
pub async fn stamp(State(store): State<crate::store::Store>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&store.log_seq().to_string()) {
        resp.headers_mut().insert(HeaderName::from_static(LOG_SEQ), v);
    }
    resp
}

/// The seq a request asks for in `X-Herald-Min-Log-Seq` (`Err`: unreadable).
fn min_log_seq(req: &Request) -> Result<Option<u64>, ()> {
    match req.headers().get(MIN_LOG_SEQ) {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|t| t.trim().parse().ok()).map(Some).ok_or(()),
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn forward(State(f): State<Arc<Forwarder>>, req: Request, next: Next) -> Response {
    if websocket(&req) {
        return relay::open(f, req).await;
    }
    if served_locally(req.method(), req.uri().path()) {
        match min_log_seq(&req) {
            Ok(None) => {}
            Ok(Some(seq)) => {
                let mut applied = f.applied.clone();
                let reached = tokio::time::timeout(f.node.forward_timeout, applied.wait_for(|a| *a >= seq)).await;
                if !matches!(reached, Ok(Ok(_))) {
                    return unavailable(format!("this node has not applied commit {seq} yet; retry shortly"));
                }
            }
            Err(()) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    IssueType::Invalid,
                    format!("{MIN_LOG_SEQ} must be a commit sequence number"),
                )
                .into_response()
            }
        }
        return next.run(req).await;
    }
    if req.headers().contains_key(FORWARDED) {
        return unavailable("this node is not the writer (the write was forwarded here by another node); retry shortly");
    }
    let Some(writer) = f.writer_url().await else {
        return unavailable("the cluster has no writer at the moment (an election is under way); retry shortly");
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, f.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueType::TooCostly,
                format!("the body is larger than {} bytes", f.max_body_bytes),
            )
            .into_response()
        }
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    if let Ok(v) = HeaderValue::from_str(&f.node.node_id) {
        headers.insert(HeaderName::from_static(FORWARDED), v);
    }
    let exchange = async {
        let answer = f
            .client
            .request(parts.method.clone(), format!("{writer}{path}"))
            .headers(headers)
            .body(body)
            .timeout(f.node.forward_timeout)
            .send()
            .await
            .map_err(|e| (e, "the writer did not answer; retry shortly"))?;
        let status = answer.status();
        let mut out_headers = HeaderMap::new();
        copy_headers(answer.headers(), &mut out_headers);
        let bytes = answer.bytes().await.map_err(|e| (e, "the writer's answer was cut off; retry shortly"))?;
        if status.is_success() {
            read_your_write(&f).await;
        }
        Ok((status, out_headers, bytes))
    };
    let outcome = tokio::select! {
        outcome = exchange => outcome,
        () = f.ended.cancelled() => {
            return unavailable("the cluster's writer is changing; retry shortly");
        }
    };
    let (status, out_headers, bytes) = match outcome {
        Ok(answer) => answer,
        Err((e, why)) => {
            tracing::warn!(%writer, error = %e, "forwarding a write to the writer failed");
            return unavailable(why);
        }
    };
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = out_headers;
    resp
}

/// Waits until this node applied the stream's last sequence as it is now (bounded).
async fn read_your_write(f: &Forwarder) {
    let Ok(last) = f.node.reader.last_seq().await else { return };
    let mut applied = f.applied.clone();
    let waited = tokio::time::timeout(f.node.forward_timeout.min(Duration::from_secs(10)), applied.wait_for(|seq| *seq >= last)).await;
    if waited.is_err() {
        tracing::warn!(last, "this node did not apply a forwarded write's commit in time; answering anyway");
    }
}

/// The websocket relay (module doc).
mod relay {
    use std::sync::Arc;

    use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
    use axum::extract::{FromRequestParts, Request};
    use axum::response::{IntoResponse, Response};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    use tokio_tungstenite::tungstenite::Message as Up;

    use super::{unavailable, Forwarder};

    pub(super) async fn open(f: Arc<Forwarder>, req: Request) -> Response {
        let Some(writer) = f.writer_url().await else {
            return unavailable("the cluster has no writer at the moment (an election is under way); retry shortly");
        };
        let (mut parts, _body) = req.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => u,
            Err(rejection) => return rejection.into_response(),
        };
        let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let target = match writer.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}{path}"),
            Some((_, rest)) => format!("ws://{rest}{path}"),
            None => return unavailable("the writer's address is not a URL"),
        };
        let connected = tokio::time::timeout(f.node.forward_timeout, tokio_tungstenite::connect_async(target.as_str())).await;
        let upstream = match connected {
            Ok(Ok((upstream, _))) => upstream,
            Ok(Err(e)) => {
                tracing::warn!(%target, error = %e, "relaying a websocket to the writer failed");
                return unavailable("the writer's websocket endpoint did not answer; retry shortly");
            }
            Err(_) => return unavailable("the writer's websocket endpoint did not answer; retry shortly"),
        };
        let ended = f.ended.clone();
        upgrade.on_upgrade(move |client| pipe(client, upstream, ended))
    }

    fn up(m: ws::Message) -> Up {
        match m {
            ws::Message::Text(t) => Up::Text(t.as_str().into()),
            ws::Message::Binary(b) => Up::Binary(b),
            ws::Message::Ping(b) => Up::Ping(b),
            ws::Message::Pong(b) => Up::Pong(b),
            ws::Message::Close(c) => Up::Close(c.map(|c| CloseFrame { code: CloseCode::from(c.code), reason: c.reason.as_str().into() })),
        }
    }

    fn down(m: Up) -> Option<ws::Message> {
        Some(match m {
            Up::Text(t) => ws::Message::Text(t.as_str().into()),
            Up::Binary(b) => ws::Message::Binary(b),
            Up::Ping(b) => ws::Message::Ping(b),
            Up::Pong(b) => ws::Message::Pong(b),
            Up::Close(c) => ws::Message::Close(c.map(|c| ws::CloseFrame { code: u16::from(c.code), reason: c.reason.as_str().into() })),
            Up::Frame(_) => return None,
        })
    }

    async fn pipe(
        client: WebSocket,
        upstream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        ended: tokio_util::sync::CancellationToken,
    ) {
        let (mut client_tx, mut client_rx) = client.split();
        let (mut up_tx, mut up_rx) = upstream.split();
        loop {
            tokio::select! {
                m = client_rx.next() => match m {
                    Some(Ok(m)) => {
                        let closing = matches!(m, ws::Message::Close(_));
                        if up_tx.send(up(m)).await.is_err() || closing {
                            break;
                        }
                    }
                    _ => break,
                },
                m = up_rx.next() => match m {
                    Some(Ok(m)) => {
                        let closing = matches!(m, Up::Close(_));
                        if let Some(m) = down(m) {
                            if client_tx.send(m).await.is_err() || closing {
                                break;
                            }
                        }
                    }
                    _ => break,
                },
                () = ended.cancelled() => {
                    let bye = ws::CloseFrame { code: 1001, reason: "this node's cluster role changes; reconnect".into() };
                    let _ = client_tx.send(ws::Message::Close(Some(bye))).await;
                    break;
                }
            }
        }
        let _ = up_tx.close().await;
        let _ = client_tx.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_and_writes_and_binding_tokens_go_to_the_writer() {
        assert!(served_locally(&Method::GET, "/fhir/Task/1"));
        assert!(served_locally(&Method::POST, "/fhir/Task/_search"));
        assert!(served_locally(&Method::POST, "/fhir/Subscription/s/$status"));
        assert!(served_locally(&Method::POST, "/fhir/Subscription/s/%24events"));
        assert!(!served_locally(&Method::POST, "/fhir/Task"));
        assert!(!served_locally(&Method::PUT, "/fhir/Task/1"));
        assert!(!served_locally(&Method::PATCH, "/fhir/Task/1"));
        assert!(!served_locally(&Method::DELETE, "/fhir/Task?identifier=x"));
        assert!(!served_locally(&Method::POST, "/fhir"));
        assert!(!served_locally(&Method::POST, "/fhir/Subscription/s/$resend"));
        assert!(!served_locally(&Method::GET, "/fhir/Subscription/s/$get-ws-binding-token"));
        assert!(!served_locally(&Method::GET, "/fhir/Subscription/s/%24get-ws-binding-token"));
        assert!(!served_locally(&Method::POST, "/admin/api/subscriptions/s/replay"));
    }
}
