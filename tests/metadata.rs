//! Metadata in bounded memory: paged listings, paths-info lookups, the metadata budget, forget,
//! and org listings. First the core over the in-memory Hub, then mounted over the fake Hub
//! (figures from the fake Hub's own request log), then the daemon over a dataset of 1,000,000
//! files in 1,000 folders plus one folder of 200,000 (`find`, RSS sampled throughout).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fakehub::{FakeHub, FakeHubOptions, Fixtures, Listener, RepoType as FxType};
use hubfs::fs::{FsConfig, HubFs};
use hubfs::hub::memory::{fake_sha, MemoryHub};
use hubfs::hub::{RepoId, RepoType};
use hubfs::stats::Stats;

// ------------------------------------------------------------------------------------------
// The core, over the in-memory Hub

/// A dataset `acme/d` with `n` files in `big/` and one file at the root; pages of `page`.
fn core_fs(n: usize, page: usize, metadata_bytes: u64) -> (Arc<MemoryHub>, HubFs<MemoryHub>) {
    let hub = MemoryHub::new();
    hub.set_page_size(page);
    let repo = RepoId::new(RepoType::Dataset, "acme", "d");
    let names: Vec<String> = (0..n).map(|i| format!("big/{i:06}.txt")).collect();
    let mut files: Vec<(&str, &[u8])> = names.iter().map(|p| (p.as_str(), &b"x"[..])).collect();
    files.push(("README.md", b"hi"));
    hub.add_commit(&repo, &fake_sha(1), &files);
    hub.set_ref(&repo, "main", &fake_sha(1));
    let cfg = FsConfig {
        cache_bytes: 4 << 20,
        block_size: 64 << 10,
        max_request_bytes: 1 << 20,
        metadata_bytes,
        ..FsConfig::default()
    };
    let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
    (hub, fs)
}

async fn walk(fs: &HubFs<MemoryHub>, path: &str) -> hubfs::fs::Attr {
    let mut attr = fs.getattr(fs.root()).expect("root");
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = fs
            .lookup(attr.ino, part)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    attr
}

#[tokio::test]
async fn readdir_makes_no_inodes_and_forget_frees_the_looked_up_ones() {
    let (_hub, fs) = core_fs(5000, 100, 64 << 20);
    let big = walk(&fs, "datasets/acme/d@main/big").await;
    let before = fs.inode_count();
    let entries = fs.readdir(big.ino).await.unwrap();
    assert_eq!(entries.len(), 5000);
    assert_eq!(fs.inode_count(), before, "readdir made no inodes");
    // A lookup makes the inode readdir named, with the same number.
    let mut looked = Vec::new();
    for e in entries.iter().take(300) {
        let a = fs.lookup(big.ino, &e.name).await.unwrap();
        assert_eq!(a.ino, e.ino, "{}: readdir's number is the inode's", e.name);
        fs.lookup(big.ino, &e.name).await.unwrap();
        looked.push(a.ino);
    }
    assert_eq!(fs.inode_count(), before + 300);
    let bytes = fs.gauges().metadata_bytes;
    for ino in &looked {
        fs.forget(*ino, 2);
    }
    assert_eq!(fs.inode_count(), before, "forget freed every one");
    assert!(fs.gauges().metadata_bytes < bytes, "and their bytes");
}

#[tokio::test]
async fn listing_pages_stay_within_the_metadata_budget_and_each_is_fetched_once() {
    // 20,000 entries in pages of 500 is about 2.5 MB of pages; the budget holds a fraction.
    let limit = 600 << 10;
    let (hub, fs) = core_fs(20_000, 500, limit);
    let big = walk(&fs, "datasets/acme/d@main/big").await;
    let mut index = 0u64;
    let mut seen = 0;
    loop {
        let part = fs.readdir_at(big.ino, index).await.unwrap();
        if part.is_empty() {
            break;
        }
        seen += part.len();
        index += part.len() as u64;
        let g = fs.gauges();
        assert!(g.metadata_bytes <= limit, "{} > {limit}", g.metadata_bytes);
    }
    assert_eq!(seen, 20_000);
    assert_eq!(hub.calls.pages.load(Ordering::SeqCst), 40, "each page once");
    let g = fs.gauges();
    assert!(
        g.listing_pages < 40,
        "pages were evicted: {} cached",
        g.listing_pages
    );
    assert!(g.listing_pages >= 1);
    // Going back to an evicted page fetches that page alone (the first pages went first).
    let again = fs.readdir_at(big.ino, 10).await.unwrap();
    assert_eq!(again.len(), 490, "the rest of the first page");
    assert_eq!(again[0].name, "000010.txt");
    assert_eq!(hub.calls.pages.load(Ordering::SeqCst), 41);
    // A name on an evicted page costs one paths-info, and exists.
    let before = hub.calls.paths_info.load(Ordering::SeqCst);
    let a = fs.lookup(big.ino, "010001.txt").await.unwrap();
    assert_eq!(a.size, 1);
    assert_eq!(hub.calls.paths_info.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn stating_every_entry_after_a_listing_needs_no_hub_call_even_past_the_budget() {
    // 5000 entries: about 640 KB of pages, which fit in 1 MiB; their 5000 inodes (held as if by
    // the kernel) are three times that. Pages keep half the budget and the scan evicts the pages
    // behind it, so no lookup needs paths-info.
    let (hub, fs) = core_fs(5000, 100, 1 << 20);
    let big = walk(&fs, "datasets/acme/d@main/big").await;
    let entries = fs.readdir(big.ino).await.unwrap();
    let asked = hub.calls.paths_info.load(Ordering::SeqCst);
    for e in &entries {
        fs.lookup(big.ino, &e.name).await.unwrap();
    }
    let g = fs.gauges();
    assert!(
        g.metadata_bytes > 1 << 20,
        "the inodes alone pass the budget"
    );
    assert_eq!(
        hub.calls.paths_info.load(Ordering::SeqCst),
        asked,
        "every name came from a cached page"
    );
    assert_eq!(
        hub.calls.pages.load(Ordering::SeqCst),
        50,
        "and no page twice"
    );
}

#[tokio::test]
async fn the_first_entries_need_only_the_first_page() {
    let (hub, fs) = core_fs(10_000, 1000, 64 << 20);
    let big = walk(&fs, "datasets/acme/d@main/big").await;
    let first = fs.readdir_at(big.ino, 0).await.unwrap();
    assert_eq!(first.len(), 1000);
    assert_eq!(hub.calls.pages.load(Ordering::SeqCst), 1);
    assert_eq!(hub.calls.list.load(Ordering::SeqCst), 0, "no whole listing");
}

#[tokio::test]
async fn an_org_lists_its_repos_from_the_search_api_once_per_ttl() {
    let hub = MemoryHub::new();
    hub.set_page_size(2);
    for name in ["a", "b", "c", "d", "e"] {
        let r = RepoId::new(RepoType::Model, "acme", name);
        hub.add_commit(&r, &fake_sha(1), &[("f", b"x")]);
        hub.set_ref(&r, "main", &fake_sha(1));
    }
    let ds = RepoId::new(RepoType::Dataset, "acme", "only-dataset");
    hub.add_commit(&ds, &fake_sha(1), &[("f", b"x")]);
    let fs = HubFs::new(hub.clone(), FsConfig::default(), Arc::new(Stats::default()));
    let org = walk(&fs, "acme").await;
    let names = |v: Vec<hubfs::fs::DirEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(
        names(fs.readdir(org.ino).await.unwrap()),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        hub.calls.search.load(Ordering::SeqCst),
        3,
        "three pages of two"
    );
    assert_eq!(names(fs.readdir(org.ino).await.unwrap()).len(), 5);
    assert_eq!(hub.calls.search.load(Ordering::SeqCst), 3, "cached");
    // A name the listing has resolves; the listing's number is not an inode until then.
    let a = fs.lookup(org.ino, "c").await.unwrap();
    assert!(fs.getattr(a.ino).is_ok());
    let dorg = walk(&fs, "datasets/acme").await;
    assert_eq!(names(fs.readdir(dorg.ino).await.unwrap()), ["only-dataset"]);
}

// ------------------------------------------------------------------------------------------
// Mounted, over the fake Hub

/// Hub-listener requests the fake Hub logged (API and `/resolve/`).
fn hub_requests(hub: &FakeHub) -> Vec<String> {
    hub.requests()
        .into_iter()
        .filter(|r| r.listener == Listener::Hub)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn big_folder_hub() -> FakeHub {
    let fx = Fixtures::empty().with_many_files("acme/many", 3, 10, 200_000);
    FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub")
}

#[test]
fn the_first_entries_of_a_200k_folder_come_in_two_round_trips() {
    if !support::fuse_available() {
        return;
    }
    let hub = big_folder_hub();
    let m = support::mount(support::http_hub(&hub, None), FsConfig::default());
    let repo = m.join("datasets/acme/many@main");
    std::fs::metadata(&repo).expect("repo dir");
    hub.clear_requests();
    let first: Vec<String> = std::fs::read_dir(repo.join("big"))
        .expect("opendir")
        .take(20)
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let reqs = hub_requests(&hub);
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|n| n.ends_with(".txt")), "{first:?}");
    assert!(
        reqs.len() <= 2,
        "first entries took {} requests: {reqs:#?}",
        reqs.len()
    );
    assert!(reqs.iter().any(|r| r.contains("/paths-info/")), "{reqs:#?}");
    assert_eq!(
        reqs.iter().filter(|r| r.contains("/tree/")).count(),
        1,
        "{reqs:#?}"
    );
}

#[test]
fn a_stat_in_an_unlisted_200k_folder_costs_two_requests_and_no_listing() {
    if !support::fuse_available() {
        return;
    }
    let hub = big_folder_hub();
    let m = support::mount(support::http_hub(&hub, None), FsConfig::default());
    let repo = m.join("datasets/acme/many@main");
    std::fs::metadata(&repo).expect("repo dir");
    hub.clear_requests();
    let p = repo.join("big/0123456.txt");
    let meta = std::fs::metadata(&p).expect("stat");
    let reqs = hub_requests(&hub);
    assert_eq!(meta.len(), "big/0123456.txt\n".len() as u64);
    assert!(
        reqs.len() <= 2,
        "stat took {} requests: {reqs:#?}",
        reqs.len()
    );
    assert!(reqs.iter().all(|r| r.contains("/paths-info/")), "{reqs:#?}");
    // A missing name: one more request, then the kernel and the core remember it.
    for _ in 0..3 {
        let e = std::fs::metadata(repo.join("big/nope.txt")).unwrap_err();
        assert_eq!(support::errno(&e), libc::ENOENT);
    }
    assert_eq!(hub_requests(&hub).len(), reqs.len() + 1);
    assert_eq!(std::fs::read(&p).expect("read"), b"big/0123456.txt\n");
}

#[test]
fn ls_of_an_org_lists_its_repos_of_that_type() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::standard();
    let hub = FakeHub::start(
        fx.clone(),
        FakeHubOptions {
            page_size: 2,
            ..Default::default()
        },
    )
    .expect("fake hub");
    let m = support::mount(support::http_hub(&hub, None), FsConfig::default());
    let ls = |rel: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(m.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let expect = |t: FxType| -> Vec<String> {
        let mut v: Vec<String> = fx
            .repos
            .iter()
            .filter(|r| r.repo_type == t && r.access != fakehub::Access::Private)
            .filter_map(|r| r.id.strip_prefix("acme/").map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let models = ls("acme");
    assert!(models.len() >= 3, "{models:?}");
    assert_eq!(models, expect(FxType::Model));
    assert_eq!(ls("datasets/acme"), expect(FxType::Dataset));
    assert_eq!(ls("spaces/acme"), expect(FxType::Space));
    // Listed names work as directories; an unlisted one is still looked up directly.
    let first = &models[0];
    assert!(m.join(&format!("acme/{first}")).is_dir());
    let searches = hub_requests(&hub)
        .iter()
        .filter(|r| r.contains("/api/models?"))
        .count();
    assert!(searches >= 2, "paginated: {searches} search requests");
    assert!(m.join("acme/tiny-gpt2@main/config.json").is_file());
}

// ------------------------------------------------------------------------------------------
// The daemon over a million files

fn vm_rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

fn stats_of(mnt: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(mnt.join(".hubfs/stats")).expect("stats");
    serde_json::from_str(&s).expect("stats JSON")
}

/// `find` over `acme/many` (HUBFS_MANY_FOLDERS folders of 1000 files, default 1000, plus
/// `big/` of 200,000) through a `hubfs mount` daemon, sampling its VmRSS every 50 ms.
#[test]
fn find_lists_every_file_of_a_million_file_dataset_in_bounded_memory() {
    if !support::fuse_available() {
        return;
    }
    let folders: usize = std::env::var("HUBFS_MANY_FOLDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let t0 = Instant::now();
    let fx = Fixtures::empty().with_many_files("acme/many", folders, 1000, 200_000);
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");
    eprintln!(
        "fixture of {} files ready in {:?}",
        folders * 1000 + 200_000,
        t0.elapsed()
    );
    let mnt = tempfile::tempdir().expect("mountpoint");
    let (cache, meta) = (64u64 << 20, 64u64 << 20);
    let d = support::daemon::spawn(
        mnt.path(),
        &[
            "--endpoint",
            &hub.endpoint(),
            "--cache-size",
            "64MiB",
            "--metadata-size",
            "64MiB",
        ],
        &[],
    );
    d.wait_mounted();
    let pid = d.child.id();
    let peak = Arc::new(AtomicU64::new(vm_rss_bytes(pid).unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = vm_rss_bytes(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let root = mnt.path().join("datasets/acme/many@main");
    let t = Instant::now();
    let mut child = Command::new("find")
        .arg(&root)
        .args(["-type", "f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("find");
    let out = child.stdout.take().expect("stdout");
    let mut files = 0usize;
    let mut checked = 0usize;
    for line in BufReader::new(out).lines() {
        let line = line.expect("line");
        files += 1;
        // Every 100,000th file: its bytes are its path.
        if files % 100_000 == 1 {
            let rel = line
                .strip_prefix(&format!("{}/", root.display()))
                .expect("under root");
            let got = std::fs::read(&line).expect("read");
            assert_eq!(got, format!("{rel}\n").into_bytes(), "{line}");
            checked += 1;
        }
    }
    let status = child.wait().expect("find exit");
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let stats = stats_of(mnt.path());
    let peak = peak.load(Ordering::Relaxed);
    let bound = cache + meta + (64 << 20);
    eprintln!(
        "find: {files} files in {took:?}; daemon VmRSS peak {:.1} MiB (bound {} MiB); metadata {:.1} MiB, {} pages cached, {} fetched, {} inodes",
        peak as f64 / (1 << 20) as f64,
        bound >> 20,
        stats["metadata_bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64,
        stats["listing_pages"],
        stats["listing_pages_fetched_total"],
        stats["inodes"],
    );
    assert!(status.success(), "find failed; daemon log:\n{}", d.log());
    assert_eq!(files, folders * 1000 + 200_000);
    assert!(checked >= 2);
    assert!(peak < bound, "VmRSS peak {peak} over {bound}");
    assert!(stats["metadata_bytes"].as_u64().unwrap_or(u64::MAX) <= meta);
    let tree_requests = hub
        .requests()
        .iter()
        .filter(|r| r.path.contains("/tree/"))
        .count();
    // One page per 1000-file folder, 200 for big/, 2 for the root: each page once.
    assert_eq!(tree_requests, folders + 200 + (folders + 1).div_ceil(1000));
}

#[test]
fn a_shard_looked_up_by_paths_info_still_reads_ahead_into_the_next_shard() {
    if !support::fuse_available() {
        return;
    }
    let fx = Fixtures::empty().with_sharded_model("acme/shards", 3, 24 << 20);
    let commit = fx
        .commit(FxType::Model, "acme/shards", "main")
        .expect("fixture")
        .clone();
    let hub = FakeHub::start(fx, FakeHubOptions::default()).expect("fake hub");
    let m = support::mount(
        support::http_hub(&hub, None),
        FsConfig {
            cache_bytes: 128 << 20,
            ..FsConfig::default()
        },
    );
    let first = m.join("acme/shards@main/model-00001-of-00003.safetensors");
    // The loader opens the shard by name: no listing.
    let bytes = std::fs::read(&first).expect("read shard 1");
    assert_eq!(
        bytes.len() as u64,
        commit.files["model-00001-of-00003.safetensors"].len()
    );
    let sha2 = commit.files["model-00002-of-00003.safetensors"].sha256_hex();
    let shard2 = || {
        hub.requests()
            .iter()
            .filter(|r| r.listener == Listener::Cdn && r.path.contains(&sha2))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while shard2() == 0 {
        assert!(
            Instant::now() < deadline,
            "the next shard was never fetched ahead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reqs = hub_requests(&hub);
    assert_eq!(
        reqs.iter().filter(|r| r.contains("/tree/")).count(),
        0,
        "{reqs:#?}"
    );
    assert_eq!(
        reqs.iter().filter(|r| r.contains("/paths-info/")).count(),
        1,
        "{reqs:#?}"
    );
}

#[tokio::test]
async fn an_org_whose_search_fails_still_lists_the_names_already_resolved() {
    let hub = MemoryHub::new();
    let r = RepoId::new(RepoType::Model, "acme", "m");
    hub.add_commit(&r, &fake_sha(1), &[("f", b"x")]);
    hub.set_ref(&r, "main", &fake_sha(1));
    let fs = HubFs::new(hub.clone(), FsConfig::default(), Arc::new(Stats::default()));
    walk(&fs, "acme/m@main").await;
    hub.fail_search(Some(hubfs::hub::HubError::Network {
        url: "memory://hub".into(),
        message: "connection refused".into(),
    }));
    let org = walk(&fs, "acme").await;
    let names: Vec<String> = fs
        .readdir(org.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["m@main"]);
    assert!(
        hub.calls.search.load(Ordering::SeqCst) >= 1,
        "the search was asked"
    );
    // Once the Hub answers again (after the failure, which is not cached), the repos come back.
    hub.fail_search(None);
    let names: Vec<String> = fs
        .readdir(org.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["m", "m@main"]);
}
