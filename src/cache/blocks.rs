//! The block cache: a memory-only store of fixed-size blocks of file content, keyed by content
//! identity (LFS sha256 or git oid) and block index, under a hard byte capacity, plus the fetches
//! in flight (see [`super::runs`]) and the budget they take.
//!
//! Missing blocks are fetched in runs of contiguous blocks, one range request each; each block
//! reaches the readers waiting for it as soon as it arrives. Concurrent readers of a block in
//! flight wait for that one fetch. Room for a fetch is reserved before it starts (evicting blocks
//! to make it), and bytes in flight are bounded by the plan's in-flight limit (a semaphore): a
//! reader's fetch waits when it is used up (back-pressure), and read-ahead
//! ([`BlockCache::prefetch`]) only starts while the plan's demand reserve stays free for readers
//! and room can be made without evicting other read-ahead not yet read. So cached plus in-flight
//! bytes never exceed the capacity, whatever the load.
//!
//! A fetch started for readers (not read-ahead) counts the readers waiting for it; when the last
//! one goes away before it completes (its read was interrupted, its process died), the fetch is
//! stopped and its connection dropped. Read-ahead fetches always run to completion.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::budget::MemoryPlan;
use super::clock::RunClock;
use super::error::CacheError;
use super::lru::{BlockKey, Store};
use super::pool::BufferPool;
use super::runs::{drive, Demand, FetchFn, Run};
use crate::hub::HubError;
use crate::stats::Stats;

/// Called once when a read-ahead run ends, however it ends.
pub type OnDone = Arc<dyn Fn() + Send + Sync>;

pub(super) struct Inflight {
    run: Arc<Run>,
}

pub(super) struct State {
    pub(super) store: Store,
    pub(super) inflight: HashMap<BlockKey, Inflight>,
    pub(super) inflight_bytes: u64,
    pub(super) next_run_id: u64,
}

impl State {
    /// The in-flight run for `key`, unless it is being stopped (then the block counts as
    /// missing).
    pub(super) fn live_inflight(&self, key: &BlockKey) -> Option<&Arc<Run>> {
        self.inflight
            .get(key)
            .map(|f| &f.run)
            .filter(|r| !r.demand.as_ref().is_some_and(|d| d.cancel.is_cancelled()))
    }

    /// True when `key` is cached or coming.
    pub(super) fn covered(&self, key: &BlockKey) -> bool {
        self.store.contains(key) || self.live_inflight(key).is_some()
    }
}

/// A reader's claim on a demand run: dropping the last one before the run completes stops it.
struct Waiter {
    cache: Arc<BlockCache>,
    demand: Arc<Demand>,
}

impl Waiter {
    /// Under the state lock: one more reader slot waits for `demand`.
    fn join(cache: &Arc<BlockCache>, demand: &Arc<Demand>) -> Waiter {
        demand.waiters.fetch_add(1, Ordering::Relaxed);
        Waiter {
            cache: cache.clone(),
            demand: demand.clone(),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Under the lock, so a reader joining in `plan` never picks up a run being stopped.
        let _s = self.cache.state.lock();
        if self.demand.waiters.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.demand.cancel.cancel();
        }
    }
}

/// The cache. Share it behind an `Arc`.
pub struct BlockCache {
    pub(super) plan: MemoryPlan,
    pub(super) state: Mutex<State>,
    /// Bytes that may be in flight at once, as permits.
    pub(super) inflight_budget: Arc<Semaphore>,
    pub(super) clock: Arc<RunClock>,
    /// Block buffers, reused (the heap if the pool could not be mapped).
    pub(super) pool: Option<Arc<BufferPool>>,
    pub(super) stats: Arc<Stats>,
}

enum Slot {
    Ready(Bytes),
    Wait {
        run: Arc<Run>,
        /// Held while waiting, for demand runs.
        _waiter: Option<Waiter>,
    },
}

/// Why a run is started: a reader waits for it, or it is read-ahead.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Purpose {
    Demand,
    Prefetch,
}

/// How a reader reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadMode {
    /// The reader is sequential: blocks it reads to their end are evicted first.
    pub sequential: bool,
    /// Missing blocks right after the read, up to this offset, are fetched with it (in the same
    /// request) although the reader does not wait for them; 0 for none.
    pub extend_to: u64,
}

impl BlockCache {
    /// A cache following `plan`.
    pub fn new(plan: MemoryPlan, stats: Arc<Stats>) -> Arc<Self> {
        let clock = RunClock::new(
            (plan.part_size / 2).max(plan.block_size),
            3.0,
            plan.hedge_fraction,
            plan.part_size,
        );
        Arc::new(BlockCache {
            inflight_budget: Arc::new(Semaphore::new(plan.inflight_limit as usize)),
            state: Mutex::new(State {
                store: Store::new(plan.keep_consumed),
                inflight: HashMap::new(),
                inflight_bytes: 0,
                next_run_id: 0,
            }),
            clock: Arc::new(clock),
            // One buffer per block the capacity holds, plus one piece being received per
            // connection and per hedge.
            pool: BufferPool::new(
                (plan.capacity / plan.block_size) as usize + 4 * plan.connections,
                plan.block_size as usize,
            ),
            plan,
            stats,
        })
    }

    /// The memory plan.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.plan.block_size
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.plan.capacity
    }

    /// Bytes held in cached blocks now.
    pub fn cached_bytes(&self) -> u64 {
        self.state.lock().store.bytes()
    }

    /// Block buffers in use, and pieces that found the pool empty (in all).
    pub fn pool_usage(&self) -> (u64, u64) {
        self.pool
            .as_ref()
            .map_or((0, 0), |p| (p.in_use() as u64, p.misses()))
    }

    /// Bytes of read-ahead cached and not yet read.
    pub fn unread_bytes(&self) -> u64 {
        self.state.lock().store.unread_bytes()
    }

    /// Bytes of read-ahead evicted before anyone read them, in all (wasted fetches).
    pub fn wasted_bytes(&self) -> u64 {
        self.state.lock().store.wasted_bytes()
    }

    /// Bytes of blocks sequential readers consumed that were dropped beyond the kept ones.
    pub fn dropped_behind_bytes(&self) -> u64 {
        self.state.lock().store.dropped_behind_bytes()
    }

    /// Bytes reserved by fetches in flight now.
    pub fn inflight_bytes(&self) -> u64 {
        self.state.lock().inflight_bytes
    }

    /// Bytes cached plus reserved by fetches in flight.
    pub fn used_bytes(&self) -> u64 {
        let s = self.state.lock();
        s.store.bytes() + s.inflight_bytes
    }

    fn block_len(&self, file_size: u64, index: u64) -> u64 {
        (file_size - index * self.plan.block_size).min(self.plan.block_size)
    }

    pub(super) fn key(content: &Arc<str>, index: u64) -> BlockKey {
        BlockKey {
            content: content.clone(),
            index,
        }
    }

    /// True when the block holding `offset` of `content` is cached or in flight.
    pub fn covered(&self, content: &str, offset: u64) -> bool {
        let key = Self::key(&Arc::from(content), offset / self.plan.block_size);
        self.state.lock().covered(&key)
    }

    /// Reads `len` bytes at `offset` of the content `content` (of `file_size` bytes), from cache
    /// where possible and through `fetch` otherwise. Short only at end of file.
    pub async fn read(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        offset: u64,
        len: u64,
        fetch: &FetchFn,
        mode: ReadMode,
    ) -> Result<Bytes, CacheError> {
        let parts = self
            .read_parts(content, file_size, offset, len, fetch, mode)
            .await?;
        Ok(join(parts))
    }

    /// [`BlockCache::read`], as slices of the cached blocks in order (no bytes copied), for a
    /// vectored reply. Empty at or past the end of file.
    pub async fn read_parts(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        offset: u64,
        len: u64,
        fetch: &FetchFn,
        mode: ReadMode,
    ) -> Result<Vec<Bytes>, CacheError> {
        let end = offset.saturating_add(len).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bs = self.plan.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let extend_last = if mode.extend_to > end {
            (mode.extend_to.min(file_size) - 1) / bs
        } else {
            last
        };
        let content: Arc<str> = Arc::from(content);
        let slots = self
            .plan_with_backpressure(&content, file_size, first, last, extend_last, fetch)
            .await?;
        let consumed =
            |index: u64| mode.sequential && index * bs + self.block_len(file_size, index) <= end;
        let parts = self.collect(&content, first, slots, consumed).await?;
        // Cut the requested range out of the blocks.
        let head = (offset - first * bs) as usize;
        let mut left = (end - offset) as usize;
        let mut out = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let from = if i == 0 { head } else { 0 };
            let want = left.min(p.len() - from);
            out.push(p.slice(from..from + want));
            left -= want;
        }
        Ok(out)
    }

    /// A slot for each block `first..=last`, found cached or in flight, or fetched: plans under
    /// the lock, and when a fetch finds no budget waits for it (back-pressure, holding nothing
    /// else) and plans again. Slots found so far are kept across the waits, so a reader never
    /// loses blocks it already has (which would thrash a small cache under many readers).
    async fn plan_with_backpressure(
        self: &Arc<Self>,
        content: &Arc<str>,
        file_size: u64,
        first: u64,
        last: u64,
        extend_last: u64,
        fetch: &FetchFn,
    ) -> Result<Vec<Slot>, CacheError> {
        let mut spare: Option<OwnedSemaphorePermit> = None;
        let mut slots: Vec<Option<Slot>> = (first..=last).map(|_| None).collect();
        while let Err(need) = self.plan_read(
            content,
            file_size,
            first,
            extend_last,
            &mut slots,
            fetch,
            &mut spare,
        ) {
            drop(spare.take());
            let p = self
                .inflight_budget
                .clone()
                .acquire_many_owned(need as u32)
                .await
                .map_err(|_| CacheError::ShutDown)?;
            spare = Some(p);
        }
        Ok(slots
            .into_iter()
            .map(|s| s.expect("every slot planned"))
            .collect())
    }

    /// The blocks of `slots` (block `first` onwards) in order, waiting for those in flight; the
    /// blocks `consumed` says were read to their end move to the front of eviction.
    async fn collect(
        &self,
        content: &Arc<str>,
        first: u64,
        slots: Vec<Slot>,
        consumed: impl Fn(u64) -> bool,
    ) -> Result<Vec<Bytes>, CacheError> {
        let mut parts = Vec::with_capacity(slots.len());
        let mut touch = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            let index = first + i as u64;
            match slot {
                Slot::Ready(b) => {
                    if consumed(index) {
                        touch.push(index);
                    }
                    parts.push(b);
                }
                Slot::Wait { run, _waiter } => {
                    let (got, filed) = run.wait(index, consumed(index)).await;
                    if filed {
                        touch.push(index);
                    }
                    parts.push(got?);
                }
            }
        }
        if !touch.is_empty() {
            let mut s = self.state.lock();
            for index in touch {
                s.store.touch(&Self::key(content, index), consumed(index));
            }
        }
        Ok(parts)
    }

    pub(super) fn run_len(&self, file_size: u64, run_first: u64, run_last: u64) -> u64 {
        run_last * self.plan.block_size + self.block_len(file_size, run_last)
            - run_first * self.plan.block_size
    }

    /// Under the lock: fills each empty slot from the cache or a fetch in flight, and starts
    /// fetches for runs of missing blocks (the last extended up to block `extend_last`), taking
    /// their budget from `spare` or the semaphore. `Err(n)` when a run of `n` bytes finds no
    /// budget: the caller waits for it and plans again.
    #[allow(clippy::too_many_arguments)]
    fn plan_read(
        self: &Arc<Self>,
        content: &Arc<str>,
        file_size: u64,
        first: u64,
        extend_last: u64,
        slots: &mut [Option<Slot>],
        fetch: &FetchFn,
        spare: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), u64> {
        let mut s = self.state.lock();
        self.fill_known(&mut s, content, first, slots);

        // Start one fetch per run of missing blocks.
        let max_blocks = (self.plan.max_request / self.plan.block_size).max(1) as usize;
        let mut i = 0;
        while i < slots.len() {
            if slots[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < slots.len() && slots[j].is_none() && j - i < max_blocks {
                j += 1;
            }
            let run_first = first + i as u64;
            let mut run_last = first + j as u64 - 1;
            if j == slots.len() {
                // The tail of the read: extend it with what the reader will want next.
                while run_last < extend_last
                    && ((run_last + 1 - run_first) as usize) < max_blocks
                    && !s.covered(&Self::key(content, run_last + 1))
                {
                    run_last += 1;
                }
            }
            let run_len = self.run_len(file_size, run_first, run_last);
            let permit = self.demand_budget(spare, run_len)?;
            Stats::add(&self.stats.cache_misses, (j - i) as u64);
            let run = self.start_run(
                &mut s,
                content,
                file_size,
                run_first,
                run_last,
                Purpose::Demand,
                fetch,
                permit,
                None,
            );
            for slot in &mut slots[i..j] {
                *slot = Some(Slot::Wait {
                    run: run.clone(),
                    _waiter: run.demand.as_ref().map(|d| Waiter::join(self, d)),
                });
            }
            i = j;
        }
        Ok(())
    }

    /// Under the lock: fills the empty slots whose blocks are cached or in flight (a run being
    /// stopped is not joined: the caller starts a new fetch instead).
    fn fill_known(
        self: &Arc<Self>,
        s: &mut State,
        content: &Arc<str>,
        first: u64,
        slots: &mut [Option<Slot>],
    ) {
        let (mut hits, mut misses) = (0, 0);
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let key = Self::key(content, first + i as u64);
            if let Some(b) = s.store.get(&key) {
                hits += 1;
                *slot = Some(Slot::Ready(b));
            } else if let Some(run) = s.live_inflight(&key) {
                let waiter = run.demand.as_ref().map(|d| Waiter::join(self, d));
                misses += 1;
                *slot = Some(Slot::Wait {
                    run: run.clone(),
                    _waiter: waiter,
                });
            }
        }
        Stats::add(&self.stats.cache_hits, hits);
        Stats::add(&self.stats.cache_misses, misses);
    }

    /// The budget for a reader's run of `run_len` bytes: from `spare` (what the reader waited
    /// for) when it holds enough, else from the semaphore; `Err(run_len)` when neither has it.
    fn demand_budget(
        &self,
        spare: &mut Option<OwnedSemaphorePermit>,
        run_len: u64,
    ) -> Result<OwnedSemaphorePermit, u64> {
        let spare_permits = spare.as_ref().map_or(0, |p| p.num_permits() as u64);
        let from_spare = if spare_permits == run_len {
            spare.take()
        } else if spare_permits > run_len {
            spare.as_mut().and_then(|p| p.split(run_len as usize))
        } else {
            None
        };
        match from_spare {
            Some(p) => Ok(p),
            None => self
                .inflight_budget
                .clone()
                .try_acquire_many_owned(run_len as u32)
                .map_err(|_| run_len),
        }
    }

    /// Under the lock: reserves room for blocks `run_first..=run_last`, registers them as in
    /// flight and spawns their fetch, which files them in the cache when it ends. A demand run
    /// comes with its [`Demand`], which the caller joins for each slot that waits for it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_run(
        self: &Arc<Self>,
        s: &mut State,
        content: &Arc<str>,
        file_size: u64,
        run_first: u64,
        run_last: u64,
        purpose: Purpose,
        fetch: &FetchFn,
        permit: OwnedSemaphorePermit,
        on_done: Option<OnDone>,
    ) -> Arc<Run> {
        let bs = self.plan.block_size;
        let run_len = self.run_len(file_size, run_first, run_last);
        let inflight = s.inflight_bytes;
        s.store.make_room(run_len, inflight, self.plan.capacity);
        s.inflight_bytes += run_len;
        debug_assert!(
            s.store.bytes() + s.inflight_bytes <= self.plan.capacity,
            "cache over capacity"
        );
        let id = s.next_run_id;
        s.next_run_id += 1;
        let demand = (purpose == Purpose::Demand).then(Demand::new);
        let run = Run::new(id, run_first * bs, run_len, bs, demand, self.pool.clone());
        for index in run_first..=run_last {
            s.inflight
                .insert(Self::key(content, index), Inflight { run: run.clone() });
        }
        Stats::add(&self.stats.range_requests, 1);
        if purpose == Purpose::Prefetch {
            Stats::add(&self.stats.prefetch_requests, 1);
        }
        let cache = self.clone();
        let content = content.clone();
        let fetch = fetch.clone();
        let task_run = run.clone();
        // The request starts now (under the lock, so the run is found in flight from the start).
        let driven = drive(
            run.clone(),
            fetch,
            self.clock.clone(),
            self.stats.clone(),
            run.demand.as_ref().map(|d| d.cancel.clone()),
        );
        tokio::spawn(async move {
            let run = task_run;
            let result = driven.await;
            if let Err(e) = &result {
                if !e.is_cancelled() {
                    tracing::debug!(offset = run.offset, len = run.len, error = %e, "fetch failed");
                }
            }
            let fetched = cache.file_run(&content, &run, run_first, run_last);
            drop(permit);
            Stats::add(&cache.stats.bytes_fetched, fetched);
            run.finish(result);
            if let Some(f) = on_done {
                f();
            }
        });
        run
    }
}

impl BlockCache {
    /// Files the blocks `run` delivered (read or unread, as its readers took them) and takes
    /// blocks `run_first..=run_last` off the in-flight map; the bytes it filed.
    fn file_run(&self, content: &Arc<str>, run: &Run, run_first: u64, run_last: u64) -> u64 {
        let mut fetched = 0;
        let mut s = self.state.lock();
        s.inflight_bytes -= run.len;
        let now = Instant::now();
        for (index, block, read, consumed) in run.file() {
            let key = Self::key(content, index);
            fetched += block.len() as u64;
            if s.inflight.get(&key).is_some_and(|f| f.run.id == run.id) {
                s.inflight.remove(&key);
            }
            if read {
                s.store.insert_read(key, block, consumed);
            } else {
                s.store.insert_unread(key, block, now);
            }
        }
        for index in run_first..=run_last {
            let key = Self::key(content, index);
            if s.inflight.get(&key).is_some_and(|f| f.run.id == run.id) {
                s.inflight.remove(&key);
            }
        }
        debug_assert!(
            s.store.bytes() + s.inflight_bytes <= self.plan.capacity,
            "cache over capacity"
        );
        fetched
    }
}

/// The parts as one buffer (copied only when there are several).
pub fn join(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in &parts {
                out.extend_from_slice(p);
            }
            out.freeze()
        }
    }
}

/// A [`FetchFn`] over a closure returning one buffer, handed on in pieces (for tests and simple
/// sources).
pub fn fetch_from<F>(f: F) -> FetchFn
where
    F: Fn(u64, u64) -> BoxFuture<'static, Result<Bytes, HubError>> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |off, len, piece, sink| {
        sink.started();
        let fut = f(off, len);
        async move {
            for (i, p) in crate::hub::split_pieces(fut.await?, piece)
                .into_iter()
                .enumerate()
            {
                sink.deliver(i, p);
            }
            Ok(())
        }
        .boxed()
    })
}

#[cfg(test)]
#[path = "blocks_tests.rs"]
pub(crate) mod tests;
