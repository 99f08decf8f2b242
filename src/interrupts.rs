//! FUSE requests in progress, and whether the process waiting for one is dying.
//!
//! A request whose caller is dying (killed, or hit by a signal whose default action ends it, such
//! as Ctrl-C in most programs) is answered `EINTR` at once and its work dropped: a fetch that no
//! other reader waits for stops (see [`crate::cache::BlockCache`]). The kernel reports it two
//! ways, and neither is enough alone:
//!
//! * `FUSE_INTERRUPT`, for requests the caller waits for directly (lookups, `readdir`, direct
//!   reads). It comes for *any* signal, including ones the program catches and expects not to
//!   disturb a file read (Go's preemption `SIGURG`, profilers' `SIGPROF`, Python's own Ctrl-C
//!   handler), and only once per request. So an interrupt only prompts a check of the caller in
//!   `/proc`; a caught or ignored signal changes nothing, as with local disks and NFS (gcsfuse
//!   ignores interrupts by default for the same reason).
//! * Nothing at all for page-cache reads, which the kernel sends as background read-ahead: the
//!   caller leaves its page wait when killed and the request stays. So every request in progress
//!   also checks its caller every [`REQUESTER_POLL`].
//!
//! An interrupt can arrive before its request is registered when several threads read the FUSE
//! device; it is then remembered for a while ([`EARLY_KEEP`]) and applied on registration.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How long an interrupt for a request not seen yet is remembered.
pub const EARLY_KEEP: Duration = Duration::from_secs(10);
/// Most interrupts for unseen requests remembered at once.
const EARLY_MAX: usize = 4096;
/// How often a request in progress checks that its caller is still alive and not dying.
pub const REQUESTER_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Inner {
    pending: HashMap<u64, Arc<Notify>>,
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
    kick: Arc<Notify>,
}

impl Registration {
    /// Completes at the next interrupt of this request (or at once for one that came before).
    pub async fn interrupted(&self) {
        self.kick.notified().await
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
        let kick = Arc::new(Notify::new());
        let mut inner = self.inner.lock();
        if let Some(i) = inner.early.iter().position(|(u, _)| *u == unique) {
            inner.early.remove(i);
            kick.notify_one();
        }
        inner.pending.insert(unique, kick.clone());
        Registration {
            table: self.clone(),
            unique,
            kick,
        }
    }

    /// Reports an interrupt of request `unique`. True when it is in progress; otherwise it either
    /// finished already or is not registered yet, and is remembered for [`EARLY_KEEP`].
    pub fn interrupt(&self, unique: u64) -> bool {
        let mut inner = self.inner.lock();
        if let Some(kick) = inner.pending.get(&unique) {
            kick.notify_one();
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

/// What became of the thread that sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// Running, or waiting with no fatal signal pending (or unknown).
    Alive,
    /// A signal that will end it is pending (SIGKILL, or one neither caught, ignored nor blocked
    /// whose default action terminates).
    Dying,
    /// Exited (no `/proc/<tid>`, or a zombie).
    Gone,
}

impl Requester {
    /// True when nobody will take the answer.
    pub fn abandoned(self) -> bool {
        self != Requester::Alive
    }
}

/// Signals whose default action does not end the process: SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP,
/// SIGTTIN, SIGTTOU, SIGURG, SIGWINCH (bit n-1 for signal n).
const NOT_FATAL_BY_DEFAULT: u64 = sigbit(libc::SIGCHLD)
    | sigbit(libc::SIGCONT)
    | sigbit(libc::SIGSTOP)
    | sigbit(libc::SIGTSTP)
    | sigbit(libc::SIGTTIN)
    | sigbit(libc::SIGTTOU)
    | sigbit(libc::SIGURG)
    | sigbit(libc::SIGWINCH);
const SIGKILL_BIT: u64 = sigbit(libc::SIGKILL);

/// The bit of signal `sig` in the masks of `/proc/<pid>/status`.
const fn sigbit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Reads the state of thread `tid` from `/proc/<tid>/status` text.
pub fn parse_status(status: &str) -> Requester {
    let mask = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|v| v.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X')) {
        return Requester::Gone;
    }
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    if pending & SIGKILL_BIT != 0 {
        return Requester::Dying;
    }
    let handled = mask("SigBlk:") | mask("SigIgn:") | mask("SigCgt:");
    if pending & !handled & !NOT_FATAL_BY_DEFAULT != 0 {
        Requester::Dying
    } else {
        Requester::Alive
    }
}

/// True when `/proc` shows this process's own pid namespace (`/proc/self` is our pid), so the
/// pids in FUSE requests (given in the namespace of the daemon) can be looked up there. Checked
/// once; without it, callers are never taken for dying.
fn proc_is_ours() -> bool {
    static OURS: OnceLock<bool> = OnceLock::new();
    *OURS.get_or_init(|| {
        let ours = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
            == Some(std::process::id());
        if !ours {
            tracing::info!(
                "/proc is not this pid namespace's: requests of killed processes run to the end"
            );
        }
        ours
    })
}

/// The state of thread `tid`, a pid as the kernel gives it in a FUSE request (in the daemon's pid
/// namespace). Unknown (pid 0: a caller outside that namespace; no usable `/proc`; a read error)
/// is [`Requester::Alive`].
pub fn requester_state(tid: u32) -> Requester {
    if tid == 0 || !proc_is_ours() {
        return Requester::Alive;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => parse_status(&status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Requester::Gone,
        Err(_) => Requester::Alive,
    }
}

/// Completes once the caller `tid` of `registration`'s request is dying or gone: checked at each
/// interrupt and every [`REQUESTER_POLL`]. Never completes for an unknown caller (pid 0).
pub async fn abandoned(registration: &Registration, tid: u32) -> Requester {
    if tid == 0 {
        return std::future::pending().await;
    }
    loop {
        tokio::select! {
            () = registration.interrupted() => {}
            () = tokio::time::sleep(REQUESTER_POLL) => {}
        }
        let state = requester_state(tid);
        if state.abandoned() {
            return state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn kicked(r: &Registration) -> bool {
        tokio::time::timeout(Duration::from_millis(200), r.interrupted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_interrupt_kicks_the_registered_request_only() {
        let t = Interrupts::new();
        let a = t.register(10);
        let b = t.register(12);
        assert!(t.interrupt(10));
        assert!(kicked(&a).await);
        assert!(!kicked(&b).await);
        drop(a);
        drop(b);
        assert_eq!(t.in_progress(), 0);
    }

    #[tokio::test]
    async fn an_interrupt_before_registration_applies_when_the_request_arrives() {
        let t = Interrupts::new();
        assert!(!t.interrupt(42));
        let r = t.register(42);
        assert!(kicked(&r).await);
        // Used once: a request with another id is not affected.
        let s = t.register(44);
        assert!(!kicked(&s).await);
    }

    #[test]
    fn remembered_interrupts_are_bounded() {
        let t = Interrupts::new();
        for u in 0..(EARLY_MAX as u64 + 100) {
            t.interrupt(u);
        }
        assert!(t.inner.lock().early.len() <= EARLY_MAX);
    }

    fn status(state: &str, pnd: u64, shd: u64, blk: u64, ign: u64, cgt: u64) -> String {
        format!(
            "Name:\tx (y)\nState:\t{state}\nSigQ:\t0/1\nSigPnd:\t{pnd:016x}\nShdPnd:\t{shd:016x}\n\
             SigBlk:\t{blk:016x}\nSigIgn:\t{ign:016x}\nSigCgt:\t{cgt:016x}\n"
        )
    }

    fn bit(sig: u32) -> u64 {
        1 << (sig - 1)
    }

    #[test]
    fn only_signals_that_end_the_process_make_it_dying() {
        use Requester::*;
        let cases = [
            (
                "nothing pending",
                status("S (sleeping)", 0, 0, 0, 0, 0),
                Alive,
            ),
            ("SIGKILL", status("S", 0, bit(9), 0, 0, 0), Dying),
            // A default-action SIGINT: the kernel queues SIGKILL to every thread.
            ("fatal SIGINT", status("S", bit(9), bit(2), 0, 0, 0), Dying),
            (
                "SIGQUIT, default (core)",
                status("S", 0, bit(3), 0, 0, 0),
                Dying,
            ),
            (
                "SIGINT caught (Python)",
                status("S", 0, bit(2), 0, 0, bit(2)),
                Alive,
            ),
            (
                "SIGURG (Go preemption)",
                status("S", bit(23), 0, 0, 0, bit(23)),
                Alive,
            ),
            (
                "SIGURG default (ignored)",
                status("S", bit(23), 0, 0, 0, 0),
                Alive,
            ),
            ("SIGCHLD default", status("S", 0, bit(17), 0, 0, 0), Alive),
            (
                "SIGTERM blocked",
                status("S", 0, bit(15), bit(15), 0, 0),
                Alive,
            ),
            (
                "SIGTERM ignored",
                status("S", 0, bit(15), 0, bit(15), 0),
                Alive,
            ),
            (
                "SIGPROF caught",
                status("S", bit(27), 0, 0, 0, bit(27)),
                Alive,
            ),
            ("zombie", status("Z (zombie)", 0, 0, 0, 0, 0), Gone),
        ];
        for (what, s, want) in cases {
            assert_eq!(parse_status(&s), want, "{what}");
        }
    }

    #[test]
    fn requester_state_tells_live_from_gone() {
        assert_eq!(requester_state(std::process::id()), Requester::Alive);
        assert_eq!(requester_state(0), Requester::Alive, "pid 0 is unknown");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        for _ in 0..200 {
            if requester_state(pid) == Requester::Gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(requester_state(pid), Requester::Gone, "zombie {pid}");
        child.wait().unwrap();
        assert_eq!(requester_state(pid), Requester::Gone, "reaped {pid}");
    }

    #[test]
    fn a_sleeping_process_is_alive_until_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(requester_state(pid), Requester::Alive);
        child.kill().unwrap();
        let mut seen = requester_state(pid);
        for _ in 0..200 {
            if seen.abandoned() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            seen = requester_state(pid);
        }
        assert!(seen.abandoned(), "{seen:?}");
        child.wait().unwrap();
    }
}
