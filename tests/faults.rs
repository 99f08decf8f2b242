//! Right bytes or a clear error under faults: the fake Hub injects 5xx, 429, resets, cut bodies,
//! stalls, wrong ranges, full bodies and expired CDN URLs; the Hub goes down mid-read; many
//! readers share a small cache.

mod support;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakehub::{FaultKind, Faults, RepoType};
use hubfs::fs::FsConfig;
use support::{errno, http_hub_with, mount, repo_dir, sha256_file};

fn transient_kinds() -> Vec<FaultKind> {
    vec![
        FaultKind::Status500,
        FaultKind::Status503,
        FaultKind::TooManyRequests {
            retry_after_secs: 0,
        },
        FaultKind::Reset,
        FaultKind::CutBody,
        FaultKind::Stall(Duration::from_millis(200)),
        FaultKind::WrongContentRange,
        FaultKind::FullBody,
        FaultKind::ExpiredRedirect,
    ]
}

#[test]
fn every_fixture_file_is_right_at_a_ten_percent_fault_rate() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    hub.set_faults(Faults {
        rate: 0.1,
        kinds: transient_kinds(),
        seed: 7,
        include_api: true,
    });
    let cfg = FsConfig {
        cache_bytes: 32 << 20,
        block_size: 64 << 10,
        max_request_bytes: 1 << 20,
        ..FsConfig::default()
    };
    let stats = Arc::new(hubfs::stats::Stats::default());
    let client = support::http_hub_counting(&hub, None, Duration::from_secs(10), stats.clone());
    let m = mount(client, cfg);
    let mut files = 0;
    for r in &fx.repos {
        if r.access != fakehub::Access::Public || !r.renamed_from.is_empty() {
            continue;
        }
        for rev in r.refs.keys() {
            for (path, data) in &r.resolve(rev).unwrap().files {
                let p = m.join(&format!("{}/{path}", repo_dir(r.repo_type, &r.id, rev)));
                let got = sha256_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert_eq!(got, data.sha256_hex(), "{}", p.display());
                files += 1;
            }
        }
    }
    let injected = hub.faults_injected();
    let total: u64 = injected.values().sum();
    assert!(
        files > 1200 && total > 100,
        "{files} files, faults {injected:?}"
    );
    for kind in [
        "CutBody",
        "Reset",
        "Status500",
        "FullBody",
        "Stall",
        "TooManyRequests",
    ] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "{kind} never injected: {injected:?}"
        );
    }
    // The faults met the direct client too (issue 11), not only reqwest (only a file's later
    // requests go direct: its first asks the Hub for the CDN URL).
    let direct = hubfs::stats::Stats::get(&stats.direct_range_requests);
    assert!(direct > 0, "{direct} range requests on the direct route");
}

#[test]
fn a_commit_that_changes_under_a_read_is_estale_not_mixed_bytes() {
    if !support::fuse_available() {
        return;
    }
    let (hub, _) = support::standard_hub();
    let m = mount(
        http_hub_with(&hub, None, Duration::from_secs(5)),
        FsConfig::default(),
    );
    let p = m.join("acme/tiny-gpt2@main/config.json");
    assert!(p.is_file());
    hub.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::CommitChange],
        seed: 1,
        include_api: false,
    });
    let e = std::fs::read(&p).unwrap_err();
    assert_eq!(errno(&e), libc::ESTALE, "{e}");
}

#[test]
fn hub_down_mid_read_fails_within_the_deadline_then_recovers() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let shard = "model-00002-of-00003.safetensors";
    let data = fx
        .file(RepoType::Model, "acme/sharded", "main", shard)
        .unwrap()
        .clone();
    let deadline = Duration::from_secs(2);
    let m = mount(http_hub_with(&hub, None, deadline), FsConfig::default());
    let dir = m.join("acme/sharded@main");
    let config = std::fs::read(dir.join("config.json")).unwrap();
    // Looked up (metadata cached) but no byte of it read yet.
    let f = std::fs::File::open(dir.join(shard)).unwrap();
    hub.pause();
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    let e = f.read_exact_at(&mut buf, 100_000).unwrap_err();
    let took = t.elapsed();
    assert_eq!(errno(&e), libc::EIO, "{e}");
    assert!(
        took < deadline * 3,
        "EIO took {took:?}, deadline {deadline:?}"
    );
    // The mount stays up and answers what it has.
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), config);
    hub.resume();
    f.read_exact_at(&mut buf, 100_000).unwrap();
    assert_eq!(buf, data.read_at(100_000, 4096));
}

#[test]
fn sixty_four_readers_on_a_small_cache_get_right_bytes_within_the_cap() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let cfg = FsConfig {
        cache_bytes: 4 << 20,
        block_size: 64 << 10,
        max_request_bytes: 512 << 10,
        ..FsConfig::default()
    };
    let m = Arc::new(mount(
        http_hub_with(&hub, None, Duration::from_secs(20)),
        cfg,
    ));
    let mut files: Vec<(String, fakehub::FileData)> = Vec::new();
    let sharded = fx.commit(RepoType::Model, "acme/sharded", "main").unwrap();
    for (p, d) in &sharded.files {
        files.push((format!("acme/sharded@main/{p}"), d.clone()));
    }
    let big = fx
        .file(RepoType::Dataset, "acme/corpus", "main", "blobs/big.bin")
        .unwrap();
    files.push((
        "datasets/acme/corpus@main/blobs/big.bin".into(),
        big.clone(),
    ));
    let files = Arc::new(files);
    let stop = Instant::now() + Duration::from_secs(8);
    let threads: Vec<_> = (0..64usize)
        .map(|i| {
            let (m, files) = (m.clone(), files.clone());
            std::thread::spawn(move || {
                let (path, data) = &files[i % files.len()];
                let p = m.join(path);
                let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                while Instant::now() < stop {
                    match i % 3 {
                        0 => assert_eq!(sha256_file(&p).unwrap(), data.sha256_hex(), "{path}"),
                        1 => {
                            let f = std::fs::File::open(&p).unwrap();
                            for _ in 0..20 {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let off = x % data.len();
                                let len = (1 + x % 200_000).min(data.len() - off) as usize;
                                let mut buf = vec![0u8; len];
                                f.read_exact_at(&mut buf, off).unwrap();
                                assert_eq!(buf, data.read_at(off, len), "{path} at {off}");
                            }
                        }
                        _ => {
                            let f = std::fs::File::open(&p).unwrap();
                            let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
                            for off in (0..map.len()).step_by(40_961) {
                                assert_eq!(
                                    map[off],
                                    data.read_at(off as u64, 1)[0],
                                    "{path} mmap {off}"
                                );
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader");
    }
    let cache = m.fs.block_cache();
    assert!(
        cache.used_bytes() <= cache.capacity(),
        "{} > {}",
        cache.used_bytes(),
        cache.capacity()
    );
}
