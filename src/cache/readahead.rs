//! Read-ahead into the block cache: [`BlockCache::prefetch`] starts runs for blocks no reader
//! asked for yet, only while the demand reserve stays free and room can be made without evicting
//! other read-ahead not yet read (which of them to start is `prefetch.rs`'s business).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::blocks::{BlockCache, OnDone, Purpose, State};
use super::runs::FetchFn;

/// Read-ahead unread for this long may be evicted by other read-ahead (its reader left).
const STALE_READAHEAD: Duration = Duration::from_secs(10);

/// What [`BlockCache::prefetch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefetched {
    /// Read-ahead is cached or in flight up to here.
    pub until: u64,
    /// Runs started (each calls its `on_done` once).
    pub runs: u32,
}

impl BlockCache {
    /// Starts read-ahead of the blocks of `[start, end)` that are neither cached nor in flight, in
    /// runs of at most the plan's largest request, while the demand reserve stays free and room
    /// can be made without evicting unread read-ahead. `on_done` is called as each run ends.
    pub fn prefetch(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        start: u64,
        end: u64,
        fetch: &FetchFn,
        on_done: Option<OnDone>,
    ) -> Prefetched {
        let end = end.min(file_size);
        let mut out = Prefetched {
            until: start.max(end),
            runs: 0,
        };
        if start >= end {
            return out;
        }
        let bs = self.plan.block_size;
        let first = start / bs;
        let last = (end - 1) / bs;
        let max_blocks = (self.plan.max_request / bs).max(1);
        let content: Arc<str> = Arc::from(content);
        let mut s = self.state.lock();
        let mut index = first;
        while index <= last {
            let key = Self::key(&content, index);
            if s.covered(&key) {
                // A fetch for readers that read-ahead now counts on must not stop with them.
                if let Some(d) = s.live_inflight(&key).and_then(|r| r.demand.as_ref()) {
                    d.pin();
                }
                index += 1;
                continue;
            }
            let mut run_last = index;
            while run_last < last
                && run_last + 1 - index < max_blocks
                && !s.covered(&Self::key(&content, run_last + 1))
            {
                run_last += 1;
            }
            let run_len = self.run_len(file_size, index, run_last);
            let Some(permit) = self.readahead_budget(&mut s, run_len) else {
                out.until = index * bs;
                return out;
            };
            self.start_run(
                &mut s,
                &content,
                file_size,
                index,
                run_last,
                Purpose::Prefetch,
                fetch,
                permit,
                on_done.clone(),
            );
            out.runs += 1;
            index = run_last + 1;
        }
        out
    }

    /// Under the lock: the budget for a read-ahead run of `run_len` bytes, if it may start now.
    /// Back-pressure: read-ahead starts only while the demand reserve stays free, and never
    /// evicts read-ahead that is still to be read.
    fn readahead_budget(&self, s: &mut State, run_len: u64) -> Option<OwnedSemaphorePermit> {
        if (self.inflight_budget.available_permits() as u64) < run_len + self.plan.demand_reserve {
            return None;
        }
        let inflight = s.inflight_bytes;
        if !s.store.make_room_for_readahead(
            run_len,
            inflight,
            self.plan.demand_reserve,
            self.plan.capacity,
            Instant::now(),
            STALE_READAHEAD,
        ) {
            return None;
        }
        self.inflight_budget
            .clone()
            .try_acquire_many_owned(run_len as u32)
            .ok()
    }
}
