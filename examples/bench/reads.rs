//! Reads through the mount (sequential, parallel, random) and what the fake Hub served for them,
//! from its own request log.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fakehub::trace::{byte_range_intervals, in_flight, is_byte_range, InFlight};
use fakehub::FakeHub;

/// What the fake Hub served since its log was last cleared.
pub struct Served {
    /// Body bytes of byte-range responses.
    pub bytes: u64,
    /// Requests in flight over time (None if there were none).
    pub in_flight: Option<InFlight>,
}

/// Waits until no byte-range request is in flight (read-ahead a finished read started still
/// counts), then sums what was served.
pub fn served(hub: &FakeHub) -> Served {
    let deadline = Instant::now() + Duration::from_secs(60);
    let recs = loop {
        let recs = hub.requests();
        let busy = recs.iter().any(|r| is_byte_range(r) && r.end.is_none());
        if !busy || Instant::now() > deadline {
            break recs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let iv = byte_range_intervals(&recs);
    Served {
        bytes: iv.iter().map(|i| i.bytes).sum(),
        in_flight: in_flight(&iv),
    }
}

/// Reads `[start, end)` of `p` in order with `buf_size`-byte preads; returns the bytes read.
pub fn read_span(p: &Path, start: u64, end: u64, buf_size: usize) -> u64 {
    let f = std::fs::File::open(p).expect("open through the mount");
    let mut buf = vec![0u8; buf_size];
    let mut off = start;
    while off < end {
        let want = buf_size.min((end - off) as usize);
        let k = f
            .read_at(&mut buf[..want], off)
            .expect("read through the mount");
        if k == 0 {
            break;
        }
        off += k as u64;
    }
    off - start
}

/// `readers` threads at once, each reading `[0, size)` (`split` false) or its own
/// `1/readers` share (`split` true) of `p` with 1 MiB reads; returns (bytes read, elapsed).
pub fn parallel(p: &Path, size: u64, readers: u64, split: bool) -> (u64, Duration) {
    let t = Instant::now();
    let threads: Vec<_> = (0..readers)
        .map(|i| {
            let p = p.to_path_buf();
            let (a, b) = if split {
                (size * i / readers, size * (i + 1) / readers)
            } else {
                (0, size)
            };
            std::thread::spawn(move || read_span(&p, a, b, 1 << 20))
        })
        .collect();
    let total = threads
        .into_iter()
        .map(|h| h.join().expect("reader thread"))
        .sum();
    (total, t.elapsed())
}

/// `count` preads of `size` bytes at deterministic random offsets of `p` (of length `len`);
/// returns each read's latency in ms.
pub fn random_preads(p: &Path, len: u64, size: usize, count: usize) -> Vec<f64> {
    let f = std::fs::File::open(p).expect("open through the mount");
    let mut x: u64 = 0x2545F4914F6CDD1D ^ size as u64;
    let mut buf = vec![0u8; size];
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x % (len - size as u64);
            let t = Instant::now();
            f.read_exact_at(&mut buf, off)
                .expect("pread through the mount");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// The `p` quantile (0..=1) of `v` (sorted in place).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
