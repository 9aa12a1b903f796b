//! How a store is opened (`Store::open_with`).

/// `store.compression_level` unless configured: zstd's fastest level. sled compresses every
/// page it writes to its log on the writing thread (the committer), and level 1 gave nearly
/// the bytes of level 5 (734 B against 640-760 B per small Task version) for less CPU
/// (BENCHMARKS.md, issue #23).
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
        OpenOptions { background_flush: true, cache_mib: DEFAULT_CACHE_MIB, compression: Some(DEFAULT_COMPRESSION_LEVEL) }
    }
}
