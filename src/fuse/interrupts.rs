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

use std::collections::{HashMap, HashSet, VecDeque};
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
    /// Interrupts for requests not registered (yet), oldest first, and the same as a set.
    early: VecDeque<(u64, Instant)>,
    early_set: HashSet<u64>,
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
        // Ids are never reused, so the queue entry left behind just ages out.
        if inner.early_set.remove(&unique) {
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
            if let Some((old, _)) = inner.early.pop_front() {
                inner.early_set.remove(&old);
            }
        }
        inner.early.push_back((unique, now));
        inner.early_set.insert(unique);
        false
    }

    /// Requests registered now.
    #[cfg(test)]
    pub fn in_progress(&self) -> usize {
        self.inner.lock().pending.len()
    }
}

/// What became of the process that sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// Running, or waiting with no fatal signal pending (or unknown).
    Alive,
    /// A signal that will end it is pending (SIGKILL, or one neither caught, ignored nor blocked
    /// whose default action terminates; only SIGKILL while it is traced).
    Dying,
    /// Exited: none of its threads is left but zombies.
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

/// What `/proc/<tid>/status` says of one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadStatus {
    /// The thread has exited (zombie or dead).
    pub exited: bool,
    /// A signal that ends the process is pending.
    pub dying: bool,
    /// Its process (thread group) id.
    pub tgid: Option<u32>,
}

/// Parses `/proc/<tid>/status` text.
pub fn parse_status(status: &str) -> ThreadStatus {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let mask = |name: &str| -> u64 {
        field(name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    let exited = matches!(
        field("State:").and_then(|v| v.chars().next()),
        Some('Z' | 'X')
    );
    let traced = field("TracerPid:").is_some_and(|v| v != "0");
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    let handled = mask("SigBlk:") | mask("SigIgn:") | mask("SigCgt:");
    // A traced process's signals go to its tracer first (gdb stops on Ctrl-C): only SIGKILL
    // is sure to end it.
    let dying =
        pending & SIGKILL_BIT != 0 || (!traced && pending & !handled & !NOT_FATAL_BY_DEFAULT != 0);
    ThreadStatus {
        exited,
        dying,
        tgid: field("Tgid:").and_then(|v| v.parse().ok()),
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

/// True unless the kernel says no process or thread `pid` exists (`kill(pid, 0)` gives ESRCH; it
/// takes thread ids too). Hidden ones (`hidepid`, EPERM) exist.
fn exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The caller of one request: a thread id as the kernel gives it (in the daemon's pid
/// namespace; 0 when the caller is outside it).
pub struct Caller {
    tid: u32,
    tgid: Option<u32>,
}

impl Caller {
    /// The caller with thread id `tid`.
    pub fn new(tid: u32) -> Self {
        Caller { tid, tgid: None }
    }

    /// Whether the caller's process is alive, dying or gone. Unknown (pid 0, no usable `/proc`,
    /// a process `/proc` hides from us, a read error) is [`Requester::Alive`]: a request is only
    /// dropped on evidence.
    pub fn state(&mut self) -> Requester {
        if self.tid == 0 || !proc_is_ours() {
            return Requester::Alive;
        }
        match std::fs::read_to_string(format!("/proc/{}/status", self.tid)) {
            Ok(status) => {
                let st = parse_status(&status);
                self.tgid = st.tgid.or(self.tgid);
                if st.dying {
                    Requester::Dying
                } else if st.exited {
                    self.process_state()
                } else {
                    Requester::Alive
                }
            }
            // The thread is gone (or hidden, before we ever saw it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.tgid {
                Some(_) => self.process_state(),
                None if exists(self.tid) => Requester::Alive,
                None => Requester::Gone,
            },
            Err(_) => Requester::Alive,
        }
    }

    /// The caller's thread has exited: its process is gone when none of its threads is left
    /// but zombies (a thread of a pool, or a main thread that called `pthread_exit`, may exit
    /// while the process goes on).
    fn process_state(&self) -> Requester {
        let tgid = self.tgid.unwrap_or(self.tid);
        let tasks = match std::fs::read_dir(format!("/proc/{tgid}/task")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if exists(tgid) {
                    Requester::Alive
                } else {
                    Requester::Gone
                };
            }
            Err(_) => return Requester::Alive,
        };
        for task in tasks.flatten() {
            match std::fs::read_to_string(task.path().join("status")) {
                Ok(s) if !parse_status(&s).exited => return Requester::Alive,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return Requester::Alive,
            }
        }
        Requester::Gone
    }
}

/// Completes once the caller `tid` of `registration`'s request is dying or gone: checked at each
/// interrupt and every [`REQUESTER_POLL`]. Never completes for an unknown caller (pid 0, or no
/// usable `/proc`).
pub async fn abandoned(registration: &Registration, tid: u32) -> Requester {
    if tid == 0 || !proc_is_ours() {
        return std::future::pending().await;
    }
    let mut caller = Caller::new(tid);
    loop {
        tokio::select! {
            () = registration.interrupted() => {}
            () = tokio::time::sleep(REQUESTER_POLL) => {}
        }
        let state = caller.state();
        if state.abandoned() {
            return state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requester_state(tid: u32) -> Requester {
        Caller::new(tid).state()
    }

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
        let inner = t.inner.lock();
        assert!(inner.early.len() <= EARLY_MAX);
        assert!(inner.early_set.len() <= EARLY_MAX);
    }

    fn status(state: &str, pnd: u64, shd: u64, blk: u64, ign: u64, cgt: u64) -> String {
        status_traced(state, 0, pnd, shd, blk, ign, cgt)
    }

    fn status_traced(
        state: &str,
        tracer: u32,
        pnd: u64,
        shd: u64,
        blk: u64,
        ign: u64,
        cgt: u64,
    ) -> String {
        format!(
            "Name:\tx (y)\nState:\t{state}\nTgid:\t77\nTracerPid:\t{tracer}\nSigQ:\t0/1\n\
             SigPnd:\t{pnd:016x}\nShdPnd:\t{shd:016x}\nSigBlk:\t{blk:016x}\n\
             SigIgn:\t{ign:016x}\nSigCgt:\t{cgt:016x}\n"
        )
    }

    fn bit(sig: u32) -> u64 {
        1 << (sig - 1)
    }

    #[test]
    fn only_signals_that_end_the_process_make_it_dying() {
        let cases = [
            (
                "nothing pending",
                status("S (sleeping)", 0, 0, 0, 0, 0),
                false,
            ),
            ("SIGKILL", status("S", 0, bit(9), 0, 0, 0), true),
            // A default-action SIGINT: the kernel queues SIGKILL to every thread.
            ("fatal SIGINT", status("S", bit(9), bit(2), 0, 0, 0), true),
            (
                "SIGQUIT, default (core)",
                status("S", 0, bit(3), 0, 0, 0),
                true,
            ),
            (
                "SIGINT caught (Python)",
                status("S", 0, bit(2), 0, 0, bit(2)),
                false,
            ),
            (
                "SIGURG (Go preemption)",
                status("S", bit(23), 0, 0, 0, bit(23)),
                false,
            ),
            (
                "SIGURG default (ignored)",
                status("S", bit(23), 0, 0, 0, 0),
                false,
            ),
            ("SIGCHLD default", status("S", 0, bit(17), 0, 0, 0), false),
            (
                "SIGTERM blocked",
                status("S", 0, bit(15), bit(15), 0, 0),
                false,
            ),
            (
                "SIGTERM ignored",
                status("S", 0, bit(15), 0, bit(15), 0),
                false,
            ),
            (
                "SIGPROF caught",
                status("S", bit(27), 0, 0, 0, bit(27)),
                false,
            ),
            (
                "real-time signal, default",
                status("S", 0, bit(40), 0, 0, 0),
                true,
            ),
            // Traced (gdb): the tracer may swallow the signal; only SIGKILL counts.
            (
                "traced, SIGINT pending",
                status_traced("S", 5, 0, bit(2), 0, 0, 0),
                false,
            ),
            (
                "traced, SIGKILL",
                status_traced("S", 5, 0, bit(9), 0, 0, 0),
                true,
            ),
        ];
        for (what, s, dying) in cases {
            let st = parse_status(&s);
            assert_eq!(st.dying, dying, "{what}");
            assert!(!st.exited, "{what}");
            assert_eq!(st.tgid, Some(77), "{what}");
        }
        assert!(parse_status(&status("Z (zombie)", 0, 0, 0, 0, 0)).exited);
        assert!(parse_status(&status("X (dead)", 0, 0, 0, 0, 0)).exited);
    }

    #[test]
    fn a_thread_that_exits_in_a_live_process_is_not_gone() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            go_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let mut caller = Caller::new(tid);
        assert_eq!(caller.state(), Requester::Alive);
        assert_eq!(caller.tgid, Some(std::process::id()));
        go_tx.send(()).unwrap();
        worker.join().unwrap();
        assert_eq!(caller.state(), Requester::Alive, "thread {tid} exited");
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
