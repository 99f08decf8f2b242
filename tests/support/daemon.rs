//! The `hubfs` binary as a subprocess: a clean environment (HOME in a temp dir, PATH only, plus
//! what the test gives), stderr collected from a pipe (a log file would be a disk write), and a
//! drop guard that kills it and clears its mount if the test failed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::is_mounted;

/// A running `hubfs mount`.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its HOME and working directory (empty unless the test puts something there).
    pub home: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// Unmounted lazily on drop while set.
    pub mountpoint: Option<PathBuf>,
}

impl Drop for Daemon {
    /// A failed test must not leave a daemon or a dead mount behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(m) = &self.mountpoint {
            if is_mounted(m) {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Daemon {
    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits up to 20 s for `f`, failing with the daemon's log.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the mount answers.
    pub fn wait_mounted(&self) {
        let m = self.mountpoint.clone().expect("a mountpoint");
        self.wait_for("the mount", || {
            is_mounted(&m) && m.join("datasets").is_dir()
        });
    }
}

/// Starts `hubfs mount MNT --foreground ARGS...` with HOME, PATH, `HUBFS_LOG=info` and `env` only.
pub fn spawn(mnt: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubfs"));
    cmd.arg("mount")
        .arg(mnt)
        .arg("--foreground")
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HUBFS_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .current_dir(home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hubfs");
    let log = Arc::new(Mutex::new(String::new()));
    let mut err = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut l) = sink.lock() {
                l.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    Daemon {
        child,
        home,
        log,
        mountpoint: Some(mnt.to_owned()),
    }
}
