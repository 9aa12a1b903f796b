//! The data directory's identity, and what it vouches for, kept beside sled's files so that a
//! damaged, foreign or newer store is refused at start instead of served (issue #18).
//!
//! - `herald-store.json`: `{ "format": 2, "store": "<uuid>", "fhir_version": "5.0.0" }`, written
//!   when Herald creates a store, or adopts one written before the marker existed. A store is
//!   refused by an instance serving another FHIR version (a marker without `fhir_version` is R5). `format` is the layout and record
//!   format of the store; a build refuses a format newer than its own. Format 1: sled's pages as
//!   written; format 2 (since issue #23): the same keys and records, sled's pages compressed
//!   with zstd (sled's `use_compression`, which sled records in its own `conf` and will not
//!   open with the other setting). This build writes 1 for a new store (2 when
//!   `store.compression_level` asks for compression) and reads both; a store keeps its format, so a format 1
//!   store stays readable by older builds, and a format 2 one is refused by them as newer
//!   instead of failing inside sled. The store holds the same
//!   id under its `store-id` meta key, so that a marker and a store of different origins (a
//!   directory assembled from two backups) are refused too.
//! - `herald.ack`: `{ "store": "<uuid>", "durable": N }`, replaced (temporary file, fsync,
//!   rename) at most every `ACK_EVERY` after a group flush: N commits were durable then, so
//!   every write acknowledged before is in a store holding at least N. The store records its
//!   own count under its `commits` meta key with every flush. A store holding fewer commits
//!   than the ack file vouches for has lost acknowledged data (a file cut short, an older copy
//!   restored over it) and is refused: serving it would answer 404 for acknowledged resources
//!   and give their event numbers to other changes. The file lags the store by at most
//!   `ACK_EVERY` and is written only after the flush it reports, so it never claims more than
//!   the store holds; a loss inside that last window is not detected.
//! - Anything else in the directory (besides sled's own `conf`, `db`, `blobs/` and `snap.*`)
//!   means it is not Herald's: refused, never written into.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Result, StoreError};
use crate::fhir::FhirVersion;

/// The newest store format this build writes and reads: sled's pages compressed.
pub const FORMAT: u32 = 2;
/// The store format of pages stored as written (every store before issue #23).
pub const FORMAT_PLAIN: u32 = 1;

const MARKER: &str = "herald-store.json";
const ACK: &str = "herald.ack";
/// The file a cluster node keeps beside its store while it is (or was, until its store is
/// rebuilt) the writer (`cluster::node`).
pub const CLUSTER_WRITER: &str = "cluster-writer";

/// How often at most `herald.ack` is rewritten.
const ACK_EVERY: Duration = Duration::from_millis(50);

/// Files sled keeps in its directory, and what a freshly formatted volume mounted there holds.
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs" | "lost+found" | CLUSTER_WRITER) || name.starts_with("snap.")
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: u32,
    store: String,
    /// The FHIR version the store's resources are in; stores written before it was recorded
    /// are R5, the only version Herald served then.
    #[serde(default = "r5_number")]
    fhir_version: String,
}

fn r5_number() -> String {
    FhirVersion::R5.number().to_owned()
}

#[derive(Serialize, Deserialize)]
struct Ack {
    store: String,
    durable: u64,
}

fn refused(dir: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Refused(format!("data directory {}: {why}", dir.display()))
}

/// What the directory held before sled opened it.
pub(super) enum Found {
    /// Nothing yet: a new store.
    Empty,
    /// A Herald store with its marker.
    Marked { store: String },
    /// sled's files and nothing else, no marker: a store from before markers (adopted once
    /// sled shows it holds Herald's tree), or another program's sled database (refused then).
    Unmarked,
}

/// Looks at `dir` before sled touches it.
pub(super) fn inspect(dir: &Path) -> Result<Found> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Empty),
        Err(e) => return Err(refused(dir, format!("cannot be read: {e}"))),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| refused(dir, format!("cannot be read: {e}")))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    // A crash while replacing the marker or the ack file leaves its temporary copy: ours, and
    // never read (the rename is what makes a new version count).
    for tmp in [format!("{MARKER}.tmp"), format!("{ACK}.tmp")] {
        if names.contains(&tmp) {
            std::fs::remove_file(dir.join(&tmp)).map_err(|e| refused(dir, format!("cannot remove {tmp}: {e}")))?;
            names.retain(|n| *n != tmp);
        }
    }
    let foreign: Vec<&String> = names.iter().filter(|n| !is_sled_file(n) && *n != MARKER && *n != ACK).collect();
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(|s| s.as_str()).collect();
        return Err(refused(
            dir,
            format!(
                "holds files that are not a Herald store ({}{}); refusing to start rather than write into it. Point --data-dir at an empty directory or at a Herald store",
                shown.join(", "),
                if foreign.len() > shown.len() { ", ..." } else { "" }
            ),
        ));
    }
    if names.iter().all(|n| n == "lost+found" || n == CLUSTER_WRITER) {
        return Ok(Found::Empty);
    }
    if !names.iter().any(|n| n == MARKER) {
        if names.iter().any(|n| n == ACK) {
            return Err(refused(dir, format!("has {ACK} but no {MARKER}: it is incomplete; restore it from a backup")));
        }
        return Ok(Found::Unmarked);
    }
    let text = std::fs::read_to_string(dir.join(MARKER)).map_err(|e| refused(dir, format!("{MARKER} cannot be read: {e}")))?;
    let marker: Marker = serde_json::from_str(&text).map_err(|e| refused(dir, format!("{MARKER} is damaged: {e}")))?;
    if marker.format > FORMAT {
        return Err(refused(
            dir,
            format!(
                "was written by a newer Herald (store format {}, this build reads up to {FORMAT}); run that version or newer",
                marker.format
            ),
        ));
    }
    if marker.format == 0 {
        return Err(refused(dir, format!("{MARKER} names store format 0, which no Herald wrote")));
    }
    let serving = crate::fhir::version::instance();
    if FhirVersion::parse(&marker.fhir_version) != Some(serving) {
        return Err(refused(
            dir,
            format!(
                "holds FHIR {} resources and this instance serves FHIR {serving}; start it with --fhir-version {} or use another data directory",
                marker.fhir_version, marker.fhir_version
            ),
        ));
    }
    Ok(Found::Marked { store: marker.store })
}

/// Writes `bytes` to `dir/name` atomically and durably (temporary file, fsync, rename, fsync
/// of the directory).
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the marker for store `store` in `format` (a new store, or one adopted from before
/// markers).
pub(super) fn mark(dir: &Path, store: &str, format: u32) -> Result<()> {
    let fhir_version = crate::fhir::version::instance().number().to_owned();
    let bytes = serde_json::to_vec(&Marker { format, store: store.to_owned(), fhir_version }).map_err(StoreError::Encode)?;
    replace(dir, MARKER, &bytes).map_err(|e| refused(dir, format!("cannot write {MARKER}: {e}")))
}

/// Whether the sled files in `dir` were created with compression, as sled's own `conf` file
/// records it (`use_compression: true`); `None` when there is no such file yet (a new store).
pub(super) fn sled_compression(dir: &Path) -> Result<Option<bool>> {
    let bytes = match std::fs::read(dir.join("conf")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(dir, format!("sled's conf cannot be read: {e}"))),
    };
    // Text lines then a CRC; sled checks the CRC itself when it opens the store.
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(text.lines().any(|l| l.trim() == "use_compression: true")))
}

/// Checks that the store (`store` id, `commits` held) holds everything `herald.ack` vouches
/// for.
pub(super) fn check_ack(dir: &Path, store: &str, commits: u64) -> Result<()> {
    let text = match std::fs::read_to_string(dir.join(ACK)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refused(dir, format!("{ACK} cannot be read: {e}"))),
    };
    let ack: Ack = serde_json::from_str(&text).map_err(|e| refused(dir, format!("{ACK} is damaged: {e}")))?;
    if ack.store != store {
        return Err(refused(dir, format!("{ACK} belongs to another store ({}, this one is {store})", ack.store)));
    }
    if commits < ack.durable {
        return Err(refused(
            dir,
            format!(
                "the store holds {commits} commits but {} were durable and acknowledged: it has lost acknowledged data (a file cut short, or an older copy restored over it). Refusing to serve it; restore the directory from a backup, or move it aside to start empty",
                ack.durable
            ),
        ));
    }
    Ok(())
}

/// Rewrites `herald.ack` after flushes, at most every `ACK_EVERY`.
pub(super) struct AckWriter {
    dir: PathBuf,
    store: String,
    last: Mutex<Option<Instant>>,
}

impl AckWriter {
    pub fn new(dir: &Path, store: &str) -> Self {
        AckWriter { dir: dir.to_path_buf(), store: store.to_owned(), last: Mutex::new(None) }
    }

    /// `durable` commits are now durable; recorded unless the file was written less than
    /// `ACK_EVERY` ago. A failure to record it is logged, never fatal: the file only ever lags.
    pub fn durable(&self, durable: u64) {
        self.record(durable, false);
    }

    /// `durable`, recorded now whatever the throttle says.
    pub fn durable_now(&self, durable: u64) {
        self.record(durable, true);
    }

    fn record(&self, durable: u64, now: bool) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !now && last.is_some_and(|at| at.elapsed() < ACK_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let Ok(bytes) = serde_json::to_vec(&Ack { store: self.store.clone(), durable }) else { return };
        if let Err(e) = replace(&self.dir, ACK, &bytes) {
            tracing::warn!(error = %e, "cannot record the durable commit count in herald.ack");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_newer_and_damaged_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(inspect(&dir.path().join("missing")).unwrap(), Found::Empty));
        assert!(matches!(inspect(dir.path()).unwrap(), Found::Empty));
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let err = inspect(dir.path()).err().unwrap().to_string();
        assert!(err.contains("not a Herald store") && err.contains("notes.txt"), "{err}");
        std::fs::remove_file(dir.path().join("notes.txt")).unwrap();
        std::fs::write(dir.path().join("db"), "x").unwrap();
        assert!(matches!(inspect(dir.path()).unwrap(), Found::Unmarked));
        std::fs::write(dir.path().join(MARKER), r#"{"format":3,"store":"s"}"#).unwrap();
        assert!(inspect(dir.path()).err().unwrap().to_string().contains("newer Herald"));
        std::fs::write(dir.path().join(MARKER), "{nope").unwrap();
        assert!(inspect(dir.path()).err().unwrap().to_string().contains("damaged"));
        mark(dir.path(), "s1", FORMAT).unwrap();
        assert!(matches!(inspect(dir.path()).unwrap(), Found::Marked { store } if store == "s1"));
        // A kill -9 while the ack file was being replaced leaves its temporary copy behind.
        std::fs::write(dir.path().join("herald.ack.tmp"), "{\"store\":").unwrap();
        assert!(matches!(inspect(dir.path()).unwrap(), Found::Marked { .. }));
        assert!(!dir.path().join("herald.ack.tmp").exists());
    }

    #[test]
    fn a_store_holding_less_than_the_ack_file_vouches_for_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_ack(dir.path(), "s1", 0).unwrap();
        let w = AckWriter::new(dir.path(), "s1");
        w.durable(10);
        check_ack(dir.path(), "s1", 10).unwrap();
        check_ack(dir.path(), "s1", 11).unwrap();
        assert!(check_ack(dir.path(), "s1", 9).err().unwrap().to_string().contains("lost acknowledged data"));
        assert!(check_ack(dir.path(), "s2", 10).err().unwrap().to_string().contains("another store"));
    }
}
