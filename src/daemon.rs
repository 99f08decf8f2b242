//! Going to the background the way `mount` users expect: `hubfs mount` forks before any thread
//! or runtime exists; the child starts a new session, sends its stdio to the log file (or
//! `/dev/null`) and mounts; the parent waits on a pipe until the child says the mount answers
//! (exit 0) or why it could not mount (the reason printed, exit 1).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Which side of the fork this is.
pub enum Forked {
    /// The parent: what the child reported (`Ok` once the mount answers, else the reason).
    Parent(Result<(), String>),
    /// The child, detached, with the channel to report through.
    Child(Readiness),
}

/// The child's end of the pipe to the waiting parent. Dropped unused (the child died or exited
/// first), the parent sees the pipe close and reports that.
pub struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    /// Tells the parent the mount answers; it exits 0.
    pub fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(b"1");
        }
    }

    /// Tells the parent why the mount failed (if it is still waiting); it prints `why` and exits 1.
    pub fn failed(&mut self, why: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = p.write_all(format!("E{why}").as_bytes());
        }
    }
}

/// Forks. Must be called while the process has one thread (before tracing, tokio or any other
/// thread starts). The child gets a new session, `/` as its working directory, stdin from
/// `/dev/null` and stdout/stderr to `log_file` (appended) or `/dev/null`; paths given relative to
/// the caller's directory must have been made absolute before. The parent waits up to `wait`
/// for the child's report, and stops the child (SIGTERM) if none came by then.
pub fn fork(log_file: Option<&Path>, wait: Duration) -> Result<Forked, String> {
    let log = match log_file {
        Some(p) => open_log(p)?,
        None => File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("cannot open /dev/null: {e}"))?,
    };
    let null_in = File::open("/dev/null").map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the caller guarantees no other thread exists, so the child may run anything.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            Ok(Forked::Parent(wait_for_child(
                File::from(read_end),
                child,
                wait,
            )))
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            for (from, to) in [(null_in.as_fd(), 0), (log.as_fd(), 1), (log.as_fd(), 2)] {
                // SAFETY: dup2 onto this process's own standard descriptors.
                unsafe { libc::dup2(from.as_raw_fd(), to) };
            }
            Ok(Forked::Child(Readiness {
                pipe: Some(File::from(write_end)),
            }))
        }
    }
}

/// Opens `path` for appending logs (created 0640), for `--log-file`.
pub fn open_log(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot open --log-file {}: {e}", path.display()))
}

/// Sends stderr (the logs) to `path`, appended: `--log-file` in the foreground.
pub fn redirect_stderr(path: &Path) -> Result<(), String> {
    let f = open_log(path)?;
    // SAFETY: dup2 onto this process's own stderr.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(format!(
            "cannot log to {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The parent's wait: a `1` from the child is success, `E<reason>` a failure, the pipe closing
/// first means the child died. No report within `wait`: the child is stopped.
fn wait_for_child(mut pipe: File, child: nix::unistd::Pid, wait: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut msg = Vec::new();
    loop {
        let left = wait.saturating_sub(start.elapsed());
        let mut fd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut fd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting for the daemon: {e}"));
        }
        if r == 0 {
            if !start.elapsed().lt(&wait) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGTERM);
                return Err(format!(
                    "the mount did not answer within {} s; the daemon (pid {child}) was stopped",
                    wait.as_secs()
                ));
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                msg.extend_from_slice(&buf[..n]);
                if msg.first() == Some(&b'1') {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the daemon: {e}")),
        }
    }
    match msg.split_first() {
        Some((b'E', why)) => {
            // The child exits right after its report: reap it rather than leave a zombie.
            for _ in 0..100 {
                match nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
            Err(String::from_utf8_lossy(why).into_owned())
        }
        _ => {
            let status = nix::sys::wait::waitpid(child, None)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|e| e.to_string());
            Err(format!(
                "the daemon exited before the mount answered ({status}); run with --foreground or --log-file to see why"
            ))
        }
    }
}
