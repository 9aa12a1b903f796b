//! `herald-load`: Herald's load generator (issue #9; BENCHMARKS.md describes the table).
//!
//! One invocation first measures this machine's ceilings (`ceiling`: a bare axum handler driven
//! by the same client code and concurrency; sled insert + group flush with the same record size
//! and concurrency), then runs the selected scenarios (`scenarios`, `matching` for S5) against
//! Herald started as a child process (`herald`) with an in-process loopback receiver
//! (`receiver`), and prints one table (`report`), optionally also as JSON. It writes nothing else
//! outside its scratch directory, which it removes.
//!
//! The `cluster` scenario (`cluster`, `nats`) runs S1's workload again on Herald's cluster mode:
//! 1 node on one NATS server, 3 nodes on one, 3 nodes on three (R3), each NATS server and node
//! started and removed by herald-load.
//!
//! The `scale` scenario (`scale`) loads a million Tasks and 100,000 subscriptions through the
//! REST API, then times searches, reads RSS and data dir size, and restarts Herald.
//!
//! `--quick` (CI) runs each scenario for about a second with tiny numbers and checks only that
//! events were delivered in each one; it never checks a speed.

mod ceiling;
mod client;
mod cluster;
mod herald;
mod lane;
mod matching;
mod nats;
mod proc;
mod receiver;
mod report;
mod scale;
mod scenarios;
mod setup;
mod storage;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    /// One subscription's lane draining a backlog alone, next to a serial POST loop's ceiling.
    Lane,
    /// S1's workload on cluster mode: 1 node on 1 NATS server (R1), 3 nodes on 1 (R1), 3 nodes
    /// on 3 (R3), next to S1 on single-node sled.
    Cluster,
    /// Search and storage at queue-server scale (`scale`): Tasks and subscriptions loaded
    /// through the REST API, then search latencies, RSS, data directory size, restart times.
    Scale,
    /// Bytes on disk per stored version, by key family, for a small and a large Task.
    Storage,
}

#[derive(Parser)]
#[command(
    name = "herald-load",
    about = "Measures this machine's ceilings, then Herald's throughput, latency, CPU and memory in six scenarios and in cluster mode",
    after_help = "Build: cargo build --release --features load. BENCHMARKS.md explains every column."
)]
struct Args {
    /// Herald binary to start, once per scenario, on a fresh temporary data directory.
    #[arg(long, value_name = "PATH", default_value = "target/release/herald")]
    herald: PathBuf,
    /// Configuration file passed to `herald serve --config`.
    #[arg(long, value_name = "FILE")]
    herald_config: Option<PathBuf>,
    /// Scenarios to run, comma-separated. S6 also runs S1 (for its rate) unless --open-rate is
    /// given; `cluster` runs S1 too (its reference) and needs `nats-server` on PATH (without it
    /// its rows are skipped with a note).
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true, default_value = "S1,S2,S3,S4,S5,S6,lane,cluster,scale,storage")]
    scenarios: Vec<Scenario>,
    /// Measured seconds per ceiling and scenario [default: 20; --quick: 1].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    duration: Option<Duration>,
    /// Seconds run before each measurement and not counted [default: 3; --quick: 0.3].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    warmup: Option<Duration>,
    /// Requests in flight (closed loop) in the ceilings, S1, S2 and S4; writers of the sled
    /// ceiling; Tasks written in S6; requests at a time when creating subscriptions.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// S2: subscriptions, each filtered on its own owner [default: 10000; --quick: 50].
    #[arg(long, value_name = "N")]
    subscriptions: Option<usize>,
    /// S3: subscriptions matching every event [default: 1000; --quick: 20].
    #[arg(long, value_name = "N")]
    fanout: Option<usize>,
    /// S3: the subscriptions' content level (`empty`, `id-only`, `full-resource`).
    #[arg(long, value_name = "LEVEL", default_value = "id-only", value_parser = ["empty", "id-only", "full-resource"])]
    fanout_content: String,
    /// S5: registry sizes, comma-separated [default: 1000,10000,100000; --quick: 50,200,1000].
    #[arg(long, value_name = "N,N,..", value_delimiter = ',')]
    matching_sizes: Option<Vec<usize>>,
    /// S4: size of the Task written, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024)]
    large_bytes: usize,
    /// After each window: longest wait for the notifications of the window's writes [default: 60; --quick: 30].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    drain: Option<Duration>,
    /// S6: writes per second to schedule, instead of half of S1's measured rate.
    #[arg(long, value_name = "PER_SEC")]
    open_rate: Option<f64>,
    /// `maxCount` of every subscription created (default: absent, which Herald takes as 1:
    /// one event per notification).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_count: Option<u64>,
    /// lane: seconds of writes while the receiver holds the first notification [default: 5; --quick: 0.5].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    lane_fill: Option<Duration>,
    /// scale: Tasks loaded [default: 1000000; --quick: 2000].
    #[arg(long, value_name = "N")]
    scale_tasks: Option<u64>,
    /// scale: subscriptions created [default: 100000; --quick: 50].
    #[arg(long, value_name = "N")]
    scale_subscriptions: Option<usize>,
    /// storage: versions of the small Task written; the large one gets a quarter as many
    /// [default: 20000; --quick: 200].
    #[arg(long, value_name = "N")]
    storage_versions: Option<usize>,
    /// Also write the table as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// About a second per scenario with tiny numbers; fails only if a scenario delivered nothing.
    #[arg(long)]
    quick: bool,
}

fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("'{s}' is not a duration in seconds"))
}

/// The arguments with the defaults of the chosen mode filled in.
#[derive(Clone, Debug)]
pub struct Settings {
    pub herald: PathBuf,
    pub herald_config: Option<PathBuf>,
    pub scenarios: Vec<Scenario>,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub subscriptions: usize,
    pub fanout: usize,
    pub fanout_content: String,
    pub matching_sizes: Vec<usize>,
    pub large_bytes: usize,
    pub drain: Duration,
    pub open_rate: Option<f64>,
    pub max_count: Option<u64>,
    pub lane_fill: Duration,
    pub scale_tasks: u64,
    pub scale_subscriptions: usize,
    pub storage_versions: usize,
    pub quick: bool,
}

impl Settings {
    fn from_args(a: &Args) -> Result<Settings> {
        let q = a.quick;
        let pick = |v: Option<Duration>, full: f64, quick: f64| v.unwrap_or(Duration::from_secs_f64(if q { quick } else { full }));
        let mut scenarios = a.scenarios.clone();
        scenarios.sort();
        scenarios.dedup();
        let s = Settings {
            herald: a.herald.clone(),
            herald_config: a.herald_config.clone(),
            scenarios,
            duration: pick(a.duration, 20.0, 1.0),
            warmup: pick(a.warmup, 3.0, 0.3),
            concurrency: usize::try_from(a.concurrency)?,
            subscriptions: a.subscriptions.unwrap_or(if q { 50 } else { 10_000 }),
            fanout: a.fanout.unwrap_or(if q { 20 } else { 1_000 }),
            fanout_content: a.fanout_content.clone(),
            matching_sizes: a.matching_sizes.clone().unwrap_or(if q { vec![50, 200, 1_000] } else { vec![1_000, 10_000, 100_000] }),
            large_bytes: a.large_bytes,
            drain: pick(a.drain, 60.0, 30.0),
            open_rate: a.open_rate,
            max_count: a.max_count,
            lane_fill: pick(a.lane_fill, 5.0, 0.5),
            scale_tasks: a.scale_tasks.unwrap_or(if q { 2_000 } else { 1_000_000 }),
            scale_subscriptions: a.scale_subscriptions.unwrap_or(if q { 50 } else { 100_000 }),
            storage_versions: a.storage_versions.unwrap_or(if q { 200 } else { 20_000 }),
            quick: q,
        };
        if s.duration.is_zero() || s.lane_fill.is_zero() {
            return Err("--duration and --lane-fill must be more than 0".into());
        }
        if s.subscriptions == 0 || s.fanout == 0 || s.matching_sizes.contains(&0) {
            return Err("--subscriptions, --fanout and --matching-sizes must be at least 1".into());
        }
        if let Some(r) = s.open_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--open-rate must be a positive number".into());
            }
        }
        Ok(s)
    }

    pub fn runs(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }

    /// Whether a scenario starts Herald (all but S5).
    fn needs_herald(&self) -> bool {
        self.scenarios.iter().any(|s| *s != Scenario::S5)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herald-load: {e}");
            return ExitCode::from(2);
        }
    };
    if settings.needs_herald() && !settings.herald.is_file() {
        eprintln!(
            "herald-load: no Herald binary at {} (build it with `cargo build --release`, or pass --herald PATH)",
            settings.herald.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = report::Report::new(&settings);
    // On ctrl-c the run is dropped: its Herald is killed and the scratch directory removed.
    let outcome = runtime.block_on(async {
        tokio::select! {
            done = scenarios::run_all(&settings, &mut report) => done,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    report.finish();
    println!("{}", report.table());
    if let Some(path) = &args.json {
        if let Err(e) = report.write_json(path) {
            eprintln!("herald-load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = outcome {
        eprintln!("herald-load: {}", ::herald::error_chain(e.as_ref()));
        return ExitCode::FAILURE;
    }
    if settings.quick {
        let silent = report.silent_scenarios();
        if !silent.is_empty() {
            eprintln!("herald-load --quick: nothing was delivered (or matched) in {}", silent.join(", "));
            return ExitCode::FAILURE;
        }
        eprintln!("herald-load --quick: every scenario delivered events");
    }
    ExitCode::SUCCESS
}
