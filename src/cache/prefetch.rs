//! Read-ahead: which reads are sequential, and keeping the pipe full for those that are.
//!
//! **Streams.** Reads are grouped into streams per file content (not per handle: several handles
//! or processes reading one file in order share a stream; readers of different regions of one
//! file each get their own). A stream has a *frontier*, the end of what was read contiguously. A
//! read continues a stream when it starts at the frontier, a little behind it, or after a skip
//! that is small next to the read itself. The kernel sends a reader's read-ahead as several
//! requests at once, which hubfs may see out of order, so a read landing a little past the
//! frontier is remembered as *pending* and joins the frontier once the gap fills. A strided reader
//! (a parquet column projection: a chunk, a long skip, a chunk) never fills its gaps: its pending
//! reads pile up, the stream is dropped, and it only ever gets what it asks for.
//!
//! **Proof.** A stream is *proven* sequential once it has read [`PrefetchConfig::proven_bytes`]
//! contiguously in at least two reads. A stream that started at offset 0 (the file is read from
//! its start: `cp`, `load_file`, a tokenizer) goes to its full window at once; one that started
//! mid-file (an mmap fault, a seek) gets a window as large as what it has read so far, so a random
//! reader that happens to read two neighbours does not pull a whole window.
//!
//! **Depth.** A proven stream keeps its window (bytes ahead of its frontier, in flight or cached
//! and unread) scheduled in parts of the plan's part size, with at most the plan's parts in flight
//! (one per connection). Parts are refilled whenever the reader advances *and* whenever a part
//! completes, so one slow part does not stop the others. Streams read at the same time share the
//! window and the connections evenly. A stream's read-ahead stops where another stream of the same
//! file began (that region was read already).
//!
//! **Across files.** When a proven stream has scheduled its file to the end, the caller's `next`
//! (the next shard of a sharded checkpoint) gets a first window of read-ahead, so the loader finds
//! it in flight when it opens it.
//!
//! **Readers' own fetches.** A read that starts a stream at offset 0 with a large request fetches
//! the kernel's next read-ahead with it, in one request; an unproven stream that keeps going gets
//! its fetches extended by as much as it has read (up to a part); anything else gets what it asked
//! for, in whole blocks.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::blocks::{BlockCache, ReadMode};
use super::runs::FetchFn;

/// Read-ahead settings (the sizes come from the cache's [`super::budget::MemoryPlan`]).
#[derive(Clone, Debug)]
pub struct PrefetchConfig {
    /// A read this far before a stream's frontier still continues it.
    pub max_backward: u64,
    /// Bytes a stream reads contiguously before it is proven sequential.
    pub proven_bytes: u64,
    /// How far past the frontier a read may land and still be taken as out of order (pending).
    pub reorder_window: u64,
    /// Out-of-order reads remembered per stream; one more and the stream is not sequential.
    pub pending_limit: usize,
    /// Streams tracked per file.
    pub streams_per_file: usize,
    /// Files tracked.
    pub files: usize,
    /// A stream counts as reading (for fair shares) this long after its last read.
    pub active_for: Duration,
    /// A first read at offset 0 at least this large fetches the kernel's next read-ahead with it.
    pub first_read_hint: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            // The kernel keeps up to 16 reads of 1 MiB in flight for one reader (max_background),
            // and hubfs handles them on several threads: they reach the scheduler up to that far
            // out of order, in either direction.
            max_backward: 16 << 20,
            proven_bytes: 2 << 20,
            reorder_window: 16 << 20,
            pending_limit: 8,
            streams_per_file: 8,
            files: 1024,
            active_for: Duration::from_secs(2),
            first_read_hint: 128 << 10,
        }
    }
}

/// A file as read-ahead sees it: its content key, size, and how to fetch it.
#[derive(Clone)]
pub struct ReadTarget {
    /// The cache key of the content.
    pub content: Arc<str>,
    /// Its size.
    pub size: u64,
    /// How to fetch its bytes.
    pub fetch: FetchFn,
}

#[derive(Clone, Debug)]
struct Stream {
    id: u64,
    /// Where the stream began.
    origin: u64,
    /// The end of what was read contiguously.
    frontier: u64,
    /// Reads past the frontier, waiting for the gap before them to fill.
    pending: Vec<(u64, u64)>,
    /// Bytes read contiguously.
    contiguous: u64,
    /// Reads that continued the stream.
    hits: u32,
    /// Began at offset 0 (or was predicted as the next shard): full window once proven.
    from_zero: bool,
    proven: bool,
    /// Predicted (next shard) and not read yet.
    predicted: bool,
    /// Read-ahead is scheduled up to here.
    scheduled: u64,
    /// Read-ahead runs in flight.
    inflight: u32,
    /// The next file was given its first window.
    next_done: bool,
    last_used: Instant,
}

impl Stream {
    fn new(id: u64, offset: u64, end: u64, now: Instant) -> Self {
        Stream {
            id,
            origin: offset,
            frontier: end,
            pending: Vec::new(),
            contiguous: end.saturating_sub(offset),
            hits: 0,
            from_zero: offset == 0,
            proven: false,
            predicted: false,
            scheduled: end,
            inflight: 0,
            next_done: false,
            last_used: now,
        }
    }

    /// Moves the frontier to `end` and takes in the pending reads the gap no longer separates.
    fn advance(&mut self, start: u64, end: u64, skip: impl Fn(u64) -> u64) {
        if end > self.frontier {
            self.contiguous += end - start.max(self.frontier);
            self.frontier = end;
        }
        loop {
            let f = self.frontier;
            let Some(i) = self.pending.iter().position(|&(a, b)| a <= f + skip(b - a)) else {
                break;
            };
            let (a, b) = self.pending.swap_remove(i);
            if b > self.frontier {
                self.contiguous += b - a.max(self.frontier);
                self.frontier = b;
            }
        }
    }
}

struct FileStreams {
    target: ReadTarget,
    streams: Vec<Stream>,
}

struct Inner {
    files: LruCache<Arc<str>, FileStreams>,
    /// Proven streams by id, with their last read: the streams sharing the window.
    active: HashMap<u64, Instant>,
    /// Streams that found no budget and wait for some to free up.
    starved: VecDeque<(Arc<str>, u64)>,
    /// Contents no one has open (until opened again): late reads of them get no read-ahead.
    closed: std::collections::HashSet<Arc<str>>,
    next_id: u64,
}

/// What a read should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advice {
    /// How the block cache should treat the read.
    pub mode: ReadMode,
    /// The read continued a proven stream.
    pub proven: bool,
}

/// The read-ahead state of all files, scheduling into one block cache.
pub struct Prefetcher {
    cfg: PrefetchConfig,
    cache: Arc<BlockCache>,
    inner: Mutex<Inner>,
    me: Weak<Prefetcher>,
}

impl Prefetcher {
    /// A prefetcher scheduling read-ahead into `cache` by its plan.
    pub fn new(cfg: PrefetchConfig, cache: Arc<BlockCache>) -> Arc<Self> {
        let n = NonZeroUsize::new(cfg.files.max(1)).expect("non-zero");
        Arc::new_cyclic(|me| Prefetcher {
            cfg,
            cache,
            inner: Mutex::new(Inner {
                files: LruCache::new(n),
                active: HashMap::new(),
                starved: VecDeque::new(),
                closed: Default::default(),
                next_id: 0,
            }),
            me: me.clone(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &PrefetchConfig {
        &self.cfg
    }

    /// A skip this small next to a read of `len` bytes still counts as contiguous.
    fn skip(len: u64) -> u64 {
        len / 4 + 4096
    }

    /// Records a read of `[offset, offset + len)` of `target`, schedules the read-ahead it calls
    /// for, and says how the read itself should be done. `next` names the file a loader reads
    /// after this one (the next shard), asked only once a stream reaches the end of this file.
    pub fn on_read(
        &self,
        target: &ReadTarget,
        offset: u64,
        len: u64,
        next: impl FnOnce() -> Option<ReadTarget>,
    ) -> Advice {
        let now = Instant::now();
        let size = target.size;
        let end = offset.saturating_add(len).min(size);
        let mut advice = Advice {
            mode: ReadMode::default(),
            proven: false,
        };
        if offset >= end {
            return advice;
        }
        let mut inner = self.inner.lock();
        if inner.closed.contains(&target.content) {
            // The kernel's own read-ahead, sent before the file was closed.
            return advice;
        }
        let inner = &mut *inner;
        let key = target.content.clone();
        let file = match inner.files.get_mut(&key) {
            Some(f) => {
                f.target = target.clone();
                f
            }
            None => {
                inner.files.put(
                    key.clone(),
                    FileStreams {
                        target: target.clone(),
                        streams: Vec::new(),
                    },
                );
                inner.files.get_mut(&key).expect("just inserted")
            }
        };
        let cfg = &self.cfg;
        let contiguous = file.streams.iter().position(|s| {
            offset.saturating_add(cfg.max_backward) >= s.frontier
                && offset <= s.frontier + Self::skip(len)
        });
        let idx = match contiguous {
            Some(i) => {
                let s = &mut file.streams[i];
                s.last_used = now;
                // A read that moves the frontier, or ends where the stream began (reads reach
                // hubfs out of order: it began earlier than it seemed), continues the stream; a
                // late read inside what it covers changes nothing.
                let extends = end > s.frontier;
                let before = offset < s.origin && end.saturating_add(Self::skip(len)) >= s.origin;
                if extends || before {
                    s.hits += 1;
                    s.predicted = false;
                }
                if before {
                    s.contiguous += end.min(s.origin) - offset;
                    s.origin = offset;
                    s.from_zero |= offset == 0;
                }
                s.advance(offset, end, Self::skip);
                if !s.proven && s.contiguous >= cfg.proven_bytes {
                    s.proven = true;
                }
                if !s.proven && s.hits >= 2 && extends {
                    // Still unproven, but it keeps going: fetch as much again as it has read.
                    let more = s.contiguous.min(self.cache.plan().part_size);
                    advice.mode.extend_to = end.saturating_add(more).min(size);
                }
                advice.mode.sequential = s.proven || extends;
                Some(i)
            }
            None => {
                // A read continuing a pending read: that range grows; once it is long enough,
                // the gap before it was a seek and the stream goes on from there.
                let growing = file.streams.iter().enumerate().find_map(|(i, s)| {
                    s.pending
                        .iter()
                        .position(|&(a, b)| offset >= a && offset <= b + Self::skip(len))
                        .map(|j| (i, j))
                });
                let reordered = file
                    .streams
                    .iter()
                    .position(|s| offset > s.frontier && offset <= s.frontier + cfg.reorder_window);
                match (growing, reordered) {
                    (Some((i, j)), _) => {
                        let s = &mut file.streams[i];
                        s.pending[j].1 = s.pending[j].1.max(end);
                        let (a, b) = s.pending[j];
                        if b - a >= cfg.proven_bytes {
                            s.pending.swap_remove(j);
                            s.frontier = b;
                            s.contiguous += b - a;
                            let f = s.frontier;
                            s.pending.retain(|&(_, e)| e > f);
                            s.advance(f, f, Self::skip);
                            s.proven |= s.contiguous >= cfg.proven_bytes;
                        }
                        s.hits += 1;
                        s.last_used = now;
                        advice.mode.sequential = s.proven;
                        Some(i)
                    }
                    (None, Some(i)) if file.streams[i].pending.len() < cfg.pending_limit => {
                        let s = &mut file.streams[i];
                        s.pending.push((offset, end));
                        s.last_used = now;
                        advice.mode.sequential = s.proven;
                        Some(i)
                    }
                    (None, other) => {
                        // A new stream; a stream whose gaps never fill (strided) is replaced.
                        let id = inner.next_id;
                        inner.next_id += 1;
                        let stream = Stream::new(id, offset, end, now);
                        tracing::debug!(
                            content = %key,
                            offset,
                            len,
                            frontiers = ?file.streams.iter().map(|s| (s.frontier, s.pending.len())).collect::<Vec<_>>(),
                            "read starts a new stream"
                        );
                        if offset == 0 && end >= cfg.first_read_hint {
                            // A file read from its start: cover the kernel's next read-ahead
                            // in the same request.
                            advice.mode.extend_to = end
                                .saturating_add(end)
                                .min(size)
                                .min(self.cache.plan().part_size.max(end));
                        }
                        if let Some(i) = other {
                            inner.active.remove(&file.streams[i].id);
                            file.streams[i] = stream;
                        } else if file.streams.len() < cfg.streams_per_file {
                            file.streams.push(stream);
                        } else if let Some(old) =
                            file.streams.iter_mut().min_by_key(|s| s.last_used)
                        {
                            inner.active.remove(&old.id);
                            *old = stream;
                        }
                        None
                    }
                }
            }
        };
        let Some(i) = idx else {
            return advice;
        };
        if !file.streams[i].proven {
            return advice;
        }
        advice.proven = true;
        let id = file.streams[i].id;
        inner.active.insert(id, now);
        self.pump(inner, &key, id, now);
        // The next shard, once this file is scheduled to its end.
        let s = match inner
            .files
            .peek_mut(&key)
            .and_then(|f| f.streams.iter_mut().find(|s| s.id == id))
        {
            Some(s) => s,
            None => return advice,
        };
        if s.scheduled >= size && !s.next_done {
            s.next_done = true;
            if let Some(t) = next() {
                self.predict(inner, t, now);
            }
        }
        advice
    }

    /// Gives `target` a predicted stream from offset 0 with a first window.
    fn predict(&self, inner: &mut Inner, target: ReadTarget, now: Instant) {
        let key = target.content.clone();
        if inner
            .files
            .peek(&key)
            .is_some_and(|f| !f.streams.is_empty())
        {
            return;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let mut s = Stream::new(id, 0, 0, now);
        s.proven = true;
        s.predicted = true;
        inner.files.put(
            key.clone(),
            FileStreams {
                target,
                streams: vec![s],
            },
        );
        inner.active.insert(id, now);
        self.pump(inner, &key, id, now);
    }

    /// Streams reading now (at least 1).
    fn active_streams(&self, inner: &mut Inner, now: Instant) -> u64 {
        let live = self.cfg.active_for;
        inner
            .active
            .retain(|_, t| now.saturating_duration_since(*t) < live);
        inner.active.len().max(1) as u64
    }

    /// Schedules read-ahead for stream `id` of `key` up to its window.
    fn pump(&self, inner: &mut Inner, key: &Arc<str>, id: u64, now: Instant) {
        let Some(file) = inner.files.peek(key) else {
            return;
        };
        let size = file.target.size;
        let Some(s) = file.streams.iter().find(|s| s.id == id) else {
            return;
        };
        let frontier = s.frontier;
        // Read-ahead stops where another stream's reads begin at or after the frontier (at the
        // frontier itself when it is inside what another stream read).
        let limit = file
            .streams
            .iter()
            .filter(|t| t.id != id && t.frontier > frontier)
            .map(|t| t.origin.max(frontier))
            .min()
            .unwrap_or(size)
            .min(size);
        if s.scheduled >= limit {
            // Nothing left for this stream to read ahead: it no longer takes a share.
            inner.active.remove(&id);
            return;
        }
        let n = self.active_streams(inner, now);
        let plan = self.cache.plan();
        let share = (plan.window / n).max(plan.block_size);
        let parts_cap = plan.parts_in_flight().div_ceil(n).max(1) as u32;
        let Some(file) = inner.files.peek_mut(key) else {
            return;
        };
        let Some(s) = file.streams.iter_mut().find(|s| s.id == id) else {
            return;
        };
        let window = if s.predicted {
            share.min(plan.parts_in_flight() * plan.part_size / 2)
        } else if s.from_zero {
            share
        } else {
            share.min(s.contiguous.max(plan.part_size))
        };
        let want = s.frontier.saturating_add(window).min(limit).min(size);
        let part = plan.part_size.min(window).max(plan.block_size);
        let mut start = s.scheduled.max(s.frontier);
        let mut starved = false;
        // Where another stream began, a last short part reaches it exactly.
        let hard_stop = want == limit && limit < size;
        while start < want && s.inflight < parts_cap {
            let mut end = start.saturating_add(part).min(size);
            if end > want && hard_stop {
                end = want;
            } else if end > want && end < size {
                break;
            }
            let on_done = {
                let me = self.me.clone();
                let key = key.clone();
                Arc::new(move || {
                    if let Some(p) = me.upgrade() {
                        p.on_part_done(&key, id);
                    }
                }) as super::blocks::OnDone
            };
            let r = self.cache.prefetch(
                &file.target.content,
                size,
                start,
                end,
                &file.target.fetch,
                Some(on_done),
            );
            s.inflight += r.runs;
            s.scheduled = s.scheduled.max(r.until);
            if r.until < end {
                starved = true;
                break;
            }
            start = end;
        }
        if starved && !inner.starved.iter().any(|(k, i)| *i == id && k == key) {
            inner.starved.push_back((key.clone(), id));
        }
    }

    /// No one has `content` open any more: its streams are forgotten, so no more read-ahead is
    /// scheduled for it (runs already in flight complete and stay cached). A predicted stream
    /// (the next shard, not opened yet) is kept.
    pub fn closed(&self, content: &str) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let key: Arc<str> = Arc::from(content);
        if inner.closed.len() >= self.cfg.files {
            inner.closed.clear();
        }
        inner.closed.insert(key.clone());
        let Some(file) = inner.files.peek_mut(&key) else {
            return;
        };
        let gone: Vec<u64> = file
            .streams
            .iter()
            .filter(|s| !s.predicted)
            .map(|s| s.id)
            .collect();
        file.streams.retain(|s| s.predicted);
        for id in gone {
            inner.active.remove(&id);
        }
        inner.starved.retain(|(k, _)| *k != key);
    }

    /// `content` is open (again): its reads get read-ahead.
    pub fn opened(&self, content: &str) {
        self.inner.lock().closed.remove(content);
    }

    /// A read-ahead run of stream `id` of `key` ended: refill it, then streams waiting for budget.
    fn on_part_done(&self, key: &Arc<str>, id: u64) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if let Some(s) = inner
            .files
            .peek_mut(key)
            .and_then(|f| f.streams.iter_mut().find(|s| s.id == id))
        {
            s.inflight = s.inflight.saturating_sub(1);
        }
        self.pump(inner, key, id, now);
        for _ in 0..inner.starved.len() {
            let Some((k, i)) = inner.starved.pop_front() else {
                break;
            };
            if inner.active.contains_key(&i) {
                self.pump(inner, &k, i, now);
            }
        }
    }

    /// The streams of `content` as `(origin, frontier, scheduled, in flight, proven)` (tests).
    #[cfg(test)]
    fn streams(&self, content: &str) -> Vec<(u64, u64, u64, u32, bool)> {
        self.inner
            .lock()
            .files
            .peek(&Arc::<str>::from(content))
            .map(|f| {
                f.streams
                    .iter()
                    .map(|s| (s.origin, s.frontier, s.scheduled, s.inflight, s.proven))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "prefetch_tests.rs"]
mod tests;
