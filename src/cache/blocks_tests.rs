//! Tests of the block cache (a file of its own: the cache's code is long enough).

use super::*;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

const SEQ: ReadMode = ReadMode {
    sequential: true,
    extend_to: 0,
};

/// Samples `cache`'s used bytes until `done`; the task's result is the most it saw.
pub(crate) fn sample_max_used(
    cache: &Arc<BlockCache>,
    done: &Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let (cache, done) = (cache.clone(), done.clone());
    tokio::spawn(async move {
        let mut max = 0;
        while !done.load(Ordering::SeqCst) {
            max = max.max(cache.used_bytes());
            tokio::task::yield_now().await;
        }
        max
    })
}

/// A cache of `capacity` bytes in blocks of `block`, fetching at most `run` at once, for 4
/// connections.
fn test_cache(block: u64, capacity: u64, run: u64, stats: Arc<Stats>) -> Arc<BlockCache> {
    BlockCache::new(MemoryPlan::for_capacity(capacity, block, 4, run), stats)
}

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
    let cache = test_cache(block, capacity, run, Arc::new(Stats::default()));
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

/// Waits (up to 5 s) until `cond` holds.
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
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

type ReadTask = tokio::task::JoinHandle<Result<Bytes, crate::cache::CacheError>>;

impl Gated {
    fn new(size: usize, block: u64) -> Gated {
        let data = content(size);
        let stats = Arc::new(Stats::default());
        let cache = test_cache(block, 1 << 20, size as u64, stats.clone());
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
        tokio::spawn(async move {
            cache
                .read("c", size, off, len, &f, ReadMode::default())
                .await
        })
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
    assert_eq!(g.cache.prefetch("c", 8192, 0, 8192, &g.f, None).until, 8192);
    assert_eq!(g.live(), 1);
    g.abort_and_expect_fetch_completes(reader, 8192).await;
}

#[tokio::test]
async fn read_ahead_runs_on_when_a_reader_that_joined_it_goes_away() {
    let g = Gated::new(4096, 4096);
    g.cache.prefetch("c", 4096, 0, 4096, &g.f, None);
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
        let got = cache
            .read("c", 10_000, off, len, &f, ReadMode::default())
            .await
            .unwrap();
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
        .read_parts("c", 4096, 1000, 3000, &f, ReadMode::default())
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
        let block = cache.state.lock().store.peek(&key).unwrap().clone();
        assert_eq!(parts[i].as_ptr(), block.as_ptr());
    }
    assert!(cache
        .read_parts("c", 4096, 4096, 10, &f, ReadMode::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn second_read_is_a_hit_and_fetches_nothing() {
    let (_, calls, cache, f) = counted(4096, (1024, 1 << 20, 1 << 20), 0);
    cache
        .read("c", 4096, 0, 4096, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one run for four missing blocks"
    );
    cache
        .read("c", 4096, 100, 3000, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn capacity_is_never_exceeded_and_lru_evicts() {
    let (data, calls, cache, f) = counted(64 * 1024, (1024, 8 * 1024, 2048), 0);
    for i in 0..64u64 {
        let got = cache
            .read("c", 64 * 1024, i * 1024, 1024, &f, ReadMode::default())
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
        .read("c", 64 * 1024, 63 * 1024, 10, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "recent block still cached"
    );
    cache
        .read("c", 64 * 1024, 0, 10, &f, ReadMode::default())
        .await
        .unwrap();
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
            cache
                .read("c", 4096, i * 100, 100, &f, ReadMode::default())
                .await
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
    let cache = test_cache(1024, 1 << 20, 4096, Arc::new(Stats::default()));
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
    assert!(cache
        .read("c", 100, 0, 10, &failing, ReadMode::default())
        .await
        .is_err());
    assert!(cache
        .read("c", 100, 0, 10, &failing, ReadMode::default())
        .await
        .is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "errors are not cached");
    assert_eq!(cache.used_bytes(), 0);
}

#[tokio::test]
async fn short_fetch_is_an_error_not_short_data() {
    let cache = test_cache(1024, 1 << 20, 4096, Arc::new(Stats::default()));
    let short =
        fetch_from(|_, len| async move { Ok(Bytes::from(vec![0u8; (len - 1) as usize])) }.boxed());
    assert!(cache
        .read("c", 1000, 0, 1000, &short, ReadMode::default())
        .await
        .is_err());
}

#[tokio::test]
async fn prefetch_fills_ahead_within_the_inflight_budget() {
    let (data, calls, cache, f) = counted(64 * 1024, (1024, 16 * 1024, 4096), 30);
    let p = cache.plan().clone();
    assert_eq!(
        (p.max_request, p.demand_reserve, p.inflight_limit),
        (4096, 2048, 16 * 1024)
    );
    let r = cache.prefetch("c", 64 * 1024, 0, 32 * 1024, &f, None);
    // Read-ahead leaves the demand reserve (2 blocks) of the in-flight limit for readers: three
    // runs of four blocks start, a fourth would eat into the reserve.
    assert_eq!((r.until, r.runs), (12 * 1024, 3));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(cache.used_bytes() <= cache.capacity());
    // A reader of prefetched blocks waits for them rather than fetching again; the rest is
    // one demand run.
    // (Not sequential: a sequential reader's consumed blocks would be dropped behind it.)
    let got = cache
        .read("c", 64 * 1024, 0, 14 * 1024, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..14 * 1024]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Prefetching what is cached does nothing.
    let r = cache.prefetch("c", 64 * 1024, 0, 8 * 1024, &f, None);
    assert_eq!((r.until, r.runs), (8 * 1024, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn sequentially_consumed_blocks_are_evicted_first() {
    let (_, calls, cache, f) = counted(16 * 1024, (1024, 4 * 1024, 1024), 0);
    // Blocks 0 and 1 read sequentially (consumed), block 2 and 3 read-ahead (unread).
    cache.read("c", 16 * 1024, 0, 2048, &f, SEQ).await.unwrap();
    cache
        .read("c", 16 * 1024, 2048, 2048, &f, ReadMode::default())
        .await
        .unwrap();
    let before = calls.load(Ordering::SeqCst);
    // Two more blocks need room: the consumed ones go, the unread ones stay.
    cache
        .read("c", 16 * 1024, 8 * 1024, 2048, &f, ReadMode::default())
        .await
        .unwrap();
    cache
        .read("c", 16 * 1024, 2048, 2048, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), before + 2);
}

#[tokio::test]
async fn a_sequential_reader_holds_only_the_last_consumed_blocks_and_their_buffers() {
    // Capacity 64 KiB: a quarter, 16 KiB, of consumed blocks is kept.
    let size = 256 * 1024;
    let (data, calls, cache, f) = counted(size, (1024, 64 * 1024, 4096), 0);
    assert_eq!(cache.plan().keep_consumed, 16 * 1024);
    for off in (0..128 * 1024).step_by(4096) {
        let got = cache
            .read("c", size as u64, off, 4096, &f, SEQ)
            .await
            .unwrap();
        assert_eq!(&got[..], &data[off as usize..off as usize + 4096]);
        assert!(
            cache.cached_bytes() <= 16 * 1024,
            "{}",
            cache.cached_bytes()
        );
        let (buffers, from_heap) = cache.pool_usage();
        assert!(buffers <= 16, "{buffers} buffers held");
        assert_eq!(from_heap, 0);
    }
    assert_eq!(cache.dropped_behind_bytes(), 112 * 1024);
    // The last 16 KiB read are still here...
    let before = calls.load(Ordering::SeqCst);
    let got = cache
        .read(
            "c",
            size as u64,
            112 * 1024,
            16 * 1024,
            &f,
            ReadMode::default(),
        )
        .await
        .unwrap();
    assert_eq!(&got[..], &data[112 * 1024..128 * 1024]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "kept blocks are not fetched again"
    );
    // ...and the first ones come back from the Hub, the same bytes.
    let got = cache
        .read("c", size as u64, 0, 4096, &f, ReadMode::default())
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..4096]);
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
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
            let cache = test_cache(bs, cap, 4 * bs, Arc::new(Stats::default()));
            let data = content(200_000);
            let calls = Arc::new(AtomicU64::new(0));
            let f = fetcher(data.clone(), calls, 1);
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = sample_max_used(&cache, &done);
            let mut tasks = Vec::new();
            for (kind, off, len) in ops {
                let cache = cache.clone();
                let f = f.clone();
                let data = data.clone();
                tasks.push(tokio::spawn(async move {
                    let key = if kind == 1 { "b" } else { "a" };
                    if kind == 2 {
                        cache.prefetch(key, 200_000, off, off + len * 4, &f, None);
                        return;
                    }
                    let got = cache.read(key, 200_000, off, len, &f, ReadMode { sequential: kind == 0, extend_to: 0 }).await.unwrap();
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
