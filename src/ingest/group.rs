//! Apply groups: the commits of consecutive requests applied to the store as one sled batch.
//!
//! sled 0.34 rolls its IO buffer on every `apply_batch` (the buffer is written and synced by its
//! thread pool, which wakes every idle pool thread), so applying each request's commit on its
//! own cost more than planning it. The committer therefore plans the requests queued behind one
//! another into one `Group` and applies it once its queue is empty (or the group is full). Each
//! commit stays atomic, since a group is applied all or nothing, and nothing in a group is
//! answered or published before the flush that follows its apply, as before.
//!
//! While a group is open, later commits must see what earlier ones did:
//! - subscription states are merged into the committer at once; `undo` keeps what they were,
//!   and a refused apply puts them back and answers every request of the group as failed;
//! - resources written are kept in `pending`, which `resolve()`, notificationShape and
//!   `output-modified` read before the store (`resolver::Pending`), when some subscribed topic
//!   can make planning read other resources (`matching::any_change_reads_others`); otherwise
//!   only their keys are (`written`), the group is `partial`, and a Provenance write (which
//!   always reads others) applies it first;
//! - a write to a resource the group already holds applies the group first, so each resource
//!   appears at most once in it and its stored latest version is the one before the group's;
//! - requests that read other stored state while planning (side-car feeds, `$emit`, resends,
//!   dead letters, retention) or that change the registry (Subscription, SubscriptionTopic or
//!   in R4 Basic, SearchParameter) apply the group first and are applied alone, as every request was.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio::sync::mpsc;

use super::flusher::FlushItem;
use super::{IngestError, LaneCommand, Request};
use crate::store::{Commit, SubState};

/// Most requests one group takes before it is applied, so that a steady stream of requests
/// still gets applied (and answered) regularly.
pub(super) const MAX_REQUESTS: usize = 128;

/// Commits planned and not yet applied, with what to do once they are.
#[derive(Default)]
pub(super) struct Group {
    /// The commits, in order.
    pub commit: Commit,
    /// `Type/id` of each resource written, with its new state (`None`: deleted), unless the
    /// group is `partial`.
    pub pending: HashMap<String, Option<Value>>,
    /// `Type/id` of each resource written.
    pub written: HashSet<String>,
    /// Some written resource is missing from `pending`: nothing that reads other resources
    /// while planning may join.
    pub partial: bool,
    /// Subscription states before the group changed them (`None`: there was none).
    undo: HashMap<String, Option<SubState>>,
    /// Replies and lane publications, handed to the flusher once the group is applied.
    items: Vec<FlushItem>,
    /// Requests planned into the group.
    pub requests: usize,
    /// Set while a request that may join the group is being planned.
    pub open: bool,
    /// When the group got its first commit or item (`delivery.ack_linger` counts from it).
    pub since: Option<std::time::Instant>,
}

/// Whether `req` may be planned into a group (see the module doc for the others).
pub(super) fn joins(req: &Request) -> bool {
    match req {
        Request::Write { entries, .. } => {
            // By type alone (in R4 every `Basic`, since an update can make one a topic or not).
            entries.iter().all(|e| !super::plan::changes_registry(&e.resource_type, None))
        }
        Request::Lane(_, cmd) => matches!(cmd, LaneCommand::Delivered { .. } | LaneCommand::Retry { .. } | LaneCommand::Status { .. }),
        Request::External { .. } | Request::Emit { .. } | Request::Resend { .. } => false,
    }
}

impl Group {
    pub(super) fn is_empty(&self) -> bool {
        self.commit.is_empty() && self.items.is_empty()
    }

    /// Whether a client waits for something of the group (a write's answer). A group of
    /// delivery results only is waited for by nobody: a result lost to a crash before its
    /// flush means that notification is sent again (at least once), never that one is lost.
    pub(super) fn awaited(&self) -> bool {
        self.items.iter().any(|i| i.reply.is_some())
    }

    /// Whether the group writes `Type/id`.
    pub(super) fn holds(&self, resource_type: &str, id: &str) -> bool {
        !self.written.is_empty() && self.written.contains(&format!("{resource_type}/{id}"))
    }

    /// Records the state `sub` had before the group first changed it.
    pub(super) fn remember(&mut self, sub: &str, before: Option<SubState>) {
        if !self.undo.contains_key(sub) {
            self.undo.insert(sub.to_owned(), before);
        }
    }

    pub(super) fn push(&mut self, item: FlushItem) {
        self.items.push(item);
    }

    /// Empties the group (still open if it was), for the committer to apply its commit as
    /// one batch; `Settle` then answers what it held.
    pub(super) fn take(&mut self) -> (Commit, Settle) {
        let open = self.open;
        let Group { commit, undo, items, .. } = std::mem::take(self);
        self.open = open;
        (commit, Settle { undo, items })
    }
}

/// What a taken group owes once its commit was applied, or refused.
pub(super) struct Settle {
    undo: HashMap<String, Option<SubState>>,
    items: Vec<FlushItem>,
}

impl Settle {
    /// The subscriptions whose lanes the group tells (its commit log entry names them).
    pub(super) fn lanes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (sub, _) in self.items.iter().flat_map(|i| i.lanes.iter()) {
            if !out.contains(sub) {
                out.push(sub.clone());
            }
        }
        out
    }

    /// Applied: its items go to the flusher. Refused: the subscription states it changed are
    /// put back, its requests are answered as failed (nothing of theirs was stored) and the
    /// error is returned.
    pub(super) fn settle(
        self,
        applied: Result<(), IngestError>,
        states: &mut HashMap<String, SubState>,
        flush_tx: &mpsc::UnboundedSender<FlushItem>,
    ) -> Result<(), IngestError> {
        let Settle { undo, items } = self;
        match applied {
            Ok(()) => {
                // Every apply is followed by a flush, even one nobody waits for: reads wait
                // for it (`api::committed`).
                if items.is_empty() {
                    let _ = flush_tx.send(FlushItem { reply: None, lanes: Vec::new() });
                }
                for item in items {
                    let _ = flush_tx.send(item);
                }
                Ok(())
            }
            Err(e) => {
                for (sub, before) in undo {
                    match before {
                        Some(state) => states.insert(sub, state),
                        None => states.remove(&sub),
                    };
                }
                for item in items {
                    if let Some(reply) = item.reply {
                        reply(false);
                    }
                }
                Err(e)
            }
        }
    }
}
