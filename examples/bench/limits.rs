//! The limits a mount is compared with: parallel range requests straight from the fake Hub into
//! memory with hubfs's own HTTP client, and with `curl` processes; and curl's CPU per byte.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hubfs::hub::http::{HttpConfig, HttpHub};
use hubfs::hub::{FileRef, HubClient};

use crate::daemon::Cpu;
use crate::mbps;

const PART: u64 = 8 << 20;

/// MB/s of `connections` workers fetching `file` in 8 MiB parts with hubfs's HTTP client.
pub fn http_limit(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    file: FileRef,
    connections: usize,
) -> f64 {
    rt.block_on(async {
        let mut cfg = HttpConfig::new(endpoint);
        cfg.max_connections = connections;
        let client = Arc::new(HttpHub::new(cfg).expect("http client"));
        let size = file.size;
        let file = Arc::new(file);
        let next = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (client, file, next) = (client.clone(), file.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let off = next.fetch_add(PART, Ordering::SeqCst);
                        if off >= size {
                            break;
                        }
                        let len = PART.min(size - off);
                        client
                            .read_range(&file, off, len, len)
                            .await
                            .expect("range read");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("limit worker");
        }
        mbps(size, t.elapsed())
    })
}

/// True when `curl` runs here.
pub fn have_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The CDN URL that `resolve_url` redirects to (asked with curl, no body fetched).
pub fn cdn_url(resolve_url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{redirect_url}",
            resolve_url,
        ])
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!url.is_empty()).then_some(url)
}

/// CPU time of this process's terminated, waited-for children.
fn children_cpu() -> Cpu {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user: secs(ru.ru_utime),
        system: secs(ru.ru_stime),
    }
}

/// One curl measurement: throughput and the CPU the curl processes used.
pub struct CurlRun {
    /// MB/s over the whole run.
    pub mbps: f64,
    /// CPU of all the curl processes.
    pub cpu: Cpu,
    /// Bytes they received.
    pub bytes: u64,
}

/// `n` curl processes at once, each `curl -r` of one n-th of `[0, size)` of `url` into
/// /dev/null (n = 1: a plain `curl -o /dev/null` of the whole file). None if one fails.
pub fn curl_ranges(url: &str, size: u64, n: u64) -> Option<CurlRun> {
    let before = children_cpu();
    let t = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|i| {
            let (a, b) = (size * i / n, size * (i + 1) / n);
            let mut c = Command::new("curl");
            c.args(["-s", "-f", "-o", "/dev/null", "-w", "%{size_download}"]);
            if n > 1 {
                c.args(["-r", &format!("{a}-{}", b - 1)]);
            }
            c.arg(url).stdout(Stdio::piped()).spawn()
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let mut bytes = 0u64;
    for c in children {
        let out = c.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        bytes += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .ok()?;
    }
    let elapsed = t.elapsed();
    (bytes == size).then(|| CurlRun {
        mbps: mbps(bytes, elapsed),
        cpu: children_cpu().since(before),
        bytes,
    })
}
