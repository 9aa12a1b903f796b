//! How a store is opened (`Store::open_with`).

/// The zstd level of a compressed store when none is given: zstd's fastest. sled compresses
/// every page it writes to its log on the writing thread (the committer), and level 1 gave
/// nearly the bytes of level 5 (734 B against 640-760 B per small Task version) for less CPU.
/// Compression is off unless `store.compression_level` asks for it: in the same sitting it
/// made a small version about 3 times smaller on disk but halved the acknowledged writes/s
/// of S1 and S2 and added about 190 MiB to S4's peak memory (BENCHMARKS.md, issue #23).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// `store.cache_mib` unless configured: sled's own default (1 GiB) made the page cache the
/// largest term of peak memory under load.
pub const DEFAULT_CACHE_MIB: u64 = 128;

/// How a store is opened.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// sled's background flush timer (`store.dangerous_flush_delay` turns it off, so that only
    /// the group flush makes anything durable).
    pub background_flush: bool,
    /// sled's page cache, in MiB (`store.cache_mib`).
    pub cache_mib: u64,
    /// zstd level for the pages of a store created now (`store.compression_level`); `None`:
    /// pages stored as written. A store keeps what it was created with (see `dir`).
    pub compression: Option<i32>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { background_flush: true, cache_mib: DEFAULT_CACHE_MIB, compression: None }
    }
}
