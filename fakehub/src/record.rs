//! The request log: one [`RequestRecord`] per request, created when the request arrives and
//! completed when its response body ends, however it ends (sent in full, cut by a fault, dropped
//! with the connection). Timings are measured from the start of the [`crate::FakeHub`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::faults::FaultKind;
use crate::shaping::SlowKind;

/// Which listener saw a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The Hub (API and `/resolve/`).
    Hub,
    /// The CDN (`/cdn/{sha256}`).
    Cdn,
}

impl Listener {
    /// The lowercase name, `"hub"` or `"cdn"` (as in the admin JSON).
    pub fn name(&self) -> &'static str {
        match self {
            Listener::Hub => "hub",
            Listener::Cdn => "cdn",
        }
    }
}

/// One request as received, with what was answered and when.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Which listener received it.
    pub listener: Listener,
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// Raw path and query as received (still percent-encoded).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The response status code (0 while the response is not decided yet, and when the
    /// connection was reset without a response).
    pub status: u16,
    /// The fault injected into this request's response, if any.
    pub fault: Option<FaultKind>,
    /// The request's number, the same as in its `X-Request-Id` (`Root=1-fakehub-{id:08x}`).
    /// Numbers count up from 0 in arrival order and never repeat within one FakeHub.
    pub id: u64,
    /// When the request was received, since the FakeHub started.
    pub start: Duration,
    /// When its response body finished being sent, was cut, or its connection dropped (`None`
    /// while it is still in flight). Never before `start`.
    pub end: Option<Duration>,
    /// Response body bytes actually handed to the connection (so far, while in flight).
    pub body_bytes: u64,
    /// The tail behaviour applied to the response body, if any.
    pub slow: Option<SlowKind>,
}

/// `end` as stored: nanoseconds since the epoch, or this while in flight.
const IN_FLIGHT: u64 = u64::MAX;

/// What is decided when the response is built.
#[derive(Clone, Default)]
struct Outcome {
    status: u16,
    fault: Option<FaultKind>,
    slow: Option<SlowKind>,
}

/// A record being filled in: the request's fields, then its outcome, bytes and end.
struct Live {
    listener: Listener,
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
    id: u64,
    start: Duration,
    outcome: Mutex<Outcome>,
    body_bytes: AtomicU64,
    end_nanos: AtomicU64,
}

impl Live {
    fn snapshot(&self) -> RequestRecord {
        let o = self.outcome.lock().clone();
        let end = self.end_nanos.load(Ordering::Acquire);
        RequestRecord {
            listener: self.listener,
            method: self.method.clone(),
            path: self.path.clone(),
            range: self.range.clone(),
            authorization: self.authorization.clone(),
            status: o.status,
            fault: o.fault,
            id: self.id,
            start: self.start,
            end: (end != IN_FLIGHT).then(|| Duration::from_nanos(end)),
            body_bytes: self.body_bytes.load(Ordering::Relaxed),
            slow: o.slow,
        }
    }
}

/// The fields of a request known when it arrives.
pub(crate) struct Arrival {
    pub(crate) listener: Listener,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) range: Option<String>,
    pub(crate) authorization: Option<String>,
}

/// Every request of one FakeHub, in arrival order, and the clock they are timed with.
pub(crate) struct RequestLog {
    epoch: Instant,
    next_id: AtomicU64,
    records: Mutex<Vec<Arc<Live>>>,
}

impl RequestLog {
    /// An empty log whose clock starts now.
    pub(crate) fn new() -> Self {
        RequestLog {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            records: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Records a request that just arrived (status 0, in flight) and returns the guard that
    /// completes its record.
    pub(crate) fn begin(self: &Arc<Self>, a: Arrival) -> RecordGuard {
        let live = Arc::new(Live {
            listener: a.listener,
            method: a.method,
            path: a.path,
            range: a.range,
            authorization: a.authorization,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            start: self.now(),
            outcome: Mutex::new(Outcome::default()),
            body_bytes: AtomicU64::new(0),
            end_nanos: AtomicU64::new(IN_FLIGHT),
        });
        self.records.lock().push(live.clone());
        RecordGuard {
            live,
            log: self.clone(),
        }
    }

    /// Every record since the last [`RequestLog::clear`], as it stands now.
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        let live: Vec<Arc<Live>> = self.records.lock().clone();
        live.iter().map(|l| l.snapshot()).collect()
    }

    /// Forgets every record (requests in flight keep completing, unseen) and returns how many
    /// there were.
    pub(crate) fn clear(&self) -> usize {
        let mut recs = self.records.lock();
        let n = recs.len();
        recs.clear();
        n
    }
}

/// Completes one request's record. Dropping it ends the record if nothing ended it before, so a
/// request whose future or body is dropped (a client gone, a reset, a pause) still gets an end.
pub(crate) struct RecordGuard {
    live: Arc<Live>,
    log: Arc<RequestLog>,
}

impl RecordGuard {
    /// The request's number.
    pub(crate) fn id(&self) -> u64 {
        self.live.id
    }

    /// Sets the status and the injected fault.
    pub(crate) fn set_outcome(&self, status: u16, fault: Option<FaultKind>) {
        let mut o = self.live.outcome.lock();
        o.status = status;
        o.fault = fault;
    }

    /// Marks the tail behaviour applied to the body.
    pub(crate) fn set_slow(&self, kind: SlowKind) {
        self.live.outcome.lock().slow = Some(kind);
    }

    /// Counts body bytes handed to the connection (one atomic add).
    pub(crate) fn add_bytes(&self, n: u64) {
        self.live.body_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Ends the record now, unless it has already ended.
    pub(crate) fn finish(&self) {
        let now = self.log.now().as_nanos().min(u128::from(IN_FLIGHT - 1)) as u64;
        let _ = self.live.end_nanos.compare_exchange(
            IN_FLIGHT,
            now,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(path: &str) -> Arrival {
        Arrival {
            listener: Listener::Cdn,
            method: "GET".into(),
            path: path.into(),
            range: Some("bytes=0-9".into()),
            authorization: None,
        }
    }

    #[test]
    fn a_record_is_in_flight_until_its_guard_ends_it_and_ends_once() {
        let log = Arc::new(RequestLog::new());
        let g = log.begin(arrival("/a"));
        let r = &log.snapshot()[0];
        assert_eq!((r.id, r.status, r.end, r.body_bytes), (0, 0, None, 0));
        g.set_outcome(206, None);
        g.add_bytes(4);
        g.add_bytes(6);
        g.finish();
        let first = log.snapshot()[0].end.expect("ended");
        std::thread::sleep(Duration::from_millis(5));
        drop(g);
        let r = &log.snapshot()[0];
        assert_eq!(r.end, Some(first), "the first end wins");
        assert!(first >= r.start);
        assert_eq!((r.status, r.body_bytes), (206, 10));
    }

    #[test]
    fn dropping_the_guard_ends_the_record_and_clear_forgets_it() {
        let log = Arc::new(RequestLog::new());
        drop(log.begin(arrival("/a")));
        let g = log.begin(arrival("/b"));
        let recs = log.snapshot();
        assert!(recs[0].end.is_some() && recs[1].end.is_none());
        assert_eq!((recs[0].id, recs[1].id), (0, 1));
        log.clear();
        assert!(log.snapshot().is_empty());
        assert_eq!(g.id(), 1);
        assert_eq!(log.begin(arrival("/c")).id(), 2, "numbers never repeat");
    }
}
