//! A reader that is interrupted or killed while hubfs waits on a hung Hub: its process is freed at
//! once (not at the read deadline), and the fetch that only it waited for is stopped.
//!
//! The fake Hub hangs by answering every request after a long latency; the client's deadline is
//! longer still, so only interrupt handling can free a process within the bounds asserted here.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakehub::{FakeHub, FakeHubOptions, Fixtures, RepoType, Shaping};
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
        bytes_per_sec: None,
        latency: HUNG,
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

fn setup() -> (
    FakeHub,
    Arc<Stats>,
    support::Mounted<hubfs::hub::http::HttpHub>,
) {
    let hub = FakeHub::start(Fixtures::standard(), FakeHubOptions::default()).unwrap();
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(&hub, None, DEADLINE, stats.clone());
    let m = mount_with_stats(client, FsConfig::default(), stats.clone());
    (hub, stats, m)
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
    let fx = Fixtures::standard();
    let want = fx
        .repo(RepoType::Model, "acme/sharded")
        .unwrap()
        .file_at("main", SHARD)
        .unwrap()
        .sha256_hex();
    let (hub, stats, m) = setup();
    let path = m.join(&format!("acme/sharded@main/{SHARD}"));
    assert!(path.is_file(), "metadata is known before the Hub hangs");
    hang(&hub);
    // A page-cache read: the kernel sends it as background read-ahead, which it never interrupts.
    let mut child = Command::new("cat")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(PROMPT, || Stats::get(&stats.inflight_requests) >= 1),
        "no range request in flight"
    );
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
fn ctrl_c_interrupts_a_direct_read_waiting_for_a_hung_hub() {
    if !support::fuse_available() {
        return;
    }
    let (hub, stats, m) = setup();
    let path = m.join(&format!("acme/sharded@main/{SHARD}"));
    assert!(path.is_file());
    hang(&hub);
    // O_DIRECT reads are sent while the caller waits, so the kernel interrupts them; dd catches
    // SIGINT, so this is the interruptible (non-fatal) path.
    let mut child = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["of=/dev/null", "bs=1M", "count=4", "iflag=direct"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(PROMPT, || Stats::get(&stats.inflight_requests) >= 1),
        "no range request in flight"
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, Signal::SIGINT);
    assert!(
        exit_within(&mut child, PROMPT).is_some(),
        "dd still blocked {PROMPT:?} after Ctrl-C (the Hub answers in {HUNG:?})"
    );
    assert!(Stats::get(&stats.interrupted) >= 1);
    let cache = m.fs.block_cache().clone();
    assert!(
        eventually(PROMPT, || cache.inflight_bytes() == 0),
        "the interrupted read's fetch still runs"
    );
    assert!(Stats::get(&stats.fetches_cancelled) >= 1);
}
