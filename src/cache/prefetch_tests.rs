//! Tests of the read-ahead scheduler over a real block cache and a scripted source.

use super::*;
use crate::cache::blocks::fetch_from;
use crate::cache::budget::MemoryPlan;
use crate::stats::Stats;
use bytes::Bytes;
use futures::FutureExt;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Semaphore;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// The source's byte at `i` is `i * 13 % 251`: `len` of them from `off`, built by copying.
fn pattern(off: u64, len: u64) -> Bytes {
    const CHUNK: usize = 64 << 10;
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..CHUNK + 251).map(|j| (j * 13 % 251) as u8).collect());
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = off;
    while pos < off + len {
        let n = ((off + len - pos) as usize).min(CHUNK);
        let start = (pos % 251) as usize;
        out.extend_from_slice(&table[start..start + n]);
        pos += n as u64;
    }
    Bytes::from(out)
}

/// A source of `size` bytes whose fetches wait for a permit of `gate` (when given) and are
/// logged as `(offset, len)`.
struct Source {
    size: u64,
    log: Arc<Mutex<Vec<(u64, u64)>>>,
    gate: Option<Arc<Semaphore>>,
    live: Arc<AtomicU64>,
}

impl Source {
    fn new(size: u64, gated: bool) -> Source {
        Source {
            size,
            log: Arc::default(),
            gate: gated.then(|| Arc::new(Semaphore::new(0))),
            live: Arc::default(),
        }
    }

    fn target(&self, name: &str) -> ReadTarget {
        let (log, gate, live) = (self.log.clone(), self.gate.clone(), self.live.clone());
        let fetch = fetch_from(move |off, len| {
            log.lock().push((off, len));
            let gate = gate.clone();
            let live = live.clone();
            live.fetch_add(1, Ordering::SeqCst);
            async move {
                if let Some(g) = gate {
                    g.acquire().await.expect("open").forget();
                }
                live.fetch_sub(1, Ordering::SeqCst);
                Ok(pattern(off, len))
            }
            .boxed()
        });
        ReadTarget {
            content: Arc::from(name),
            size: self.size,
            fetch,
        }
    }

    fn fetched(&self) -> u64 {
        self.log.lock().iter().map(|(_, l)| l).sum()
    }

    fn requests(&self) -> Vec<(u64, u64)> {
        self.log.lock().clone()
    }

    /// Lets `n` fetches complete.
    fn release(&self, n: usize) {
        if let Some(g) = &self.gate {
            g.add_permits(n);
        }
    }
}

/// A deterministic pseudo-random sequence (xorshift64).
fn xorshift(mut x: u64) -> impl Iterator<Item = u64> {
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x)
    })
}

/// A prefetcher over a cache of `capacity` bytes in 32 KiB blocks, 16 connections.
fn setup(capacity: u64) -> (Arc<Prefetcher>, Arc<BlockCache>) {
    let plan = MemoryPlan::for_capacity(capacity, 32 * KIB, 16, 8 * MIB);
    let cache = BlockCache::new(plan, Arc::new(Stats::default()));
    (
        Prefetcher::new(PrefetchConfig::default(), cache.clone()),
        cache,
    )
}

/// A read as the filesystem does it: advice, then the cache read; returns the advice.
async fn read(
    p: &Prefetcher,
    cache: &Arc<BlockCache>,
    t: &ReadTarget,
    off: u64,
    len: u64,
) -> Advice {
    let a = p.on_read(t, off, len, || None);
    let got = cache
        .read(&t.content, t.size, off, len, &t.fetch, a.mode)
        .await
        .expect("read");
    assert_eq!(got.len() as u64, len.min(t.size.saturating_sub(off)));
    a
}

use crate::cache::blocks::tests::eventually;

#[tokio::test]
async fn a_file_read_from_its_start_fills_every_connection_at_once() {
    let src = Source::new(512 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let plan = cache.plan().clone();
    let t = src.target("f");
    // The first read covers the kernel's next read-ahead in the same request.
    let a = read(&p, &cache, &t, 0, MIB).await;
    assert!(!a.proven);
    assert_eq!(a.mode.extend_to, 2 * MIB);
    assert_eq!(src.requests(), [(0, 2 * MIB)]);
    // The second read proves the stream: the whole window is scheduled at once, in parts.
    let a = read(&p, &cache, &t, MIB, MIB).await;
    assert!(a.proven);
    let reqs = src.requests();
    let parts = &reqs[1..];
    assert_eq!(parts.len() as u64, plan.parts_in_flight(), "{reqs:?}");
    assert!(parts.iter().all(|&(_, l)| l == plan.part_size), "{reqs:?}");
    assert_eq!(
        parts[0].0,
        2 * MIB,
        "read-ahead starts after what is fetched"
    );
}

#[tokio::test]
async fn a_file_whose_first_reads_arrive_swapped_still_starts_at_full_width() {
    let src = Source::new(512 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let plan = cache.plan().clone();
    let t = src.target("f");
    // The kernel's first read-ahead batch, the second request handled first.
    p.on_read(&t, MIB, MIB, || None);
    let a = p.on_read(&t, 0, MIB, || None);
    assert!(a.proven);
    let s = p.streams("f");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, 0, "the stream begins at 0");
    assert_eq!(s[0].3 as u64, plan.parts_in_flight(), "full width: {s:?}");
}

#[tokio::test]
async fn read_ahead_stops_when_no_one_has_the_file_open() {
    let src = Source::new(1024 * MIB, true);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    for i in 0..3 {
        p.on_read(&t, i * MIB, MIB, || None);
    }
    let started = src.requests().len();
    assert!(started > 1);
    p.closed("f");
    assert!(p.streams("f").is_empty());
    // The parts in flight complete; none follows them.
    src.release(started + 64);
    eventually("parts done", || src.live.load(Ordering::SeqCst) == 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(src.requests().len(), started, "no read-ahead after close");
    // The kernel's read-ahead sent before the close arrives late: it gets none either...
    let a = p.on_read(&t, 3 * MIB, MIB, || None);
    assert!(!a.proven);
    p.on_read(&t, 4 * MIB, MIB, || None);
    assert!(p.streams("f").is_empty());
    // ...until the file is opened again.
    p.opened("f");
    for i in 600..603 {
        p.on_read(&t, i * MIB, MIB, || None);
    }
    assert!(
        src.requests().len() > started,
        "read-ahead again after a new open"
    );
    assert!(cache.used_bytes() <= cache.capacity());
}

#[tokio::test]
async fn a_completed_part_is_refilled_without_waiting_for_the_reader() {
    let src = Source::new(1024 * MIB, true);
    let (p, cache) = setup(224 * MIB);
    let plan = cache.plan().clone();
    let t = src.target("f");
    src.release(1);
    read(&p, &cache, &t, 0, MIB).await;
    // (Covered by the first read's fetch.)
    read(&p, &cache, &t, MIB, MIB).await;
    let n = plan.parts_in_flight() as usize;
    eventually("a full pipe", || {
        src.live.load(Ordering::SeqCst) == n as u64
    })
    .await;
    // One part completes while the reader stays put: the next starts at once (there is slack in
    // the window), so the pipe stays full.
    src.release(1);
    eventually("the pipe refilled", || src.requests().len() == 1 + n + 1).await;
    assert_eq!(src.live.load(Ordering::SeqCst), n as u64);
    let last = *src.requests().last().expect("a request");
    assert_eq!(last, (2 * MIB + n as u64 * plan.part_size, plan.part_size));
    // The window bounds it: with the reader still at 2 MiB, no part starts beyond it.
    src.release(64);
    eventually("window filled", || src.live.load(Ordering::SeqCst) == 0).await;
    let ahead = src
        .requests()
        .iter()
        .map(|&(o, l)| o + l)
        .max()
        .unwrap_or(0);
    assert!(ahead <= 2 * MIB + plan.window, "{ahead} beyond the window");
    assert!(cache.used_bytes() <= cache.capacity());
}

#[tokio::test]
async fn a_strided_reader_gets_only_what_it_reads() {
    // A parquet column projection: 512 KiB chunks every 3.3 MB.
    let src = Source::new(256 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    let (chunk, stride) = (512 * KIB, 3_300_000u64);
    let mut needed = 0;
    let mut off = 4 * KIB;
    while off + chunk < 200 * MIB {
        // The kernel sends a 512 KiB pread as two reads, sometimes out of order.
        read(&p, &cache, &t, off + 256 * KIB, 256 * KIB).await;
        read(&p, &cache, &t, off, 256 * KIB).await;
        needed += chunk;
        off += stride;
    }
    let ratio = src.fetched() as f64 / needed as f64;
    assert!(ratio <= 1.15, "fetched {ratio:.2}x what was read");
}

#[tokio::test]
async fn random_small_reads_fetch_a_block_or_two() {
    let src = Source::new(512 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    for x in xorshift(0x9E3779B97F4A7C15).take(300) {
        let off = (x % (500 * MIB)) / 4096 * 4096;
        read(&p, &cache, &t, off, 8 * KIB).await;
    }
    let per_read = src.fetched() as f64 / 300.0;
    assert!(
        per_read <= 40.0 * KIB as f64,
        "{per_read} bytes per 4 KiB read"
    );
}

#[tokio::test]
async fn random_large_reads_fetch_what_they_read() {
    let src = Source::new(1024 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    for x in xorshift(0x2545F4914F6CDD1D).take(100) {
        let off = x % (1000 * MIB);
        // An unaligned 1 MiB pread reaches hubfs as 1 MiB and the page after it.
        let page = off / 4096 * 4096;
        read(&p, &cache, &t, page, MIB).await;
        read(&p, &cache, &t, page + MIB, 4096).await;
    }
    let ratio = src.fetched() as f64 / (100 * MIB) as f64;
    assert!(ratio <= 1.1, "fetched {ratio:.2}x");
}

#[tokio::test]
async fn a_stream_from_mid_file_ramps_with_what_it_read() {
    let src = Source::new(1024 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    let base = 500 * MIB;
    read(&p, &cache, &t, base, MIB).await;
    read(&p, &cache, &t, base + MIB, MIB).await;
    let ahead = |src: &Source| {
        src.requests()
            .iter()
            .map(|&(o, l)| o + l)
            .max()
            .unwrap_or(0)
    };
    // Proven after 2 MiB, but with a window of one part, not the whole plan.
    assert!(
        ahead(&src) <= base + 2 * MIB + cache.plan().part_size,
        "{}",
        ahead(&src) - base
    );
    for i in 2..64 {
        read(&p, &cache, &t, base + i * MIB, MIB).await;
    }
    assert!(ahead(&src) >= base + 64 * MIB + 48 * MIB, "window grew");
}

#[tokio::test]
async fn streams_read_at_once_share_the_window() {
    let src = Source::new(1024 * MIB, true);
    let (p, cache) = setup(224 * MIB);
    let plan = cache.plan().clone();
    let t = src.target("f");
    // Four readers of one file, a quarter each, as fio numjobs=4 reads it. The first to prove
    // itself takes the whole pipe while it is alone...
    let quarters: Vec<u64> = (0..4).map(|q| q * 256 * MIB).collect();
    for &q in &quarters {
        p.on_read(&t, q, MIB, || None);
    }
    for &q in &quarters {
        p.on_read(&t, q + MIB, MIB, || None);
        p.on_read(&t, q + 2 * MIB, MIB, || None);
    }
    let first = src.requests().len();
    assert_eq!(first as u64, plan.parts_in_flight());
    // ...and as its parts complete, the others get theirs (each within a quarter of the pipe,
    // and a window that grows as it reads, since they started mid-file).
    src.release(first);
    eventually("parts for the others", || src.requests().len() >= first + 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later: Vec<u64> = src.requests()[first..]
        .iter()
        .map(|&(o, _)| o / (256 * MIB))
        .collect();
    for q in 1..4u64 {
        let n = later.iter().filter(|&&x| x == q).count() as u64;
        assert!(
            n >= 1 && n <= plan.parts_in_flight().div_ceil(4),
            "quarter {q}: {n} parts of {later:?}"
        );
    }
    assert!(
        !later.contains(&0),
        "the first stream is past its share: {later:?}"
    );
    let s = p.streams("f");
    let inflight: u32 = s.iter().map(|x| x.3).sum();
    assert!(inflight as u64 <= plan.parts_in_flight(), "{s:?}");
    assert!(cache.used_bytes() <= cache.capacity());
}

#[tokio::test]
async fn readahead_stops_where_another_stream_began() {
    let src = Source::new(64 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    for i in 0..3 {
        read(&p, &cache, &t, 32 * MIB + i * MIB, MIB).await;
    }
    for i in 0..3 {
        read(&p, &cache, &t, i * MIB, MIB).await;
    }
    let beyond: Vec<_> = src
        .requests()
        .into_iter()
        .filter(|&(o, l)| o < 32 * MIB && o + l > 32 * MIB || o >= 35 * MIB)
        .collect();
    assert!(
        beyond.is_empty(),
        "read-ahead crossed into the other stream: {beyond:?}"
    );
    // Once this reader reaches where the other began, it reads ahead no further: that region
    // was read already.
    for i in 3..32 {
        read(&p, &cache, &t, i * MIB, MIB).await;
    }
    let fetched = src.fetched();
    read(&p, &cache, &t, 32 * MIB, MIB).await;
    assert_eq!(
        src.fetched(),
        fetched,
        "nothing fetched past the other's origin"
    );
}

#[tokio::test]
async fn the_next_shard_gets_a_first_window_when_this_one_is_scheduled() {
    let a = Source::new(40 * MIB, false);
    let b = Source::new(40 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let (ta, tb) = (a.target("a"), b.target("b"));
    let asked = AtomicU64::new(0);
    for i in 0..3 {
        p.on_read(&ta, i * MIB, MIB, || {
            asked.fetch_add(1, Ordering::SeqCst);
            Some(tb.clone())
        });
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked once, at the end of the file"
    );
    eventually("next shard prefetched", || b.fetched() > 0).await;
    let first = b.requests();
    assert_eq!(first[0].0, 0);
    let window: u64 = first.iter().map(|r| r.1).sum();
    let plan = cache.plan();
    assert!(
        window <= plan.parts_in_flight() * plan.part_size / 2,
        "{first:?}"
    );
    // The loader opens it and reads from the start: it continues the predicted stream, at full
    // width at once.
    let adv = read(&p, &cache, &tb, 0, MIB).await;
    assert!(adv.proven);
    eventually("whole file", || b.fetched() >= 40 * MIB).await;
    assert_eq!(b.fetched(), 40 * MIB, "nothing fetched twice");
}

#[tokio::test]
async fn reads_arriving_out_of_order_keep_a_stream_sequential() {
    let src = Source::new(256 * MIB, false);
    let (p, cache) = setup(224 * MIB);
    let t = src.target("f");
    read(&p, &cache, &t, 0, MIB).await;
    // The kernel's read-ahead batch of four reads, handled in a shuffled order.
    for off in [3, 1, 2, 4, 5, 7, 6, 8] {
        read(&p, &cache, &t, off * MIB, MIB).await;
    }
    let s = p.streams("f");
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].1, 9 * MIB, "the frontier took in the pending reads");
    assert!(s[0].4);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]
    /// Under any mix of sequential, strided and random readers over three files with read-ahead,
    /// cached plus in-flight bytes never exceed the capacity, every read returns the source
    /// bytes, and nothing is fetched more than a few times over.
    #[test]
    fn budget_is_never_exceeded_with_readahead_under_random_load(
        readers in proptest::collection::vec((0u8..3, 0u8..3, 0u64..14, 1u64..20), 1..12),
        cap_mib in 4u64..24,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let srcs: Vec<Source> = (0..3).map(|_| Source::new(16 * MIB, false)).collect();
            let targets: Vec<ReadTarget> =
                srcs.iter().enumerate().map(|(i, s)| s.target(&format!("f{i}"))).collect();
            let plan = MemoryPlan::for_capacity(cap_mib * MIB, 32 * KIB, 16, 8 * MIB);
            let cache = BlockCache::new(plan, Arc::new(Stats::default()));
            let p = Prefetcher::new(PrefetchConfig::default(), cache.clone());
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = crate::cache::blocks::tests::sample_max_used(&cache, &done);
            let mut tasks = Vec::new();
            for (file, kind, start, n) in readers {
                let (p, cache) = (p.clone(), cache.clone());
                let t = targets[file as usize].clone();
                let size = srcs[file as usize].size;
                tasks.push(tokio::spawn(async move {
                    let mut x = start * 7919 + 1;
                    for i in 0..n {
                        let (off, len) = match kind {
                            0 => (start * MIB + i * MIB / 2, MIB / 2),
                            1 => (start * MIB + i * MIB, 128 * KIB),
                            _ => {
                                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                                ((x >> 20) % (16 * MIB), 4 * KIB)
                            }
                        };
                        let a = p.on_read(&t, off, len, || None);
                        let got = cache.read(&t.content, t.size, off, len, &t.fetch, a.mode).await.unwrap();
                        let end = (off + len).min(size);
                        assert_eq!(got, pattern(off.min(end), end - off.min(end)));
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            done.store(true, Ordering::SeqCst);
            let max = sampler.await.unwrap();
            assert!(max <= cache.capacity(), "used {max} > capacity {}", cache.capacity());
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(cache.used_bytes() <= cache.capacity());
        });
    }
}
