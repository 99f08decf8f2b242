//! Fetches in flight: a **run** is one range request for a span of consecutive blocks. Its blocks
//! arrive one by one (the client streams pieces), and each is handed to the readers waiting for it
//! as soon as it is complete, not when the whole request is: a reader at the head of an 8 MiB part
//! waits for its 32 KiB, not for the 8 MiB.
//!
//! A run that takes far longer than runs of its size usually do (a **straggler**: a CDN node
//! that stalls or crawls) gets a second request, the **hedge**, for the blocks it still lacks.
//! Each block is taken from whichever request delivers it first; when every block is in, the
//! other request is dropped (its connection closed). Hedges are capped to a fraction of the bytes
//! fetched, so a slow network is not answered with twice the traffic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::clock::{Patience, RunClock};
use super::error::CacheError;
use super::pool::BufferPool;
use crate::hub::{HeapBuffer, HubError, PieceBuffer, PieceSink};
use crate::stats::Stats;

/// Fetches `len` bytes at `offset` of the file being read, handing consecutive pieces of `piece`
/// bytes (the last may be shorter) to the sink as they arrive; `Ok` once every piece was handed.
pub type FetchFn = Arc<
    dyn Fn(u64, u64, u64, Arc<dyn PieceSink>) -> BoxFuture<'static, Result<(), HubError>>
        + Send
        + Sync,
>;

/// The readers waiting for a run started for them, and the switch that stops it.
pub(crate) struct Demand {
    /// Waiting readers' slots, plus one once read-ahead counts on the run; changed only under
    /// the cache's state lock.
    pub(crate) waiters: AtomicU64,
    /// Read-ahead covers these blocks: the run is never stopped.
    pinned: std::sync::atomic::AtomicBool,
    pub(crate) cancel: CancellationToken,
}

impl Demand {
    pub(crate) fn new() -> Arc<Demand> {
        Arc::new(Demand {
            waiters: AtomicU64::new(0),
            pinned: Default::default(),
            cancel: CancellationToken::new(),
        })
    }

    /// Under the cache's state lock: read-ahead relies on this run, so it must complete.
    pub(crate) fn pin(&self) {
        if !self.pinned.swap(true, Ordering::Relaxed) {
            self.waiters.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One block's place in a run.
#[derive(Default)]
struct Slot {
    bytes: Option<Bytes>,
    /// A reader took it; `consumed`: a sequential reader read it to its end.
    read: bool,
    consumed: bool,
}

struct RunState {
    slots: Vec<Slot>,
    filled: usize,
    /// When its request got a connection (the time before that is queueing, not latency).
    started_at: Option<tokio::time::Instant>,
    /// When the first block arrived.
    first_at: Option<tokio::time::Instant>,
    /// Set once the run ended: `Some(Ok)` complete, `Some(Err)` failed (filled slots stay good).
    outcome: Option<Result<(), CacheError>>,
    /// Its blocks were handed to the cache (under the cache's lock).
    filed: bool,
}

/// What a reader learned from a slot.
pub(crate) enum Take {
    /// The block.
    Ready(Bytes),
    /// Not yet: wait for the run to change.
    Pending,
    /// The run ended without this block.
    Failed(CacheError),
}

/// One range request in flight for blocks `first..first + len_blocks`.
pub(crate) struct Run {
    pub(crate) id: u64,
    pub(crate) first: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    block_size: u64,
    /// The expected length of each block (the last may be short).
    last_len: u64,
    pub(crate) demand: Option<Arc<Demand>>,
    /// Where its blocks are received (the heap when `None`).
    pool: Option<Arc<BufferPool>>,
    state: Mutex<RunState>,
    /// Per block: wakes the readers waiting for it (only them) when it arrives or the run ends.
    arrived: Box<[Notify]>,
}

impl Run {
    /// A run of the blocks covering `offset..offset + len` (block-aligned `offset`).
    pub(crate) fn new(
        id: u64,
        offset: u64,
        len: u64,
        block_size: u64,
        demand: Option<Arc<Demand>>,
        pool: Option<Arc<BufferPool>>,
    ) -> Arc<Run> {
        let n = len.div_ceil(block_size) as usize;
        let last_len = len - (n as u64 - 1) * block_size;
        Arc::new(Run {
            id,
            first: offset / block_size,
            offset,
            len,
            block_size,
            last_len,
            demand,
            pool,
            state: Mutex::new(RunState {
                slots: (0..n).map(|_| Slot::default()).collect(),
                filled: 0,
                started_at: None,
                first_at: None,
                outcome: None,
                filed: false,
            }),
            arrived: (0..n).map(|_| Notify::new()).collect(),
        })
    }

    fn expected_len(&self, i: usize, n: usize) -> u64 {
        if i + 1 == n {
            self.last_len
        } else {
            self.block_size
        }
    }

    /// Delivers block `i` of the run (ignored when it is already there: the other request of a
    /// hedged run got it first). A piece of the wrong length is a protocol error.
    pub(crate) fn fill(&self, i: usize, bytes: Bytes) -> Result<(), String> {
        let mut s = self.state.lock();
        let n = s.slots.len();
        if i >= n || bytes.len() as u64 != self.expected_len(i, n) {
            return Err(format!(
                "piece {i} of {} bytes does not fit a run of {n} blocks of {}",
                bytes.len(),
                self.block_size
            ));
        }
        if s.slots[i].bytes.is_none() && s.outcome.is_none() {
            s.slots[i].bytes = Some(bytes);
            s.filled += 1;
            s.first_at.get_or_insert_with(tokio::time::Instant::now);
            drop(s);
            self.arrived[i].notify_waiters();
        }
        Ok(())
    }

    /// When the first block arrived, if one did.
    pub(crate) fn first_at(&self) -> Option<tokio::time::Instant> {
        self.state.lock().first_at
    }

    /// When its (first) request got a connection, if it did.
    pub(crate) fn started_at(&self) -> Option<tokio::time::Instant> {
        self.state.lock().started_at
    }

    fn mark_started(&self) {
        self.state
            .lock()
            .started_at
            .get_or_insert_with(tokio::time::Instant::now);
    }

    /// Blocks delivered so far.
    pub(crate) fn filled(&self) -> usize {
        self.state.lock().filled
    }

    /// The first block not yet delivered, if any.
    pub(crate) fn first_missing(&self) -> Option<usize> {
        self.state
            .lock()
            .slots
            .iter()
            .position(|s| s.bytes.is_none())
    }

    /// True once every block arrived.
    pub(crate) fn complete(&self) -> bool {
        let s = self.state.lock();
        s.filled == s.slots.len()
    }

    /// Records how the run ended and wakes every waiter.
    pub(crate) fn finish(&self, outcome: Result<(), CacheError>) {
        self.state.lock().outcome = Some(outcome);
        for a in self.arrived.iter() {
            a.notify_waiters();
        }
    }

    /// Under the cache's state lock: marks the run filed and gives each delivered block with
    /// whether a reader took it and whether a sequential reader consumed it.
    pub(crate) fn file(&self) -> Vec<(u64, Bytes, bool, bool)> {
        let mut s = self.state.lock();
        s.filed = true;
        s.slots
            .iter()
            .enumerate()
            .filter_map(|(i, sl)| {
                sl.bytes
                    .clone()
                    .map(|b| (self.first + i as u64, b, sl.read, sl.consumed))
            })
            .collect()
    }

    /// Takes block `index` for a reader (`consumed`: read to its end by a sequential reader).
    /// Returns what the slot holds and whether the run was already filed (then the caller tells
    /// the cache itself that the block was read).
    pub(crate) fn take(&self, index: u64, consumed: bool) -> (Take, bool) {
        let mut s = self.state.lock();
        let filed = s.filed;
        let i = (index - self.first) as usize;
        let Some(slot) = s.slots.get_mut(i) else {
            return (
                Take::Failed(CacheError::Incomplete {
                    offset: self.offset,
                    len: self.len,
                    message: format!("block {index} is not in run {}", self.id),
                }),
                filed,
            );
        };
        if let Some(b) = slot.bytes.clone() {
            slot.read = true;
            slot.consumed |= consumed;
            return (Take::Ready(b), filed);
        }
        let t = match &s.outcome {
            None => Take::Pending,
            Some(Err(e)) => Take::Failed(e.clone()),
            Some(Ok(())) => Take::Failed(CacheError::Incomplete {
                offset: self.offset,
                len: self.len,
                message: format!("run {} completed without block {index}", self.id),
            }),
        };
        (t, filed)
    }

    /// Waits for block `index` (see [`Run::take`]).
    pub(crate) async fn wait(
        &self,
        index: u64,
        consumed: bool,
    ) -> (Result<Bytes, CacheError>, bool) {
        let slot = (index.saturating_sub(self.first) as usize).min(self.arrived.len() - 1);
        loop {
            // Registered before looking, so an arrival in between is not missed.
            let arrived = self.arrived[slot].notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            match self.take(index, consumed) {
                (Take::Ready(b), filed) => return (Ok(b), filed),
                (Take::Failed(e), filed) => return (Err(e), filed),
                (Take::Pending, _) => arrived.await,
            }
        }
    }

    /// A sink writing piece `i` of a request that starts at block `base` of this run.
    pub(crate) fn sink(
        self: &Arc<Self>,
        base: usize,
        errors: Arc<Mutex<Option<String>>>,
    ) -> Arc<dyn PieceSink> {
        Arc::new(RunSink {
            run: self.clone(),
            base,
            errors,
        })
    }
}

/// Receives one request's pieces into the run's blocks (in pool buffers where there is a pool).
struct RunSink {
    run: Arc<Run>,
    /// The block the request starts at.
    base: usize,
    errors: Arc<Mutex<Option<String>>>,
}

impl PieceSink for RunSink {
    fn buffer(&self, len: usize) -> Box<dyn PieceBuffer> {
        match &self.run.pool {
            Some(p) => p.buffer(len),
            None => Box::new(HeapBuffer::with_capacity(len)),
        }
    }

    fn deliver(&self, i: usize, piece: Bytes) {
        if let Err(e) = self.run.fill(self.base + i, piece) {
            self.errors.lock().get_or_insert(e);
        }
    }

    fn started(&self) {
        self.run.mark_started();
    }
}

/// Starts the request of `run` (the fetch is called at once) and returns the future that drives
/// it until every block is in, the requests fail, or `cancel` fires; it hedges a straggler once,
/// per `clock`.
pub(crate) fn drive(
    run: Arc<Run>,
    fetch: FetchFn,
    clock: Arc<RunClock>,
    stats: Arc<Stats>,
    cancel: Option<CancellationToken>,
) -> impl std::future::Future<Output = Result<(), CacheError>> + Send + 'static {
    let started = tokio::time::Instant::now();
    let errors = Arc::new(Mutex::new(None));
    let primary = fetch(
        run.offset,
        run.len,
        run.block_size,
        run.sink(0, errors.clone()),
    );
    drive_started(run, fetch, clock, stats, cancel, started, errors, primary)
}

/// The straggler watch of one run: when its request got a connection (the clock starts then:
/// time queued for a connection is not the CDN's latency), the progress seen (blocks delivered,
/// and when that count grew), and the patience the clock gives it.
struct Watch {
    patience: Option<Patience>,
    t0: Option<tokio::time::Instant>,
    seen: usize,
    seen_at: tokio::time::Instant,
}

impl Watch {
    fn new(clock: &RunClock, len: u64) -> Self {
        Watch {
            patience: clock.patience(len),
            t0: None,
            seen: 0,
            seen_at: tokio::time::Instant::now(),
        }
    }

    /// Notes when the request got its connection, once it has.
    fn observe_start(&mut self, run: &Run) {
        if self.t0.is_none() {
            self.t0 = run.started_at();
            if let Some(t) = self.t0 {
                self.seen_at = self.seen_at.max(t);
            }
        }
    }

    /// When to look at the run next: its first block's or its end's deadline, or its silence's;
    /// every 100 ms until the request has a connection and the clock has samples (the first
    /// parts of a mount).
    fn check_at(&self) -> tokio::time::Instant {
        match (self.patience, self.t0) {
            (Some(p), Some(t0)) if self.seen == 0 => (t0 + p.total).min(t0 + p.first),
            (Some(p), Some(t0)) => (t0 + p.total).min(self.seen_at + p.silence),
            _ => tokio::time::Instant::now() + Duration::from_millis(100),
        }
    }

    /// At a check: true when the run is late (out of patience, or silent too long) and should be
    /// hedged; false when it is still arriving in time or cannot be judged yet.
    fn is_late(&mut self, run: &Run, clock: &RunClock) -> bool {
        let now = tokio::time::Instant::now();
        let filled = run.filled();
        let Some(t0) = self.t0.filter(|_| self.patience.is_some()) else {
            self.patience = clock.patience(run.len);
            if filled > self.seen {
                (self.seen, self.seen_at) = (filled, now);
            }
            return false;
        };
        if filled > self.seen && self.patience.is_some_and(|p| now < t0 + p.total) {
            // Still arriving, and not yet late in all: look again later.
            (self.seen, self.seen_at) = (filled, now);
            return false;
        }
        true
    }
}

/// A second request for the blocks of `run` from its first missing one on, if the clock allows
/// another hedge now.
fn hedge_of(
    run: &Arc<Run>,
    fetch: &FetchFn,
    clock: &RunClock,
    stats: &Stats,
    errors: &Arc<Mutex<Option<String>>>,
    started: tokio::time::Instant,
) -> Option<BoxFuture<'static, Result<(), HubError>>> {
    let k = run.first_missing()?;
    let from = run.offset + k as u64 * run.block_size;
    let len = run.offset + run.len - from;
    if !clock.try_hedge(len) {
        return None;
    }
    Stats::add(&stats.hedges, 1);
    Stats::add(&stats.hedge_bytes, len);
    tracing::debug!(offset = run.offset, len = run.len, missing_from = from, after = ?started.elapsed(), "straggler: hedging its remaining bytes");
    Some(fetch(
        from,
        len,
        run.block_size,
        run.sink(k, errors.clone()),
    ))
}

#[allow(clippy::too_many_arguments)]
async fn drive_started(
    run: Arc<Run>,
    fetch: FetchFn,
    clock: Arc<RunClock>,
    stats: Arc<Stats>,
    cancel: Option<CancellationToken>,
    started: tokio::time::Instant,
    errors: Arc<Mutex<Option<String>>>,
    mut primary: BoxFuture<'static, Result<(), HubError>>,
) -> Result<(), CacheError> {
    let mut watch = Watch::new(&clock, run.len);
    let mut hedge: Option<BoxFuture<'static, Result<(), HubError>>> = None;
    let mut hedged = false;
    let mut primary_failed: Option<HubError> = None;
    let cancelled = async {
        match &cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    let result = loop {
        watch.observe_start(&run);
        let check_at = watch.check_at();
        tokio::select! {
            r = &mut primary, if primary_failed.is_none() => match r {
                Ok(()) => break Ok(()),
                Err(e) if hedge.is_some() => primary_failed = Some(e),
                Err(e) => break Err(CacheError::Fetch(e)),
            },
            r = async { hedge.as_mut().expect("guarded").await }, if hedge.is_some() => match r {
                Ok(()) => {
                    Stats::add(&stats.hedges_won, 1);
                    break Ok(());
                }
                Err(e) => {
                    hedge = None;
                    if let Some(p) = primary_failed.take() {
                        break Err(CacheError::Fetch(p));
                    }
                    tracing::debug!(offset = run.offset, error = %e, "hedge failed; the first request goes on");
                }
            },
            () = tokio::time::sleep_until(check_at), if !hedged => {
                if watch.is_late(&run, &clock) {
                    hedged = true;
                    hedge = hedge_of(&run, &fetch, &clock, &stats, &errors, started);
                }
            },
            () = &mut cancelled => {
                Stats::add(&stats.fetches_cancelled, 1);
                tracing::debug!(offset = run.offset, len = run.len, "fetch cancelled: no reader waits for it");
                break Err(CacheError::Cancelled);
            }
        }
    };
    let result = result.and_then(|()| check_complete(&run, &errors));
    if result.is_ok() && !hedged {
        let from = run.started_at().unwrap_or(started);
        let first = run
            .first_at()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(from));
        clock.record(run.len, first, from.elapsed());
    } else if result.is_ok() {
        clock.record_hedged(run.len);
    }
    result
}

/// A run whose requests ended well is complete only if its sinks saw no error and every block
/// arrived.
fn check_complete(run: &Run, errors: &Mutex<Option<String>>) -> Result<(), CacheError> {
    match errors.lock().take() {
        Some(message) => Err(CacheError::Incomplete {
            offset: run.offset,
            len: run.len,
            message,
        }),
        None if run.complete() => Ok(()),
        None => Err(CacheError::Incomplete {
            offset: run.offset,
            len: run.len,
            message: "the request ended before every block arrived".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::MIN_SAMPLES;
    use futures::FutureExt;

    const BS: u64 = 4;

    fn data(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>())
    }

    /// A fetch of `src` that delivers a piece every `gap`, stalling `stall` before piece
    /// `stall_at` of the first request only.
    fn paced(
        src: Bytes,
        gap: Duration,
        stall_at: Option<(usize, Duration)>,
    ) -> (FetchFn, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let f: FetchFn = Arc::new(move |off, len, piece, sink| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let src = src.clone();
            sink.started();
            async move {
                let pieces =
                    crate::hub::split_pieces(src.slice(off as usize..(off + len) as usize), piece);
                for (i, p) in pieces.into_iter().enumerate() {
                    if let Some((at, d)) = stall_at {
                        if n == 0 && i == at {
                            tokio::time::sleep(d).await;
                        }
                    }
                    tokio::time::sleep(gap).await;
                    sink.deliver(i, p);
                }
                Ok(())
            }
            .boxed()
        });
        (f, calls)
    }

    fn warmed_clock() -> Arc<RunClock> {
        let c = RunClock::new(1, 3.0, 0.05, 1 << 20);
        for _ in 0..MIN_SAMPLES {
            // 10 ms for 40 bytes.
            c.record(40, Duration::from_millis(1), Duration::from_millis(10));
        }
        Arc::new(c)
    }

    #[tokio::test]
    async fn blocks_reach_readers_before_the_run_completes() {
        let src = data(40);
        let (f, _) = paced(src.clone(), Duration::from_millis(20), None);
        let run = Run::new(0, 0, 40, BS, None, None);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(drive(run.clone(), f, warmed_clock(), stats, None));
        let (first, _) = run.wait(0, false).await;
        assert_eq!(&first.unwrap()[..], &src[..4]);
        assert!(!run.complete(), "the first block came before the last");
        task.await.unwrap().unwrap();
        let (last, _) = run.wait(9, false).await;
        assert_eq!(&last.unwrap()[..], &src[36..40]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_is_hedged_and_the_hedge_wins() {
        let src = data(40);
        // The first request stalls 10 s before its 4th piece.
        let (f, calls) = paced(
            src.clone(),
            Duration::from_millis(1),
            Some((3, Duration::from_secs(10))),
        );
        let run = Run::new(0, 0, 40, BS, None, None);
        let stats = Arc::new(Stats::default());
        let t = tokio::time::Instant::now();
        drive(run.clone(), f, warmed_clock(), stats.clone(), None)
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(Stats::get(&stats.hedges), 1);
        assert_eq!(Stats::get(&stats.hedges_won), 1);
        assert_eq!(
            Stats::get(&stats.hedge_bytes),
            28,
            "only the 7 missing blocks"
        );
        for i in 0..10 {
            let (b, _) = run.wait(i, false).await;
            assert_eq!(&b.unwrap()[..], &src[i as usize * 4..i as usize * 4 + 4]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_keeps_pace_is_not_hedged_and_a_crawling_one_is() {
        let src = data(40);
        // Median: 10 ms for 40 bytes, so patience is 100 ms in all (the floor).
        for (gap_ms, hedges) in [(8, 0), (40, 1)] {
            let (f, calls) = paced(src.clone(), Duration::from_millis(gap_ms), None);
            let run = Run::new(0, 0, 40, BS, None, None);
            let stats = Arc::new(Stats::default());
            drive(run, f, warmed_clock(), stats.clone(), None)
                .await
                .unwrap();
            assert_eq!(
                Stats::get(&stats.hedges),
                hedges,
                "a piece every {gap_ms} ms"
            );
            assert_eq!(calls.load(Ordering::SeqCst), 1 + hedges);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn time_queued_for_a_connection_is_not_taken_for_a_straggler() {
        let src = data(40);
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        // The request waits 5 s for a connection, then comes at the usual pace.
        let f: FetchFn = Arc::new(move |off, len, piece, sink| {
            c.fetch_add(1, Ordering::SeqCst);
            let src = src.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                sink.started();
                for (i, p) in
                    crate::hub::split_pieces(src.slice(off as usize..(off + len) as usize), piece)
                        .into_iter()
                        .enumerate()
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    sink.deliver(i, p);
                }
                Ok(())
            }
            .boxed()
        });
        let run = Run::new(0, 0, 40, BS, None, None);
        let stats = Arc::new(Stats::default());
        drive(run, f, warmed_clock(), stats.clone(), None)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(Stats::get(&stats.hedges), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_run_waits_for_rate_samples_before_it_can_be_hedged() {
        let src = data(40);
        // Latency samples from small runs only: the transfer time of 40 bytes is unknown.
        let clock = RunClock::new(20, 3.0, 0.05, 1 << 20);
        for _ in 0..MIN_SAMPLES {
            clock.record(4, Duration::from_millis(1), Duration::from_millis(1));
        }
        assert!(clock.patience(40).is_none());
        assert!(
            clock.patience(4).is_some(),
            "small runs are timed by their latency"
        );
        let (f, calls) = paced(src, Duration::from_millis(30), None);
        let run = Run::new(0, 0, 40, BS, None, None);
        drive(run, f, Arc::new(clock), Arc::new(Stats::default()), None)
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "300 ms for 40 bytes, not hedged"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_stop_at_their_byte_allowance() {
        let src = data(40);
        let clock = RunClock::new(1, 3.0, 0.0, 0);
        for _ in 0..MIN_SAMPLES {
            clock.record(40, Duration::from_millis(1), Duration::from_millis(10));
        }
        let (f, calls) = paced(
            src,
            Duration::from_millis(1),
            Some((3, Duration::from_secs(2))),
        );
        let run = Run::new(0, 0, 40, BS, None, None);
        let stats = Arc::new(Stats::default());
        drive(run, f, Arc::new(clock), stats.clone(), None)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no allowance: no hedge");
        assert_eq!(Stats::get(&stats.hedges), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_started_before_the_clock_had_samples_is_hedged_once_it_has() {
        let src = data(40);
        let (f, calls) = paced(
            src,
            Duration::from_millis(1),
            Some((3, Duration::from_secs(10))),
        );
        let clock = Arc::new(RunClock::new(1, 3.0, 0.05, 1 << 20));
        let run = Run::new(0, 0, 40, BS, None, None);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(drive(run, f, clock.clone(), stats.clone(), None));
        // Other runs complete meanwhile and give the clock its samples.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..MIN_SAMPLES {
            clock.record(40, Duration::from_millis(1), Duration::from_millis(10));
        }
        let t = tokio::time::Instant::now();
        task.await.unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(Stats::get(&stats.hedges), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_hedging_before_the_clock_has_samples() {
        let src = data(40);
        let (f, calls) = paced(
            src,
            Duration::from_millis(1),
            Some((3, Duration::from_secs(2))),
        );
        let run = Run::new(0, 0, 40, BS, None, None);
        let clock = Arc::new(RunClock::new(1, 3.0, 0.05, 1 << 20));
        drive(run, f, clock, Arc::new(Stats::default()), None)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn pieces_of_the_wrong_length_are_refused() {
        let run = Run::new(0, 0, 10, BS, None, None);
        assert!(run.fill(0, data(3)).is_err());
        assert!(run.fill(2, data(2)).is_ok(), "the last block is short");
        assert!(run.fill(3, data(4)).is_err(), "beyond the run");
    }
}
