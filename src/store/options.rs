//! How a store is opened (`Store::open_with`).

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
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { background_flush: true, cache_mib: DEFAULT_CACHE_MIB }
    }
}
