//! The result: one row per ceiling and scenario, printed as one Markdown table (ready for
//! BENCHMARKS.md) and written as JSON with the same figures plus the run's settings.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{proc, Result, Settings};

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub samples: u64,
    /// Some notifications had not arrived by the end of the drain: they are counted at the
    /// drain deadline, so the percentiles are lower bounds.
    pub lower_bound: bool,
}

impl Latency {
    pub fn of(h: &Histogram<u64>, lower_bound: bool) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Latency { p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999), samples: h.len(), lower_bound })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// `ceiling-http`, `ceiling-durable`, `S1`..`S6`.
    pub scenario: String,
    pub what: String,
    pub writes_per_s: Option<f64>,
    /// Events notified per second of the window (each `eventNumber` received counts once).
    pub notifications_per_s: Option<f64>,
    /// From the write's send (scheduled send in S6) to the notification's arrival.
    pub receipt_latency: Option<Latency>,
    /// From the write's send (scheduled send in S6) to its 2xx.
    pub ack_latency: Option<Latency>,
    pub writes_vs_http_ceiling: Option<f64>,
    pub writes_vs_durable_ceiling: Option<f64>,
    pub notifications_vs_http_ceiling: Option<f64>,
    /// Herald's user + system CPU over the window, 100 = one core.
    pub herald_cpu_percent: Option<f64>,
    /// VmHWM at the end of the scenario (the process is new for each scenario).
    pub herald_peak_rss_mib: Option<f64>,
    /// herald-load's own CPU over the window (it shares the machine).
    pub load_cpu_percent: Option<f64>,
    /// Writes of the window not acknowledged.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Notifications of the window's writes that had not arrived when the drain ended.
    pub undelivered: Option<u64>,
    /// Events whose number was not its subscription's previous one plus one.
    pub out_of_order: Option<u64>,
    /// Every event notification received in the scenario, warm-up and drain included.
    pub notifications_total: Option<u64>,
    /// S5: matches found while timing (quick mode checks it is not zero).
    pub matches: Option<u64>,
    /// Cluster rows: the layout, nats-server's CPU and the ratios to S1 on sled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFigures>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// What a cluster row adds (`cluster::run`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterFigures {
    /// Herald nodes; the load is spread over all of them.
    pub nodes: usize,
    pub nats_servers: usize,
    /// JetStream replicas of the commit log stream and the lease bucket.
    pub replicas: usize,
    /// Every nats-server's user + system CPU over the window, summed, 100 = one core.
    pub nats_cpu_percent: Option<f64>,
    /// This row's acknowledged writes/s over S1's (one Herald on sled) in the same run.
    pub writes_vs_sled: Option<f64>,
    pub notifications_vs_sled: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub tool: &'static str,
    pub herald: String,
    pub herald_config: Option<String>,
    pub quick: bool,
    pub scenarios: Vec<String>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub concurrency: usize,
    /// `--max-count`: the subscriptions' `maxCount` (absent: one event per notification).
    pub max_count: Option<u64>,
    pub cores: usize,
    pub load_average_start: Option<f64>,
    pub load_average_end: Option<f64>,
    pub started_unix_s: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub rows: Vec<Row>,
}

/// A figure as BENCHMARKS.md writes it: thousands separators, 3 significant digits below 100.
pub fn num(v: f64) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    // Thousands separators on the integer part, as in BENCHMARKS.md.
    let (int, frac) = s.split_once('.').map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 && c.is_ascii_digit() && int.chars().nth(i - 1).is_some_and(|p| p.is_ascii_digit()) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A count with thousands separators.
pub fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{}{unit}", num(v)))
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn latency(l: &Option<Latency>, three: bool) -> String {
    match l {
        None => "—".to_string(),
        Some(l) => {
            let at_least = if l.lower_bound { "≥ " } else { "" };
            if three {
                format!("{at_least}{} / {} / {} ms", num(l.p50_ms), num(l.p99_ms), num(l.p999_ms))
            } else {
                format!("{at_least}{} / {} ms", num(l.p50_ms), num(l.p99_ms))
            }
        }
    }
}

impl Report {
    pub fn new(s: &Settings) -> Report {
        Report {
            meta: Meta {
                tool: "herald-load",
                herald: s.herald.display().to_string(),
                herald_config: s.herald_config.as_ref().map(|p| p.display().to_string()),
                quick: s.quick,
                scenarios: s.scenarios.iter().map(|x| format!("{x:?}")).collect(),
                duration_s: s.duration.as_secs_f64(),
                warmup_s: s.warmup.as_secs_f64(),
                concurrency: s.concurrency,
                max_count: s.max_count,
                cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                load_average_start: proc::load_average(),
                load_average_end: None,
                started_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            },
            rows: Vec::new(),
        }
    }

    pub fn finish(&mut self) {
        self.meta.load_average_end = proc::load_average();
    }

    pub fn push(&mut self, row: Row) {
        eprintln!("   {}: {}", row.scenario, Self::line(&row));
        self.rows.push(row);
    }

    fn line(r: &Row) -> String {
        if r.writes_per_s.is_none() {
            return r.notes.join("; ");
        }
        format!(
            "{} writes/s, {} notifications/s, receipt p50/p99/p999 {}",
            opt(r.writes_per_s, ""),
            opt(r.notifications_per_s, ""),
            latency(&r.receipt_latency, true)
        )
    }

    /// Herald scenarios that delivered nothing and S5 sizes that matched nothing.
    pub fn silent_scenarios(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.scenario.starts_with('S') || r.scenario == "lane")
            .filter(|r| r.notifications_total.unwrap_or(0) == 0 && r.matches.unwrap_or(0) == 0)
            .map(|r| format!("{} ({})", r.scenario, r.what))
            .collect()
    }

    pub fn table(&self) -> String {
        let m = &self.meta;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\nherald-load: {} core(s), load average {} at start and {} at the end; {} s measured after {} s warm-up, concurrency {}{}{}; Herald: {}",
            m.cores,
            opt(m.load_average_start, ""),
            opt(m.load_average_end, ""),
            num(m.duration_s),
            num(m.warmup_s),
            m.concurrency,
            m.max_count.map(|n| format!(", subscriptions with maxCount {n}")).unwrap_or_default(),
            if m.quick { " (--quick: not a measurement)" } else { "" },
            m.herald
        );
        t.push('\n');
        t.push_str("| scenario | what | acked writes/s | notifications/s | write→receipt p50 / p99 / p999 | ack p50 / p99 | writes ÷ HTTP ceiling | writes ÷ durable ceiling | notifications ÷ HTTP ceiling | Herald CPU | Herald peak RSS | herald-load CPU | notes |\n");
        t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.what,
                opt(r.writes_per_s, ""),
                opt(r.notifications_per_s, ""),
                latency(&r.receipt_latency, true),
                latency(&r.ack_latency, false),
                ratio(r.writes_vs_http_ceiling),
                ratio(r.writes_vs_durable_ceiling),
                ratio(r.notifications_vs_http_ceiling),
                opt(r.herald_cpu_percent, " %"),
                opt(r.herald_peak_rss_mib, " MiB"),
                opt(r.load_cpu_percent, " %"),
                Self::notes(r)
            );
        }
        self.cluster_table(&mut t);
        crate::scale::table(&self.rows, &mut t);
        crate::storage::table(&self.rows, &mut t);
        t
    }

    /// A row's notes with its errors, missing and out-of-order notifications, for a table cell.
    fn notes(r: &Row) -> String {
        let mut notes = r.notes.clone();
        if r.errors > 0 {
            notes.push(format!("{} writes not acknowledged (first: {})", r.errors, r.first_error.as_deref().unwrap_or("?")));
        }
        if let Some(u) = r.undelivered.filter(|u| *u > 0) {
            notes.push(format!("{u} notifications not received by the end of the drain"));
        }
        if let Some(o) = r.out_of_order.filter(|o| *o > 0) {
            notes.push(format!("{o} events out of order or repeated"));
        }
        notes.join("; ").replace('|', "/")
    }

    /// When cluster rows ran: S1 and the cluster rows side by side, with the ratios to S1.
    fn cluster_table(&self, t: &mut String) {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.cluster.is_some() || r.scenario == "S1").collect();
        if !rows.iter().any(|r| r.cluster.is_some()) {
            return;
        }
        t.push_str("\nCluster mode: S1's workload on one Herald on sled and on cluster nodes (ratios to the sled row of this run)\n\n");
        t.push_str("| row | Herald nodes | commit log | acked writes/s | ÷ sled | notifications/s | ÷ sled | ack p50 / p99 | write→receipt p50 / p99 | Herald CPU (all nodes) | nats-server CPU | notes |\n");
        t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            let (nodes, log, writes, notifications, nats_cpu) = match &r.cluster {
                None => ("1".to_string(), "sled (group fsync)".to_string(), "100 %".to_string(), "100 %".to_string(), "—".to_string()),
                Some(c) => (
                    c.nodes.to_string(),
                    format!("JetStream R{} on {} NATS server{}", c.replicas, c.nats_servers, if c.nats_servers == 1 { "" } else { "s" }),
                    ratio(c.writes_vs_sled),
                    ratio(c.notifications_vs_sled),
                    opt(c.nats_cpu_percent, " %"),
                ),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                nodes,
                log,
                opt(r.writes_per_s, ""),
                writes,
                opt(r.notifications_per_s, ""),
                notifications,
                latency(&r.ack_latency, false),
                latency(&r.receipt_latency, false),
                opt(r.herald_cpu_percent, " %"),
                nats_cpu,
                Self::notes(r)
            );
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators_and_sensible_digits() {
        assert_eq!(num(55_700.4), "55,700");
        assert_eq!(num(123.0), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(1_234_567.0), "1,234,567");
        assert_eq!(num(-1_234.0), "-1,234");
        assert_eq!(count(20), "20");
        assert_eq!(count(10_240), "10,240");
        assert_eq!(count(100_000), "100,000");
    }
}
