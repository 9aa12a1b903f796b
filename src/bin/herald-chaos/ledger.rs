//! The delivery invariants, checked from what crossed the wire: one subscription's
//! `Delivery` log (every request its receiver got whole, in arrival order) against the writes
//! Herald acknowledged. Pure: no IO, so it is tested on hand-made logs below.
//!
//! - lost: an acknowledged write whose event no request carried that the receiver accepted;
//! - out of order: a first delivery (any answer) of a number other than the lowest number not
//!   yet delivered (event n+1 must never be sent before n was accepted);
//! - reused: a number carried for two different Tasks (each write here creates a new Task);
//! - duplicates: accepted deliveries of a number already accepted (at least once allows them);
//! - two numbers: one Task carried under two different numbers.

use std::collections::{HashMap, HashSet};

use crate::receiver::Delivery;
use crate::report::Counters;

#[derive(Debug, Default)]
pub struct Ledger {
    pub counters: Counters,
    pub two_numbers: u64,
    /// The highest n such that 1..=n were all accepted.
    pub accepted_through: u64,
    /// Event notifications received (any answer).
    pub received: u64,
    /// A few lost Task ids and the first out-of-order arrival, for the report.
    pub examples: Vec<String>,
}

impl Ledger {
    pub fn lost(&self) -> u64 {
        self.counters.lost.unwrap_or(0)
    }
}

pub fn check<'a>(acked: impl IntoIterator<Item = &'a str>, log: &[Delivery]) -> Ledger {
    let mut l = Ledger::default();
    let mut seen = HashSet::new();
    let mut next = 1u64;
    let mut accepted = HashSet::new();
    let mut accepted_tasks = HashSet::new();
    let mut task_of: HashMap<u64, &str> = HashMap::new();
    let mut number_of: HashMap<&str, u64> = HashMap::new();
    let (mut reused, mut two, mut out_of_order, mut duplicates) = (HashSet::new(), HashSet::new(), 0u64, 0u64);
    for d in log.iter().filter(|d| d.kind == "event-notification") {
        for e in &d.events {
            l.received += 1;
            if seen.insert(e.number) {
                if e.number != next {
                    out_of_order += 1;
                    if l.examples.len() < 5 {
                        l.examples.push(format!("event {} arrived first while {next} was the next due", e.number));
                    }
                }
                while seen.contains(&next) {
                    next += 1;
                }
            }
            if d.accepted && !accepted.insert(e.number) {
                duplicates += 1;
            }
            if let Some(task) = e.task.as_deref() {
                if d.accepted {
                    accepted_tasks.insert(task);
                }
                if *task_of.entry(e.number).or_insert(task) != task {
                    reused.insert(e.number);
                }
                if *number_of.entry(task).or_insert(e.number) != e.number {
                    two.insert(task);
                }
            }
        }
    }
    let mut lost = 0u64;
    for id in acked {
        if !accepted_tasks.contains(id) {
            lost += 1;
            if l.examples.len() < 5 {
                l.examples.push(format!("Task/{id} acknowledged, never delivered"));
            }
        }
    }
    while accepted.contains(&(l.accepted_through + 1)) {
        l.accepted_through += 1;
    }
    l.two_numbers = two.len() as u64;
    l.counters =
        Counters { lost: Some(lost), reused: Some(reused.len() as u64), out_of_order: Some(out_of_order), duplicates: Some(duplicates) };
    l
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::receiver::Event;

    fn got(accepted: bool, events: &[(u64, &str)]) -> Delivery {
        Delivery {
            at: Instant::now(),
            kind: "event-notification".into(),
            subscription: "s".into(),
            events: events.iter().map(|(n, t)| Event { number: *n, task: Some((*t).to_string()) }).collect(),
            accepted,
            answer: if accepted { "200" } else { "503" },
        }
    }

    #[test]
    fn retries_and_redeliveries_are_fine_gaps_reuse_and_loss_are_not() {
        // 1 refused then accepted, 2 accepted twice (a redelivery after a crash), 3 accepted.
        let log =
            vec![got(false, &[(1, "a")]), got(true, &[(1, "a")]), got(true, &[(2, "b")]), got(true, &[(2, "b")]), got(true, &[(3, "c")])];
        let l = check(["a", "b", "c"], &log);
        assert_eq!((l.lost(), l.counters.out_of_order, l.counters.reused, l.counters.duplicates), (0, Some(0), Some(0), Some(1)));
        assert_eq!(l.accepted_through, 3);

        // 2 before 1; 3 names another Task than before; "d" acknowledged, never delivered.
        let log = vec![got(true, &[(2, "b")]), got(true, &[(1, "a")]), got(true, &[(3, "c")]), got(true, &[(3, "x")])];
        let l = check(["a", "b", "c", "d"], &log);
        assert_eq!((l.lost(), l.counters.out_of_order, l.counters.reused), (1, Some(1), Some(1)));
        assert_eq!(l.two_numbers, 0);
    }
}
