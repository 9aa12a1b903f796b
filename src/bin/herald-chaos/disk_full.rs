//! Scenario 2, disk full: Herald's data directory on a 48 MiB tmpfs (root only; skipped with
//! the reason otherwise), written to with 8 KiB Tasks until writes fail. Recorded: what the
//! failing writes answer, whether reads and `/readyz` still work, whether writes come back
//! without a restart once the filesystem is grown to 256 MiB (and how long that takes), and
//! that every acknowledged write can be read back, before and after a restart.
//!
//! Filling 48 MiB takes seconds, so `--quick` differs only in how long it waits for writes to
//! come back (10 s instead of 60). The tmpfs is unmounted when the scenario ends, however it
//! ends (`Mount`'s drop).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{self, Answer};
use crate::herald::{errors, panics, Launch, Startup};
use crate::report::{Findings, Ran, Verdict};
use crate::scratch::{free_port, Scratch};
use crate::{Result, Settings};

const NOTE_BYTES: usize = 8 * 1024;
const FILL_WRITERS: usize = 4;

pub async fn run(s: &Settings, found: &mut Findings) -> Result<Ran> {
    match uid() {
        Some(0) => {}
        other => {
            let who = other.map_or_else(|| "an unknown uid".to_string(), |u| format!("uid {u}"));
            return Ok(Ran::Skipped(format!("needs root to mount a tmpfs (running as {who})")));
        }
    }
    let scratch = Scratch::new("disk")?;
    let mount = match Mount::tmpfs(&scratch.dir("fs")?, "48m") {
        Ok(m) => m,
        Err(e) => return Ok(Ran::Skipped(format!("mount -t tmpfs failed: {e}"))),
    };
    let result = full_disk(s, found, &scratch, &mount).await;
    drop(mount);
    result.map(|()| Ran::Done)
}

async fn full_disk(s: &Settings, found: &mut Findings, scratch: &Scratch, mount: &Mount) -> Result<()> {
    // Long enough for a read to wait out `store.read_committed_timeout` (5 s) and be answered;
    // a Herald that answers nothing at all is found out in 7 s per request, not 10.
    let client = client::build_with(Duration::from_secs(7))?;
    let launch = Launch::new(&s.herald, &mount.dir.join("data"), free_port()?, &scratch.file("herald.log"));
    let base = launch.base();
    let (mut h, _) = launch.start(&client).await?;

    // Fill: writers stop at the first answer that is not 201 (or no answer at all).
    let fill_started = Instant::now();
    let (acked, first) = fill(&client, &base, Duration::from_secs(if s.quick { 60 } else { 300 })).await;
    let fill_secs = fill_started.elapsed().as_secs_f64();
    found.info(
        "fill",
        format!("{} writes of {} KiB acknowledged in {fill_secs:.1} s before the first failure", acked.len(), NOTE_BYTES / 1024),
    );
    let Some(first) = first else {
        found.row("writes fail once the disk is full", "a failure", "every write succeeded until the deadline", Verdict::Fail);
        return Ok(());
    };

    // While full: a few more writes, a read, a search, readiness.
    let mut answers = vec![first];
    // A few more, unless Herald has stopped answering at all (each would only wait out the
    // timeout again).
    while answers.len() < 5 && answers.last().is_some_and(|a| a.is_ok()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        answers.push(chained(client::create_task(&client, &base, NOTE_BYTES).await.map(|(a, _)| a)));
    }
    let good = |a: &Result<Answer>| a.as_ref().is_ok_and(|a| a.status == 503 && a.is_outcome() && a.retry_after.is_some());
    let later: Vec<String> = answers.iter().skip(1).map(text).collect();
    found.row(
        "writes once the disk is full",
        "503 + OperationOutcome + Retry-After",
        match later.len() {
            0 => format!("first failure: {}; no more tried", answers.first().map(text).unwrap_or_default()),
            n => format!("first failure: {}; the next {n}: {}", answers.first().map(text).unwrap_or_default(), counted(later)),
        },
        Verdict::of(answers.iter().all(good)),
    );
    // Both at once: each may wait out `store.read_committed_timeout` (5 s) before it answers.
    let read_url = acked.first().map(|id| format!("{base}/Task/{id}"));
    let search_url = format!("{base}/Task?_count=5");
    let (read, search) = tokio::join!(
        async {
            match &read_url {
                Some(url) => timed(client::get(&client, url)).await,
                None => (Err("no write was acknowledged to read back".into()), Duration::ZERO),
            }
        },
        timed(client::get(&client, &search_url))
    );
    let reads_ok = read.0.as_ref().is_ok_and(|a| a.status == 200) && search.0.as_ref().is_ok_and(|a| a.status == 200);
    found.row(
        "reads while the disk is full",
        "GET Task/id 200, search 200",
        format!(
            "GET Task/id: {} after {:.1} s; GET Task?_count=5: {} after {:.1} s",
            text(&read.0),
            read.1.as_secs_f64(),
            text(&search.0),
            search.1.as_secs_f64()
        ),
        Verdict::of(reads_ok),
    );
    found.info("/readyz while the disk is full", format!("{}; process {}", h.readyz(&client).await, alive(&mut h)));

    // Space comes back: writes should too, without a restart.
    mount.resize("256m")?;
    let grown = Instant::now();
    let patience = Duration::from_secs(if s.quick { 10 } else { 60 });
    let mut last = None;
    let recovered = loop {
        let a = chained(client::create_task(&client, &base, 0).await.map(|(a, _)| a));
        if a.as_ref().is_ok_and(|a| a.status == 201) {
            break Some(grown.elapsed());
        }
        last = Some(text(&a));
        if grown.elapsed() > patience {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    found.row(
        "writes recover once space is back, without a restart",
        format!("201 within {} s", patience.as_secs()),
        match recovered {
            Some(d) => format!("201 after {:.2} s", d.as_secs_f64()),
            None => format!("no 201 within {} s; last: {}", patience.as_secs(), last.unwrap_or_default()),
        },
        Verdict::of(recovered.is_some()),
    );
    // One read first: when reads wait out `store.read_committed_timeout` and fail, reading
    // every id would take minutes and say no more.
    let probe = match acked.first() {
        Some(id) => timed(client::get(&client, &format!("{base}/Task/{id}"))).await,
        None => (Err("no write was acknowledged to read back".into()), Duration::ZERO),
    };
    let observed = if probe.0.as_ref().is_ok_and(|a| a.status == 200) {
        let missing = client::unreadable(&client, &base, &acked).await;
        (format!("{} unreadable", missing.len()) + &example(&missing), missing.is_empty())
    } else {
        (format!("the first read answered {} after {:.1} s; the rest were not tried", text(&probe.0), probe.1.as_secs_f64()), false)
    };
    found.row("acknowledged writes readable, same process", format!("all {}", acked.len()), observed.0, Verdict::of(observed.1));

    // Restart on the grown filesystem; the durable state is what counts as kept or lost.
    let stop = h.terminate().await?;
    let mut h = launch.spawn()?;
    let startup = h.wait(&client, Duration::from_secs(60)).await?;
    found.info(
        "restart",
        format!(
            "SIGTERM: {}; start: {}",
            stop.map_or_else(|| "killed after 20 s".to_string(), |st| st.to_string()),
            match &startup {
                Startup::Ready(d) => format!("ready in {:.2} s", d.as_secs_f64()),
                Startup::Exited(st, _) => format!("exited ({st}): {}", h.log_tail(1)),
                Startup::Hung => "not ready within 60 s".to_string(),
            }
        ),
    );
    if let Startup::Ready(_) = startup {
        let missing = client::unreadable(&client, &base, &acked).await;
        found.counters.lost = Some(missing.len() as u64);
        found.row(
            "nothing acknowledged lost (read back after restart)",
            format!("all {} readable", acked.len()),
            format!("{} missing", missing.len()) + &example(&missing),
            Verdict::of(missing.is_empty()),
        );
        let after = chained(client::create_task(&client, &base, 0).await.map(|(a, _)| a));
        found.row("writes after restart", "201", text(&after), Verdict::of(after.as_ref().is_ok_and(|a| a.status == 201)));
        h.terminate().await?;
    } else {
        found.row("nothing acknowledged lost (read back after restart)", "all readable", "Herald did not restart", Verdict::Fail);
    }
    // What an operator would see: the first errors Herald logged (level warn and up).
    let errors = errors(&launch.log, 2);
    found.info("Herald's first errors in its log", if errors.is_empty() { "none".to_string() } else { errors.join(" / ") });
    let panicked = panics(&launch.log);
    found.row(
        "no panic in Herald's log",
        "none",
        panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(panicked.is_empty()),
    );
    Ok(())
}

/// Writes 8 KiB Tasks with a few writers until one is not acknowledged or `within` passes;
/// returns the acknowledged ids and the first failure.
async fn fill(client: &reqwest::Client, base: &str, within: Duration) -> (Vec<String>, Option<Result<Answer>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let first: Arc<Mutex<Option<Result<Answer>>>> = Arc::new(Mutex::new(None));
    let deadline = Instant::now() + within;
    let mut writers = JoinSet::new();
    for _ in 0..FILL_WRITERS {
        let (client, base, acked, first) = (client.clone(), base.to_string(), acked.clone(), first.clone());
        writers.spawn(async move {
            while Instant::now() < deadline && first.lock().unwrap_or_else(PoisonError::into_inner).is_none() {
                match client::create_task(&client, &base, NOTE_BYTES).await {
                    Ok((_, Some(id))) => acked.lock().unwrap_or_else(PoisonError::into_inner).push(id),
                    other => {
                        first.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(chained(other.map(|(a, _)| a)));
                    }
                }
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(PoisonError::into_inner));
    let first = first.lock().unwrap_or_else(PoisonError::into_inner).take();
    (acked, first)
}

/// Awaits a request and times it.
async fn timed(f: impl std::future::Future<Output = Result<Answer>>) -> (Result<Answer>, Duration) {
    let started = Instant::now();
    let a = chained(f.await);
    (a, started.elapsed())
}

/// Keeps an answer, or turns a failed request into a describable error.
fn chained(a: Result<Answer>) -> Result<Answer> {
    a.map_err(|e| crate::chain(e.as_ref()).into())
}

fn text(a: &Result<Answer>) -> String {
    match a {
        Ok(a) => a.describe(),
        Err(e) => format!("no answer: {e}"),
    }
}

/// "2 × a; 1 × b", in order of first occurrence.
fn counted(v: Vec<String>) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for s in v {
        match out.iter_mut().find(|(x, _)| *x == s) {
            Some((_, n)) => *n += 1,
            None => out.push((s, 1)),
        }
    }
    out.iter().map(|(s, n)| format!("{n} × {s}")).collect::<Vec<_>>().join("; ")
}

/// The first unreadable id and what reading it got.
fn example(missing: &[(String, String)]) -> String {
    missing.first().map_or_else(String::new, |(id, got)| format!(" (e.g. Task/{id}: {got})"))
}

fn alive(h: &mut crate::herald::Herald) -> &'static str {
    if h.alive() {
        "running"
    } else {
        "exited"
    }
}

/// The real user id, from `/proc/self/status`.
fn uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// A tmpfs mounted for the scenario, unmounted when dropped.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount> {
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], dir)?;
        Ok(Mount { dir: dir.to_path_buf() })
    }

    fn resize(&self, size: &str) -> Result<()> {
        mount(&["-o", &format!("remount,size={size}")], &self.dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.dir).output().is_ok_and(|o| o.status.success());
        if !ok {
            // Something still holds a file there (a Herald that would not die): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        }
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("mount").args(args).arg(dir).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status).into())
    }
}
