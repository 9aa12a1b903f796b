//! Read committed: an answer built from what a request read is sent only once everything that
//! read could have seen is durable.
//!
//! The committer applies a commit to the store before the group flush makes it durable, and a
//! read in that window sees it. Had Herald answered then and crashed before the flush, the
//! client would hold a version, or an event number, that no longer exists and may be given to
//! another change after the restart. So a reading route notes the store's applied mark after
//! its handler ran and waits for the flusher to make that mark durable (normally the flush
//! already under way, a fraction of a millisecond). Past `store.read_committed_timeout` (a
//! failing disk) it answers 503 with `Retry-After`, never the unflushed state.
//!
//! Writes need no wait: they are answered after the flush that covers them.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::outcome::ApiError;
use super::{Needs, Shared};
use crate::fhir::IssueType;

/// Whether what `needs` describes answers with what it read from the store.
fn reads(needs: Needs) -> bool {
    match needs {
        Needs::Instance(perm) | Needs::Type(perm) => matches!(perm, crate::auth::Perm::Read | crate::auth::Perm::Search),
        // Operations read subscription state and events; `$resend` is answered after its own
        // flush, and waiting once more costs it nothing it could see.
        Needs::Subscriptions(_) | Needs::Entries => true,
        Needs::Nothing | Needs::Everything(_) => false,
    }
}

pub(super) async fn read_committed(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let reading = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| super::route_for(m.as_str()))
        .and_then(|r| r.needs(req.method()))
        .is_some_and(reads);
    let resp = next.run(req).await;
    if !reading || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return resp;
    }
    let mark = state.store.applied_mark();
    match tokio::time::timeout(state.read_committed_timeout, state.store.durable_through(mark)).await {
        Ok(()) => resp,
        Err(_) => {
            tracing::warn!(mark, "a read's view did not become durable in time; answering 503");
            let mut refused = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "the store has not made recent changes durable yet; retry shortly",
            )
            .into_response();
            refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            refused
        }
    }
}
