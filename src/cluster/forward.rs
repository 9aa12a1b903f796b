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
//! - Headers go through as they are, but for the hop-by-hop ones and `Host`; the caller's
//!   credentials reach the writer, which checks them.

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

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn forward(State(f): State<Arc<Forwarder>>, req: Request, next: Next) -> Response {
    if served_locally(req.method(), req.uri().path()) {
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
