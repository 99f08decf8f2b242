//! A memory-only LRU of fixed-size blocks of file content, keyed by content identity (LFS sha256
//! or git oid) and block index, with a hard byte capacity.
//!
//! Missing blocks are fetched in runs of contiguous blocks (one range request each), and each
//! block of a run arrives as its own allocation, so evicting a block frees exactly its bytes.
//! Concurrent readers of a block that is being fetched wait for that one fetch. The bytes of a
//! fetch in flight are reserved against the capacity before it starts (evicting least recently
//! used blocks to make room). Bytes in flight are bounded by a budget of half the capacity (a
//! semaphore): a demand read waits for room when it is used up (back-pressure), and read-ahead
//! ([`BlockCache::prefetch`]) only starts while a run's worth stays free for demand reads. So
//! cached plus in-flight bytes never exceed the capacity, whatever the load.
//!
//! A fetch started for readers (not read-ahead) counts the readers waiting for it; when the last
//! one goes away before it completes (its read was interrupted, or its process died), the fetch
//! is stopped and its connection dropped. Read-ahead fetches always run to completion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::hub::HubError;
use crate::singleflight::spawn_shared;
use crate::stats::Stats;

/// Fetches `len` bytes at `offset` of the file being read, as pieces of `piece` bytes (the last
/// may be shorter); returns exactly `len` bytes in all or an error.
pub type FetchFn =
    Arc<dyn Fn(u64, u64, u64) -> BoxFuture<'static, Result<Vec<Bytes>, HubError>> + Send + Sync>;

type RunResult = Result<Arc<Vec<Bytes>>, HubError>;
type RunFuture = Shared<BoxFuture<'static, RunResult>>;

/// A block of one content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    content: Arc<str>,
    index: u64,
}

struct Inflight {
    run: RunFuture,
    run_first: u64,
    /// Tells this run's entries from a later run's for the same blocks.
    id: u64,
    /// The readers of a demand run; `None` for read-ahead.
    demand: Option<Arc<Demand>>,
}

/// The readers waiting for a demand run, and the switch that stops it.
struct Demand {
    /// Waiting readers' slots, plus one once read-ahead counts on the run; changed only under
    /// the state lock.
    waiters: AtomicU64,
    /// Read-ahead covers these blocks: the run is never stopped.
    pinned: std::sync::atomic::AtomicBool,
    cancel: CancellationToken,
}

impl Demand {
    /// Under the state lock: read-ahead relies on this run, so it must complete.
    fn pin(&self) {
        if !self.pinned.swap(true, Ordering::Relaxed) {
            self.waiters.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl State {
    /// The in-flight entry for `key`, unless its run is being stopped (then the blocks count as
    /// missing).
    fn live_inflight(&self, key: &BlockKey) -> Option<&Inflight> {
        self.inflight
            .get(key)
            .filter(|f| !f.demand.as_ref().is_some_and(|d| d.cancel.is_cancelled()))
    }

    /// True when `key` is cached or coming.
    fn covered(&self, key: &BlockKey) -> bool {
        self.lru.contains(key) || self.live_inflight(key).is_some()
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

struct State {
    lru: LruCache<BlockKey, Bytes>,
    cached_bytes: u64,
    inflight: HashMap<BlockKey, Inflight>,
    inflight_bytes: u64,
    next_run_id: u64,
}

/// The block cache. Share it behind an `Arc`.
pub struct BlockCache {
    block_size: u64,
    capacity: u64,
    max_run_blocks: u64,
    state: Mutex<State>,
    /// Bytes that may be in flight at once, as permits.
    inflight_budget: Arc<Semaphore>,
    stats: Arc<Stats>,
}

enum Slot {
    Ready(Bytes),
    Wait {
        run: RunFuture,
        run_first: u64,
        /// Held while waiting, for demand runs.
        _waiter: Option<Waiter>,
    },
}

/// Why a run is started: a reader waits for it, or it is read-ahead.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Demand,
    Prefetch,
}

impl BlockCache {
    /// A cache of at most `capacity` bytes in blocks of `block_size` bytes; one fetch covers at
    /// most `max_run_bytes`.
    pub fn new(block_size: u64, capacity: u64, max_run_bytes: u64, stats: Arc<Stats>) -> Arc<Self> {
        assert!(block_size > 0, "block size must be positive");
        let max_run_blocks = (max_run_bytes.min(capacity / 2) / block_size).max(1);
        let budget = (capacity / 2).max(max_run_blocks * block_size);
        Arc::new(BlockCache {
            block_size,
            capacity,
            max_run_blocks,
            inflight_budget: Arc::new(Semaphore::new(budget as usize)),
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                cached_bytes: 0,
                inflight: HashMap::new(),
                inflight_bytes: 0,
                next_run_id: 0,
            }),
            stats,
        })
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes held in cached blocks now.
    pub fn cached_bytes(&self) -> u64 {
        self.state.lock().cached_bytes
    }

    /// Bytes reserved by fetches in flight now.
    pub fn inflight_bytes(&self) -> u64 {
        self.state.lock().inflight_bytes
    }

    /// Bytes cached plus reserved by fetches in flight.
    pub fn used_bytes(&self) -> u64 {
        let s = self.state.lock();
        s.cached_bytes + s.inflight_bytes
    }

    fn block_len(&self, file_size: u64, index: u64) -> u64 {
        (file_size - index * self.block_size).min(self.block_size)
    }

    /// Evicts least recently used blocks until `extra` more bytes fit, or nothing is left to evict.
    fn make_room(&self, s: &mut State, extra: u64) {
        while s.cached_bytes + s.inflight_bytes + extra > self.capacity {
            match s.lru.pop_lru() {
                Some((_, b)) => s.cached_bytes -= b.len() as u64,
                None => break,
            }
        }
    }

    /// Reads `len` bytes at `offset` of the content `content` (of `file_size` bytes), from cache
    /// where possible and through `fetch` otherwise. Short only at end of file. With
    /// `sequential`, blocks read to their end are moved to the eviction end of the LRU: a
    /// sequential reader will not come back for them (the kernel's page cache keeps them).
    pub async fn read(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        offset: u64,
        len: u64,
        fetch: &FetchFn,
        sequential: bool,
    ) -> Result<Bytes, HubError> {
        let parts = self
            .read_parts(content, file_size, offset, len, fetch, sequential)
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
        sequential: bool,
    ) -> Result<Vec<Bytes>, HubError> {
        let end = offset.saturating_add(len).min(file_size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bs = self.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let content: Arc<str> = Arc::from(content);
        let mut spare: Option<OwnedSemaphorePermit> = None;
        // Slots found or started so far are kept across waits for budget, so a reader never
        // loses blocks it already has (which would thrash a small cache under many readers).
        let mut slots: Vec<Option<Slot>> = (first..=last).map(|_| None).collect();
        loop {
            match self.plan(&content, file_size, first, &mut slots, fetch, &mut spare) {
                Ok(()) => break,
                Err(need) => {
                    // Back-pressure: wait until that much may be in flight, holding nothing else.
                    drop(spare.take());
                    let p = self
                        .inflight_budget
                        .clone()
                        .acquire_many_owned(need as u32)
                        .await
                        .map_err(|_| HubError::Protocol {
                            url: String::new(),
                            message: "cache shut down".into(),
                        })?;
                    spare = Some(p);
                }
            }
        }
        drop(spare);

        let mut parts = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let index = first + i as u64;
            let block = match slot.expect("every slot planned") {
                Slot::Ready(b) => b,
                Slot::Wait { run, run_first, .. } => {
                    let pieces = run.await?;
                    pieces[(index - run_first) as usize].clone()
                }
            };
            parts.push(block);
        }
        if sequential {
            let mut s = self.state.lock();
            for index in first..=last {
                if (index + 1) * bs <= end || index * bs + self.block_len(file_size, index) <= end {
                    s.lru.demote(&BlockKey {
                        content: content.clone(),
                        index,
                    });
                }
            }
        }
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

    /// Starts read-ahead of the blocks of `[start, end)` that are neither cached nor in flight, in
    /// runs of at most the run size, while in-flight bytes stay within half the capacity. Returns
    /// the offset up to which read-ahead is now cached or in flight.
    pub fn prefetch(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        start: u64,
        end: u64,
        fetch: &FetchFn,
    ) -> u64 {
        let end = end.min(file_size);
        if start >= end {
            return start.max(end);
        }
        let bs = self.block_size;
        let first = start / bs;
        let last = (end - 1) / bs;
        let content: Arc<str> = Arc::from(content);
        let mut s = self.state.lock();
        let mut index = first;
        while index <= last {
            let key = BlockKey {
                content: content.clone(),
                index,
            };
            if s.covered(&key) {
                // A fetch for readers that read-ahead now counts on must not stop with them.
                if let Some(d) = s.live_inflight(&key).and_then(|f| f.demand.as_ref()) {
                    d.pin();
                }
                index += 1;
                continue;
            }
            let mut run_last = index;
            while run_last < last
                && run_last + 1 - index < self.max_run_blocks
                && !s.covered(&BlockKey {
                    content: content.clone(),
                    index: run_last + 1,
                })
            {
                run_last += 1;
            }
            let run_len = self.run_len(file_size, index, run_last);
            // Back-pressure: read-ahead starts only while a full run stays free for demand reads.
            let reserve = self.max_run_blocks * bs;
            if (self.inflight_budget.available_permits() as u64) < run_len + reserve {
                return index * bs;
            }
            let Ok(permit) = self
                .inflight_budget
                .clone()
                .try_acquire_many_owned(run_len as u32)
            else {
                return index * bs;
            };
            // The spawned task runs on its own; readers find it through `inflight`.
            let _run = self.start_run(
                &mut s,
                &content,
                file_size,
                index,
                run_last,
                Purpose::Prefetch,
                fetch,
                permit,
            );
            index = run_last + 1;
        }
        end
    }

    fn run_len(&self, file_size: u64, run_first: u64, run_last: u64) -> u64 {
        run_last * self.block_size + self.block_len(file_size, run_last)
            - run_first * self.block_size
    }

    /// Under the lock: fills each empty slot from the cache or a fetch in flight, and starts
    /// fetches for runs of missing blocks, taking their budget from `spare` or the semaphore.
    /// `Err(n)` when a run of `n` bytes finds no budget: the caller waits for it and plans again.
    fn plan(
        self: &Arc<Self>,
        content: &Arc<str>,
        file_size: u64,
        first: u64,
        slots: &mut [Option<Slot>],
        fetch: &FetchFn,
        spare: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), u64> {
        let mut s = self.state.lock();
        let (mut hits, mut misses) = (0, 0);
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let key = BlockKey {
                content: content.clone(),
                index: first + i as u64,
            };
            if let Some(b) = s.lru.get(&key) {
                hits += 1;
                *slot = Some(Slot::Ready(b.clone()));
            } else if let Some(f) = s.live_inflight(&key) {
                // (A run being stopped is not joined: a new fetch starts below instead.)
                let waiter = f.demand.as_ref().map(|d| Waiter::join(self, d));
                misses += 1;
                *slot = Some(Slot::Wait {
                    run: f.run.clone(),
                    run_first: f.run_first,
                    _waiter: waiter,
                });
            }
        }
        Stats::add(&self.stats.cache_hits, hits);
        Stats::add(&self.stats.cache_misses, misses);

        // Start one fetch per run of missing blocks.
        let mut i = 0;
        while i < slots.len() {
            if slots[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < slots.len() && slots[j].is_none() && ((j - i) as u64) < self.max_run_blocks {
                j += 1;
            }
            let run_first = first + i as u64;
            let run_last = first + j as u64 - 1;
            let run_len = self.run_len(file_size, run_first, run_last);
            let spare_permits = spare.as_ref().map_or(0, |p| p.num_permits() as u64);
            let from_spare = if spare_permits == run_len {
                spare.take()
            } else if spare_permits > run_len {
                spare.as_mut().and_then(|p| p.split(run_len as usize))
            } else {
                None
            };
            let permit = match from_spare {
                Some(p) => p,
                None => match self
                    .inflight_budget
                    .clone()
                    .try_acquire_many_owned(run_len as u32)
                {
                    Ok(p) => p,
                    Err(_) => return Err(run_len),
                },
            };
            Stats::add(&self.stats.cache_misses, (j - i) as u64);
            let (run, demand) = self.start_run(
                &mut s,
                content,
                file_size,
                run_first,
                run_last,
                Purpose::Demand,
                fetch,
                permit,
            );
            for slot in &mut slots[i..j] {
                *slot = Some(Slot::Wait {
                    run: run.clone(),
                    run_first,
                    _waiter: demand.as_ref().map(|d| Waiter::join(self, d)),
                });
            }
            i = j;
        }
        Ok(())
    }

    /// Under the lock: reserves room for blocks `run_first..=run_last`, registers them as in
    /// flight and spawns their fetch, which files them in the cache when done. A demand run comes
    /// with its [`Demand`], which the caller joins for each slot that waits for it.
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        self: &Arc<Self>,
        s: &mut State,
        content: &Arc<str>,
        file_size: u64,
        run_first: u64,
        run_last: u64,
        purpose: Purpose,
        fetch: &FetchFn,
        permit: OwnedSemaphorePermit,
    ) -> (RunFuture, Option<Arc<Demand>>) {
        let run_offset = run_first * self.block_size;
        let run_len = self.run_len(file_size, run_first, run_last);
        self.make_room(s, run_len);
        s.inflight_bytes += run_len;
        debug_assert!(
            s.cached_bytes + s.inflight_bytes <= self.capacity,
            "cache over capacity"
        );
        let cache = self.clone();
        let fut = fetch(run_offset, run_len, self.block_size);
        let content2 = content.clone();
        let block_size = self.block_size;
        let id = s.next_run_id;
        s.next_run_id += 1;
        let demand = (purpose == Purpose::Demand).then(|| {
            Arc::new(Demand {
                waiters: AtomicU64::new(0),
                pinned: Default::default(),
                cancel: CancellationToken::new(),
            })
        });
        let cancel = demand.as_ref().map(|d| d.cancel.clone());
        let run = spawn_shared(async move {
            Stats::add(&cache.stats.range_requests, 1);
            if purpose == Purpose::Prefetch {
                Stats::add(&cache.stats.prefetch_requests, 1);
            }
            let blocks = (run_last - run_first + 1) as usize;
            let fetched = match cancel {
                Some(cancel) => tokio::select! {
                    r = fut => r,
                    () = cancel.cancelled() => {
                        // Dropping `fut` drops its connection.
                        Stats::add(&cache.stats.fetches_cancelled, 1);
                        tracing::debug!(offset = run_offset, len = run_len, "fetch cancelled: no reader waits for it");
                        Err(HubError::Cancelled)
                    }
                },
                None => fut.await,
            };
            let result = fetched.and_then(|pieces| {
                let ok = pieces.len() == blocks
                    && pieces.iter().enumerate().all(|(i, p)| {
                        p.len() as u64 == cache.block_len(file_size, run_first + i as u64)
                    });
                if ok {
                    Ok(Arc::new(pieces))
                } else {
                    Err(HubError::Protocol {
                        url: String::new(),
                        message: format!(
                            "fetch returned {} pieces for {blocks} blocks of {block_size} bytes",
                            pieces.len()
                        ),
                    })
                }
            });
            let mut s = cache.state.lock();
            s.inflight_bytes -= run_len;
            for index in run_first..=run_last {
                let key = BlockKey {
                    content: content2.clone(),
                    index,
                };
                if s.inflight.get(&key).is_some_and(|f| f.id == id) {
                    s.inflight.remove(&key);
                }
                if let Ok(pieces) = &result {
                    let block = pieces[(index - run_first) as usize].clone();
                    let blen = block.len() as u64;
                    cache.make_room(&mut s, blen);
                    if s.cached_bytes + s.inflight_bytes + blen <= cache.capacity {
                        s.cached_bytes += blen;
                        if let Some(old) = s.lru.put(key, block) {
                            s.cached_bytes -= old.len() as u64;
                        }
                    }
                }
            }
            debug_assert!(
                s.cached_bytes + s.inflight_bytes <= cache.capacity,
                "cache over capacity"
            );
            drop(s);
            drop(permit);
            if result.is_ok() {
                Stats::add(&cache.stats.bytes_fetched, run_len);
            }
            result
        });
        for index in run_first..=run_last {
            s.inflight.insert(
                BlockKey {
                    content: content.clone(),
                    index,
                },
                Inflight {
                    run: run.clone(),
                    run_first,
                    id,
                    demand: demand.clone(),
                },
            );
        }
        (run, demand)
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

/// A [`FetchFn`] over a closure returning one buffer, split into pieces (for tests and simple
/// sources).
pub fn fetch_from<F>(f: F) -> FetchFn
where
    F: Fn(u64, u64) -> BoxFuture<'static, Result<Bytes, HubError>> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |off, len, piece| {
        let fut = f(off, len);
        async move { Ok(crate::hub::split_pieces(fut.await?, piece)) }.boxed()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn content(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>())
    }

    fn fetcher(data: Bytes, calls: Arc<AtomicU64>, delay_ms: u64) -> FetchFn {
        fetch_from(move |off, len| {
            let data = data.clone();
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(data.slice(off as usize..(off + len) as usize))
            }
            .boxed()
        })
    }

    /// `size` bytes of content, a fetch counter, a cache with `(block, capacity, max run)` and a
    /// [`fetcher`] of that content with `delay_ms`.
    fn counted(
        size: usize,
        (block, capacity, run): (u64, u64, u64),
        delay_ms: u64,
    ) -> (Bytes, Arc<AtomicU64>, Arc<BlockCache>, FetchFn) {
        let data = content(size);
        let calls = Arc::new(AtomicU64::new(0));
        let cache = BlockCache::new(block, capacity, run, Arc::new(Stats::default()));
        let f = fetcher(data.clone(), calls.clone(), delay_ms);
        (data, calls, cache, f)
    }

    /// Fetches that wait for `gate` (one permit per fetch) and count themselves in `live` until
    /// they complete or are dropped.
    fn gated_fetcher(data: Bytes, gate: Arc<Semaphore>, live: Arc<AtomicU64>) -> FetchFn {
        struct Live(Arc<AtomicU64>);
        impl Drop for Live {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        fetch_from(move |off, len| {
            let data = data.clone();
            let gate = gate.clone();
            live.fetch_add(1, Ordering::SeqCst);
            let live = Live(live.clone());
            async move {
                let _live = live;
                gate.acquire().await.unwrap().forget();
                Ok(data.slice(off as usize..(off + len) as usize))
            }
            .boxed()
        })
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    /// A cache over `size` bytes in blocks of `block`, fetched by a [`gated_fetcher`].
    struct Gated {
        data: Bytes,
        size: u64,
        stats: Arc<Stats>,
        cache: Arc<BlockCache>,
        gate: Arc<Semaphore>,
        live: Arc<AtomicU64>,
        f: FetchFn,
    }

    type ReadTask = tokio::task::JoinHandle<Result<Bytes, HubError>>;

    impl Gated {
        fn new(size: usize, block: u64) -> Gated {
            let data = content(size);
            let stats = Arc::new(Stats::default());
            let cache = BlockCache::new(block, 1 << 20, size as u64, stats.clone());
            let (gate, live) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicU64::new(0)));
            let f = gated_fetcher(data.clone(), gate.clone(), live.clone());
            Gated {
                data,
                size: size as u64,
                stats,
                cache,
                gate,
                live,
                f,
            }
        }

        fn spawn_read(&self, off: u64, len: u64) -> ReadTask {
            let (cache, f, size) = (self.cache.clone(), self.f.clone(), self.size);
            tokio::spawn(async move { cache.read("c", size, off, len, &f, false).await })
        }

        /// Fetches started and neither completed nor dropped.
        fn live(&self) -> u64 {
            self.live.load(Ordering::SeqCst)
        }

        async fn wait_live(&self, what: &str, n: u64) {
            eventually(what, || self.live() == n).await
        }

        fn cancelled(&self) -> u64 {
            Stats::get(&self.stats.fetches_cancelled)
        }

        /// Aborts `reader`; the one fetch in flight must go on, and cache `cached` bytes once
        /// let through.
        async fn abort_and_expect_fetch_completes(&self, reader: ReadTask, cached: u64) {
            reader.abort();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(self.live(), 1, "the fetch still runs");
            self.gate.add_permits(1);
            eventually("blocks cached", || self.cache.cached_bytes() == cached).await;
            assert_eq!(self.cancelled(), 0);
        }
    }

    #[tokio::test]
    async fn a_fetch_whose_only_reader_goes_away_is_stopped() {
        let g = Gated::new(8192, 4096);
        let reader = g.spawn_read(0, 8192);
        g.wait_live("fetch started", 1).await;
        assert_eq!(g.cache.inflight_bytes(), 8192);
        reader.abort();
        g.wait_live("fetch dropped", 0).await;
        eventually("reservation released", || g.cache.inflight_bytes() == 0).await;
        assert_eq!(g.cancelled(), 1);
        assert_eq!(
            g.cache.cached_bytes(),
            0,
            "nothing cached from a stopped fetch"
        );
        // The next reader starts afresh and gets right bytes.
        g.gate.add_permits(1);
        let got = g.spawn_read(100, 5000).await.unwrap().unwrap();
        assert_eq!(&got[..], &g.data[100..5100]);
    }

    #[tokio::test]
    async fn a_fetch_shared_by_two_readers_outlives_one_of_them() {
        let g = Gated::new(4096, 4096);
        let first = g.spawn_read(0, 100);
        g.wait_live("fetch started", 1).await;
        let second = g.spawn_read(1000, 100);
        eventually("second reader waits", || {
            Stats::get(&g.stats.cache_misses) >= 2
        })
        .await;
        g.abort_and_expect_fetch_completes(first, 4096).await;
        let got = second.await.unwrap().unwrap();
        assert_eq!(&got[..], &g.data[1000..1100]);
        assert_eq!(Stats::get(&g.stats.range_requests), 1);
    }

    #[tokio::test]
    async fn a_fetch_that_read_ahead_counts_on_outlives_its_reader() {
        let g = Gated::new(8192, 4096);
        let reader = g.spawn_read(0, 8192);
        g.wait_live("fetch started", 1).await;
        // Read-ahead over the same blocks relies on that fetch rather than starting its own.
        assert_eq!(g.cache.prefetch("c", 8192, 0, 8192, &g.f), 8192);
        assert_eq!(g.live(), 1);
        g.abort_and_expect_fetch_completes(reader, 8192).await;
    }

    #[tokio::test]
    async fn read_ahead_runs_on_when_a_reader_that_joined_it_goes_away() {
        let g = Gated::new(4096, 4096);
        g.cache.prefetch("c", 4096, 0, 4096, &g.f);
        g.wait_live("read-ahead started", 1).await;
        let reader = g.spawn_read(0, 10);
        eventually("reader waits", || Stats::get(&g.stats.cache_misses) >= 1).await;
        g.abort_and_expect_fetch_completes(reader, 4096).await;
    }

    #[tokio::test]
    async fn reads_match_source_at_every_alignment() {
        let (data, _, cache, f) = counted(10_000, (1024, 1 << 20, 4096), 0);
        for (off, len) in [
            (0, 1),
            (1023, 2),
            (1000, 5000),
            (9999, 10),
            (0, 10_000),
            (5000, 0),
            (20_000, 5),
        ] {
            let got = cache.read("c", 10_000, off, len, &f, false).await.unwrap();
            let end = (off + len).min(10_000);
            let want = if off >= 10_000 {
                &[][..]
            } else {
                &data[off as usize..end as usize]
            };
            assert_eq!(&got[..], want, "off {off} len {len}");
        }
    }

    #[tokio::test]
    async fn read_parts_are_slices_of_the_cached_blocks() {
        let (data, _, cache, f) = counted(4096, (1024, 1 << 20, 4096), 0);
        let parts = cache
            .read_parts("c", 4096, 1000, 3000, &f, false)
            .await
            .unwrap();
        let lens: Vec<usize> = parts.iter().map(Bytes::len).collect();
        assert_eq!(lens, [24, 1024, 1024, 928]);
        assert_eq!(&join(parts.clone())[..], &data[1000..4000]);
        // No copy: the middle parts are the cached blocks themselves.
        for (i, index) in [(1, 1u64), (2, 2)] {
            let key = BlockKey {
                content: Arc::from("c"),
                index,
            };
            let block = cache.state.lock().lru.peek(&key).unwrap().clone();
            assert_eq!(parts[i].as_ptr(), block.as_ptr());
        }
        assert!(cache
            .read_parts("c", 4096, 4096, 10, &f, false)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn second_read_is_a_hit_and_fetches_nothing() {
        let (_, calls, cache, f) = counted(4096, (1024, 1 << 20, 1 << 20), 0);
        cache.read("c", 4096, 0, 4096, &f, false).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one run for four missing blocks"
        );
        cache.read("c", 4096, 100, 3000, &f, false).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn capacity_is_never_exceeded_and_lru_evicts() {
        let (data, calls, cache, f) = counted(64 * 1024, (1024, 8 * 1024, 2048), 0);
        for i in 0..64u64 {
            let got = cache
                .read("c", 64 * 1024, i * 1024, 1024, &f, false)
                .await
                .unwrap();
            assert_eq!(
                &got[..],
                &data[(i * 1024) as usize..((i + 1) * 1024) as usize]
            );
            assert!(
                cache.used_bytes() <= cache.capacity(),
                "used {}",
                cache.used_bytes()
            );
        }
        assert_eq!(cache.cached_bytes(), 8 * 1024);
        let before = calls.load(Ordering::SeqCst);
        cache
            .read("c", 64 * 1024, 63 * 1024, 10, &f, false)
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "recent block still cached"
        );
        cache.read("c", 64 * 1024, 0, 10, &f, false).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 1,
            "oldest block was evicted"
        );
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_block_share_one_fetch() {
        let (data, calls, cache, f) = counted(4096, (4096, 1 << 20, 4096), 50);
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let cache = cache.clone();
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                cache.read("c", 4096, i * 100, 100, &f, false).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let got = t.await.unwrap().unwrap();
            assert_eq!(&got[..], &data[i * 100..i * 100 + 100]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn fetch_error_reaches_every_waiter_and_is_not_cached() {
        let cache = BlockCache::new(1024, 1 << 20, 4096, Arc::new(Stats::default()));
        let calls = Arc::new(AtomicU64::new(0));
        let c2 = calls.clone();
        let failing = fetch_from(move |_, _| {
            c2.fetch_add(1, Ordering::SeqCst);
            async {
                Err(HubError::Network {
                    url: "u".into(),
                    message: "reset".into(),
                })
            }
            .boxed()
        });
        assert!(cache.read("c", 100, 0, 10, &failing, false).await.is_err());
        assert!(cache.read("c", 100, 0, 10, &failing, false).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "errors are not cached");
        assert_eq!(cache.used_bytes(), 0);
    }

    #[tokio::test]
    async fn short_fetch_is_an_error_not_short_data() {
        let cache = BlockCache::new(1024, 1 << 20, 4096, Arc::new(Stats::default()));
        let short = fetch_from(|_, len| {
            async move { Ok(Bytes::from(vec![0u8; (len - 1) as usize])) }.boxed()
        });
        assert!(cache.read("c", 1000, 0, 1000, &short, false).await.is_err());
    }

    #[tokio::test]
    async fn prefetch_fills_ahead_within_the_inflight_budget() {
        let (data, calls, cache, f) = counted(64 * 1024, (1024, 16 * 1024, 4096), 30);
        let until = cache.prefetch("c", 64 * 1024, 0, 32 * 1024, &f);
        // The in-flight budget is half the capacity (8 blocks), and read-ahead leaves a run's
        // worth (4 blocks) of it for demand reads: one run of four blocks starts.
        assert_eq!(until, 4 * 1024, "read-ahead stops where the budget ends");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(cache.used_bytes() <= cache.capacity());
        // A reader of prefetched blocks waits for them rather than fetching again; the rest is
        // one demand run.
        let got = cache
            .read("c", 64 * 1024, 0, 8 * 1024, &f, true)
            .await
            .unwrap();
        assert_eq!(&got[..], &data[..8 * 1024]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Prefetching what is cached does nothing.
        assert_eq!(cache.prefetch("c", 64 * 1024, 0, 8 * 1024, &f), 8 * 1024);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn sequentially_consumed_blocks_are_evicted_first() {
        let (_, calls, cache, f) = counted(16 * 1024, (1024, 4 * 1024, 1024), 0);
        // Blocks 0 and 1 read sequentially (consumed), block 2 and 3 read-ahead (unread).
        cache.read("c", 16 * 1024, 0, 2048, &f, true).await.unwrap();
        cache
            .read("c", 16 * 1024, 2048, 2048, &f, false)
            .await
            .unwrap();
        let before = calls.load(Ordering::SeqCst);
        // Two more blocks need room: the consumed ones go, the unread ones stay.
        cache
            .read("c", 16 * 1024, 8 * 1024, 2048, &f, false)
            .await
            .unwrap();
        cache
            .read("c", 16 * 1024, 2048, 2048, &f, false)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before + 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Under any mix of concurrent reads and read-ahead over two files, cached plus in-flight
        /// bytes never exceed the capacity, and every read returns the source bytes.
        #[test]
        fn budget_is_never_exceeded_under_random_concurrent_load(
            ops in proptest::collection::vec((0u8..3, 0u64..200_000, 1u64..60_000), 1..48),
            cap_blocks in 4u64..24,
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bs = 4096;
                let cap = cap_blocks * bs;
                let cache = BlockCache::new(bs, cap, 4 * bs, Arc::new(Stats::default()));
                let data = content(200_000);
                let calls = Arc::new(AtomicU64::new(0));
                let f = fetcher(data.clone(), calls, 1);
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sampler = {
                    let cache = cache.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        let mut max = 0;
                        while !done.load(Ordering::SeqCst) {
                            max = max.max(cache.used_bytes());
                            tokio::task::yield_now().await;
                        }
                        max
                    })
                };
                let mut tasks = Vec::new();
                for (kind, off, len) in ops {
                    let cache = cache.clone();
                    let f = f.clone();
                    let data = data.clone();
                    tasks.push(tokio::spawn(async move {
                        let key = if kind == 1 { "b" } else { "a" };
                        if kind == 2 {
                            cache.prefetch(key, 200_000, off, off + len * 4, &f);
                            return;
                        }
                        let got = cache.read(key, 200_000, off, len, &f, kind == 0).await.unwrap();
                        let end = (off + len).min(200_000) as usize;
                        assert_eq!(&got[..], &data[off as usize..end]);
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                done.store(true, Ordering::SeqCst);
                let max = sampler.await.unwrap();
                assert!(max <= cap, "used {max} > capacity {cap}");
                // Read-ahead still in flight completes within the budget too.
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(cache.used_bytes() <= cap);
            });
        }
    }
}
