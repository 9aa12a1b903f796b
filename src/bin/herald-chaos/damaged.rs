//! Scenario 5, damaged or foreign data directories. A valid store is made first (300
//! acknowledged Tasks, stopped with SIGTERM), and an intact copy of it must start and serve all
//! 300 (the control). Then Herald is pointed at (a) a directory holding another program's
//! files, (b) a copy whose largest file is truncated to half, (c) a copy whose format marker
//! claims a newer format, when the store has a marker file (a file named like `*format*` or
//! `*version*`; without one the case cannot be built and is reported as a FAIL saying so).
//!
//! Expected of each: Herald refuses to start, with a message and a non-zero exit status; it
//! never panics; it never serves an empty or partial store (serving everything that was
//! acknowledged is fine: the damage then cost nothing).

use std::path::Path;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use crate::herald::{errors, panics, tail, Launch, Startup};
use crate::report::{Findings, Ran, Verdict};
use crate::scratch::{copy_tree, free_port, Scratch};
use crate::{client, Result, Settings};

const TASKS: usize = 300;

pub async fn run(s: &Settings, found: &mut Findings) -> Result<Ran> {
    let scratch = Scratch::new("damaged")?;
    let client = client::build()?;
    let good = scratch.dir("good")?;
    let ids = make_store(s, &scratch, &good, &client).await?;

    let control = scratch.path.join("control");
    copy_tree(&good, &control)?;
    let p = probe(s, &scratch, &control, &client, &ids, "control").await?;
    let intact = matches!(p.startup, Startup::Ready(_)) && p.missing == Some(0);
    found.row("control: an intact copy of the store", format!("starts and serves all {TASKS} Tasks"), p.summary(), Verdict::of(intact));

    let foreign = scratch.dir("foreign")?;
    std::fs::write(foreign.join("notes.txt"), "another program's notes\n")?;
    let mut rng = StdRng::seed_from_u64(s.seed_for(50));
    let mut noise = vec![0u8; 64 * 1024];
    rng.fill_bytes(&mut noise);
    std::fs::write(foreign.join("data.bin"), &noise)?;
    std::fs::create_dir_all(foreign.join("cache"))?;
    std::fs::write(foreign.join("cache").join("index.db"), noise.get(..4096).unwrap_or_default())?;
    let before: Vec<String> = names(&foreign);
    let p = probe(s, &scratch, &foreign, &client, &[], "foreign").await?;
    let added: Vec<String> = names(&foreign).into_iter().filter(|n| !before.contains(n)).collect();
    judge(found, "(a) another program's files", &p, &format!("files added to the directory: {}", list(&added)));

    let truncated = scratch.path.join("truncated");
    copy_tree(&good, &truncated)?;
    let (file, from, to) = truncate_largest(&truncated)?;
    let p = probe(s, &scratch, &truncated, &client, &ids, "truncated").await?;
    judge(found, "(b) largest file truncated to half", &p, &format!("{file}: {from} -> {to} bytes"));

    match marker(&good) {
        Some(name) => {
            let newer = scratch.path.join("newer");
            copy_tree(&good, &newer)?;
            let claim = bump_marker(&newer.join(&name))?;
            let p = probe(s, &scratch, &newer, &client, &ids, "newer").await?;
            judge(found, "(c) format marker claims a newer format", &p, &format!("{name}: {claim}"));
        }
        None => found.row(
            "(c) format marker claims a newer format",
            "refuses to start: the store is newer than this Herald",
            "no format marker: cannot test (a store Herald wrote holds no file naming its format or version)",
            Verdict::Fail,
        ),
    }
    Ok(Ran::Done)
}

/// Starts Herald on `dir`, writes `TASKS` Tasks (eight at a time), stops it with SIGTERM.
async fn make_store(s: &Settings, scratch: &Scratch, dir: &Path, client: &reqwest::Client) -> Result<Vec<String>> {
    let launch = Launch::new(&s.herald, dir, free_port()?, &scratch.file("make.log"));
    let (h, _) = launch.start(client).await?;
    let base = launch.base();
    let answers: Vec<Result<Option<String>>> = stream::iter(0..TASKS)
        .map(|_| async { client::create_task(client, &base, 0).await.map(|(_, id)| id) })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut ids = Vec::with_capacity(TASKS);
    for a in answers {
        ids.push(a?.ok_or("a Task write was not acknowledged while making the store")?);
    }
    match h.terminate().await? {
        Some(st) if st.success() => Ok(ids),
        other => Err(format!("Herald did not stop cleanly after making the store ({other:?}): {}", tail(&launch.log, 5)).into()),
    }
}

/// What one start on a damaged directory did.
struct Probe {
    startup: Startup,
    /// Acknowledged Tasks that did not read back, when it served.
    missing: Option<usize>,
    /// `Bundle.total` of a Task search, when it served.
    tasks: Option<u64>,
    /// The last lines of its output.
    message: String,
    /// The first ERROR line of its log, if any.
    first_error: Option<String>,
    panicked: Vec<String>,
}

impl Probe {
    fn summary(&self) -> String {
        match &self.startup {
            Startup::Ready(d) => format!(
                "ready in {:.2} s, serving {} Tasks{}; {}",
                d.as_secs_f64(),
                self.tasks.map_or_else(|| "?".to_string(), |t| t.to_string()),
                self.missing.map_or_else(String::new, |m| format!(", {m} of the acknowledged ones missing")),
                self.first_error.as_deref().map_or_else(|| "no ERROR in its log".to_string(), |e| format!("its first ERROR: '{e}'"))
            ),
            Startup::Exited(st, d) => format!("{st} after {:.2} s: '{}'", d.as_secs_f64(), self.message),
            Startup::Hung => format!("neither ready nor exited within 30 s: '{}'", self.message),
        }
    }
}

async fn probe(s: &Settings, scratch: &Scratch, dir: &Path, client: &reqwest::Client, ids: &[String], name: &str) -> Result<Probe> {
    let launch = Launch::new(&s.herald, dir, free_port()?, &scratch.file(&format!("{name}.log")));
    let mut h = launch.spawn()?;
    let startup = h.wait(client, Duration::from_secs(30)).await?;
    let (mut missing, mut tasks) = (None, None);
    if let Startup::Ready(_) = startup {
        missing = Some(client::unreadable(client, &launch.base(), ids).await.len());
        tasks = client::get(client, &format!("{}/Task?_count=1", launch.base()))
            .await
            .ok()
            .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
            .and_then(|v| v.get("total").and_then(Value::as_u64));
        h.terminate().await?;
    } else {
        drop(h);
    }
    let message = tail(&launch.log, 3).replace('\n', " / ");
    Ok(Probe {
        startup,
        missing,
        tasks,
        message: message.chars().take(300).collect(),
        first_error: errors(&launch.log, 1).into_iter().next(),
        panicked: panics(&launch.log),
    })
}

/// The three rows of a damaged case.
fn judge(found: &mut Findings, case: &str, p: &Probe, damage: &str) {
    let served_all = matches!(p.startup, Startup::Ready(_)) && p.missing == Some(0) && p.tasks.is_some_and(|t| t > 0);
    let refused = matches!(&p.startup, Startup::Exited(st, _) if !st.success()) && p.panicked.is_empty();
    found.row(
        format!("{case}: refuses to start"),
        "non-zero exit with a message",
        format!("{}; {damage}", p.summary()),
        Verdict::of(refused || served_all),
    );
    found.row(
        format!("{case}: no panic"),
        "no 'panicked at' in its output",
        p.panicked.first().cloned().unwrap_or_else(|| "none".into()),
        Verdict::of(p.panicked.is_empty()),
    );
    let silent = match (&p.startup, p.missing, p.tasks) {
        (Startup::Ready(_), Some(m), _) if m > 0 => Some(format!("served with {m} acknowledged Tasks missing")),
        (Startup::Ready(_), _, t) if t.unwrap_or(0) == 0 => Some("served an empty store".to_string()),
        _ => None,
    };
    found.row(
        format!("{case}: never serves an empty or partial store"),
        "not served, or served whole",
        silent.clone().unwrap_or_else(|| if refused { "not served".into() } else { "served whole".into() }),
        Verdict::of(silent.is_none()),
    );
}

/// File names under `dir`, relative, sorted.
fn names(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// Truncates the largest file under `dir` to half; returns its name and both sizes.
fn truncate_largest(dir: &Path) -> Result<(String, u64, u64)> {
    let largest = names(dir)
        .into_iter()
        .filter_map(|n| std::fs::metadata(dir.join(&n)).ok().map(|m| (m.len(), n)))
        .max()
        .ok_or("the store holds no file to truncate")?;
    let (len, name) = largest;
    std::fs::OpenOptions::new().write(true).open(dir.join(&name))?.set_len(len / 2)?;
    Ok((name, len, len / 2))
}

/// A top-level file of the store whose name says it records a format or version.
fn marker(dir: &Path) -> Option<String> {
    // Herald's own marker (`herald-store.json`, whose first number is the format), else any
    // file whose name says it holds a format or version.
    let names = names(dir);
    if names.iter().any(|n| n == "herald-store.json") {
        return Some("herald-store.json".to_owned());
    }
    names.into_iter().find(|n| {
        let lower = n.to_ascii_lowercase();
        !n.contains('/') && (lower.contains("format") || lower.contains("version"))
    })
}

/// Raises the first number in a marker file by 1000; returns "old -> new".
fn bump_marker(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)?;
    let start = text.find(|c: char| c.is_ascii_digit()).ok_or("the marker holds no number")?;
    let rest = text.get(start..).unwrap_or_default();
    let len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let old: u64 = rest.get(..len).unwrap_or_default().parse()?;
    let new = old + 1000;
    let bumped = format!("{}{new}{}", text.get(..start).unwrap_or_default(), rest.get(len..).unwrap_or_default());
    std::fs::write(path, bumped)?;
    Ok(format!("{old} -> {new}"))
}
