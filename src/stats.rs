//! Counters of what the daemon did, shared by the cache, the filesystem core and the client.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters; cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// Range requests sent to the Hub (after coalescing, before retries).
    pub range_requests: AtomicU64,
    /// Of those, read-ahead requests.
    pub prefetch_requests: AtomicU64,
    /// Bytes received from range requests.
    pub bytes_fetched: AtomicU64,
    /// Bytes returned to readers.
    pub bytes_served: AtomicU64,
    /// Blocks found in the cache.
    pub cache_hits: AtomicU64,
    /// Blocks that had to be fetched (or waited for).
    pub cache_misses: AtomicU64,
    /// Operations that failed with an error.
    pub errors: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
