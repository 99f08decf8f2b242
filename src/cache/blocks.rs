//! A memory-only LRU of fixed-size blocks of file content, keyed by content identity (LFS sha256
//! or git oid) and block index, with a hard byte capacity. Missing blocks are fetched in contiguous
//! runs; concurrent readers of a block that is being fetched wait for that one fetch. Bytes of a
//! fetch in flight are reserved against the capacity before it starts, so cached plus in-flight
//! bytes stay within the capacity (plus at most the runs that could not be reserved because
//! everything else was in flight, which the caller bounds by bounding concurrency).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use lru::LruCache;
use parking_lot::Mutex;

use crate::hub::HubError;
use crate::singleflight::spawn_shared;
use crate::stats::Stats;

/// Fetches `len` bytes at `offset` of the file being read; returns exactly `len` bytes or an error.
pub type FetchFn = Arc<dyn Fn(u64, u64) -> BoxFuture<'static, Result<Bytes, HubError>> + Send + Sync>;

type RunFuture = Shared<BoxFuture<'static, Result<Bytes, HubError>>>;

/// A block of one content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BlockKey {
    content: Arc<str>,
    index: u64,
}

struct Inflight {
    run: RunFuture,
    /// Byte offset of the run in the file.
    run_offset: u64,
}

struct State {
    lru: LruCache<BlockKey, Bytes>,
    cached_bytes: u64,
    inflight: HashMap<BlockKey, Inflight>,
    inflight_bytes: u64,
}

/// The block cache. Share it behind an `Arc`.
pub struct BlockCache {
    block_size: u64,
    capacity: u64,
    max_run_blocks: u64,
    state: Mutex<State>,
    stats: Arc<Stats>,
}

enum Slot {
    Ready(Bytes),
    Wait { run: RunFuture, run_offset: u64 },
}

impl BlockCache {
    /// A cache of at most `capacity` bytes in blocks of `block_size` bytes; one fetch covers at
    /// most `max_run_bytes`.
    pub fn new(block_size: u64, capacity: u64, max_run_bytes: u64, stats: Arc<Stats>) -> Arc<Self> {
        assert!(block_size > 0, "block size must be positive");
        Arc::new(BlockCache {
            block_size,
            capacity,
            max_run_blocks: (max_run_bytes / block_size).max(1),
            state: Mutex::new(State {
                lru: LruCache::unbounded(),
                cached_bytes: 0,
                inflight: HashMap::new(),
                inflight_bytes: 0,
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
    /// where possible and through `fetch` otherwise. Short only at end of file.
    pub async fn read(
        self: &Arc<Self>,
        content: &str,
        file_size: u64,
        offset: u64,
        len: u64,
        fetch: FetchFn,
    ) -> Result<Bytes, HubError> {
        let end = offset.saturating_add(len).min(file_size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let bs = self.block_size;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let content: Arc<str> = Arc::from(content);
        let slots = self.plan(&content, file_size, first, last, &fetch);

        let mut parts = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let index = first + i as u64;
            let block = match slot {
                Slot::Ready(b) => b,
                Slot::Wait { run, run_offset } => {
                    let run_bytes = run.await?;
                    let start = (index * bs - run_offset) as usize;
                    let blen = self.block_len(file_size, index) as usize;
                    run_bytes.slice(start..start + blen)
                }
            };
            parts.push(block);
        }
        // Cut the requested range out of the blocks.
        let head = (offset - first * bs) as usize;
        let total = (end - offset) as usize;
        if parts.len() == 1 {
            return Ok(parts[0].slice(head..head + total));
        }
        let mut out = BytesMut::with_capacity(total);
        for (i, p) in parts.iter().enumerate() {
            let from = if i == 0 { head } else { 0 };
            let want = (total - out.len()).min(p.len() - from);
            out.extend_from_slice(&p[from..from + want]);
        }
        Ok(out.freeze())
    }

    /// Under the lock: finds each block in the cache or in flight, and starts fetches for runs of
    /// missing blocks.
    fn plan(
        self: &Arc<Self>,
        content: &Arc<str>,
        file_size: u64,
        first: u64,
        last: u64,
        fetch: &FetchFn,
    ) -> Vec<Slot> {
        let mut s = self.state.lock();
        let mut slots: Vec<Option<Slot>> = Vec::with_capacity((last - first + 1) as usize);
        let mut hits = 0;
        for index in first..=last {
            let key = BlockKey {
                content: content.clone(),
                index,
            };
            if let Some(b) = s.lru.get(&key) {
                hits += 1;
                slots.push(Some(Slot::Ready(b.clone())));
            } else if let Some(f) = s.inflight.get(&key) {
                slots.push(Some(Slot::Wait {
                    run: f.run.clone(),
                    run_offset: f.run_offset,
                }));
            } else {
                slots.push(None);
            }
        }
        Stats::add(&self.stats.cache_hits, hits);
        Stats::add(&self.stats.cache_misses, (last - first + 1) - hits);

        // Start one fetch per run of missing blocks.
        let mut i = 0;
        while i < slots.len() {
            if slots[i].is_some() {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < slots.len() && slots[j].is_none() && (j - i) < self.max_run_blocks as usize {
                j += 1;
            }
            let run_first = first + i as u64;
            let run_last = first + j as u64 - 1;
            let run_offset = run_first * self.block_size;
            let run_len = (run_last * self.block_size + self.block_len(file_size, run_last)) - run_offset;
            self.make_room(&mut s, run_len);
            s.inflight_bytes += run_len;
            let run = self.start_run(content.clone(), file_size, run_first, run_last, run_offset, run_len, fetch.clone());
            for k in i..j {
                let key = BlockKey {
                    content: content.clone(),
                    index: first + k as u64,
                };
                s.inflight.insert(
                    key,
                    Inflight {
                        run: run.clone(),
                        run_offset,
                    },
                );
                slots[k] = Some(Slot::Wait {
                    run: run.clone(),
                    run_offset,
                });
            }
            i = j;
        }
        slots.into_iter().map(|s| s.expect("every slot planned")).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn start_run(
        self: &Arc<Self>,
        content: Arc<str>,
        file_size: u64,
        run_first: u64,
        run_last: u64,
        run_offset: u64,
        run_len: u64,
        fetch: FetchFn,
    ) -> RunFuture {
        let cache = self.clone();
        let fut = fetch(run_offset, run_len);
        spawn_shared(async move {
            Stats::add(&cache.stats.range_requests, 1);
            let result = fut.await.and_then(|b| {
                if b.len() as u64 == run_len {
                    Ok(b)
                } else {
                    Err(HubError::Protocol {
                        url: String::new(),
                        message: format!("fetch returned {} bytes, wanted {run_len}", b.len()),
                    })
                }
            });
            let mut s = cache.state.lock();
            s.inflight_bytes -= run_len;
            for index in run_first..=run_last {
                let key = BlockKey {
                    content: content.clone(),
                    index,
                };
                s.inflight.remove(&key);
                if let Ok(b) = &result {
                    let start = (index * cache.block_size - run_offset) as usize;
                    let blen = cache.block_len(file_size, index) as usize;
                    // Copy so each cached block owns exactly its bytes: evicting a block frees them.
                    let block = if run_first == run_last {
                        b.clone()
                    } else {
                        Bytes::copy_from_slice(&b[start..start + blen])
                    };
                    cache.make_room(&mut s, blen as u64);
                    if cache.cached_bytes_fit(&s, blen as u64) {
                        s.cached_bytes += blen as u64;
                        if let Some(old) = s.lru.put(key, block) {
                            s.cached_bytes -= old.len() as u64;
                        }
                    }
                }
            }
            drop(s);
            if let Ok(b) = &result {
                Stats::add(&cache.stats.bytes_fetched, b.len() as u64);
            }
            result
        })
    }

    fn cached_bytes_fit(&self, s: &State, extra: u64) -> bool {
        s.cached_bytes + s.inflight_bytes + extra <= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn content(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>())
    }

    fn fetcher(data: Bytes, calls: Arc<AtomicU64>, delay_ms: u64) -> FetchFn {
        Arc::new(move |off, len| {
            let data = data.clone();
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(data.slice(off as usize..(off + len) as usize))
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn reads_match_source_at_every_alignment() {
        let data = content(10_000);
        let calls = Arc::new(AtomicU64::new(0));
        let cache = BlockCache::new(1024, 1 << 20, 4096, Arc::new(Stats::default()));
        let f = fetcher(data.clone(), calls.clone(), 0);
        for (off, len) in [(0, 1), (1023, 2), (1000, 5000), (9999, 10), (0, 10_000), (5000, 0), (20_000, 5)] {
            let got = cache.read("c", 10_000, off, len, f.clone()).await.unwrap();
            let end = (off + len).min(10_000);
            let want = if off >= 10_000 { &[][..] } else { &data[off as usize..end as usize] };
            assert_eq!(&got[..], want, "off {off} len {len}");
        }
    }

    #[tokio::test]
    async fn second_read_is_a_hit_and_fetches_nothing() {
        let data = content(4096);
        let calls = Arc::new(AtomicU64::new(0));
        let cache = BlockCache::new(1024, 1 << 20, 1 << 20, Arc::new(Stats::default()));
        let f = fetcher(data, calls.clone(), 0);
        cache.read("c", 4096, 0, 4096, f.clone()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one run for four missing blocks");
        cache.read("c", 4096, 100, 3000, f).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn capacity_is_never_exceeded_and_lru_evicts() {
        let data = content(64 * 1024);
        let calls = Arc::new(AtomicU64::new(0));
        let cache = BlockCache::new(1024, 8 * 1024, 2048, Arc::new(Stats::default()));
        let f = fetcher(data.clone(), calls.clone(), 0);
        for i in 0..64u64 {
            let got = cache.read("c", 64 * 1024, i * 1024, 1024, f.clone()).await.unwrap();
            assert_eq!(&got[..], &data[(i * 1024) as usize..((i + 1) * 1024) as usize]);
            assert!(cache.used_bytes() <= cache.capacity(), "used {}", cache.used_bytes());
        }
        assert_eq!(cache.cached_bytes(), 8 * 1024);
        let before = calls.load(Ordering::SeqCst);
        cache.read("c", 64 * 1024, 63 * 1024, 10, f.clone()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before, "recent block still cached");
        cache.read("c", 64 * 1024, 0, 10, f).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before + 1, "oldest block was evicted");
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_block_share_one_fetch() {
        let data = content(4096);
        let calls = Arc::new(AtomicU64::new(0));
        let cache = BlockCache::new(4096, 1 << 20, 4096, Arc::new(Stats::default()));
        let f = fetcher(data.clone(), calls.clone(), 50);
        let mut tasks = Vec::new();
        for i in 0..32u64 {
            let cache = cache.clone();
            let f = f.clone();
            tasks.push(tokio::spawn(async move { cache.read("c", 4096, i * 100, 100, f).await }));
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
        let failing: FetchFn = Arc::new(move |_, _| {
            c2.fetch_add(1, Ordering::SeqCst);
            async {
                Err(HubError::Network {
                    url: "u".into(),
                    message: "reset".into(),
                })
            }
            .boxed()
        });
        assert!(cache.read("c", 100, 0, 10, failing.clone()).await.is_err());
        assert!(cache.read("c", 100, 0, 10, failing).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "errors are not cached");
        assert_eq!(cache.used_bytes(), 0);
    }

    #[tokio::test]
    async fn short_fetch_is_an_error_not_short_data() {
        let cache = BlockCache::new(1024, 1 << 20, 4096, Arc::new(Stats::default()));
        let short: FetchFn = Arc::new(|_, len| async move { Ok(Bytes::from(vec![0u8; (len - 1) as usize])) }.boxed());
        assert!(cache.read("c", 1000, 0, 1000, short).await.is_err());
    }
}
