//! A hubfs daemon under test: the release binary mounted on a temp dir, and what it costs (peak
//! RSS, bytes written to disk, CPU time of all its threads).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU time in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// User time.
    pub user: f64,
    /// System time.
    pub system: f64,
}

impl Cpu {
    /// User plus system time.
    pub fn total(&self) -> f64 {
        self.user + self.system
    }

    /// The time spent since `before`.
    pub fn since(&self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }

    /// "total (user u + sys s)" per GiB of `bytes`.
    pub fn per_gib(&self, bytes: u64) -> String {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        if gib <= 0.0 {
            return "-".into();
        }
        format!(
            "{:.2} (user {:.2} + sys {:.2})",
            self.total() / gib,
            self.user / gib,
            self.system / gib
        )
    }
}

/// `"256MiB"`, `"1GiB"`, `"512M"`, `"64K"` (powers of 1024) or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// A running `hubfs mount`, unmounted by [`Daemon::stop`].
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    cache_bytes: u64,
}

impl Daemon {
    /// Mounts `endpoint` with `--cache-size cache --max-connections connections` and waits until
    /// the mount answers.
    pub fn start(bin: &Path, endpoint: &str, cache: &str, connections: usize) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hubfs-bench-")
            .tempdir()
            .expect("temp mountpoint");
        let child = Command::new(bin)
            .arg("mount")
            .arg(dir.path())
            .arg("--foreground")
            .args(["--endpoint", endpoint, "--cache-size", cache])
            .args(["--max-connections", &connections.to_string()])
            .env("HUBFS_LOG", "warn")
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hubfs (build it with cargo build --release)");
        let t = Instant::now();
        while !dir.path().join("datasets").is_dir() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "mount did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            dir,
            cache_bytes: parse_size(cache).expect("--cache-size value"),
        }
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        self.dir.path()
    }

    /// A path under the mountpoint.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident memory so far (VmHWM), MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kb("VmHWM:") as f64 / 1024.0
    }

    /// The memory target: `--cache-size` + 64 MiB, MiB.
    pub fn rss_limit_mib(&self) -> f64 {
        (self.cache_bytes >> 20) as f64 + 64.0
    }

    /// "peak (≤ limit: met)" or "... MISSED".
    pub fn rss_verdict(&self) -> String {
        let (peak, limit) = (self.peak_rss_mib(), self.rss_limit_mib());
        format!(
            "{peak:.0} (≤ {limit:.0}: {})",
            if peak <= limit { "met" } else { "MISSED" }
        )
    }

    /// Bytes the daemon caused to be written to disk (`write_bytes` in /proc/<pid>/io).
    pub fn write_bytes(&self) -> u64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("write_bytes: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    }

    /// CPU time of all its threads so far (utime and stime in /proc/<pid>/stat).
    pub fn cpu(&self) -> Cpu {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3 (state).
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
        Cpu {
            user: field(11),
            system: field(12),
        }
    }

    /// SIGTERM (a clean unmount) and wait.
    pub fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
