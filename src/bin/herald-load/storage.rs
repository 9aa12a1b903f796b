//! The `storage` scenario (issue #23): bytes on disk per stored version, and where they go.
//!
//! For a small Task (about 250 B: status, intent, code, focus, owner, as a queue server's) and one of
//! `--large-bytes`: Herald on a fresh data directory at its defaults (search indexes included),
//! one SubscriptionTopic and one id-only rest-hook subscription matching every write (what a
//! queue server has), then `--storage-versions` versions (a quarter as many of the large Task)
//! written as Tasks of four versions each (a PUT that creates, three that update), `--concurrency`
//! Tasks at a time. Once every event is delivered Herald is stopped with SIGTERM, and the data
//! directory is measured: the sum of file sizes and the blocks allocated (`st_blocks` × 512),
//! each divided by the versions written. Then the store is opened in this process (its files
//! already measured; an R5 store, the version this process opens stores in) and read for its
//! logical bytes by key family (`Store::usage`); "engine" is file bytes minus logical bytes
//! (sled's page headers and log framing, page versions not yet cleaned, free segment space,
//! less what compression saved). Bytes on disk do not depend on the build profile; the CPU
//! column does.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::herald::{Herald, Scratch};
use crate::receiver::Receiver;
use crate::report::{count, num, Report, Row};
use crate::setup::{self, Filter, Plan};
use crate::{proc, Result, Settings};

/// Versions each Task gets: created, then three status changes.
const VERSIONS_PER_TASK: usize = 4;
const STATUSES: [&str; VERSIONS_PER_TASK] = ["requested", "accepted", "in-progress", "completed"];
/// The owner every Task has and the subscription filters on.
const OWNER: &str = "storage";

/// Key families as the table groups them: column, prefixes (`store::keys`).
const GROUPS: &[(&str, &[u8])] =
    &[("current", b"r"), ("history", b"h"), ("index", b"ix"), ("events", b"ed"), ("audit", b"a"), ("sub_state", b"sp"), ("meta", b"m")];

pub async fn run(client: &reqwest::Client, s: &Settings, scratch: &Scratch, report: &mut Report) -> Result<()> {
    let small = s.storage_versions;
    let large = (s.storage_versions / 4).max(VERSIONS_PER_TASK);
    report.push(measure(client, s, scratch, "storage-small", 0, small).await?);
    report.push(measure(client, s, scratch, "storage-large", s.large_bytes, large).await?);
    Ok(())
}

/// Version `seq` (0-based) of Task `lt{task}`, padded to about `bytes` (0: no padding).
fn body(task: usize, seq: usize, bytes: usize) -> Bytes {
    let status = STATUSES.get(seq % VERSIONS_PER_TASK).copied().unwrap_or("ready");
    let text = |pad: &str| {
        format!(
            concat!(
                r#"{{"resourceType":"Task","id":"lt{task}","status":"{status}","intent":"order","#,
                r#""code":{{"coding":[{{"system":"http://example.org/work","code":"draw-blood"}}]}},"#,
                r#""focus":{{"reference":"ServiceRequest/sr-{task}"}},"#,
                r#""owner":{{"reference":"Organization/{owner}"}}{pad}}}"#
            ),
            task = task,
            status = status,
            owner = OWNER,
            pad = pad,
        )
    };
    let plain = text("");
    match bytes.checked_sub(plain.len()) {
        Some(pad) if pad > 18 => Bytes::from(text(&format!(r#","description":"{}""#, noise(task, seq, pad - 17)))),
        _ => Bytes::from(plain),
    }
}

/// `len` base64 characters, pseudo-random per version: the padding of the large Task stands
/// for an attachment's data, which compresses no better than base64 does (to about 3/4), not
/// for a run of one letter that compression would make disappear.
fn noise(task: usize, seq: usize, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = (task as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seq as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    (0..len)
        .map(|_| {
            // xorshift64: cheap, and enough to defeat a compressor.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET.get((x >> 58) as usize).copied().unwrap_or(b'A'))
        })
        .collect()
}

/// Sum of file sizes and of allocated blocks under `dir`.
fn dir_bytes(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut len, mut allocated) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (l, a) = dir_bytes(&entry.path())?;
            len += l;
            allocated += a;
        } else {
            len += meta.len();
            allocated += meta.blocks() * 512;
        }
    }
    Ok((len, allocated))
}

async fn measure(client: &reqwest::Client, s: &Settings, scratch: &Scratch, id: &str, bytes: usize, versions: usize) -> Result<Row> {
    let tasks = versions.div_ceil(VERSIONS_PER_TASK);
    let versions = tasks * VERSIONS_PER_TASK;
    let task_bytes = body(0, 0, bytes).len();
    let what = format!(
        "{} versions of a {} B Task ({} Tasks × {VERSIONS_PER_TASK}), 1 subscription, default indexes",
        count(versions),
        count(task_bytes),
        count(tasks)
    );
    eprintln!("== {id}: {what}");
    let dir = scratch.dir(id)?;
    let receiver = Receiver::start().await?;
    let herald = Herald::start(&s.herald, s.herald_config.as_deref(), &dir, client).await?;
    let written = write(client, s, &herald, &receiver, bytes, tasks).await;
    let written = match written {
        Ok(w) => w,
        Err(e) => return Err(format!("{id}: {e}\nHerald's log ends:\n{}", herald.log_tail()).into()),
    };
    let data = dir.join("data");
    let (running_len, _) = dir_bytes(&data)?;
    let peak_rss = herald.peak_rss_mib().ok();
    let stopped = herald.stop().await?;
    let (len, allocated) = dir_bytes(&data)?;
    let usage = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || herald::store::Store::open(&data).and_then(|store| store.usage())).await??
    };
    scratch.remove(&dir);

    let per = |b: u64| b as f64 / versions as f64;
    let logical = usage.logical_bytes();
    let mut row = Row {
        scenario: id.into(),
        what,
        writes_per_s: Some(versions as f64 / written.secs),
        herald_cpu_percent: Some(written.cpu_s / written.secs * 100.0),
        herald_peak_rss_mib: peak_rss,
        notifications_total: Some(receiver.receipts.events()),
        errors: 0,
        ..Row::default()
    };
    row.notes.push(format!("{} B on disk per version ({} B allocated)", num(per(len)), num(per(allocated))));
    if !stopped {
        row.notes.push("Herald did not stop cleanly on SIGTERM".into());
    }
    if receiver.receipts.events() < versions as u64 {
        row.notes.push(format!("{} of {} events delivered", receiver.receipts.events(), versions));
    }
    let d = &mut row.details;
    d.insert("versions".into(), versions.into());
    d.insert("task_bytes".into(), task_bytes.into());
    d.insert("file_bytes".into(), len.into());
    d.insert("allocated_bytes".into(), allocated.into());
    d.insert("running_file_bytes".into(), running_len.into());
    d.insert("logical_bytes".into(), logical.into());
    d.insert("file_bytes_per_version".into(), per(len).into());
    d.insert("allocated_bytes_per_version".into(), per(allocated).into());
    d.insert("engine_bytes_per_version".into(), (per(len) - per(logical)).into());
    d.insert("herald_cpu_ms_per_version".into(), (written.cpu_s * 1000.0 / versions as f64).into());
    let mut families = serde_json::Map::new();
    for f in &usage.families {
        let key = f.prefix.map_or_else(|| "other".to_string(), |p| (p as char).to_string());
        families.insert(key, json!({ "name": f.name, "keys": f.keys, "key_bytes": f.key_bytes, "value_bytes": f.value_bytes }));
    }
    d.insert("families".into(), Value::Object(families));
    for (group, prefixes) in GROUPS {
        let b: u64 = usage.families.iter().filter(|f| f.prefix.is_some_and(|p| prefixes.contains(&p))).map(|f| f.bytes()).sum();
        d.insert(format!("{group}_bytes_per_version"), per(b).into());
    }
    let other: u64 = usage.families.iter().filter(|f| f.prefix.is_none()).map(|f| f.bytes()).sum();
    d.insert("other_trees_bytes_per_version".into(), per(other).into());
    Ok(row)
}

struct Written {
    secs: f64,
    /// Herald's CPU seconds over the writes.
    cpu_s: f64,
}

/// Creates the topic and the subscription, writes `tasks` × 4 versions, and waits until every
/// event was delivered (or `--drain` passed).
async fn write(
    client: &reqwest::Client,
    s: &Settings,
    herald: &Herald,
    receiver: &Receiver,
    bytes: usize,
    tasks: usize,
) -> Result<Written> {
    let base = herald.base.clone();
    setup::create_topic(client, &base).await?;
    let plan = Plan { count: 1, content: "id-only", filter: Filter::Owner(OWNER), max_count: s.max_count };
    let ids = setup::subscribe(client, &base, &receiver.url, plan, 1).await?;
    setup::wait_active(client, &base, &ids, 1, Duration::from_secs(60)).await?;
    let cpu0 = proc::cpu_seconds(herald.pid())?;
    let started = Instant::now();
    stream::iter(0..tasks)
        .map(|task| {
            let url = format!("{base}/Task/lt{task}");
            async move {
                for seq in 0..VERSIONS_PER_TASK {
                    let resp = client.put(&url).header("content-type", "application/fhir+json").body(body(task, seq, bytes)).send().await?;
                    let status = resp.status();
                    if !status.is_success() {
                        let text = resp.text().await.unwrap_or_default();
                        return Err::<(), crate::Error>(
                            format!("PUT {url}: {status}: {}", text.chars().take(300).collect::<String>()).into(),
                        );
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(s.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_s = proc::cpu_seconds(herald.pid())? - cpu0;
    let expected = u64::try_from(tasks * VERSIONS_PER_TASK)?;
    let deadline = Instant::now() + s.drain;
    while receiver.receipts.events() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Written { secs, cpu_s })
}

/// The storage rows as their own table: bytes per version, by where they go.
pub fn table(rows: &[Row], t: &mut String) {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario.starts_with("storage-")).collect();
    if rows.is_empty() {
        return;
    }
    t.push_str(
        "\nStorage: bytes per stored version after a clean stop (logical = key + value bytes Herald stored; engine = files − logical)\n\n",
    );
    t.push_str("| row | versions | Task | files | allocated | current | history | search index | events | audit | sub state | meta | engine | files while running | Herald CPU per version | notes |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let f = |k: &str| r.details.get(k).and_then(Value::as_f64);
        let b = |k: &str| f(k).map_or_else(|| "—".to_string(), |v| format!("{} B", num(v)));
        let versions = f("versions").unwrap_or(1.0).max(1.0);
        let running = f("running_file_bytes").map_or_else(|| "—".to_string(), |v| format!("{} B", num(v / versions)));
        let cpu = f("herald_cpu_ms_per_version").map_or_else(|| "—".to_string(), |v| format!("{} ms", num(v)));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            num(versions),
            b("task_bytes"),
            b("file_bytes_per_version"),
            b("allocated_bytes_per_version"),
            b("current_bytes_per_version"),
            b("history_bytes_per_version"),
            b("index_bytes_per_version"),
            b("events_bytes_per_version"),
            b("audit_bytes_per_version"),
            b("sub_state_bytes_per_version"),
            b("meta_bytes_per_version"),
            b("engine_bytes_per_version"),
            running,
            cpu,
            r.notes.iter().skip(1).cloned().collect::<Vec<_>>().join("; ").replace('|', "/")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_bodies_are_json_of_about_the_asked_size() {
        let small = body(7, 2, 0);
        let v: Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(v["status"], "in-progress");
        assert!((230..270).contains(&small.len()), "{}", small.len());
        let large = body(7, 3, 10_240);
        assert_eq!(large.len(), 10_240);
        assert!(serde_json::from_slice::<Value>(&large).is_ok());
        assert_ne!(body(7, 3, 10_240), body(7, 2, 10_240), "every version's padding differs");
    }
}
