//! In-flight analysis of the request log: how many byte-range requests were in flight, over time,
//! from the fake Hub's own timings (a benchmark's measure of pipeline depth). Pure functions of
//! the records; nothing here touches the server.

use std::time::Duration;

use crate::record::{Listener, RequestRecord};

/// One request's time in flight and the body bytes it served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// When it arrived.
    pub start: Duration,
    /// When its body ended (an `end` before `start` counts as `start`).
    pub end: Duration,
    /// Body bytes it served.
    pub bytes: u64,
}

/// Requests in flight over the span from the first start to the last end.
#[derive(Clone, Debug, PartialEq)]
pub struct InFlight {
    /// How many intervals went in.
    pub requests: usize,
    /// From the first start to the last end.
    pub span: Duration,
    /// Time-weighted mean number in flight over the span.
    pub mean: f64,
    /// Fraction of the span with none in flight.
    pub idle_fraction: f64,
    /// `depth_fraction[d]`: the fraction of the span with exactly `d` in flight, for `d` from 0
    /// to the largest depth reached (the fractions sum to 1).
    pub depth_fraction: Vec<f64>,
    /// Time-weighted 10th percentile of the depth (see [`InFlight::depth_quantile`]).
    pub p10: usize,
    /// Time-weighted median depth.
    pub p50: usize,
    /// Time-weighted 90th percentile of the depth.
    pub p90: usize,
    /// Total body bytes of the intervals.
    pub bytes: u64,
}

impl InFlight {
    /// The smallest depth `d` such that at least a fraction `p` of the span had `d` or fewer in
    /// flight.
    pub fn depth_quantile(&self, p: f64) -> usize {
        let mut cum = 0.0;
        for (d, f) in self.depth_fraction.iter().enumerate() {
            cum += f;
            if cum >= p - 1e-9 {
                return d;
            }
        }
        self.depth_fraction.len().saturating_sub(1)
    }
}

/// The in-flight profile of `intervals`, or `None` when there are none or they span no time.
pub fn in_flight(intervals: &[Interval]) -> Option<InFlight> {
    let first = intervals.iter().map(|i| i.start).min()?;
    let last = intervals.iter().map(|i| i.end.max(i.start)).max()?;
    let span = last.checked_sub(first).filter(|s| !s.is_zero())?;
    // +1 at each start, -1 at each end; depth is constant between consecutive event times.
    let mut events: Vec<(Duration, i64)> = Vec::with_capacity(intervals.len() * 2);
    for i in intervals {
        let end = i.end.max(i.start);
        if end > i.start {
            events.push((i.start, 1));
            events.push((end, -1));
        }
    }
    events.sort();
    let mut time_at: Vec<f64> = vec![0.0];
    let mut depth: i64 = 0;
    let mut prev = first;
    for (t, step) in events {
        let d = depth.max(0) as usize;
        if time_at.len() <= d {
            time_at.resize(d + 1, 0.0);
        }
        time_at[d] += (t - prev).as_secs_f64();
        prev = t;
        depth += step;
    }
    let total = span.as_secs_f64();
    let depth_fraction: Vec<f64> = time_at.iter().map(|t| t / total).collect();
    let mean = depth_fraction
        .iter()
        .enumerate()
        .map(|(d, f)| d as f64 * f)
        .sum();
    let mut out = InFlight {
        requests: intervals.len(),
        span,
        mean,
        idle_fraction: depth_fraction[0],
        depth_fraction,
        p10: 0,
        p50: 0,
        p90: 0,
        bytes: intervals.iter().map(|i| i.bytes).sum(),
    };
    out.p10 = out.depth_quantile(0.1);
    out.p50 = out.depth_quantile(0.5);
    out.p90 = out.depth_quantile(0.9);
    Some(out)
}

/// True for a byte-range request as a client's read makes it: a `GET` with a `Range` on either
/// listener answered with a 206, or with a 200 (the whole file).
pub fn is_byte_range(r: &RequestRecord) -> bool {
    matches!(r.listener, Listener::Hub | Listener::Cdn)
        && r.method == "GET"
        && (r.status == 206 || (r.status == 200 && r.range.is_some()))
}

/// The intervals of the byte-range requests among `records` that have ended (requests still in
/// flight are left out).
pub fn byte_range_intervals(records: &[RequestRecord]) -> Vec<Interval> {
    records
        .iter()
        .filter(|r| is_byte_range(r))
        .filter_map(|r| {
            Some(Interval {
                start: r.start,
                end: r.end?,
                bytes: r.body_bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(start_ms: u64, end_ms: u64, bytes: u64) -> Interval {
        Interval {
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
            bytes,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn nothing_or_no_time_gives_no_profile() {
        assert_eq!(in_flight(&[]), None);
        assert_eq!(in_flight(&[iv(5, 5, 1)]), None);
    }

    #[test]
    fn one_request_is_one_in_flight_the_whole_span() {
        let p = in_flight(&[iv(10, 110, 7)]).expect("profile");
        assert_eq!(p.span, Duration::from_millis(100));
        assert!(close(p.mean, 1.0) && close(p.idle_fraction, 0.0));
        assert_eq!(p.depth_fraction.len(), 2);
        assert_eq!((p.p10, p.p50, p.p90, p.bytes, p.requests), (1, 1, 1, 7, 1));
    }

    #[test]
    fn a_gap_between_requests_counts_as_idle_time() {
        // 0-100 one request, 100-300 none, 300-400 one: half the span idle.
        let p = in_flight(&[iv(0, 100, 1), iv(300, 400, 2)]).expect("profile");
        assert!(close(p.idle_fraction, 0.5), "{p:?}");
        assert!(close(p.mean, 0.5));
        assert_eq!((p.p10, p.p50, p.p90), (0, 0, 1));
        assert_eq!(p.bytes, 3);
    }

    #[test]
    fn overlapping_requests_are_weighted_by_time() {
        // depth: 0-100 → 1, 100-200 → 2, 200-300 → 3, 300-1000 → 1 (the long one alone).
        let p = in_flight(&[iv(0, 1000, 0), iv(100, 300, 0), iv(200, 300, 0)]).expect("profile");
        assert_eq!(p.depth_fraction.len(), 4);
        assert!(close(p.depth_fraction[0], 0.0));
        assert!(close(p.depth_fraction[1], 0.8));
        assert!(close(p.depth_fraction[2], 0.1));
        assert!(close(p.depth_fraction[3], 0.1));
        assert!(close(p.mean, 0.8 + 0.2 + 0.3));
        assert_eq!((p.p10, p.p50, p.p90), (1, 1, 2));
        assert_eq!(p.depth_quantile(0.95), 3);
    }

    #[test]
    fn a_steady_pipeline_of_four_has_depth_four_between_ramps() {
        // Four back-to-back chains of 100 ms requests, each chain offset by 25 ms: depth 4 from
        // 75 ms until the first chain stops at 1000 ms.
        let mut v = Vec::new();
        for chain in 0..4u64 {
            for k in 0..10u64 {
                let s = chain * 25 + k * 100;
                v.push(iv(s, s + 100, 10));
            }
        }
        let p = in_flight(&v).expect("profile");
        assert_eq!(p.span, Duration::from_millis(1075));
        assert_eq!((p.p50, p.p90, p.bytes), (4, 4, 400));
        assert!(close(p.idle_fraction, 0.0));
        assert!(p.mean > 3.6 && p.mean < 4.0, "{}", p.mean);
        let sum: f64 = p.depth_fraction.iter().sum();
        assert!(close(sum, 1.0));
    }

    fn record(status: u16, method: &str, range: Option<&str>, end: Option<u64>) -> RequestRecord {
        RequestRecord {
            listener: Listener::Cdn,
            method: method.into(),
            path: "/cdn/x".into(),
            range: range.map(String::from),
            authorization: None,
            status,
            fault: None,
            id: 0,
            start: Duration::from_millis(1),
            end: end.map(Duration::from_millis),
            body_bytes: 9,
            slow: None,
        }
    }

    #[test]
    fn byte_range_intervals_keep_ended_ranged_gets_only() {
        let recs = [
            record(206, "GET", Some("bytes=0-8"), Some(5)),
            record(200, "GET", Some("bytes=0-8"), Some(6)),
            record(200, "GET", None, Some(7)),
            record(206, "HEAD", Some("bytes=0-8"), Some(8)),
            record(302, "GET", Some("bytes=0-8"), Some(9)),
            record(206, "GET", Some("bytes=0-8"), None),
        ];
        let v = byte_range_intervals(&recs);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].end, Duration::from_millis(5));
        assert_eq!(v[1].end, Duration::from_millis(6));
        assert_eq!(v[0].bytes, 9);
    }
}
