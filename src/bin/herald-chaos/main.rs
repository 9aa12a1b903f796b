//! `herald-chaos`: Herald's reliability harness (issue #18; RELIABILITY.md describes the table).
//!
//! It runs the real `herald` binary as a child process (`herald`) on loopback ports, with a
//! fresh data directory per scenario and hand-written receivers that can misbehave at the TCP
//! level (`receiver`), puts it through six fault scenarios (`crash_loop`, `disk_full`,
//! `outage`, `hostile`, `damaged`, and the crash loop against three cluster nodes,
//! `cluster_crash`) while `writers` keep creating Tasks, waits for delivery to catch up
//! (`drain`), checks what crossed the wire against what was acknowledged (`ledger`), and prints
//! one Markdown table of expectations with PASS/FAIL (`report`), optionally also as JSON. It
//! writes nothing outside its scratch directory (`scratch`), which it removes.
//!
//! The exit status is 0 when every scenario ran (or was skipped with a reason) and no
//! acknowledged write was lost, no event number reused and no first delivery out of order. A
//! FAIL on another expectation (a status code, a refusal to start) is reported, not fatal: the
//! table is how those are tracked.

mod client;
mod cluster_crash;
mod crash_loop;
mod damaged;
mod disk_full;
mod drain;
mod herald;
mod hostile;
mod ledger;
mod outage;
mod receiver;
mod report;
mod scratch;
mod writers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The error and its sources on one line (the server's own `error_chain`).
pub use ::herald::error_chain as chain;
use clap::{Parser, ValueEnum};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// kill -9 at random moments under load, with misbehaving receivers.
    Crash,
    /// The data directory's filesystem fills up, then grows again.
    Disk,
    /// One receiver down for a long stretch; dead letters as configured.
    Outage,
    /// Receivers that stall, trickle, answer late or redirect, beside a healthy one.
    Hostile,
    /// Foreign, truncated and newer-format data directories.
    Damaged,
    /// The crash loop against three cluster nodes on one NATS server, the writer killed often.
    Cluster,
}

impl Scenario {
    /// The name in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Crash => "crash-loop",
            Scenario::Disk => "disk-full",
            Scenario::Outage => "long-outage",
            Scenario::Hostile => "hostile-receivers",
            Scenario::Damaged => "damaged-dirs",
            Scenario::Cluster => "cluster-crash",
        }
    }
}

#[derive(Parser)]
#[command(
    name = "herald-chaos",
    about = "Puts the herald binary through crashes, a full disk, a long outage, hostile receivers, damaged data directories and crashes of cluster nodes",
    after_help = "Build: cargo build --release --features load. RELIABILITY.md explains every row."
)]
struct Args {
    /// Herald binary to start (as a child process) in every scenario.
    #[arg(long, value_name = "PATH", default_value = "target/release/herald")]
    herald: PathBuf,
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true, default_value = "crash,disk,outage,hostile,damaged,cluster")]
    scenarios: Vec<Scenario>,
    /// Crash loops: kill -9 / restart cycles [default: 100, cluster 30; --quick: 5, cluster 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    cycles: Option<u32>,
    /// Seed of every random choice (kill moments, receiver behaviour) [default: from the clock;
    /// printed, so that a run can be repeated].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Long outage: seconds the receiver stays down [default: 120; --quick: 10].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    outage: Option<Duration>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Every scenario in a short form (about a minute in all against a debug build).
    #[arg(long)]
    quick: bool,
}

fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("'{s}' is not a duration in seconds"))
}

/// The arguments with the chosen mode's defaults filled in; what every scenario reads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub herald: PathBuf,
    pub scenarios: Vec<Scenario>,
    pub cycles: u32,
    /// The cluster crash loop's cycles (each costs a failover, so fewer by default).
    pub cluster_cycles: u32,
    pub seed: u64,
    pub outage: Duration,
    pub quick: bool,
}

impl Settings {
    fn from_args(a: &Args) -> Settings {
        let mut scenarios = a.scenarios.clone();
        scenarios.sort();
        scenarios.dedup();
        // Any seed will do when none is given; it is printed with the results.
        let clock = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Settings {
            herald: a.herald.clone(),
            scenarios,
            cycles: a.cycles.unwrap_or(if a.quick { 5 } else { 100 }),
            cluster_cycles: a.cycles.unwrap_or(if a.quick { 3 } else { 30 }),
            seed: a.seed.unwrap_or(clock % 1_000_000_007),
            outage: a.outage.unwrap_or(Duration::from_secs(if a.quick { 10 } else { 120 })),
            quick: a.quick,
        }
    }

    /// A seed of its own for each scenario (and each use inside one), so that adding a random
    /// draw in one place does not change the draws of another.
    pub fn seed_for(&self, what: u64) -> u64 {
        self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(what.wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }
}

async fn run_one(s: Scenario, settings: &Settings, found: &mut report::Findings) -> Result<report::Ran> {
    match s {
        Scenario::Crash => crash_loop::run(settings, found).await,
        Scenario::Disk => disk_full::run(settings, found).await,
        Scenario::Outage => outage::run(settings, found).await,
        Scenario::Hostile => hostile::run(settings, found).await,
        Scenario::Damaged => damaged::run(settings, found).await,
        Scenario::Cluster => cluster_crash::run(settings, found).await,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = Settings::from_args(&args);
    if !settings.herald.is_file() {
        eprintln!(
            "herald-chaos: no Herald binary at {} (build it with `cargo build --release`, or pass --herald PATH)",
            settings.herald.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald-chaos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = report::Report::new(&settings, std::env::args().collect());
    eprintln!("herald-chaos: seed {} ({} mode)", settings.seed, if settings.quick { "quick" } else { "full" });
    for &s in &settings.scenarios {
        let started = Instant::now();
        eprintln!("herald-chaos: {} ...", s.name());
        let mut found = report::Findings::default();
        // On ctrl-c the scenario is dropped: its Herald is killed, its tmpfs unmounted and its
        // scratch directory removed by their guards.
        let outcome = runtime.block_on(async {
            tokio::select! {
                done = run_one(s, &settings, &mut found) => done,
                _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
            }
        });
        let interrupted = matches!(&outcome, Err(e) if e.to_string() == "interrupted");
        report.add(s, outcome.map_err(|e| chain(e.as_ref())), found, started.elapsed());
        eprintln!("herald-chaos: {} done in {:.1} s", s.name(), started.elapsed().as_secs_f64());
        if interrupted {
            break;
        }
    }
    println!("{}", report.table());
    if let Some(path) = &args.json {
        if let Err(e) = report.write_json(path) {
            eprintln!("herald-chaos: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let broken = report.broken();
    if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("herald-chaos: {}", broken.join("; "));
        ExitCode::FAILURE
    }
}
