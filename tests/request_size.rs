//! FUSE request size through a real mount: hubfs asks for reads as large as the kernel allows
//! (`fs.fuse.max_pages_limit`, Linux 6.13+: 1 MiB by default, 8 MiB once raised to 2048 pages, as
//! the systemd units do), a sequential reader's page-cache misses then reach the daemon as reads
//! that large, and the bytes are right either way. Its own test binary, because it changes a
//! kernel setting for the time of the test (and puts it back).

mod support;

use std::sync::Arc;
use std::time::Duration;

use fakehub::{FakeHub, FakeHubOptions, Fixtures, RepoType};
use hubfs::fs::FsConfig;
use hubfs::stats::Stats;
use support::{http_hub_counting, mount_with_stats, sha256_file};

const MIB: u64 = 1 << 20;
const LIMIT: &str = "/proc/sys/fs/fuse/max_pages_limit";

/// Puts `fs.fuse.max_pages_limit` back as it was, even when the test fails.
struct RestoreLimit(String);

impl Drop for RestoreLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(LIMIT, &self.0);
    }
}

/// Mounts the fake Hub, reads `acme/big`'s file to its end and checks its hash; returns the
/// largest read the kernel sent.
fn largest_read_of_a_sequential_read(hub: &FakeHub, sha256: &str) -> u64 {
    let stats = Arc::new(Stats::default());
    let client = http_hub_counting(hub, None, Duration::from_secs(60), stats.clone());
    let cfg = FsConfig {
        cache_bytes: 128 * MIB,
        ..FsConfig::default()
    };
    let m = mount_with_stats(client, cfg, stats.clone());
    let p = m.join("acme/big@main/big.bin");
    assert_eq!(sha256_file(&p).expect("read"), sha256);
    Stats::get(&stats.read_request_max)
}

#[test]
fn fuse_reads_are_as_large_as_the_kernels_request_limit_allows() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::empty().with_large_file("acme/big", "big.bin", 96 * MIB);
    let sha = fx
        .file(RepoType::Model, "acme/big", "main", "big.bin")
        .expect("fixture")
        .sha256_hex();
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");

    let Ok(before) = std::fs::read_to_string(LIMIT) else {
        // Before Linux 6.13 requests are at most 256 pages, and hubfs asks for that.
        assert_eq!(largest_read_of_a_sequential_read(&hub, &sha), MIB);
        return;
    };
    let _restore = RestoreLimit(before.clone());

    std::fs::write(LIMIT, "256").expect("set fs.fuse.max_pages_limit (root)");
    assert_eq!(
        largest_read_of_a_sequential_read(&hub, &sha),
        MIB,
        "the kernel's default limit (256 pages) gives 1 MiB reads"
    );

    std::fs::write(LIMIT, "2048").expect("set fs.fuse.max_pages_limit (root)");
    assert_eq!(
        largest_read_of_a_sequential_read(&hub, &sha),
        8 * MIB,
        "a raised limit (2048 pages) gives 8 MiB reads"
    );

    // Above hubfs's cap the reads stay at 8 MiB.
    std::fs::write(LIMIT, "4096").expect("set fs.fuse.max_pages_limit (root)");
    assert_eq!(largest_read_of_a_sequential_read(&hub, &sha), 8 * MIB);
}
