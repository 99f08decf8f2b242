//! The read-ahead pipeline through a real mount of the fake Hub: a CDN response that stalls
//! mid-body does not stall the reader (it is hedged), and a sharded checkpoint's next shard is
//! already being fetched when the loader opens it. Each check is made against the fake Hub's own
//! request log, not hubfs's counters alone.

mod support;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakehub::{FakeHub, FakeHubOptions, Fixtures, Listener, RepoType, Shaping, SlowKind};
use hubfs::fs::FsConfig;
use hubfs::stats::Stats;
use support::{http_hub_counting, mount_with_stats, sha256_file};

const MIB: u64 = 1 << 20;

/// Reads `p` to its end in 1 MiB reads; returns the bytes read.
fn read_all(p: &std::path::Path) -> u64 {
    let mut f = std::fs::File::open(p).expect("open");
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0;
    loop {
        match f.read(&mut buf).expect("read") {
            0 => return n,
            k => n += k as u64,
        }
    }
}

#[test]
fn a_stalled_part_does_not_stall_the_reader() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::empty().with_large_file("acme/big", "big.bin", 256 * MIB);
    let data = fx
        .file(RepoType::Model, "acme/big", "main", "big.bin")
        .expect("fixture")
        .clone();
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");
    // A CDN whose responses go at 100 MB/s each, 5% of them pausing 30 s mid-body: a reader that
    // waited for a stalled part would take at least 30 s.
    let stall = Duration::from_secs(30);
    hub.set_shaping(Shaping {
        bytes_per_sec: Some(100_000_000),
        latency: Duration::from_millis(5),
        slow_fraction: 0.05,
        slow_kind: SlowKind::Stall,
        stall,
        seed: 11,
        ..Default::default()
    });
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(&hub, None, Duration::from_secs(120), stats.clone());
    let cfg = FsConfig {
        cache_bytes: 64 * MIB,
        ..FsConfig::default()
    };
    let m = mount_with_stats(client, cfg, stats.clone());
    let p = m.join("acme/big@main/big.bin");
    let t = Instant::now();
    assert_eq!(sha256_file(&p).expect("read"), data.sha256_hex());
    let took = t.elapsed();
    let reqs = hub.requests();
    let stalled: Vec<_> = reqs
        .iter()
        .filter(|r| r.slow == Some(SlowKind::Stall))
        .collect();
    assert!(!stalled.is_empty(), "the seed stalls some responses");
    assert!(
        took < stall / 2,
        "the read took {took:?}: it waited for a stalled response"
    );
    for r in &stalled {
        let end = r
            .end
            .expect("every stalled response was dropped or finished");
        assert!(
            end - r.start < stall / 2,
            "a stalled response ran {:?}: its bytes were waited for, not hedged",
            end - r.start
        );
    }
    let hedges = Stats::get(&stats.hedges);
    assert!(hedges >= 1, "stalls were hedged");
    // Hedges stay within their cap: 5% of the bytes plus one part.
    let hedge_bytes = Stats::get(&stats.hedge_bytes);
    assert!(
        hedge_bytes <= 256 * MIB / 20 + 8 * MIB,
        "{hedge_bytes} bytes hedged"
    );
}

#[test]
fn the_next_shard_is_in_flight_when_the_loader_opens_it() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::empty().with_sharded_model("acme/shards", 3, 24 * MIB);
    let commit = fx
        .commit(RepoType::Model, "acme/shards", "main")
        .expect("fixture")
        .clone();
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(&hub, None, Duration::from_secs(30), stats.clone());
    let m = mount_with_stats(
        client,
        FsConfig {
            cache_bytes: 128 * MIB,
            ..FsConfig::default()
        },
        stats,
    );
    let dir = m.join("acme/shards@main");
    let names: Vec<String> = (1..=3)
        .map(|i| format!("model-{i:05}-of-00003.safetensors"))
        .collect();
    // The loader lists the folder and reads the first shard.
    let listed: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
    assert!(listed.len() >= 3);
    hub.clear_requests();
    let n = read_all(&dir.join(&names[0]));
    assert_eq!(n, commit.files[&names[0]].len());
    // Before it opens the second, the second's bytes are on their way or here.
    let sha2 = commit.files[&names[1]].sha256_hex();
    let deadline = Instant::now() + Duration::from_secs(10);
    let shard2 = |hub: &FakeHub| {
        hub.requests()
            .iter()
            .filter(|r| r.listener == Listener::Cdn && r.path.contains(&sha2))
            .count()
    };
    while shard2(&hub) == 0 {
        assert!(
            Instant::now() < deadline,
            "the next shard was never fetched ahead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It then reads right, and nothing of the third is fetched before the second is read.
    let sha3 = commit.files[&names[2]].sha256_hex();
    let before = hub
        .requests()
        .iter()
        .filter(|r| r.path.contains(&sha3))
        .count();
    assert_eq!(before, 0, "read-ahead ran two shards ahead");
    for name in &names[1..] {
        assert_eq!(
            sha256_file(&dir.join(name)).expect("read"),
            commit.files[name].sha256_hex(),
            "{name}"
        );
    }
}

#[test]
fn parts_started_together_ask_the_hub_once_where_the_bytes_are() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::empty().with_large_file("acme/wide", "wide.bin", 96 * MIB);
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");
    // Some latency, so that the first parts all start before any answer arrives.
    hub.set_shaping(Shaping {
        latency: Duration::from_millis(50),
        ..Default::default()
    });
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(&hub, None, Duration::from_secs(30), stats.clone());
    let m = mount_with_stats(client, FsConfig::default(), stats.clone());
    let p = m.join("acme/wide@main/wide.bin");
    std::fs::metadata(&p).expect("stat");
    hub.clear_requests();
    assert_eq!(read_all(&p), 96 * MIB);
    let reqs = hub.requests();
    let resolves = reqs
        .iter()
        .filter(|r| r.listener == Listener::Hub && r.path.contains("/resolve/"))
        .count();
    let ranges = reqs.iter().filter(|r| r.listener == Listener::Cdn).count();
    assert!(ranges >= 8, "read-ahead ran parts in parallel: {ranges}");
    assert_eq!(resolves, 1, "one /resolve for {ranges} range requests");
}
