//! Mounted reads through the kernel (the real HTTP client against the fake Hub): every fixture byte-exact,
//! random preads and mmap, many concurrent readers, mmap faults from many threads, a small budget.

mod support;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use fakehub::RepoType;
use support::mounted::{cfg, mount_hub, mount_with_cache, public_files, start_hub};
use support::{repo_dir, sha256_file, sha256_hex};

#[test]
fn every_fixture_file_at_every_ref_has_the_right_size_and_sha256() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = mount_hub(&hub, None, cfg());
    let files = public_files(&fx);
    assert!(files.len() > 1200, "fixtures cover the big folder");
    for (t, id, rev, path, sha, size) in &files {
        let p = m.join(&format!("{}/{path}", repo_dir(*t, id, rev)));
        let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(meta.len(), *size, "{}", p.display());
        assert_eq!(&sha256_file(&p).unwrap(), sha, "{}", p.display());
    }
}

#[test]
fn random_preads_and_mmap_return_the_source_bytes() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = mount_hub(&hub, None, cfg());
    let data = fx
        .file(RepoType::Dataset, "acme/corpus", "main", "blobs/big.bin")
        .unwrap()
        .clone();
    let p = m.join("datasets/acme/corpus@main/blobs/big.bin");
    let f = std::fs::File::open(&p).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 11) % data.len();
        let len = 1 + ((x >> 3) % 300_000) as usize;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off).unwrap();
        let want = data.read_at(off, len);
        assert_eq!(n, want.len().min(len), "short read at {off}");
        assert_eq!(&buf[..n], &want[..], "bytes at {off}+{len}");
    }
    // mmap, touched in random order.
    let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
    assert_eq!(map.len() as u64, data.len());
    for i in (0..map.len()).step_by(65_537).rev() {
        assert_eq!(map[i], data.read_at(i as u64, 1)[0], "mmap byte {i}");
    }
    assert_eq!(sha256_hex(&map), data.sha256_hex());
}

#[test]
fn thirty_two_concurrent_readers_get_correct_bytes() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = Arc::new(mount_with_cache(&hub, 8 << 20));
    let sharded = fx
        .commit(RepoType::Model, "acme/sharded", "main")
        .unwrap()
        .clone();
    let files: Vec<(String, String)> = sharded
        .files
        .iter()
        .map(|(p, d)| (format!("acme/sharded@main/{p}"), d.sha256_hex()))
        .chain(std::iter::once((
            "datasets/acme/corpus@main/blobs/big.bin".to_owned(),
            fx.file(RepoType::Dataset, "acme/corpus", "main", "blobs/big.bin")
                .unwrap()
                .sha256_hex(),
        )))
        .collect();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let m = m.clone();
            let (p, sha) = files[i % files.len()].clone();
            std::thread::spawn(move || {
                assert_eq!(sha256_file(&m.join(&p)).unwrap(), sha, "{p}");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader");
    }
}

#[test]
fn mmap_faulted_in_by_sixteen_threads_at_once_neither_deadlocks_nor_corrupts() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = mount_with_cache(&hub, 16 << 20);
    let shard = "model-00001-of-00003.safetensors";
    let data = fx
        .file(RepoType::Model, "acme/sharded", "main", shard)
        .unwrap()
        .clone();
    let f = std::fs::File::open(m.join(&format!("acme/sharded@main/{shard}"))).unwrap();
    let map = Arc::new(unsafe { memmap2::Mmap::map(&f).unwrap() });
    let src = Arc::new(data.to_vec());
    let threads: Vec<_> = (0..16usize)
        .map(|t| {
            let (map, src) = (map.clone(), src.clone());
            std::thread::spawn(move || {
                // Each thread walks every 16th page from its own start, so all fault in parallel.
                let mut off = t * 4096;
                while off < map.len() {
                    let end = (off + 4096).min(map.len());
                    assert_eq!(&map[off..end], &src[off..end], "page at {off}");
                    off += 16 * 4096;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("mmap reader");
    }
}

#[test]
fn eight_parallel_readers_with_a_small_budget_get_correct_bytes() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = Arc::new(mount_with_cache(&hub, 16 << 20));
    let big = fx
        .file(RepoType::Dataset, "acme/corpus", "main", "blobs/big.bin")
        .unwrap()
        .sha256_hex();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (m, big) = (m.clone(), big.clone());
            std::thread::spawn(move || {
                assert_eq!(
                    sha256_file(&m.join("datasets/acme/corpus@main/blobs/big.bin")).unwrap(),
                    big
                );
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader");
    }
    let c = m.fs.block_cache();
    assert!(c.used_bytes() <= c.capacity());
}
