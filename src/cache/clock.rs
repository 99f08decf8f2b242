//! The clock of hedging: recent run timings (the latency to a first block, and the rate after
//! it), from which a run's patience is derived, and the cap on hedged bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How long a run may take before it is hedged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Patience {
    /// From its start to its end.
    pub(crate) total: Duration,
    /// From its start to its first block (the latency).
    pub(crate) first: Duration,
    /// Between two blocks (a body that stalls).
    pub(crate) silence: Duration,
}

/// A ring of recent samples and its median.
struct Ring(Vec<f64>, usize);

impl Ring {
    fn push(&mut self, x: f64) {
        if self.0.len() < SAMPLES {
            self.0.push(x);
        } else {
            self.0[self.1] = x;
        }
        self.1 = (self.1 + 1) % SAMPLES;
    }

    fn median(&self) -> Option<f64> {
        if self.0.len() < MIN_SAMPLES {
            return None;
        }
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    }
}

/// Recent run timings (the latency to a first block, and the rate after it), to tell a
/// straggler from a run that is merely large.
pub(crate) struct RunClock {
    /// Seconds to the first block, and seconds per byte after it, of recent runs.
    samples: Mutex<(Ring, Ring)>,
    /// Bytes fetched by hedges, and bytes fetched in all.
    hedged_bytes: AtomicU64,
    fetched_bytes: AtomicU64,
    /// Hedges may fetch this fraction of the bytes fetched, plus `allowance` bytes.
    fraction: f64,
    allowance: u64,
    /// A run is a straggler after this many times the median time for its size, or its
    /// latency...
    factor: f64,
    /// ...or after half its expected transfer time without a block, and never before this.
    floor: Duration,
    /// Runs at least this large give rate samples (smaller ones are mostly latency).
    rate_len: u64,
}

const SAMPLES: usize = 64;
/// Samples needed before hedging starts.
pub(crate) const MIN_SAMPLES: usize = 8;

impl RunClock {
    /// A clock hedging runs after `factor` × the median time for their size (latency plus bytes
    /// at the median rate, measured from runs of at least `rate_len` bytes), with hedges capped
    /// at `fraction` of the bytes fetched plus `allowance`.
    pub(crate) fn new(rate_len: u64, factor: f64, fraction: f64, allowance: u64) -> Self {
        RunClock {
            samples: Mutex::new((Ring(Vec::new(), 0), Ring(Vec::new(), 0))),
            hedged_bytes: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            fraction,
            allowance,
            factor,
            floor: Duration::from_millis(100),
            rate_len,
        }
    }

    /// Records a hedged run of `len` bytes: its bytes count toward the hedging cap's base, its
    /// timing (two requests') is no sample.
    pub(crate) fn record_hedged(&self, len: u64) {
        self.fetched_bytes.fetch_add(len, Ordering::Relaxed);
    }

    /// Records a run of `len` bytes (not hedged) whose first block came after `first` and the
    /// whole after `took`.
    pub(crate) fn record(&self, len: u64, first: Duration, took: Duration) {
        self.fetched_bytes.fetch_add(len, Ordering::Relaxed);
        let mut s = self.samples.lock();
        s.0.push(first.as_secs_f64());
        if len >= self.rate_len {
            s.1.push(took.saturating_sub(first).as_secs_f64() / len as f64);
        }
    }

    /// When a run of `len` bytes started now counts as a straggler: after `total` in all, or
    /// after `first` without a first block, or `silence` between blocks (a stalled body).
    /// `None` until the clock has samples.
    pub(crate) fn patience(&self, len: u64) -> Option<Patience> {
        let s = self.samples.lock();
        let latency = s.0.median()?;
        // A run large enough to be timed by its rate waits for rate samples: without them its
        // transfer time is unknown, not zero.
        let per_byte = match s.1.median() {
            Some(r) => r,
            None if len >= self.rate_len => return None,
            None => 0.0,
        };
        drop(s);
        let transfer = Duration::from_secs_f64(per_byte * len as f64);
        let latency = Duration::from_secs_f64(latency);
        Some(Patience {
            total: (latency + transfer).mul_f64(self.factor).max(self.floor),
            first: latency.mul_f64(self.factor).max(self.floor),
            silence: (transfer / 2).max(self.floor),
        })
    }

    /// Takes `len` bytes of the hedge allowance, if there is room.
    pub(crate) fn try_hedge(&self, len: u64) -> bool {
        let cap = self.allowance
            + (self.fetched_bytes.load(Ordering::Relaxed) as f64 * self.fraction) as u64;
        let mut cur = self.hedged_bytes.load(Ordering::Relaxed);
        loop {
            if cur + len > cap {
                return false;
            }
            match self.hedged_bytes.compare_exchange(
                cur,
                cur + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }
}
