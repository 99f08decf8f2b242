//! One deadline per read as the program sees it. The kernel turns one `read(2)` into several
//! FUSE reads, and when one fails it asks again for the pages it still lacks, at once, in new
//! FUSE reads: with a fresh `--read-timeout` each, one stalled `read(2)` waited two or three
//! times the timeout. So a FUSE read of bytes that overlap a read that timed out less than
//! [`RETRY_GRACE`] ago is such a retry: it gets only what remains of that grace (it is answered
//! if its blocks are at hand, fails fast otherwise), and its own failure is not remembered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long after a read timed out a read of the same bytes counts as the kernel retrying it.
pub const RETRY_GRACE: Duration = Duration::from_secs(1);
/// Timed-out reads remembered at most (oldest forgotten first).
const REMEMBERED: usize = 64;

struct TimedOut {
    content: Arc<str>,
    start: u64,
    end: u64,
    at: Instant,
}

/// The reads that timed out lately, to give the kernel's retries of them their deadline.
#[derive(Default)]
pub struct ReadDeadlines {
    recent: Mutex<VecDeque<TimedOut>>,
}

impl ReadDeadlines {
    /// The deadline of a FUSE read of `content` bytes `start..end`: `full`, or for a retry of a
    /// read that timed out (see the module doc) what remains of [`RETRY_GRACE`]; and whether it
    /// is such a retry.
    pub fn deadline_for(
        &self,
        content: &str,
        start: u64,
        end: u64,
        full: Duration,
    ) -> (Duration, bool) {
        let mut recent = self.recent.lock();
        recent.retain(|t| t.at.elapsed() < RETRY_GRACE);
        let retried = recent
            .iter()
            .filter(|t| &*t.content == content && t.start < end && start < t.end)
            .map(|t| RETRY_GRACE.saturating_sub(t.at.elapsed()))
            .min();
        match retried {
            Some(left) => (left.min(full), true),
            None => (full, false),
        }
    }

    /// A read of `content` bytes `start..end` with the full deadline timed out now.
    pub fn timed_out(&self, content: &Arc<str>, start: u64, end: u64) {
        let mut recent = self.recent.lock();
        if recent.len() >= REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(TimedOut {
            content: content.clone(),
            start,
            end,
            at: Instant::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_of_bytes_that_just_timed_out_shares_the_grace_others_get_the_full_deadline() {
        let d = ReadDeadlines::default();
        let full = Duration::from_secs(5);
        let a: Arc<str> = Arc::from("etag-a:100");
        assert_eq!(d.deadline_for(&a, 0, 100, full), (full, false));
        d.timed_out(&a, 10, 20);
        let (left, retry) = d.deadline_for(&a, 15, 16, full);
        assert!(retry && left <= RETRY_GRACE, "{left:?}");
        // Other bytes of the file, and other files, are not retries.
        assert_eq!(d.deadline_for(&a, 20, 30, full), (full, false));
        assert_eq!(d.deadline_for("etag-b:100", 10, 20, full), (full, false));
        // Past the grace, a read of the same bytes is a new read.
        std::thread::sleep(RETRY_GRACE);
        assert_eq!(d.deadline_for(&a, 15, 16, full), (full, false));
    }
}
