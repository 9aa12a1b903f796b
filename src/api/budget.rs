//! The memory request bodies may hold at once (`server.max_body_memory_mib`).
//!
//! Each request that carries a body takes a share of one budget before its body is read: its
//! `Content-Length`, or `server.max_body_bytes` when the length is not declared (chunked), and
//! never more than the whole budget. It keeps that share until its answer is ready, which for a
//! write covers the body, its parsed form and its place in the committer's queue, and on a
//! cluster follower a forwarded write's body until the writer answered (the budget is the
//! outermost layer, `api::with_body_budget`). A request
//! that finds the budget spent waits for earlier ones to finish (its body stays unread in the
//! socket, so the client is slowed, not refused). Bodies over `server.max_body_bytes` are still
//! answered 413 by the body limit once read. What request bodies hold is therefore bounded by
//! the budget times the expansion of JSON into memory, whatever the number of connections.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::Semaphore;

use crate::ops::metrics::{metrics, Held};

/// The shared budget, in bytes (tokio's semaphore counts at most `u32::MAX >> 3` permits,
/// so one permit is one KiB).
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// Permits in all.
    total: u32,
    /// `server.max_body_bytes`: the share of a body of unknown length.
    max_body_bytes: usize,
}

const KIB: usize = 1024;

impl BodyBudget {
    pub fn new(budget_bytes: usize, max_body_bytes: usize) -> BodyBudget {
        let total = u32::try_from(budget_bytes.div_ceil(KIB)).unwrap_or(u32::MAX).clamp(1, u32::MAX >> 3);
        BodyBudget { permits: Arc::new(Semaphore::new(total as usize)), total, max_body_bytes }
    }

    /// The permits a request with these headers takes: none without a body.
    fn share(&self, req: &Request) -> u32 {
        let headers = req.headers();
        let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<usize>().ok());
        let bytes = match declared {
            Some(n) => n.min(self.max_body_bytes.saturating_add(1)),
            None if headers.contains_key(TRANSFER_ENCODING) => self.max_body_bytes,
            None => 0,
        };
        if bytes == 0 {
            return 0;
        }
        u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX).clamp(1, self.total)
    }
}

pub(super) async fn body_budget(State(budget): State<BodyBudget>, req: Request, next: Next) -> Response {
    let share = budget.share(&req);
    if share == 0 {
        return next.run(req).await;
    }
    let permit = match budget.permits.clone().try_acquire_many_owned(share) {
        Ok(permit) => permit,
        Err(_) => {
            let _waiting = Held::add(&metrics().body_memory_waiting, 1);
            // The semaphore is never closed.
            let Ok(permit) = budget.permits.clone().acquire_many_owned(share).await else { return next.run(req).await };
            permit
        }
    };
    // Given back when the answer is ready, or when the request is dropped (client gone).
    let _held = (permit, Held::add(&metrics().body_memory_bytes, i64::from(share) * KIB as i64));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder().method("POST").uri("/fhir/Task");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_body_takes_its_declared_length_bounded_by_the_limit_and_the_budget() {
        let b = BodyBudget::new(64 * KIB, 16 * KIB);
        assert_eq!(b.share(&req(&[])), 0, "no body, no share");
        assert_eq!(b.share(&req(&[("content-length", "0")])), 0);
        assert_eq!(b.share(&req(&[("content-length", "1")])), 1);
        assert_eq!(b.share(&req(&[("content-length", "4096")])), 4);
        assert_eq!(b.share(&req(&[("content-length", "999999999")])), 17, "over the limit: the limit (+1 byte) only; 413 follows");
        assert_eq!(b.share(&req(&[("transfer-encoding", "chunked")])), 16, "unknown length: the limit");
        assert_eq!(b.share(&req(&[("content-length", "not a number"), ("transfer-encoding", "chunked")])), 16);
        let small = BodyBudget::new(8 * KIB, 16 * KIB);
        assert_eq!(small.share(&req(&[("transfer-encoding", "chunked")])), 8, "never more than the whole budget");
        assert_eq!(small.permits.available_permits(), 8);
    }
}
