//! Storage Buckets in the filesystem core, driven directly over the in-memory Hub (no mount, no
//! HTTP): version pinning, the TTL and its cheap refresh, attributes and errors.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hubfs::fs::buckets::XATTR_XET_HASH;
use hubfs::fs::{FsConfig, FsError, HubFs, Kind, Lifetime};
use hubfs::hub::buckets::BucketId;
use hubfs::hub::memory::MemoryHub;
use hubfs::stats::Stats;

fn bucket() -> BucketId {
    BucketId::new("acme", "ckpt")
}

fn setup(ttl: Duration) -> (Arc<MemoryHub>, HubFs<MemoryHub>) {
    let hub = MemoryHub::new();
    let cfg = FsConfig {
        block_size: 64 * 1024,
        cache_bytes: 4 << 20,
        max_request_bytes: 1 << 20,
        bucket_ttl: ttl,
        ..FsConfig::default()
    };
    let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
    (hub, fs)
}

async fn walk(fs: &HubFs<MemoryHub>, path: &str) -> Result<hubfs::fs::Attr, FsError> {
    let mut attr = fs.getattr(fs.root())?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        attr = fs.lookup(attr.ino, part).await?;
    }
    Ok(attr)
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn an_open_version_reads_its_own_bytes_or_estale_and_a_later_lookup_sees_the_new_one() {
    let (hub, fs) = setup(Duration::from_secs(30));
    let old = bytes(1, 24 << 20);
    let new = bytes(2, 24 << 20);
    let h1 = hub.put_object(&bucket(), "w.bin", &old);
    let a = walk(&fs, "buckets/acme/ckpt/w.bin").await.unwrap();
    assert_eq!(
        (a.kind, a.size, a.lifetime),
        (Kind::File, old.len() as u64, Lifetime::Short)
    );
    assert_eq!(fs.getxattr(a.ino, XATTR_XET_HASH).unwrap(), h1.as_bytes());
    fs.open(a.ino, false).unwrap();
    let head = fs.read(a.ino, 0, 65536).await.unwrap();
    assert_eq!(&head[..], &old[..65536]);

    hub.put_object(&bucket(), "w.bin", &new);
    // Within the TTL the cached listing still names the old version.
    let same = walk(&fs, "buckets/acme/ckpt/w.bin").await.unwrap();
    assert_eq!(same.ino, a.ino);
    // What is cached is still the old version; what is not fails: never the new bytes.
    let again = fs.read(a.ino, 0, 65536).await.unwrap();
    assert_eq!(&again[..], &old[..65536]);
    let end = old.len() as u64 - 65536;
    let e = fs
        .read(a.ino, end, 65536)
        .await
        .expect_err("the object changed");
    assert_eq!(e.errno(), libc::ESTALE);
    fs.release(a.ino);

    // The ESTALE made the bucket be asked again: the next lookup, within the TTL, sees the new
    // version.
    let b = walk(&fs, "buckets/acme/ckpt/w.bin").await.unwrap();
    assert_ne!(b.ino, a.ino, "a new version is a new inode");
    let tail = fs.read(b.ino, end, 65536).await.unwrap();
    assert_eq!(&tail[..], &new[end as usize..]);
    assert_ne!(fs.getxattr(b.ino, XATTR_XET_HASH).unwrap(), h1.as_bytes());
}

#[tokio::test]
async fn after_the_ttl_an_unchanged_bucket_costs_one_info_and_no_listing() {
    let (hub, fs) = setup(Duration::from_millis(30));
    hub.put_object(&bucket(), "a/x.txt", b"x");
    hub.put_object(&bucket(), "b.txt", b"b");
    let root = walk(&fs, "buckets/acme/ckpt").await.unwrap();
    let names = |v: Vec<hubfs::fs::DirEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(fs.readdir(root.ino).await.unwrap()), ["a", "b.txt"]);
    let (lists, infos) = (
        hub.calls.list.load(Ordering::Relaxed),
        hub.calls.bucket_info.load(Ordering::Relaxed),
    );
    // Within the TTL: nothing asked.
    fs.readdir(root.ino).await.unwrap();
    assert_eq!(hub.calls.bucket_info.load(Ordering::Relaxed), infos);
    tokio::time::sleep(Duration::from_millis(60)).await;
    fs.readdir(root.ino).await.unwrap();
    assert_eq!(
        hub.calls.list.load(Ordering::Relaxed),
        lists,
        "listed again unchanged"
    );
    assert_eq!(hub.calls.bucket_info.load(Ordering::Relaxed), infos + 1);

    hub.put_object(&bucket(), "c.txt", b"c");
    assert!(hub.delete_object(&bucket(), "b.txt"));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(names(fs.readdir(root.ino).await.unwrap()), ["a", "c.txt"]);
    assert_eq!(hub.calls.list.load(Ordering::Relaxed), lists + 1);
    let e = walk(&fs, "buckets/acme/ckpt/b.txt")
        .await
        .expect_err("deleted");
    assert_eq!(e.errno(), libc::ENOENT);
}

#[tokio::test]
async fn bucket_names_errors_and_writes() {
    let (hub, fs) = setup(Duration::from_secs(30));
    hub.put_object(&bucket(), "f.txt", b"f");
    hub.put_object(&BucketId::new("acme", "other"), "g.txt", b"g");
    let root_names: Vec<String> = fs
        .readdir(fs.root())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(root_names.contains(&"buckets".to_owned()));
    let ns = walk(&fs, "buckets/acme").await.unwrap();
    let mut listed: Vec<String> = fs
        .readdir(ns.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    listed.sort();
    assert_eq!(listed, ["ckpt", "other"]);
    let missing = walk(&fs, "buckets/acme/nope").await.expect_err("missing");
    assert_eq!(missing.errno(), libc::ENOENT);
    for bad in ["buckets/.x", "buckets/acme/ckpt/f.txt/below"] {
        assert!(walk(&fs, bad).await.is_err(), "{bad}");
    }
    let f = walk(&fs, "buckets/acme/ckpt/f.txt").await.unwrap();
    assert_eq!(
        fs.open(f.ino, true).expect_err("write").errno(),
        libc::EROFS
    );
    let d = walk(&fs, "buckets/acme/ckpt").await.unwrap();
    assert_eq!(
        fs.open(d.ino, false).expect_err("dir").errno(),
        libc::EISDIR
    );
    assert_eq!(fs.listxattr(f.ino).unwrap(), [XATTR_XET_HASH]);
}

#[tokio::test]
async fn an_open_file_whose_object_is_deleted_fails_estale_and_vanishes_at_once() {
    let (hub, fs) = setup(Duration::from_secs(30));
    let data = bytes(3, 8 << 20);
    hub.put_object(&bucket(), "d.bin", &data);
    let a = walk(&fs, "buckets/acme/ckpt/d.bin").await.unwrap();
    fs.open(a.ino, false).unwrap();
    assert_eq!(&fs.read(a.ino, 0, 4096).await.unwrap()[..], &data[..4096]);
    assert!(hub.delete_object(&bucket(), "d.bin"));
    let e = fs
        .read(a.ino, data.len() as u64 - 4096, 4096)
        .await
        .expect_err("deleted");
    assert_eq!(e.errno(), libc::ESTALE);
    let e = walk(&fs, "buckets/acme/ckpt/d.bin")
        .await
        .expect_err("gone");
    assert_eq!(e.errno(), libc::ENOENT);
}

#[tokio::test]
async fn bucket_listings_are_bounded_by_the_listing_entries_setting() {
    let hub = MemoryHub::new();
    for k in ["a/1", "a/2", "b/1", "b/2"] {
        hub.put_object(&bucket(), k, b"x");
    }
    let cfg = FsConfig {
        listing_entries: 4,
        bucket_ttl: Duration::from_secs(30),
        ..FsConfig::default()
    };
    let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
    let a = walk(&fs, "buckets/acme/ckpt/a").await.unwrap();
    let b = walk(&fs, "buckets/acme/ckpt/b").await.unwrap();
    let lists = || hub.calls.list.load(Ordering::Relaxed);
    fs.readdir(a.ino).await.unwrap();
    let before = lists();
    // Root (2) + a (2) are held; b's 2 more go over 4: the others are forgotten.
    fs.readdir(b.ino).await.unwrap();
    assert_eq!(lists(), before + 1);
    fs.readdir(a.ino).await.unwrap();
    assert_eq!(lists(), before + 2, "a was forgotten and listed again");
    // Lookups in a listed folder still find every entry, by binary search over the sorted list.
    for k in ["a/1", "a/2"] {
        walk(&fs, &format!("buckets/acme/ckpt/{k}")).await.unwrap();
    }
}
