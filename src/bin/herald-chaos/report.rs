//! The results: each scenario adds `Findings` (rows of expectation, observation and verdict,
//! plus the delivery counters the test asserts on), and `Report` renders them as one Markdown
//! table and as JSON with the same data. It judges nothing itself: the scenarios decide each
//! verdict; `broken` only names what makes the run fail (an error, or a delivery invariant).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::{Scenario, Settings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    /// A measurement with no expectation attached (a latency, a restart time).
    #[serde(rename = "INFO")]
    Info,
}

impl Verdict {
    pub fn of(ok: bool) -> Verdict {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub check: String,
    pub expected: String,
    pub observed: String,
    pub result: Verdict,
}

/// How a scenario ended when it did not fail.
pub enum Ran {
    Done,
    Skipped(String),
}

/// Delivery counters; `None` where a scenario has nothing to count.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    /// Acknowledged writes whose event never reached a subscription (or, for the disk, that
    /// could not be read back).
    pub lost: Option<u64>,
    /// Event numbers that named two different writes.
    pub reused: Option<u64>,
    /// First deliveries that were not the lowest number not yet delivered.
    pub out_of_order: Option<u64>,
    /// Deliveries of a number already delivered (allowed: at least once).
    pub duplicates: Option<u64>,
}

impl Counters {
    /// Adds another set (a scenario with several subscriptions or phases).
    pub fn add(&mut self, other: Counters) {
        fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            }
        }
        self.lost = sum(self.lost, other.lost);
        self.reused = sum(self.reused, other.reused);
        self.out_of_order = sum(self.out_of_order, other.out_of_order);
        self.duplicates = sum(self.duplicates, other.duplicates);
    }
}

/// What one scenario found.
#[derive(Default)]
pub struct Findings {
    pub rows: Vec<(String, String, String, Verdict)>,
    pub counters: Counters,
}

impl Findings {
    pub fn row(&mut self, check: impl Into<String>, expected: impl Into<String>, observed: impl Into<String>, result: Verdict) {
        self.rows.push((check.into(), expected.into(), observed.into(), result));
    }

    /// The delivery rows of a crash loop, from the ledgers' `counters`: `pairs` write ×
    /// subscription pairs checked, `received` event notifications, `two_numbers` Tasks under
    /// two numbers, a few `examples` of what went wrong.
    pub fn delivery_rows(&mut self, pairs: usize, received: u64, two_numbers: u64, examples: &[String]) {
        let c = self.counters;
        let n = |v: Option<u64>| v.unwrap_or(0);
        let ex = if examples.is_empty() { String::new() } else { format!(" (e.g. {})", examples.join("; ")) };
        self.row(
            "every acknowledged write delivered to every subscription",
            "0 lost",
            format!("{} lost of {pairs} write × subscription pairs{ex}", n(c.lost)),
            Verdict::of(n(c.lost) == 0),
        );
        self.row(
            "first deliveries gap-free and in order",
            "0 out of order",
            format!("{} out of order, {received} event notifications received", n(c.out_of_order)),
            Verdict::of(n(c.out_of_order) == 0),
        );
        self.row("no event number used for two Tasks", "0 reused", format!("{} reused", n(c.reused)), Verdict::of(n(c.reused) == 0));
        self.row("one event number per write", "0 Tasks under two numbers", format!("{two_numbers}"), Verdict::of(two_numbers == 0));
        self.info("duplicates (at least once allows them)", format!("{} accepted more than once", n(c.duplicates)));
    }

    pub fn info(&mut self, check: impl Into<String>, observed: impl Into<String>) {
        self.row(check, "", observed, Verdict::Info);
    }
}

#[derive(Serialize)]
struct ScenarioRecord {
    name: &'static str,
    /// `ran`, `skipped` or `error`.
    status: &'static str,
    reason: Option<String>,
    seconds: f64,
    #[serde(flatten)]
    counters: Counters,
}

#[derive(Serialize)]
pub struct Report {
    tool: &'static str,
    commit: String,
    command: String,
    seed: u64,
    quick: bool,
    herald: String,
    scenarios: Vec<ScenarioRecord>,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(s: &Settings, argv: Vec<String>) -> Report {
        Report {
            tool: "herald-chaos",
            commit: commit(),
            command: argv.join(" "),
            seed: s.seed,
            quick: s.quick,
            herald: s.herald.display().to_string(),
            scenarios: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, s: Scenario, outcome: std::result::Result<Ran, String>, found: Findings, took: Duration) {
        let name = s.name();
        let (status, reason) = match outcome {
            Ok(Ran::Done) => ("ran", None),
            Ok(Ran::Skipped(why)) => ("skipped", Some(why)),
            Err(e) => ("error", Some(e)),
        };
        for (check, expected, observed, result) in found.rows {
            self.rows.push(Row { scenario: name, check, expected, observed, result });
        }
        if let Some(why) = &reason {
            let (check, result) = if status == "skipped" { ("skipped", Verdict::Info) } else { ("harness error", Verdict::Fail) };
            self.rows.push(Row { scenario: name, check: check.into(), expected: String::new(), observed: why.clone(), result });
        }
        self.scenarios.push(ScenarioRecord { name, status, reason, seconds: took.as_secs_f64(), counters: found.counters });
    }

    /// Why the run fails: scenarios that errored, and broken delivery invariants.
    pub fn broken(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            if s.status == "error" {
                out.push(format!("{} did not finish: {}", s.name, s.reason.as_deref().unwrap_or("")));
            }
            for (what, n) in [("lost", s.counters.lost), ("reused numbers", s.counters.reused), ("out of order", s.counters.out_of_order)] {
                if let Some(n) = n.filter(|n| *n > 0) {
                    out.push(format!("{}: {n} {what}", s.name));
                }
            }
        }
        out
    }

    pub fn table(&self) -> String {
        let mut t = format!(
            "herald-chaos at {}, seed {}, {} mode: `{}`\n\n| scenario | check | expected | observed | result |\n|---|---|---|---|---|\n",
            self.commit,
            self.seed,
            if self.quick { "quick" } else { "full" },
            self.command
        );
        for r in &self.rows {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.scenario,
                cell(&r.check),
                cell(&r.expected),
                cell(&r.observed),
                r.result.text()
            ));
        }
        t.push_str(
            "\n| scenario | status | seconds | lost | reused numbers | out of order | duplicates |\n|---|---|---|---|---|---|---|\n",
        );
        for s in &self.scenarios {
            let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            t.push_str(&format!(
                "| {} | {} | {:.1} | {} | {} | {} | {} |\n",
                s.name,
                s.status,
                s.seconds,
                n(s.counters.lost),
                n(s.counters.reused),
                n(s.counters.out_of_order),
                n(s.counters.duplicates)
            ));
        }
        t
    }

    pub fn write_json(&self, path: &Path) -> crate::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

/// A table cell: one line, no pipe that would split it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The commit being tested: `git rev-parse --short HEAD` where the tool runs, if it is a
/// checkout (with `-dirty` when the work tree has changes).
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown commit".to_string(),
    }
}

/// `p` in 0..=1 of durations already sorted, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map(|d| d.as_secs_f64() * 1000.0)
}

/// "p50 12.3 ms, p99 45.6 ms, max 78.9 ms (n = 100)" of unsorted durations.
pub fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    match (percentile_ms(&v, 0.5), percentile_ms(&v, 0.99), percentile_ms(&v, 1.0)) {
        (Some(a), Some(b), Some(c)) => format!("p50 {a:.1} ms, p99 {b:.1} ms, max {c:.1} ms (n = {})", v.len()),
        _ => "no samples".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(50.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&v, 1.0), Some(100.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
