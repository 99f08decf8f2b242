//! The streams of read-ahead: one per sequential reader of a file, with its frontier, pending
//! out-of-order reads and proof (the rules are in the `prefetch` module doc).

use std::sync::Arc;
use std::time::Instant;

use super::budget::MemoryPlan;
use super::runs::FetchFn;

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

/// One sequential reader of a file, as read-ahead tracks it (see the `prefetch` module doc).
#[derive(Clone, Debug)]
pub(super) struct Stream {
    pub(super) id: u64,
    /// Where the stream began.
    pub(super) origin: u64,
    /// The end of what was read contiguously.
    pub(super) frontier: u64,
    /// Reads past the frontier, waiting for the gap before them to fill.
    pub(super) pending: Vec<(u64, u64)>,
    /// Bytes read contiguously.
    pub(super) contiguous: u64,
    /// Reads that continued the stream.
    pub(super) hits: u32,
    /// Began at offset 0 (or was predicted as the next shard): full window once proven.
    pub(super) from_zero: bool,
    pub(super) proven: bool,
    /// Predicted (next shard) and not read yet.
    pub(super) predicted: bool,
    /// Read-ahead is scheduled up to here.
    pub(super) scheduled: u64,
    /// Read-ahead runs in flight.
    pub(super) inflight: u32,
    /// The next file was given its first window.
    pub(super) next_done: bool,
    pub(super) last_used: Instant,
}

impl Stream {
    pub(super) fn new(id: u64, offset: u64, end: u64, now: Instant) -> Self {
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
    pub(super) fn advance(&mut self, start: u64, end: u64, skip: impl Fn(u64) -> u64) {
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
    /// Bytes to keep ahead of the frontier, of a fair `share` of the window: the share for a
    /// stream read from the start; as much as it has read (at least a part) for one that began
    /// mid-file; half the parts in flight for a predicted next shard not read yet.
    pub(super) fn window(&self, share: u64, plan: &MemoryPlan) -> u64 {
        if self.predicted {
            share.min(plan.parts_in_flight() * plan.part_size / 2)
        } else if self.from_zero {
            share
        } else {
            share.min(self.contiguous.max(plan.part_size))
        }
    }
}

/// A file's streams, with how to fetch it.
pub(super) struct FileStreams {
    pub(super) target: ReadTarget,
    pub(super) streams: Vec<Stream>,
}

impl FileStreams {
    /// Where stream `s`'s read-ahead must stop: where another stream's reads begin at or after
    /// its frontier (at the frontier itself when that is inside what another stream read), else
    /// the end of the file.
    pub(super) fn read_ahead_limit(&self, s: &Stream) -> u64 {
        let size = self.target.size;
        self.streams
            .iter()
            .filter(|t| t.id != s.id && t.frontier > s.frontier)
            .map(|t| t.origin.max(s.frontier))
            .min()
            .unwrap_or(size)
            .min(size)
    }
}
