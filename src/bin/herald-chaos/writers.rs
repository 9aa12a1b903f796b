//! Writers: tasks that each create a Task every `period` until stopped, through whatever
//! happens to Herald meanwhile (a refused connection or an error answer is counted and the
//! writer carries on: that is how clients behave across a crash). Each write acknowledged with
//! 201 is recorded with its Task id and the moment it was sent: the ledger's list of what must
//! not be lost, and the start of a delivery latency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::client;

/// A write acknowledged with 201.
#[derive(Clone, Debug)]
pub struct Acked {
    pub id: String,
    pub sent: Instant,
    /// When the 201 arrived.
    pub done: Instant,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    acked: Mutex<Vec<Acked>>,
    /// Writes that got no answer (connection refused or cut, timeout).
    unanswered: AtomicU64,
    /// Writes answered with anything but 201, by status.
    refused: Mutex<BTreeMap<u16, u64>>,
}

pub struct Writers {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

/// What the writers did.
pub struct Tally {
    pub acked: Vec<Acked>,
    pub unanswered: u64,
    /// Answers other than 201, by status.
    pub refused: BTreeMap<u16, u64>,
}

impl Tally {
    /// "12 × 503, 1 × 500", or "none".
    pub fn refused_text(&self) -> String {
        if self.refused.is_empty() {
            return "none".to_string();
        }
        self.refused.iter().map(|(s, n)| format!("{n} × {s}")).collect::<Vec<_>>().join(", ")
    }
}

impl Writers {
    /// `count` writers against `base`, each writing once every `period`.
    pub fn start(client: &reqwest::Client, base: &str, count: usize, period: Duration) -> Writers {
        Writers::start_over(client, &[base.to_string()], count, period)
    }

    /// `count` writers spread over `bases` (the nodes of a cluster): writer `i` sends its `k`th
    /// write to `bases[(i + k) % bases.len()]`, so that every node gets writes all the time.
    pub fn start_over(client: &reqwest::Client, bases: &[String], count: usize, period: Duration) -> Writers {
        let shared = Arc::new(Shared::default());
        let mut tasks = JoinSet::new();
        let bases: Arc<Vec<String>> = Arc::new(bases.to_vec());
        for i in 0..count.max(1) {
            let (client, bases, shared) = (client.clone(), bases.clone(), shared.clone());
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut k = i;
                while !shared.stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let Some(base) = bases.get(k % bases.len().max(1)) else { return };
                    k = k.wrapping_add(1);
                    let sent = Instant::now();
                    match client::create_task(&client, base, 0).await {
                        Ok((_, Some(id))) => {
                            let done = Instant::now();
                            shared.acked.lock().unwrap_or_else(PoisonError::into_inner).push(Acked { id, sent, done });
                        }
                        Ok((a, None)) => {
                            *shared.refused.lock().unwrap_or_else(PoisonError::into_inner).entry(a.status).or_insert(0) += 1;
                        }
                        Err(_) => {
                            shared.unanswered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        Writers { shared, tasks }
    }

    /// When the first write sent at or after `since` was acknowledged, if one was yet.
    pub fn first_acked_since(&self, since: Instant) -> Option<Instant> {
        let acked = self.shared.acked.lock().unwrap_or_else(PoisonError::into_inner);
        acked.iter().filter(|a| a.sent >= since).map(|a| a.done).min()
    }

    /// Stops every writer (each finishes the write it has in flight) and returns the tally.
    pub async fn stop(mut self) -> Tally {
        self.shared.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        Tally {
            acked: std::mem::take(&mut *self.shared.acked.lock().unwrap_or_else(PoisonError::into_inner)),
            unanswered: self.shared.unanswered.load(Ordering::Relaxed),
            refused: std::mem::take(&mut *self.shared.refused.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }
}
