//! FUSE requests in progress, so the kernel can interrupt them, and a watch on the process that
//! waits for a read.
//!
//! The kernel sends `FUSE_INTERRUPT` for a request whose caller got a signal (Ctrl-C, SIGKILL,
//! a timer): the caller stays blocked until the request is answered, so an interrupted request is
//! answered `EINTR` at once and its work is dropped (a fetch that no other reader waits for stops,
//! see [`crate::cache::BlockCache`]). Reads the kernel sends in the background (read-ahead, which
//! is how most page-cache reads arrive) are never interrupted: the caller waits on a page lock it
//! can leave when killed, and the request goes on. For those, [`requester_gone`] notices that the
//! thread that caused the read has exited.
//!
//! An interrupt can arrive before its request is registered when several threads read the FUSE
//! device; it is then remembered for a while ([`EARLY_KEEP`]) and applied on registration.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// How long an interrupt for a request not seen yet is remembered.
pub const EARLY_KEEP: Duration = Duration::from_secs(10);
/// Most interrupts for unseen requests remembered at once.
const EARLY_MAX: usize = 4096;
/// How often a waiting read checks that the thread that asked for it still exists.
pub const REQUESTER_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Inner {
    pending: HashMap<u64, CancellationToken>,
    early: VecDeque<(u64, Instant)>,
}

/// The requests in progress, by the kernel's request id (`unique`).
#[derive(Default)]
pub struct Interrupts {
    inner: Mutex<Inner>,
}

/// A registered request; unregisters on drop.
pub struct Registration {
    table: Arc<Interrupts>,
    unique: u64,
    token: CancellationToken,
}

impl Registration {
    /// Completes when the kernel interrupts the request.
    pub async fn interrupted(&self) {
        self.token.cancelled().await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.inner.lock().pending.remove(&self.unique);
    }
}

impl Interrupts {
    /// An empty table.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Registers request `unique` until the returned registration is dropped. Call it before
    /// the request's work is spawned, so an interrupt read right after finds it.
    pub fn register(self: &Arc<Self>, unique: u64) -> Registration {
        let token = CancellationToken::new();
        let mut inner = self.inner.lock();
        if let Some(i) = inner.early.iter().position(|(u, _)| *u == unique) {
            inner.early.remove(i);
            token.cancel();
        }
        inner.pending.insert(unique, token.clone());
        Registration {
            table: self.clone(),
            unique,
            token,
        }
    }

    /// Interrupts request `unique`. True when it was in progress; otherwise it either finished
    /// already or is not registered yet, and is remembered for [`EARLY_KEEP`].
    pub fn interrupt(&self, unique: u64) -> bool {
        let mut inner = self.inner.lock();
        if let Some(token) = inner.pending.get(&unique) {
            token.cancel();
            return true;
        }
        let now = Instant::now();
        while inner
            .early
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > EARLY_KEEP)
            || inner.early.len() >= EARLY_MAX
        {
            inner.early.pop_front();
        }
        inner.early.push_back((unique, now));
        false
    }

    /// Requests registered now.
    pub fn in_progress(&self) -> usize {
        self.inner.lock().pending.len()
    }
}

/// True when thread `tid` (a pid as the kernel gives it in a FUSE request, in the daemon's pid
/// namespace) has exited: no `/proc/<tid>`, or a zombie. Unknown (no `/proc`, pid 0, another
/// error) counts as alive.
pub fn thread_exited(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')' (comm may hold parentheses).
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            matches!(state, Some('Z' | 'X'))
        }
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Completes once thread `tid` has exited (checked every [`REQUESTER_POLL`]); never for pid 0.
pub async fn requester_gone(tid: u32) {
    loop {
        tokio::time::sleep(REQUESTER_POLL).await;
        if thread_exited(tid) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_interrupt_cancels_the_registered_request_only() {
        let t = Interrupts::new();
        let a = t.register(10);
        let b = t.register(12);
        assert!(t.interrupt(10));
        tokio::time::timeout(Duration::from_secs(1), a.interrupted())
            .await
            .expect("request 10 interrupted");
        assert!(!b.token.is_cancelled());
        drop(a);
        drop(b);
        assert_eq!(t.in_progress(), 0);
    }

    #[tokio::test]
    async fn an_interrupt_before_registration_applies_when_the_request_arrives() {
        let t = Interrupts::new();
        assert!(!t.interrupt(42));
        let r = t.register(42);
        assert!(r.token.is_cancelled());
        // Used once: a later request with another id is not affected.
        let s = t.register(44);
        assert!(!s.token.is_cancelled());
    }

    #[test]
    fn remembered_interrupts_are_bounded() {
        let t = Interrupts::new();
        for u in 0..(EARLY_MAX as u64 + 100) {
            t.interrupt(u);
        }
        assert!(t.inner.lock().early.len() <= EARLY_MAX);
    }

    #[test]
    fn thread_exited_tells_live_from_gone() {
        assert!(!thread_exited(std::process::id()));
        assert!(!thread_exited(0), "pid 0 (unknown) counts as alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie counts as gone.
        for _ in 0..200 {
            if thread_exited(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(thread_exited(pid), "zombie {pid} counts as exited");
        child.wait().unwrap();
        assert!(thread_exited(pid), "reaped {pid} counts as exited");
    }
}
