//! A reader that is interrupted or killed while hubfs waits on a hung Hub: its process is freed at
//! once (not at the read deadline), and the fetch that only it waited for is stopped.
//!
//! The fake Hub hangs by answering every request after a long latency; the client's deadline is
//! longer still, so only interrupt handling can free a process within the bounds asserted here.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakehub::{FakeHub, Fixtures, RepoType, Shaping};
use hubfs::fs::FsConfig;
use hubfs::stats::Stats;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{http_hub_counting, mount_with_stats, sha256_file};

/// How long the hung Hub takes to answer, and the client's no-progress deadline: far longer than
/// any bound asserted below.
const HUNG: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(90);
/// The most a freed process may take to exit (generous for a loaded 2-core machine).
const PROMPT: Duration = Duration::from_secs(15);

const SHARD: &str = "model-00002-of-00003.safetensors";

fn hang(hub: &FakeHub) {
    hub.set_shaping(Shaping {
        latency: HUNG,
        ..Default::default()
    });
}

fn unhang(hub: &FakeHub) {
    hub.set_shaping(Shaping::default());
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("kill");
}

/// Waits up to `limit` for `child` to exit; how long it took, or None (the child is then killed).
fn exit_within(child: &mut Child, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Polls `cond` for up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The sha256 of [`SHARD`] in the fixtures.
fn shard_sha256() -> String {
    Fixtures::standard()
        .file(RepoType::Model, "acme/sharded", "main", SHARD)
        .unwrap()
        .sha256_hex()
}

/// Waits until a range request is waiting on the Hub.
fn wait_for_range_request(stats: &Stats) {
    assert!(
        eventually(PROMPT, || Stats::get(&stats.inflight_requests) >= 1),
        "no range request in flight"
    );
}

fn setup() -> (
    FakeHub,
    Arc<Stats>,
    support::Mounted<hubfs::hub::http::HttpHub>,
) {
    let (hub, _) = support::standard_hub();
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(&hub, None, DEADLINE, stats.clone());
    let m = mount_with_stats(client, FsConfig::default(), stats.clone());
    (hub, stats, m)
}

type Setup = (
    FakeHub,
    Arc<Stats>,
    support::Mounted<hubfs::hub::http::HttpHub>,
    std::path::PathBuf,
);

/// [`setup`], with [`SHARD`] looked up (metadata known, no byte read), then the Hub hung.
fn setup_hung_shard() -> Setup {
    let (hub, stats, m) = setup();
    let path = m.join(&format!("acme/sharded@main/{SHARD}"));
    assert!(path.is_file(), "metadata is known before the Hub hangs");
    hang(&hub);
    (hub, stats, m, path)
}

#[test]
fn ctrl_c_frees_a_process_waiting_for_a_hung_hub_at_once() {
    if !support::fuse_available() {
        return;
    }
    let (hub, stats, m) = setup();
    hang(&hub);
    let sent = Stats::get(&stats.http_requests);
    // Resolving `main` needs the Hub: the lookup waits in the daemon.
    let mut child = Command::new("stat")
        .arg(m.join("acme/tiny-gpt2@main"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(PROMPT, || Stats::get(&stats.http_requests) > sent),
        "the lookup never reached the Hub"
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, Signal::SIGINT);
    let took = exit_within(&mut child, PROMPT);
    assert!(
        took.is_some(),
        "stat still blocked {PROMPT:?} after Ctrl-C (the Hub answers in {HUNG:?})"
    );
    assert!(
        Stats::get(&stats.interrupted) >= 1,
        "no request answered EINTR"
    );
    // The mount is fine afterwards.
    unhang(&hub);
    assert!(m.join("acme/tiny-gpt2@main/config.json").is_file());
}

#[test]
fn a_killed_reader_stops_the_fetch_only_it_waited_for() {
    if !support::fuse_available() {
        return;
    }
    let want = shard_sha256();
    let (hub, stats, m, path) = setup_hung_shard();
    // A page-cache read: the kernel sends it as background read-ahead, which it never interrupts.
    let mut child = Command::new("cat")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_range_request(&stats);
    let cache = m.fs.block_cache().clone();
    assert!(cache.inflight_bytes() > 0);
    signal(&child, Signal::SIGKILL);
    assert!(exit_within(&mut child, PROMPT).is_some(), "cat not killed");
    assert!(
        eventually(PROMPT, || Stats::get(&stats.inflight_requests) == 0
            && cache.inflight_bytes() == 0),
        "fetches still running {PROMPT:?} after their only reader died: {} requests, {} bytes",
        Stats::get(&stats.inflight_requests),
        cache.inflight_bytes()
    );
    assert!(Stats::get(&stats.fetches_cancelled) >= 1);
    assert!(Stats::get(&stats.interrupted) >= 1);
    assert_eq!(
        cache.cached_bytes(),
        0,
        "nothing cached from stopped fetches"
    );
    // Nothing is poisoned: the pages the kernel did not get are asked for again.
    unhang(&hub);
    assert_eq!(sha256_file(&path).unwrap(), want);
}

#[test]
fn kill_frees_a_direct_read_waiting_for_a_hung_hub() {
    if !support::fuse_available() {
        return;
    }
    let (_hub, stats, m, path) = setup_hung_shard();
    // O_DIRECT reads are sent while the caller waits, so the kernel sends FUSE_INTERRUPT.
    let mut child = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=1M", "count=4", "iflag=direct"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_range_request(&stats);
    signal(&child, Signal::SIGKILL);
    assert!(
        exit_within(&mut child, PROMPT).is_some(),
        "dd still blocked {PROMPT:?} after SIGKILL (the Hub answers in {HUNG:?})"
    );
    assert!(Stats::get(&stats.interrupted) >= 1);
    let cache = m.fs.block_cache().clone();
    assert!(
        eventually(PROMPT, || cache.inflight_bytes() == 0),
        "the killed read's fetch still runs"
    );
    assert!(Stats::get(&stats.fetches_cancelled) >= 1);
}

/// A program that catches signals (Go's preemption SIGURG, a profiler's SIGPROF, Python's Ctrl-C
/// handler) must not see its file operations fail or start over because one arrived mid-request.
#[test]
fn caught_signals_neither_fail_nor_restart_slow_requests() {
    if !support::fuse_available() {
        return;
    }
    let want = shard_sha256();
    let (hub, stats, m) = setup();
    // Slow, not hung: every Hub and CDN answer takes 700 ms.
    hub.set_shaping(Shaping {
        latency: Duration::from_millis(700),
        ..Default::default()
    });
    let script = r#"
import hashlib, os, signal, sys
caught = 0
def on_signal(signum, frame):
    global caught
    caught += 1
signal.signal(signal.SIGUSR1, on_signal)
print("ready", flush=True)
root = sys.argv[1]
names = sorted(os.listdir(os.path.join(root, "acme/sharded@main")))
h = hashlib.sha256()
with open(os.path.join(root, "acme/sharded@main", sys.argv[2]), "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
# Python restores default handlers as it exits: keep a late SIGUSR1 from killing it then.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
print(h.hexdigest(), caught, len(names), flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(m.path())
        .arg(SHARD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (installed by scripts/test)");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // SIGUSR1 every 20 ms until it is done (signals sent while it is blocked merge into one).
    let t = Instant::now();
    let mut sent = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "python never finished"
        );
        signal(&child, Signal::SIGUSR1);
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "python failed: {status:?} {err}");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some(want.as_str()), "{rest} {err}");
    let caught: u64 = fields[1].parse().unwrap();
    assert!(
        sent >= 50 && caught >= 1,
        "{sent} signals sent over {:?}, {caught} handled",
        t.elapsed()
    );
    assert!(
        Stats::get(&stats.interrupts_received) >= 1,
        "no FUSE_INTERRUPT reached hubfs: the test proved nothing"
    );
    assert_eq!(
        Stats::get(&stats.interrupted),
        0,
        "a caught signal dropped a request"
    );
    assert_eq!(Stats::get(&stats.fetches_cancelled), 0);
}

/// Python catches Ctrl-C, so a read goes on; Ctrl-\ (SIGQUIT, not caught, dumps core by default)
/// stops it at once, on the page-cache path where the kernel sends no interrupt.
#[test]
fn ctrl_backslash_stops_a_python_reader_at_once() {
    if !support::fuse_available() {
        return;
    }
    let (_hub, stats, _m, path) = setup_hung_shard();
    let mut child = Command::new("bash")
        .args([
            "-c",
            "ulimit -c 0; exec python3 -c 'import sys; open(sys.argv[1], \"rb\").read()' \"$1\"",
            "reader",
        ])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_range_request(&stats);
    // Ctrl-C first: Python's handler catches it, nothing is dropped (and, on the page-cache
    // path, the kernel sends no interrupt at all).
    signal(&child, Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(600));
    assert!(child.try_wait().unwrap().is_none(), "Ctrl-C ended the read");
    assert_eq!(Stats::get(&stats.interrupted), 0);
    signal(&child, Signal::SIGQUIT);
    assert!(
        exit_within(&mut child, PROMPT).is_some(),
        "python still blocked {PROMPT:?} after SIGQUIT"
    );
    assert!(Stats::get(&stats.interrupted) >= 1);
}
