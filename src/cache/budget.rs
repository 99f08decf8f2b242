//! The memory plan: how `--cache-size` is divided, in one place.
//!
//! Everything the daemon holds of file content is in blocks that are cached or in flight, so the
//! plan is a handful of numbers derived from the cache size, the block size and the number of
//! connections:
//!
//! - a **reserve** for transient buffers that are not blocks (HTTP bodies being assembled, FUSE
//!   replies): an eighth of the cache, at most 32 MiB;
//! - the **capacity**: the rest, a hard cap on cached plus in-flight blocks;
//! - a **demand reserve**: in-flight bytes read-ahead leaves free so that a reader's own fetch
//!   never waits behind read-ahead;
//! - the **part size** of read-ahead requests, chosen so that every connection can carry one part
//!   with half as much again held as slack (completed parts not yet read), whatever the cache size:
//!   `clamp((capacity - demand reserve) / (1.5 × connections), 1 MiB, 8 MiB)`;
//! - the **in-flight limit**: one part per connection plus the demand reserve;
//! - the **window**: the most bytes one sequential reader may have ahead of it (in flight plus
//!   completed and unread), twice the parts of all connections, within the capacity;
//! - **consumed kept**: blocks a sequential reader has read to their end that are kept (the
//!   kernel's page cache has them; these cover its reads arriving out of order, up to 16 MiB
//!   apart): 32 MiB, at most a quarter of the capacity. The rest are dropped at once, so a
//!   stream holds its window plus this, however large the cache.
//!
//! So 128 MiB of cache still fills 16 connections, with parts of about 4 MiB. The plan never
//! promises more than the capacity: `inflight_limit <= capacity`, `window <= capacity -
//! demand_reserve`, and every size is a whole number of blocks.

/// The smallest part worth a round trip.
const MIN_PART: u64 = 1 << 20;
/// The largest part (and range request).
const MAX_PART: u64 = 8 << 20;
/// Consumed blocks kept, at most.
const KEEP_CONSUMED: u64 = 32 << 20;
/// The reserve is at most this.
const MAX_RESERVE: u64 = 32 << 20;

/// How a cache size is divided. Build it with [`MemoryPlan::new`] (from the whole `--cache-size`)
/// or [`MemoryPlan::for_capacity`] (from the bytes blocks may take).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Bytes kept for transient buffers (not blocks).
    pub reserve: u64,
    /// Cached plus in-flight blocks never exceed this.
    pub capacity: u64,
    /// Size of a cache block (the unit of eviction and the smallest fetch).
    pub block_size: u64,
    /// Range requests the client runs at once.
    pub connections: usize,
    /// The largest range request.
    pub max_request: u64,
    /// Size of one read-ahead request.
    pub part_size: u64,
    /// In-flight bytes read-ahead leaves for readers' own fetches.
    pub demand_reserve: u64,
    /// Bytes in flight at once, over all fetches.
    pub inflight_limit: u64,
    /// The most bytes one sequential reader has ahead of it, in flight or cached and unread.
    pub window: u64,
    /// Bytes of blocks consumed by sequential readers that are kept; older ones are dropped.
    pub keep_consumed: u64,
    /// Hedged requests (second requests for a straggler's remaining bytes) may fetch at most
    /// this fraction of the bytes fetched, beyond one part's allowance.
    pub hedge_fraction: f64,
}

/// Rounds `n` down to a multiple of `block`, at least one block.
fn blocks(n: u64, block: u64) -> u64 {
    (n / block).max(1) * block
}

impl MemoryPlan {
    /// The plan for a `--cache-size` of `cache_size` bytes (reserve included).
    pub fn new(cache_size: u64, block_size: u64, connections: usize, max_request: u64) -> Self {
        let reserve = (cache_size / 8).min(MAX_RESERVE);
        Self::for_capacity(cache_size - reserve, block_size, connections, max_request)
            .with_reserve(reserve)
    }

    /// The plan for blocks taking at most `capacity` bytes (no reserve).
    pub fn for_capacity(
        capacity: u64,
        block_size: u64,
        connections: usize,
        max_request: u64,
    ) -> Self {
        assert!(block_size > 0, "block size must be positive");
        let connections = connections.max(1);
        let bs = block_size;
        let capacity = capacity.max(4 * bs);
        let max_request = blocks(max_request.min(MAX_PART).min(capacity / 4), bs);
        let demand_reserve = blocks(max_request.min(capacity / 8), bs);
        let avail = capacity - demand_reserve;
        let min_part = MIN_PART.min(max_request);
        let part = (avail * 2 / (3 * connections as u64))
            .clamp(min_part, max_request)
            .min(avail / 3);
        let part_size = blocks(part, bs);
        let inflight_limit = (connections as u64 * part_size + demand_reserve).min(capacity);
        let window = (2 * connections as u64 * part_size)
            .min(avail)
            .max(part_size);
        MemoryPlan {
            reserve: 0,
            capacity,
            block_size: bs,
            connections,
            max_request,
            part_size,
            demand_reserve,
            inflight_limit,
            window: blocks(window, bs),
            keep_consumed: blocks(KEEP_CONSUMED.min(capacity / 4), bs),
            hedge_fraction: 0.05,
        }
    }

    fn with_reserve(mut self, reserve: u64) -> Self {
        self.reserve = reserve;
        self
    }

    /// Parts of read-ahead that fit in flight at once.
    pub fn parts_in_flight(&self) -> u64 {
        ((self.inflight_limit - self.demand_reserve) / self.part_size).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const BS: u64 = 32 << 10;

    fn check_invariants(p: &MemoryPlan) {
        assert!(p.inflight_limit <= p.capacity, "{p:?}");
        assert!(p.window + p.demand_reserve <= p.capacity, "{p:?}");
        assert!(p.part_size <= p.max_request, "{p:?}");
        assert!(p.keep_consumed <= p.capacity / 4 + p.block_size, "{p:?}");
        for n in [
            p.part_size,
            p.window,
            p.demand_reserve,
            p.max_request,
            p.keep_consumed,
        ] {
            assert_eq!(n % p.block_size, 0, "{n} in {p:?}");
        }
        assert!(p.part_size >= p.block_size);
    }

    #[test]
    fn sixteen_connections_are_filled_at_every_realistic_cache_size() {
        for (cache, part_min) in [
            (128 * MIB, 4 * MIB),
            (256 * MIB, 8 * MIB),
            (512 * MIB, 8 * MIB),
        ] {
            let p = MemoryPlan::new(cache, BS, 16, 8 * MIB);
            check_invariants(&p);
            assert_eq!(p.reserve + p.capacity, cache);
            assert!(p.part_size >= part_min, "{cache}: {p:?}");
            assert_eq!(p.parts_in_flight(), 16, "{cache}: {p:?}");
            assert!(
                p.window >= p.parts_in_flight() * p.part_size * 3 / 2,
                "slack beyond the parts in flight: {p:?}"
            );
        }
    }

    #[test]
    fn small_caches_get_smaller_parts_and_fewer_in_flight() {
        let p = MemoryPlan::for_capacity(4 * MIB, 64 << 10, 16, 512 << 10);
        check_invariants(&p);
        assert!(p.part_size <= 512 << 10);
        assert!(p.inflight_limit <= 4 * MIB);
        let p = MemoryPlan::new(19 * MIB, BS, 16, 8 * MIB);
        check_invariants(&p);
        assert!(p.part_size >= 512 << 10, "{p:?}");
    }

    #[test]
    fn the_plan_holds_for_any_size() {
        for cache in (1..2048).map(|i| i * 3 * MIB / 7 + 5 * BS) {
            for conns in [1, 2, 7, 16, 64] {
                check_invariants(&MemoryPlan::new(cache, BS, conns, 8 * MIB));
            }
        }
    }
}
