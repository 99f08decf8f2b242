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
pub use super::streams::ReadTarget;
use super::streams::{FileStreams, Stream};

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

/// One read, as the scheduler sees it.
struct Read {
    offset: u64,
    /// Its end, clamped to the file's size.
    end: u64,
    /// Its length as asked.
    len: u64,
    /// The file's size.
    size: u64,
}

/// The fields of [`Inner`] a new stream touches, borrowed beside its files.
struct InnerParts<'a> {
    next_id: &'a mut u64,
    active: &'a mut HashMap<u64, Instant>,
}

fn inner_parts<'a>(next_id: &'a mut u64, active: &'a mut HashMap<u64, Instant>) -> InnerParts<'a> {
    InnerParts { next_id, active }
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
        let read = Read {
            offset,
            end: offset.saturating_add(len).min(target.size),
            len,
            size: target.size,
        };
        let mut advice = Advice {
            mode: ReadMode::default(),
            proven: false,
        };
        if read.offset >= read.end {
            return advice;
        }
        let mut inner = self.inner.lock();
        if inner.closed.contains(&target.content) {
            // The kernel's own read-ahead, sent before the file was closed.
            return advice;
        }
        let inner = &mut *inner;
        let key = target.content.clone();
        let file = Self::file_streams(&mut inner.files, target);
        let cfg = &self.cfg;
        let contiguous = file.streams.iter().position(|s| {
            offset.saturating_add(cfg.max_backward) >= s.frontier
                && offset <= s.frontier + Self::skip(len)
        });
        let idx = match contiguous {
            Some(i) => {
                self.continue_stream(&mut file.streams[i], &read, now, &mut advice);
                Some(i)
            }
            None => self.off_frontier(
                inner_parts(&mut inner.next_id, &mut inner.active),
                file,
                &key,
                &read,
                now,
                &mut advice,
            ),
        };
        match idx {
            Some(i) if file.streams[i].proven => {
                advice.proven = true;
                let id = file.streams[i].id;
                inner.active.insert(id, now);
                self.pump(inner, &key, id, now);
                self.maybe_predict_next(inner, &key, id, read.size, now, next);
                advice
            }
            _ => advice,
        }
    }

    /// The streams of `target`'s content, made empty when it has none yet.
    fn file_streams<'a>(
        files: &'a mut LruCache<Arc<str>, FileStreams>,
        target: &ReadTarget,
    ) -> &'a mut FileStreams {
        let key = target.content.clone();
        if files.contains(&key) {
            let f = files.get_mut(&key).expect("just checked");
            f.target = target.clone();
            return f;
        }
        files.put(
            key.clone(),
            FileStreams {
                target: target.clone(),
                streams: Vec::new(),
            },
        );
        files.get_mut(&key).expect("just inserted")
    }

    /// A read at or near stream `s`'s frontier: it moves the frontier, or extends the stream
    /// backwards (reads reach hubfs out of order: it began earlier than it seemed); a late read
    /// inside what the stream covers changes nothing.
    fn continue_stream(&self, s: &mut Stream, read: &Read, now: Instant, advice: &mut Advice) {
        let cfg = &self.cfg;
        let (offset, end, len) = (read.offset, read.end, read.len);
        s.last_used = now;
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
            advice.mode.extend_to = end.saturating_add(more).min(read.size);
        }
        advice.mode.sequential = s.proven || extends;
    }

    /// A read away from every frontier: it grows a pending range of a stream (and once that is
    /// long enough, the gap before it was a seek and the stream goes on from there), or is kept
    /// pending as a reordered read ahead of a frontier, or starts a new stream. The index of the
    /// stream it continued, if any.
    fn off_frontier(
        &self,
        mut ids: InnerParts<'_>,
        file: &mut FileStreams,
        key: &Arc<str>,
        read: &Read,
        now: Instant,
        advice: &mut Advice,
    ) -> Option<usize> {
        let cfg = &self.cfg;
        let (offset, end, len) = (read.offset, read.end, read.len);
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
            (None, replace) => {
                self.start_stream(&mut ids, file, key, read, replace, now, advice);
                None
            }
        }
    }

    /// A new stream at `read`, in place of stream `replace` (a stream whose gaps never fill:
    /// strided), else beside the others, else in place of the least recently used.
    #[allow(clippy::too_many_arguments)]
    fn start_stream(
        &self,
        ids: &mut InnerParts<'_>,
        file: &mut FileStreams,
        key: &Arc<str>,
        read: &Read,
        replace: Option<usize>,
        now: Instant,
        advice: &mut Advice,
    ) {
        let cfg = &self.cfg;
        let (offset, end) = (read.offset, read.end);
        let id = *ids.next_id;
        *ids.next_id += 1;
        let stream = Stream::new(id, offset, end, now);
        tracing::debug!(
            content = %key,
            offset,
            len = read.len,
            frontiers = ?file.streams.iter().map(|s| (s.frontier, s.pending.len())).collect::<Vec<_>>(),
            "read starts a new stream"
        );
        if offset == 0 && end >= cfg.first_read_hint {
            // A file read from its start: cover the kernel's next read-ahead in the same request.
            advice.mode.extend_to = end
                .saturating_add(end)
                .min(read.size)
                .min(self.cache.plan().part_size.max(end));
        }
        if let Some(i) = replace {
            ids.active.remove(&file.streams[i].id);
            file.streams[i] = stream;
        } else if file.streams.len() < cfg.streams_per_file {
            file.streams.push(stream);
        } else if let Some(old) = file.streams.iter_mut().min_by_key(|s| s.last_used) {
            ids.active.remove(&old.id);
            *old = stream;
        }
    }

    /// Once stream `id` of `key` is scheduled to the end of its file, the next shard (asked of
    /// `next` once) gets a predicted stream.
    fn maybe_predict_next(
        &self,
        inner: &mut Inner,
        key: &Arc<str>,
        id: u64,
        size: u64,
        now: Instant,
        next: impl FnOnce() -> Option<ReadTarget>,
    ) {
        let Some(s) = inner
            .files
            .peek_mut(key)
            .and_then(|f| f.streams.iter_mut().find(|s| s.id == id))
        else {
            return;
        };
        if s.scheduled >= size && !s.next_done {
            s.next_done = true;
            if let Some(t) = next() {
                self.predict(inner, t, now);
            }
        }
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
        let limit = file.read_ahead_limit(s);
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
        let window = s.window(share, plan);
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
