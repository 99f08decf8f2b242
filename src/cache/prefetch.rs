//! Sequential-read detection and read-ahead windows, per file content (not per handle): several
//! handles or processes reading one file in order share a stream, and readers of different regions
//! of one file each get their own.
//!
//! In the spirit of mountpoint-s3's prefetcher: a stream starts with no read-ahead; each read that
//! continues it (allowing a small backward seek and a forward skip, since the kernel's own
//! read-ahead issues reads out of order) doubles its window up to a maximum, and the range from the
//! reader's position to position + window is kept cached or in flight. A read that continues no
//! stream starts a new one (replacing the least recently used when a file has too many).

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

/// Read-ahead settings.
#[derive(Clone, Debug)]
pub struct PrefetchConfig {
    /// The window after the second sequential read.
    pub initial_window: u64,
    /// The largest window.
    pub max_window: u64,
    /// A read this far before a stream's position still continues it.
    pub max_backward: u64,
    /// A read this far after a stream's position still continues it.
    pub max_forward: u64,
    /// Streams tracked per file.
    pub streams_per_file: usize,
    /// Files tracked.
    pub files: usize,
    /// Read-ahead is scheduled in steps of at least this much (the size of one range request),
    /// so that a steady reader keeps whole requests in flight, not a trickle of small ones.
    pub min_step: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            initial_window: 4 << 20,
            max_window: 128 << 20,
            max_backward: 2 << 20,
            max_forward: 8 << 20,
            streams_per_file: 8,
            files: 1024,
            min_step: 8 << 20,
        }
    }
}

#[derive(Clone, Debug)]
struct Stream {
    /// Reads that continued this stream; read-ahead starts at the second, so that a random
    /// reader that lands near a stream by chance does not trigger it.
    hits: u32,
    /// Where the next sequential read is expected.
    next: u64,
    /// The current window; 0 until the stream has proven sequential.
    window: u64,
    /// Read-ahead is scheduled up to here.
    ahead_until: u64,
    /// For least-recently-used replacement.
    last_used: u64,
}

/// What one read should trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advice {
    /// True when the read continued a stream.
    pub sequential: bool,
    /// Read-ahead to schedule: `[start, end)`, if any.
    pub prefetch: Option<(u64, u64)>,
}

/// The prefetch state of all files.
pub struct Prefetcher {
    cfg: PrefetchConfig,
    files: Mutex<LruCache<Arc<str>, Vec<Stream>>>,
    clock: std::sync::atomic::AtomicU64,
}

impl Prefetcher {
    /// A prefetcher with these settings.
    pub fn new(cfg: PrefetchConfig) -> Self {
        let n = NonZeroUsize::new(cfg.files.max(1)).expect("non-zero");
        Prefetcher {
            cfg,
            files: Mutex::new(LruCache::new(n)),
            clock: Default::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PrefetchConfig {
        &self.cfg
    }

    /// Records a read of `[offset, offset + len)` of `content` (of `size` bytes), says whether it
    /// was sequential and what read-ahead it advised, and hands that range to `schedule`, which
    /// returns how far read-ahead is now actually cached or in flight (less under back-pressure).
    pub fn on_read(
        &self,
        content: &str,
        size: u64,
        offset: u64,
        len: u64,
        schedule: impl FnOnce(u64, u64) -> u64,
    ) -> Advice {
        let now = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = offset.saturating_add(len).min(size);
        let mut files = self.files.lock();
        let key: Arc<str> = Arc::from(content);
        if !files.contains(&key) {
            files.put(key.clone(), Vec::new());
        }
        let streams = files.get_mut(&key).expect("just inserted");
        let found = streams.iter_mut().find(|s| {
            offset.saturating_add(self.cfg.max_backward) >= s.next
                && offset <= s.next.saturating_add(self.cfg.max_forward)
        });
        match found {
            Some(s) if s.hits == 0 => {
                // First continuation: a candidate stream, no read-ahead yet.
                s.hits = 1;
                s.last_used = now;
                s.next = s.next.max(end);
                s.ahead_until = s.ahead_until.max(s.next);
                Advice {
                    sequential: true,
                    prefetch: None,
                }
            }
            Some(s) => {
                s.hits = s.hits.saturating_add(1);
                s.last_used = now;
                s.next = s.next.max(end);
                s.window = if s.window == 0 {
                    self.cfg.initial_window
                } else {
                    (s.window * 2).min(self.cfg.max_window)
                };
                let target = s.next.saturating_add(s.window).min(size);
                let start = s.ahead_until.max(s.next);
                let step = self.cfg.min_step.min(s.window);
                let prefetch = (target > start && (target - start >= step || target == size))
                    .then_some((start, target));
                if let Some((a, b)) = prefetch {
                    s.ahead_until = schedule(a, b).max(s.ahead_until);
                }
                Advice {
                    sequential: true,
                    prefetch,
                }
            }
            None => {
                let stream = Stream {
                    hits: 0,
                    next: end,
                    window: 0,
                    ahead_until: end,
                    last_used: now,
                };
                if streams.len() < self.cfg.streams_per_file {
                    streams.push(stream);
                } else if let Some(old) = streams.iter_mut().min_by_key(|s| s.last_used) {
                    *old = stream;
                }
                Advice {
                    sequential: false,
                    prefetch: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn pf() -> Prefetcher {
        Prefetcher::new(PrefetchConfig {
            initial_window: 4 * MB,
            max_window: 32 * MB,
            max_backward: MB,
            max_forward: 8 * MB,
            streams_per_file: 2,
            files: 4,
            min_step: MB,
        })
    }

    /// Feeds a read and marks its advised read-ahead as scheduled.
    fn read(p: &Prefetcher, off: u64, len: u64) -> Advice {
        p.on_read("f", 1 << 40, off, len, |_, e| e)
    }

    #[test]
    fn sequential_reads_double_the_window_up_to_the_max() {
        let p = pf();
        assert_eq!(
            read(&p, 0, MB),
            Advice {
                sequential: false,
                prefetch: None
            }
        );
        let a = read(&p, MB, MB);
        assert!(a.sequential && a.prefetch.is_none(), "a candidate stream");
        let a = read(&p, 2 * MB, MB);
        assert!(a.sequential);
        assert_eq!(a.prefetch, Some((3 * MB, 7 * MB)), "first window");
        let a = read(&p, 3 * MB, MB);
        assert_eq!(
            a.prefetch,
            Some((7 * MB, 12 * MB)),
            "window 8 MiB from 4 MiB"
        );
        let mut last = None;
        for i in 4..40 {
            last = read(&p, i * MB, MB).prefetch.or(last);
        }
        let (_, end) = last.unwrap();
        assert_eq!(
            end,
            40 * MB + 32 * MB,
            "capped at the max window ahead of the reader"
        );
    }

    #[test]
    fn small_skips_and_short_backward_seeks_keep_the_stream() {
        let p = pf();
        read(&p, 0, MB);
        assert!(read(&p, MB, MB).sequential);
        assert!(read(&p, 5 * MB, MB).sequential, "forward skip within 8 MiB");
        assert!(
            read(&p, 5 * MB + 512 * 1024, 4096).sequential,
            "backward within 1 MiB"
        );
    }

    #[test]
    fn random_reads_prefetch_nothing() {
        let p = pf();
        for off in [900 * MB, 10 * MB, 500 * MB, 70 * MB, 300 * MB] {
            let a = read(&p, off, 4096);
            assert_eq!(
                a,
                Advice {
                    sequential: false,
                    prefetch: None
                },
                "at {off}"
            );
        }
    }

    #[test]
    fn two_readers_of_one_file_get_two_streams() {
        let p = pf();
        read(&p, 0, MB);
        read(&p, 500 * MB, MB);
        for i in 1..5 {
            assert!(read(&p, i * MB, MB).sequential);
            assert!(read(&p, 500 * MB + i * MB, MB).sequential);
        }
    }

    #[test]
    fn readahead_never_passes_the_end_of_the_file() {
        let p = pf();
        p.on_read("g", 4 * MB, 0, MB, |_, e| e);
        p.on_read("g", 4 * MB, MB, MB, |_, e| e);
        let a = p.on_read("g", 4 * MB, 2 * MB, MB, |_, e| e);
        assert_eq!(a.prefetch, Some((3 * MB, 4 * MB)));
        let a = p.on_read("g", 4 * MB, 3 * MB, MB, |_, e| e);
        assert_eq!(a.prefetch, None);
    }

    #[test]
    fn back_pressure_keeps_the_unscheduled_rest_for_later() {
        let p = pf();
        p.on_read("h", 1 << 40, 0, MB, |_, e| e);
        p.on_read("h", 1 << 40, MB, MB, |_, e| e);
        // Only 1 MiB of the advised window could be scheduled...
        let a = p.on_read("h", 1 << 40, 2 * MB, MB, |s, _| s + MB);
        assert_eq!(a.prefetch, Some((3 * MB, 7 * MB)));
        // ...so the next read asks again from where scheduling stopped.
        let a = p.on_read("h", 1 << 40, 3 * MB, MB, |_, e| e);
        assert_eq!(a.prefetch, Some((4 * MB, 12 * MB)));
    }
}
