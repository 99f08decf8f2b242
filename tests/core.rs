//! The filesystem core driven directly (no mount, no HTTP) over the in-memory Hub.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hubfs::fs::{FsConfig, FsError, HubFs, Kind, Lifetime, XATTR_COMMIT};
use hubfs::hub::memory::{fake_sha, MemoryHub};
use hubfs::hub::{HttpContext, HubError, RepoId, RepoType};
use hubfs::stats::Stats;

fn model() -> RepoId {
    RepoId::new(RepoType::Model, "acme", "m")
}

fn setup(ttl: Duration) -> (Arc<MemoryHub>, HubFs<MemoryHub>) {
    setup_with_cache(ttl, 4 << 20)
}

fn setup_with_cache(ttl: Duration, cache_bytes: u64) -> (Arc<MemoryHub>, HubFs<MemoryHub>) {
    let hub = MemoryHub::new();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    hub.add_commit(
        &model(),
        &fake_sha(1),
        &[
            ("config.json", b"{\"v\":1}"),
            ("model.safetensors", &big),
            ("sub/dir/deep.txt", b"deep"),
        ],
    );
    hub.add_commit(&model(), &fake_sha(2), &[("config.json", b"{\"v\":2}")]);
    hub.set_ref(&model(), "main", &fake_sha(1));
    hub.set_ref(&model(), "v1.0", &fake_sha(1));
    let ds = RepoId::new(RepoType::Dataset, "acme", "d");
    hub.add_commit(&ds, &fake_sha(3), &[("data/a.txt", b"a")]);
    hub.set_ref(&ds, "main", &fake_sha(3));
    let cfg = FsConfig {
        revision_ttl: ttl,
        block_size: 64 * 1024,
        cache_bytes,
        max_request_bytes: 1 << 20,
        ..FsConfig::default()
    };
    let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
    (hub, fs)
}

async fn walk(fs: &HubFs<MemoryHub>, path: &str) -> Result<hubfs::fs::Attr, FsError> {
    let mut ino = fs.root();
    let mut attr = fs.getattr(ino)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = fs.lookup(ino, part).await?;
        ino = attr.ino;
    }
    Ok(attr)
}

async fn read_all(fs: &HubFs<MemoryHub>, ino: u64, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, 128 * 1024).await.unwrap();
        assert!(!chunk.is_empty());
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn lookup_stat_and_read_follow_the_grammar() {
    let (_hub, fs) = setup(Duration::from_secs(60));
    let a = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(a.kind, Kind::File);
    assert_eq!(a.size, 7);
    assert_eq!(a.perm, 0o444);
    assert_eq!(&fs.read(a.ino, 0, 100).await.unwrap()[..], b"{\"v\":1}");
    let d = walk(&fs, "acme/m/sub/dir").await.unwrap();
    assert_eq!((d.kind, d.perm), (Kind::Dir, 0o555));
    let f = walk(&fs, "datasets/acme/d@main/data/a.txt").await.unwrap();
    assert_eq!(&fs.read(f.ino, 0, 10).await.unwrap()[..], b"a");
    let big = walk(&fs, "acme/m@v1.0/model.safetensors").await.unwrap();
    let want: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(read_all(&fs, big.ino, big.size).await, want);
    // Reads past the end are empty; reads across the end are short.
    assert!(fs.read(big.ino, big.size, 10).await.unwrap().is_empty());
    assert_eq!(fs.read(big.ino, big.size - 3, 10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn missing_names_are_enoent() {
    let (_hub, fs) = setup(Duration::from_secs(60));
    for p in [
        "acme/m@main/nope.json",
        "acme/m@nobranch",
        "acme/nosuchrepo@main",
        "acme/m@main/sub/nope",
        ".hidden",
        "acme/m@..",
        "acme/m@%2e%2e",
    ] {
        let e = walk(&fs, p).await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT, "{p}: {e:?}");
    }
    let e = walk(&fs, "acme/m@main/config.json/x").await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOTDIR);
}

#[tokio::test]
async fn private_and_gated_repos_are_eacces() {
    let (hub, fs) = setup(Duration::from_secs(60));
    hub.deny(
        &model(),
        HubError::Gated {
            context: HttpContext {
                status: 401,
                error_code: Some("GatedRepo".into()),
                ..Default::default()
            },
        },
    );
    let e = walk(&fs, "acme/m@main").await.unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    assert!(e.hint().unwrap().contains("token"));
}

#[tokio::test]
async fn writes_are_erofs_and_dirs_are_not_files() {
    let (_hub, fs) = setup(Duration::from_secs(60));
    let a = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(fs.open(a.ino, true).unwrap_err().errno(), libc::EROFS);
    fs.open(a.ino, false).unwrap();
    let d = walk(&fs, "acme/m@main").await.unwrap();
    assert_eq!(fs.open(d.ino, false).unwrap_err().errno(), libc::EISDIR);
}

#[tokio::test]
async fn commit_xattr_and_lifetimes() {
    let (_hub, fs) = setup(Duration::from_secs(60));
    let root = walk(&fs, "acme/m@main").await.unwrap();
    assert_eq!(root.lifetime, Lifetime::Short, "branch names may move");
    assert_eq!(
        fs.getxattr(root.ino, XATTR_COMMIT).unwrap(),
        fake_sha(1).into_bytes()
    );
    let f = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(f.lifetime, Lifetime::Immutable);
    assert_eq!(
        fs.getxattr(f.ino, XATTR_COMMIT).unwrap(),
        fake_sha(1).into_bytes()
    );
    assert_eq!(
        fs.listxattr(f.ino).unwrap(),
        ["user.hf.commit", "user.hf.repo", "user.hf.path"]
    );
    assert_eq!(fs.getxattr(f.ino, "user.hf.repo").unwrap(), b"acme/m");
    assert_eq!(fs.getxattr(f.ino, "user.hf.path").unwrap(), b"config.json");
    assert_eq!(
        fs.getxattr(fs.root(), XATTR_COMMIT).unwrap_err().errno(),
        libc::ENODATA
    );
    let pinned = walk(&fs, &format!("acme/m@{}", fake_sha(2))).await.unwrap();
    assert_eq!(pinned.lifetime, Lifetime::Immutable);
    let c = walk(&fs, &format!("acme/m@{}/config.json", fake_sha(2)))
        .await
        .unwrap();
    assert_eq!(&fs.read(c.ino, 0, 100).await.unwrap()[..], b"{\"v\":2}");
}

#[tokio::test]
async fn readdir_lists_tree_and_known_names() {
    let (_hub, fs) = setup(Duration::from_secs(60));
    walk(&fs, "acme/m@main/config.json").await.unwrap();
    walk(&fs, "datasets/acme/d@main").await.unwrap();
    let names = |v: Vec<hubfs::fs::DirEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(
        names(fs.readdir(fs.root()).await.unwrap()),
        ["datasets", "spaces", "buckets", "acme"]
    );
    let org = walk(&fs, "acme").await.unwrap();
    // The org's repos from the search API, and the names bound so far.
    assert_eq!(names(fs.readdir(org.ino).await.unwrap()), ["m", "m@main"]);
    let repo = walk(&fs, "acme/m@main").await.unwrap();
    assert_eq!(
        names(fs.readdir(repo.ino).await.unwrap()),
        ["config.json", "model.safetensors", "sub"]
    );
    let dsorg = walk(&fs, "datasets/acme").await.unwrap();
    assert_eq!(names(fs.readdir(dsorg.ino).await.unwrap()), ["d", "d@main"]);
}

#[tokio::test]
async fn a_name_in_an_unlisted_folder_costs_one_paths_info_then_none() {
    let (hub, fs) = setup(Duration::from_secs(60));
    walk(&fs, "acme/m@main/config.json").await.unwrap();
    walk(&fs, "acme/m@main/model.safetensors").await.unwrap();
    assert_eq!(hub.calls.resolve.load(Ordering::SeqCst), 1);
    assert_eq!(hub.calls.paths_info.load(Ordering::SeqCst), 2);
    assert_eq!(hub.calls.pages.load(Ordering::SeqCst), 0, "no listing");
    walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(hub.calls.resolve.load(Ordering::SeqCst), 1);
    assert_eq!(hub.calls.paths_info.load(Ordering::SeqCst), 2);
    // A missing name: one paths-info, then remembered.
    for _ in 0..3 {
        let e = walk(&fs, "acme/m@main/ghost.bin").await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
    }
    assert_eq!(hub.calls.paths_info.load(Ordering::SeqCst), 3);
    // Once the folder is listed, its names cost nothing.
    let root = walk(&fs, "acme/m@main").await.unwrap();
    fs.readdir(root.ino).await.unwrap();
    assert_eq!(hub.calls.pages.load(Ordering::SeqCst), 1);
    let sub = walk(&fs, "acme/m@main/sub").await.unwrap();
    assert_eq!(sub.kind, Kind::Dir);
    let e = walk(&fs, "acme/m@main/other").await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert_eq!(hub.calls.paths_info.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_branch_moving_mid_load_never_mixes_versions() {
    let (hub, fs) = setup(Duration::from_millis(300));
    let old = walk(&fs, "acme/m@main/config.json").await.unwrap();
    hub.set_ref(&model(), "main", &fake_sha(2));
    // Still in use: the name stays on the old commit.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = walk(&fs, "acme/m@main/config.json").await.unwrap();
        assert_eq!(again.ino, old.ino);
        assert_eq!(&fs.read(again.ino, 0, 100).await.unwrap()[..], b"{\"v\":1}");
    }
    // Idle past the TTL: the next load sees the new commit...
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_ne!(new.ino, old.ino);
    assert_eq!(&fs.read(new.ino, 0, 100).await.unwrap()[..], b"{\"v\":2}");
    let root = walk(&fs, "acme/m@main").await.unwrap();
    assert_eq!(
        fs.getxattr(root.ino, XATTR_COMMIT).unwrap(),
        fake_sha(2).into_bytes()
    );
    // ...while a file opened before still reads the old commit.
    assert_eq!(&fs.read(old.ino, 0, 100).await.unwrap()[..], b"{\"v\":1}");
}

#[tokio::test]
async fn concurrent_readers_share_fetches() {
    let (hub, fs) = setup(Duration::from_secs(60));
    let fs = Arc::new(fs);
    let f = walk(&fs, "acme/m@main/model.safetensors").await.unwrap();
    hub.set_range_delay(Some(Duration::from_millis(100)));
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let fs = fs.clone();
        tasks.push(tokio::spawn(
            async move { fs.read(f.ino, i * 1000, 1000).await },
        ));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let got = t.await.unwrap().unwrap();
        let want: Vec<u8> = (i as u32 * 1000..i as u32 * 1000 + 1000)
            .map(|x| (x % 253) as u8)
            .collect();
        assert_eq!(&got[..], &want[..]);
    }
    let prefetches = fs.stats().prefetch_requests.load(Ordering::SeqCst);
    assert_eq!(
        hub.calls.range.load(Ordering::SeqCst),
        1 + prefetches,
        "the block all 32 read was fetched once (besides read-ahead)"
    );
}

#[tokio::test]
async fn memory_stays_under_the_cache_capacity() {
    let (hub, fs) = setup_with_cache(Duration::from_secs(60), 1 << 20);
    let f = walk(&fs, "acme/m@main/model.safetensors").await.unwrap();
    let cap = fs.block_cache().capacity();
    let mut before = 0;
    for pass in 0..3 {
        read_all(&fs, f.ino, f.size).await;
        assert!(fs.block_cache().used_bytes() <= cap);
        let fetched = hub.calls.bytes.load(Ordering::SeqCst) - before;
        before += fetched;
        // A 3 MB file does not fit a 1 MiB cache: each pass refetches all but what the cache
        // kept, and read-ahead fetches nothing twice.
        assert!(fetched >= f.size - cap, "pass {pass} fetched {fetched}");
        assert!(fetched <= f.size, "pass {pass} fetched {fetched}");
    }
}

#[tokio::test]
async fn missing_repos_and_revisions_are_remembered_for_a_while() {
    let (hub, fs) = setup(Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(
            walk(&fs, "acme/m@nobranch").await.unwrap_err().errno(),
            libc::ENOENT
        );
        assert_eq!(
            walk(&fs, "acme/ghost").await.unwrap_err().errno(),
            libc::ENOENT
        );
    }
    assert_eq!(
        hub.calls.resolve.load(Ordering::SeqCst),
        2,
        "one Hub request per missing name"
    );
    let org = walk(&fs, "acme").await.unwrap();
    let listed: Vec<String> = fs
        .readdir(org.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        listed,
        ["m"],
        "the org's repos; probes leave no entries behind"
    );
}

#[tokio::test]
async fn a_hub_outage_keeps_serving_the_bound_commit_after_the_ttl() {
    let (hub, fs) = setup(Duration::from_millis(100));
    let a = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(&fs.read(a.ino, 0, 100).await.unwrap()[..], b"{\"v\":1}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.deny(
        &model(),
        HubError::Network {
            url: "memory://hub".into(),
            message: "connection refused".into(),
        },
    );
    // Due for re-resolution, but the Hub is down: the name stays on its commit (whose listing and
    // blocks are cached), instead of failing.
    let again = walk(&fs, "acme/m@main/config.json").await.unwrap();
    assert_eq!(again.ino, a.ino);
    assert_eq!(&fs.read(again.ino, 0, 100).await.unwrap()[..], b"{\"v\":1}");
    // A name never resolved before has nothing to fall back on.
    assert_eq!(
        walk(&fs, "acme/m@v1.0").await.unwrap_err().errno(),
        libc::EIO
    );
}

// ---------------------------------------------------------------- one-repo mounts (fs/root.rs)

use hubfs::fs::root::{XATTR_PATH, XATTR_REPO, XATTR_REVISION};
use hubfs::fs::MountRoot;

fn one_repo_fs(subfolder: &str) -> (Arc<MemoryHub>, HubFs<MemoryHub>) {
    let hub = MemoryHub::new();
    let m = RepoId::new(RepoType::Model, "acme", "m");
    hub.add_commit(
        &m,
        &fake_sha(1),
        &[("config.json", b"{}"), ("ckpt/step-1/w.bin", b"weights")],
    );
    hub.add_commit(&m, &fake_sha(2), &[("config.json", b"{\"v\":2}")]);
    hub.set_ref(&m, "main", &fake_sha(1));
    let cfg = FsConfig {
        root: MountRoot::parse_repo("acme/m@main", None, Some(subfolder)).unwrap(),
        revision_ttl: std::time::Duration::ZERO,
        ..FsConfig::default()
    };
    let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
    (hub, fs)
}

#[tokio::test]
async fn the_root_of_a_one_repo_mount_is_the_repo_pinned_to_its_commit() {
    let (hub, fs) = one_repo_fs("");
    assert_eq!(fs.resolve_root().await.unwrap(), Some(fake_sha(1)));
    let root = fs.getattr(fs.root()).unwrap();
    assert_eq!(
        (root.ino, root.kind, root.lifetime),
        (fs.root(), Kind::Dir, Lifetime::Immutable)
    );
    let mut names: Vec<String> = fs
        .readdir(fs.root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["ckpt", "config.json"]);
    assert_eq!(
        fs.getxattr(fs.root(), XATTR_COMMIT).unwrap(),
        fake_sha(1).into_bytes()
    );
    assert_eq!(fs.getxattr(fs.root(), XATTR_REVISION).unwrap(), b"main");
    assert_eq!(fs.getxattr(fs.root(), XATTR_REPO).unwrap(), b"acme/m");
    // The control directory is still at the root.
    assert_eq!(
        fs.lookup(fs.root(), hubfs::fs::CONTROL_DIR)
            .await
            .unwrap()
            .kind,
        Kind::Dir
    );
    // The branch moves: the mount stays on its commit (revision_ttl 0 would re-resolve a
    // branch directory of a whole-Hub mount at once).
    hub.set_ref(
        &RepoId::new(RepoType::Model, "acme", "m"),
        "main",
        &fake_sha(2),
    );
    let c = fs.lookup(fs.root(), "config.json").await.unwrap();
    assert_eq!(fs.read(c.ino, 0, 100).await.unwrap(), &b"{}"[..]);
}

#[tokio::test]
async fn a_subfolder_mount_walks_to_the_folder_and_refuses_a_file() {
    let (_, fs) = one_repo_fs("ckpt/step-1");
    fs.resolve_root().await.unwrap();
    let w = fs.lookup(fs.root(), "w.bin").await.unwrap();
    assert_eq!(fs.read(w.ino, 0, 100).await.unwrap(), &b"weights"[..]);
    assert_eq!(fs.getxattr(fs.root(), XATTR_PATH).unwrap(), b"ckpt/step-1");
    let (_, fs) = one_repo_fs("config.json");
    assert!(matches!(fs.resolve_root().await, Err(FsError::NotDir)));
    let (_, fs) = one_repo_fs("nope");
    assert_eq!(fs.resolve_root().await.unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test]
async fn readdir_and_lookup_give_one_inode_number_per_entry_in_one_repo_and_subfolder_mounts() {
    for sub in ["", "ckpt"] {
        let (_, fs) = one_repo_fs(sub);
        fs.resolve_root().await.unwrap();
        for e in fs.readdir(fs.root()).await.unwrap() {
            let a = fs.lookup(fs.root(), &e.name).await.unwrap();
            assert_eq!(
                a.ino, e.ino,
                "{sub}/{}: readdir says inode {}, lookup {}",
                e.name, e.ino, a.ino
            );
        }
    }
}

#[tokio::test]
async fn the_control_dir_is_found_at_a_one_repo_root_after_its_listing_is_cached() {
    let (_, fs) = one_repo_fs("");
    fs.resolve_root().await.unwrap();
    fs.readdir(fs.root()).await.unwrap();
    // The FUSE thread's fast path must not answer from the cached listing.
    assert!(fs
        .lookup_cached(fs.root(), hubfs::fs::CONTROL_DIR)
        .is_none());
    let c = fs.lookup(fs.root(), hubfs::fs::CONTROL_DIR).await.unwrap();
    assert_eq!(c.kind, Kind::Dir);
}
