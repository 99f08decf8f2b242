//! Storage Buckets through the mount: the real HTTP client against the fake Hub's buckets, read
//! through the kernel (`/buckets/<ns>/<bucket>/<path>`). Figures come from the fake Hub's log.

mod support;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use fakehub::{
    FakeHub, FakeHubOptions, FileData, Fixtures, Listener, TOKEN_FULL, TOKEN_UNAPPROVED,
};
use hubfs::fs::FsConfig;
use support::{errno, http_hub, mount, sha256_file, Mounted};

type HttpMount = Mounted<hubfs::hub::http::HttpHub>;

const MIB: u64 = 1 << 20;

fn start(page_size: usize) -> FakeHub {
    FakeHub::start(
        Fixtures::empty(),
        FakeHubOptions {
            page_size,
            ..Default::default()
        },
    )
    .expect("fake hub")
}

fn cfg(ttl: Duration) -> FsConfig {
    FsConfig {
        cache_bytes: 64 << 20,
        bucket_ttl: ttl,
        ..FsConfig::default()
    }
}

fn mount_bucket_hub(hub: &FakeHub, token: Option<&str>, ttl: Duration) -> HttpMount {
    mount(http_hub(hub, token), cfg(ttl))
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).expect("path");
    let cn = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the length given.
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Every file under `dir`, relative path to content sha256, read through the mount.
fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).expect("readdir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type().expect("type").is_dir() {
            walk(&e.path(), &r, out);
        } else {
            out.insert(r, sha256_file(&e.path()).expect("read"));
        }
    }
}

/// A bucket with nested folders, a raw-prefix neighbour (`logs` / `logs_x`), a folder of 1234
/// entries and a 24 MiB file. Returns the expected (key, sha256) map.
fn fill(hub: &FakeHub, id: &str) -> BTreeMap<String, String> {
    let mut want = BTreeMap::new();
    let mut put = |k: &str, d: FileData| {
        want.insert(k.to_owned(), d.sha256_hex());
        hub.put_bucket_object(id, k, d);
    };
    put("a/b/c/deep.txt", FileData::from_bytes(b"deep".to_vec()));
    put("a/top.txt", FileData::from_bytes(b"top".to_vec()));
    put("logs/run1.log", FileData::from_bytes(b"run1".to_vec()));
    put("logs_x/other.log", FileData::from_bytes(b"other".to_vec()));
    put("big.bin", FileData::generated(7, 24 * MIB));
    for i in 0..1234u64 {
        put(
            &format!("many/f{i:04}.bin"),
            FileData::generated(100 + i, 100 + i % 700),
        );
    }
    want
}

#[test]
fn a_bucket_with_nested_folders_and_a_folder_of_1234_entries_is_listed_and_read_byte_exact() {
    if !support::fuse_available() {
        return;
    }
    // 500 entries a page: the big folder takes three pages.
    let hub = start(500);
    hub.create_bucket("acme/ckpt", false);
    let want = fill(&hub, "acme/ckpt");
    hub.create_bucket("acme/other", false);
    let m = mount_bucket_hub(&hub, None, Duration::from_secs(30));

    let names: Vec<String> = std::fs::read_dir(m.join("buckets/acme"))
        .expect("namespace")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ckpt", "other"]);
    let logs: Vec<String> = std::fs::read_dir(m.join("buckets/acme/ckpt/logs"))
        .expect("logs")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        logs,
        ["run1.log"],
        "the raw prefix `logs` also matches logs_x: filtered"
    );

    let mut got = BTreeMap::new();
    walk(&m.join("buckets/acme/ckpt"), "", &mut got);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    let tree_pages = hub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/buckets/acme/ckpt/tree/many"))
        .count();
    assert_eq!(tree_pages, 3, "1234 entries at 500 a page, listed once");
    let md = std::fs::metadata(m.join("buckets/acme/ckpt/many/f0007.bin")).expect("stat");
    assert_eq!(md.len(), 107);
    assert!(md.modified().expect("mtime") > std::time::UNIX_EPOCH + Duration::from_secs(1 << 30));
}

#[test]
fn a_ranged_read_of_a_bucket_object_fetches_only_what_it_needs() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    let data = FileData::generated(9, 64 * MIB);
    hub.put_bucket_object("acme/ckpt", "big.bin", data.clone());
    let m = mount_bucket_hub(&hub, None, Duration::from_secs(30));
    let f = std::fs::File::open(m.join("buckets/acme/ckpt/big.bin")).expect("open");
    hub.clear_requests();
    let mut buf = vec![0u8; 4096];
    for off in [40 * MIB, 3 * MIB + 17, 60 * MIB] {
        f.read_exact_at(&mut buf, off).expect("pread");
        assert_eq!(buf, data.read_at(off, 4096), "bytes at {off}");
    }
    let reqs = hub.requests();
    let cdn: u64 = reqs
        .iter()
        .filter(|r| r.listener == Listener::Cdn)
        .map(|r| r.body_bytes)
        .sum();
    println!(
        "3 reads of 4 KiB in a 64 MiB bucket object: {cdn} bytes from the CDN, {} requests",
        reqs.len()
    );
    assert!(
        cdn > 0 && cdn <= 3 * 2 * MIB,
        "{cdn} bytes fetched for 12 KiB"
    );
    let resolves = reqs
        .iter()
        .filter(|r| r.path.starts_with("/buckets/acme/ckpt/resolve/"))
        .count();
    assert!(
        resolves <= 1,
        "the signed URL is reused: {resolves} resolves"
    );
}

/// Reads `path` in 1 MiB chunks, overwriting the object with `new` after chunk `at`: each chunk
/// must be the old bytes or fail with ESTALE (after which no later chunk may succeed with other
/// bytes than the old). Returns whether ESTALE was seen.
fn read_while_overwritten(
    hub: &FakeHub,
    m: &HttpMount,
    key: &str,
    old: &FileData,
    new: &FileData,
    at: u64,
) -> bool {
    let f = std::fs::File::open(m.join(&format!("buckets/acme/ckpt/{key}"))).expect("open");
    let mut stale = false;
    let mut buf = vec![0u8; MIB as usize];
    for chunk in 0..old.len() / MIB {
        if chunk == at + 1 {
            hub.put_bucket_object("acme/ckpt", key, new.clone());
        }
        match f.read_exact_at(&mut buf, chunk * MIB) {
            Ok(()) => {
                let want = old.read_at(chunk * MIB, MIB as usize);
                assert!(
                    buf == want,
                    "{key}: chunk {chunk} is not the old version's bytes"
                );
            }
            Err(e) => {
                assert_eq!(errno(&e), libc::ESTALE, "{key}: chunk {chunk}: {e}");
                stale = true;
            }
        }
    }
    stale
}

#[test]
fn an_object_overwritten_while_open_reads_as_the_old_bytes_throughout_or_estale_never_a_mix() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    let m = mount_bucket_hub(&hub, None, Duration::from_secs(30));
    // Signed URLs that expire at once: every fetch asks the Hub, which names the new version.
    hub.set_bucket_url_ttl(Duration::ZERO);
    let points = [0u64, 1, 3, 6, 10, 15, 21, 28];
    let old = |at: u64, len: u64| FileData::generated(1000 + at, len);
    let new = |at: u64, len: u64| FileData::generated(2000 + at, len);
    // Every object exists before the mount first lists the bucket.
    for at in points {
        hub.put_bucket_object("acme/ckpt", &format!("ow/{at}.bin"), old(at, 32 * MIB));
        hub.put_bucket_object(
            "acme/ckpt",
            &format!("ow-cached/{at}.bin"),
            old(at, 16 * MIB),
        );
    }
    let mut stale_seen = 0;
    for at in points {
        let key = format!("ow/{at}.bin");
        if read_while_overwritten(&hub, &m, &key, &old(at, 32 * MIB), &new(at, 32 * MIB), at) {
            stale_seen += 1;
        }
    }
    println!("overwritten at 8 points of a 32 MiB read (URLs never reused): ESTALE in {stale_seen}, old bytes throughout in the rest");
    assert!(
        stale_seen > 0,
        "some overwrite must reach the reader as ESTALE"
    );

    // Signed URLs that live: the old version's URL keeps serving the old version (content
    // addressed), so the reader gets the old bytes throughout.
    hub.set_bucket_url_ttl(Duration::from_secs(3600));
    for at in [0u64, 6] {
        let key = format!("ow-cached/{at}.bin");
        let stale =
            read_while_overwritten(&hub, &m, &key, &old(at, 16 * MIB), &new(at, 16 * MIB), at);
        assert!(
            !stale,
            "{key}: the old version's signed URL serves the old bytes"
        );
    }
}

fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn after_the_ttl_a_new_open_sees_the_new_content_and_added_and_deleted_objects_show() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    let ttl = Duration::from_millis(500);
    // Past our TTL and the kernel's one-second attribute and entry lifetime.
    let wait = || std::thread::sleep(ttl + Duration::from_millis(1300));
    hub.put_bucket_object("acme/ckpt", "w.txt", FileData::from_bytes(b"old".to_vec()));
    hub.put_bucket_object("acme/ckpt", "keep.bin", FileData::generated(5, 4 * MIB));
    let m = mount_bucket_hub(&hub, None, ttl);
    let root = m.join("buckets/acme/ckpt");
    assert_eq!(std::fs::read(root.join("w.txt")).expect("read"), b"old");
    let keep = std::fs::File::open(root.join("keep.bin")).expect("open keep");
    let mut head = vec![0u8; 4096];
    keep.read_exact_at(&mut head, 0).expect("keep head");

    // Nothing changed: after the TTL, one bucket info answers, no listing again.
    wait();
    hub.clear_requests();
    assert_eq!(ls(&root), ["keep.bin", "w.txt"]);
    let paths: Vec<String> = hub.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().all(|p| !p.contains("/tree")),
        "re-listed though updatedAt did not move: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "/api/buckets/acme/ckpt"),
        "{paths:?}"
    );

    hub.put_bucket_object("acme/ckpt", "w.txt", FileData::from_bytes(b"new!".to_vec()));
    hub.put_bucket_object(
        "acme/ckpt",
        "added.txt",
        FileData::from_bytes(b"+".to_vec()),
    );
    wait();
    assert_eq!(std::fs::read(root.join("w.txt")).expect("read"), b"new!");
    assert_eq!(ls(&root), ["added.txt", "keep.bin", "w.txt"]);
    // The open file was not touched by the refresh: it keeps reading.
    let mut tail = vec![0u8; 4096];
    keep.read_exact_at(&mut tail, 4 * MIB - 4096)
        .expect("keep tail");
    assert_eq!(
        tail,
        FileData::generated(5, 4 * MIB).read_at(4 * MIB - 4096, 4096)
    );

    assert!(hub.delete_bucket_object("acme/ckpt", "added.txt"));
    wait();
    assert_eq!(ls(&root), ["keep.bin", "w.txt"]);
    let e = std::fs::metadata(root.join("added.txt")).expect_err("deleted");
    assert_eq!(errno(&e), libc::ENOENT);
}

#[test]
fn private_buckets_need_a_token_the_cdn_never_sees_it_and_writes_are_erofs() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    hub.create_bucket("acme/secret", true);
    let h = hub.put_bucket_object("acme/secret", "w.bin", FileData::generated(3, MIB));
    hub.put_bucket_object(
        "acme/open",
        "p.txt",
        FileData::from_bytes(b"public".to_vec()),
    );

    let anon = mount_bucket_hub(&hub, None, Duration::from_secs(30));
    let e = std::fs::metadata(anon.join("buckets/acme/secret")).expect_err("private");
    assert_eq!(errno(&e), libc::EACCES);
    assert_eq!(
        std::fs::read(anon.join("buckets/acme/open/p.txt")).expect("public"),
        b"public"
    );
    assert_eq!(ls(&anon.join("buckets/acme")), ["open"]);

    let other = mount_bucket_hub(&hub, Some(TOKEN_UNAPPROVED), Duration::from_secs(30));
    let e = std::fs::metadata(other.join("buckets/acme/secret")).expect_err("no access");
    assert_eq!(errno(&e), libc::ENOENT);

    let full = mount_bucket_hub(&hub, Some(TOKEN_FULL), Duration::from_secs(30));
    let p = full.join("buckets/acme/secret/w.bin");
    hub.clear_requests();
    assert_eq!(
        sha256_file(&p).expect("read"),
        FileData::generated(3, MIB).sha256_hex()
    );
    let reqs = hub.requests();
    assert!(reqs.iter().any(|r| r.listener == Listener::Cdn));
    for r in &reqs {
        match r.listener {
            Listener::Cdn => assert_eq!(r.authorization, None, "token sent to the CDN: {}", r.path),
            Listener::Hub => assert!(r.authorization.is_some(), "no token to the Hub: {}", r.path),
        }
    }
    assert_eq!(
        getxattr(&p, "user.hf.xet-hash").expect("xattr"),
        h.as_bytes()
    );

    let e = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect_err("write");
    assert_eq!(errno(&e), libc::EROFS);
    let e = std::fs::create_dir(full.join("buckets/acme/secret/new")).expect_err("mkdir");
    assert_eq!(errno(&e), libc::EROFS);
    let e = std::fs::remove_file(&p).expect_err("unlink");
    assert_eq!(errno(&e), libc::EROFS);
}

#[test]
fn a_bucket_mount_shows_one_bucket_folder_at_the_mountpoint() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    hub.put_bucket_object("acme/ckpt", "runs/a/w.bin", FileData::generated(8, MIB));
    hub.put_bucket_object(
        "acme/ckpt",
        "runs/b.txt",
        FileData::from_bytes(b"b".to_vec()),
    );
    hub.put_bucket_object(
        "acme/ckpt",
        "runs_x/no.txt",
        FileData::from_bytes(b"x".to_vec()),
    );
    let root = hubfs::fs::MountRoot::parse_bucket("acme/ckpt", Some("runs")).expect("args");
    let m = mount(
        http_hub(&hub, None),
        FsConfig {
            root,
            ..cfg(Duration::from_secs(30))
        },
    );
    assert_eq!(ls(&m.path()), ["a", "b.txt"]);
    assert_eq!(
        sha256_file(&m.join("a/w.bin")).expect("read"),
        FileData::generated(8, MIB).sha256_hex()
    );
    assert!(
        m.join(".hubfs/stats").exists(),
        "the control dir stays at the root"
    );
}

#[test]
fn the_next_checkpoint_shard_in_a_bucket_is_fetched_ahead_when_the_loader_reads_this_one() {
    if !support::fuse_available() {
        return;
    }
    let hub = start(1000);
    let names: Vec<String> = (1..=3)
        .map(|i| format!("model-{i:05}-of-00003.safetensors"))
        .collect();
    let hashes: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let d = FileData::generated(50 + i as u64, 24 * MIB);
            hub.put_bucket_object("acme/ckpt", &format!("step_1/{n}"), d)
        })
        .collect();
    let m = mount(
        http_hub(&hub, None),
        FsConfig {
            cache_bytes: 128 * MIB,
            ..cfg(Duration::from_secs(30))
        },
    );
    let dir = m.join("buckets/acme/ckpt/step_1");
    assert_eq!(ls(&dir), names);
    hub.clear_requests();
    assert_eq!(
        sha256_file(&dir.join(&names[0])).expect("read"),
        FileData::generated(50, 24 * MIB).sha256_hex()
    );
    let fetched = |hub: &FakeHub, h: &str| {
        hub.requests()
            .iter()
            .filter(|r| r.listener == Listener::Cdn && r.path.contains(h))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fetched(&hub, &hashes[1]) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the next shard was never fetched ahead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fetched(&hub, &hashes[2]),
        0,
        "read-ahead ran two shards ahead"
    );
    assert_eq!(
        sha256_file(&dir.join(&names[1])).expect("read"),
        FileData::generated(51, 24 * MIB).sha256_hex()
    );
}
