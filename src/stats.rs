//! Counters of what the daemon did, shared by the cache, the filesystem core and the client, and
//! their two renderings: JSON (the `/.hubfs/stats` file, `hubfs status`) and Prometheus text
//! (`--metrics-addr`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters; cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    /// HTTP requests sent (every attempt and redirect hop).
    pub http_requests: AtomicU64,
    /// Range requests started by the cache (after coalescing, before retries).
    pub range_requests: AtomicU64,
    /// Of those, read-ahead requests.
    pub prefetch_requests: AtomicU64,
    /// Range requests in flight now.
    pub inflight_requests: AtomicU64,
    /// Retries of failed HTTP attempts.
    pub retries: AtomicU64,
    /// Range-request attempts whose body the direct HTTP/1.1 client read straight into block
    /// buffers (`hub::h1`), whole.
    pub direct_range_requests: AtomicU64,
    /// Bytes received from range requests.
    pub bytes_fetched: AtomicU64,
    /// Bytes returned to readers.
    pub bytes_served: AtomicU64,
    /// Blocks found in the cache.
    pub cache_hits: AtomicU64,
    /// Blocks that had to be fetched (or waited for).
    pub cache_misses: AtomicU64,
    /// `FUSE_INTERRUPT`s received (the caller of a request got a signal, caught or not).
    pub interrupts_received: AtomicU64,
    /// Requests answered EINTR and dropped because their caller was dying or had exited.
    pub interrupted: AtomicU64,
    /// Range requests stopped because every reader waiting for them went away.
    pub fetches_cancelled: AtomicU64,
    /// Second requests started for stragglers' remaining bytes.
    pub hedges: AtomicU64,
    /// Of those, hedges that finished first.
    pub hedges_won: AtomicU64,
    /// Bytes asked for by hedges.
    pub hedge_bytes: AtomicU64,
    /// The largest read the kernel has asked for, bytes: the FUSE request size in use (1 MiB by
    /// default, up to 8 MiB where `fs.fuse.max_pages_limit` allows).
    pub read_request_max: AtomicU64,
    /// Failed operations by errno class.
    pub errors: ErrorCounts,
}

/// Failed filesystem operations, by what the reader saw.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    /// ENOENT from the Hub (not names missing from cached listings).
    pub not_found: AtomicU64,
    /// EACCES: private or gated repo, bad token.
    pub denied: AtomicU64,
    /// EIO: network, timeout, 5xx, protocol.
    pub io: AtomicU64,
    /// ESTALE: content changed under a read.
    pub stale: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// Raises a high-water mark to `n` if `n` is higher.
    pub fn raise(counter: &AtomicU64, n: u64) {
        // A read first: on a hot path the mark is rarely raised, and a load does not take the
        // cache line from the other threads.
        if n > counter.load(Ordering::Relaxed) {
            counter.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a failed operation by its errno.
    pub fn count_error(&self, errno: i32) {
        let c = match errno {
            libc::ENOENT => &self.errors.not_found,
            libc::EACCES => &self.errors.denied,
            libc::ESTALE => &self.errors.stale,
            libc::EIO => &self.errors.io,
            _ => return,
        };
        Self::add(c, 1);
    }

    /// Every counter with its name, Prometheus-style (`hubfs_` prefix added by the renderer).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let g = Self::get;
        vec![
            ("http_requests_total", g(&self.http_requests)),
            ("range_requests_total", g(&self.range_requests)),
            ("prefetch_requests_total", g(&self.prefetch_requests)),
            ("inflight_requests", g(&self.inflight_requests)),
            ("retries_total", g(&self.retries)),
            (
                "direct_range_requests_total",
                g(&self.direct_range_requests),
            ),
            ("bytes_fetched_total", g(&self.bytes_fetched)),
            ("bytes_served_total", g(&self.bytes_served)),
            ("cache_hits_total", g(&self.cache_hits)),
            ("cache_misses_total", g(&self.cache_misses)),
            ("interrupts_received_total", g(&self.interrupts_received)),
            ("interrupted_total", g(&self.interrupted)),
            ("fetches_cancelled_total", g(&self.fetches_cancelled)),
            ("hedges_total", g(&self.hedges)),
            ("hedges_won_total", g(&self.hedges_won)),
            ("hedge_bytes_total", g(&self.hedge_bytes)),
            ("read_request_max_bytes", g(&self.read_request_max)),
            ("errors_not_found_total", g(&self.errors.not_found)),
            ("errors_denied_total", g(&self.errors.denied)),
            ("errors_io_total", g(&self.errors.io)),
            ("errors_stale_total", g(&self.errors.stale)),
        ]
    }
}

/// Gauges that live outside [`Stats`] (memory), sampled when rendering.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Gauges {
    /// Bytes held by cached blocks.
    pub cache_bytes: u64,
    /// Of those, read-ahead not yet read.
    pub readahead_unread_bytes: u64,
    /// Read-ahead evicted before anyone read it, in all: fetched for nothing.
    pub readahead_wasted_bytes_total: u64,
    /// Blocks sequential readers had read to their end, dropped beyond the kept ones, in all.
    pub consumed_dropped_bytes_total: u64,
    /// Block buffers of the pool in use now.
    pub block_buffers_in_use: u64,
    /// Pieces received into heap memory because the pool was empty, in all.
    pub block_buffers_from_heap_total: u64,
    /// Bytes reserved by fetches in flight.
    pub inflight_bytes: u64,
    /// The cache's capacity.
    pub cache_capacity_bytes: u64,
    /// Live inodes.
    pub inodes: u64,
    /// Metadata memory counted now: listing pages plus live inodes (`--metadata-size` bounds it).
    pub metadata_bytes: u64,
    /// Listing pages cached now.
    pub listing_pages: u64,
    /// Listing pages fetched from the Hub, in all.
    pub listing_pages_fetched_total: u64,
    /// Seconds since the mount.
    pub uptime_seconds: u64,
}

/// The JSON document of `/.hubfs/stats`.
pub fn to_json(stats: &Stats, gauges: &Gauges) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in stats.counters() {
        map.insert(k.to_owned(), v.into());
    }
    if let Ok(serde_json::Value::Object(g)) = serde_json::to_value(gauges) {
        map.extend(g);
    }
    let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(map))
        .unwrap_or_else(|_| "{}".to_owned());
    s.push('\n');
    s
}

/// The Prometheus text exposition of the same numbers.
pub fn to_prometheus(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = String::new();
    let mut push = |name: &str, v: u64| {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        out.push_str(&format!("# TYPE hubfs_{name} {kind}\nhubfs_{name} {v}\n"));
    };
    for (k, v) in stats.counters() {
        push(k, v);
    }
    push("cache_bytes", gauges.cache_bytes);
    push("inflight_bytes", gauges.inflight_bytes);
    push("readahead_unread_bytes", gauges.readahead_unread_bytes);
    push("block_buffers_in_use", gauges.block_buffers_in_use);
    push(
        "block_buffers_from_heap_total",
        gauges.block_buffers_from_heap_total,
    );
    push(
        "readahead_wasted_bytes_total",
        gauges.readahead_wasted_bytes_total,
    );
    push(
        "consumed_dropped_bytes_total",
        gauges.consumed_dropped_bytes_total,
    );
    push("cache_capacity_bytes", gauges.cache_capacity_bytes);
    push("inodes", gauges.inodes);
    push("metadata_bytes", gauges.metadata_bytes);
    push("listing_pages", gauges.listing_pages);
    push(
        "listing_pages_fetched_total",
        gauges.listing_pages_fetched_total,
    );
    push("uptime_seconds", gauges.uptime_seconds);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_prometheus_carry_every_counter() {
        let s = Stats::default();
        Stats::add(&s.bytes_fetched, 42);
        s.count_error(libc::EACCES);
        let g = Gauges {
            cache_bytes: 7,
            ..Default::default()
        };
        let j: serde_json::Value = serde_json::from_str(&to_json(&s, &g)).unwrap();
        assert_eq!(j["bytes_fetched_total"], 42);
        assert_eq!(j["errors_denied_total"], 1);
        assert_eq!(j["cache_bytes"], 7);
        let p = to_prometheus(&s, &g);
        assert!(
            p.contains("# TYPE hubfs_bytes_fetched_total counter\nhubfs_bytes_fetched_total 42\n")
        );
        assert!(p.contains("hubfs_cache_bytes 7\n"));
        for (k, _) in s.counters() {
            assert!(
                j.get(k).is_some() && p.contains(&format!("hubfs_{k} ")),
                "{k}"
            );
        }
    }
}
