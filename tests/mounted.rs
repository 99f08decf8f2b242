//! Mounted end-to-end tests: the real HTTP client against the fake Hub, read through the kernel.

mod support;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fakehub::{
    FakeHub, FakeHubOptions, Fixtures, Listener, RepoType, TOKEN_FULL, TOKEN_UNAPPROVED,
};
use hubfs::fs::FsConfig;
use support::{errno, http_hub, mount, repo_dir, sha256_file, sha256_hex, Mounted};

type HttpMount = Mounted<hubfs::hub::http::HttpHub>;

/// The fake Hub over the standard fixtures, listing 50 entries per page, and those fixtures.
fn start_hub() -> (FakeHub, Fixtures) {
    let fx = Fixtures::standard();
    let hub = FakeHub::start(
        fx.clone(),
        FakeHubOptions {
            page_size: 50,
            ..Default::default()
        },
    )
    .expect("fake hub");
    (hub, fx)
}

fn cfg() -> FsConfig {
    FsConfig {
        cache_bytes: 64 << 20,
        ..FsConfig::default()
    }
}

fn mount_hub(hub: &FakeHub, token: Option<&str>, cfg: FsConfig) -> HttpMount {
    mount(http_hub(hub, token), cfg)
}

/// A mount without a token whose block cache holds `cache_bytes`.
fn mount_with_cache(hub: &FakeHub, cache_bytes: u64) -> HttpMount {
    mount_hub(
        hub,
        None,
        FsConfig {
            cache_bytes,
            ..cfg()
        },
    )
}

/// Every (type, id, ref, path, sha256, size) of the public fixtures.
fn public_files(fx: &Fixtures) -> Vec<(RepoType, String, String, String, String, u64)> {
    let mut out = Vec::new();
    for r in &fx.repos {
        if r.access != fakehub::Access::Public || !r.renamed_from.is_empty() {
            continue;
        }
        for rev in r.refs.keys() {
            let c = r.resolve(rev).expect("ref resolves");
            for (path, data) in &c.files {
                out.push((
                    r.repo_type,
                    r.id.clone(),
                    rev.clone(),
                    path.clone(),
                    data.sha256_hex(),
                    data.len(),
                ));
            }
        }
    }
    out
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let n = unsafe { libc::getxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

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
fn listings_match_the_tree_including_paginated_folders() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = mount_hub(&hub, None, cfg());
    let corpus = fx.repo(RepoType::Dataset, "acme/corpus").unwrap();
    let commit = corpus.resolve("main").unwrap();
    // Every folder of the commit, listed through the mount, equals the paths under it.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    dirs.insert(String::new());
    for p in commit.files.keys() {
        let mut acc = String::new();
        for seg in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            acc = if acc.is_empty() {
                seg.to_string()
            } else {
                format!("{acc}/{seg}")
            };
            dirs.insert(acc.clone());
        }
    }
    for d in &dirs {
        let want: BTreeSet<String> = commit
            .files
            .keys()
            .filter_map(|p| {
                let rest = if d.is_empty() {
                    Some(p.as_str())
                } else {
                    p.strip_prefix(&format!("{d}/"))
                }?;
                Some(rest.split('/').next().unwrap().to_owned())
            })
            .collect();
        let dir = m.join(&format!("datasets/acme/corpus@main/{d}"));
        let got: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(got, want, "folder {d:?}");
    }
    let many = std::fs::read_dir(m.join("datasets/acme/corpus@main/many"))
        .unwrap()
        .count();
    assert_eq!(
        many, 1200,
        "all pages of a 1200-entry folder (page size 50)"
    );
    let odd = m.join("datasets/acme/corpus@main/docs/naïve file with spaces.txt");
    assert!(odd.is_file());
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
fn each_revision_form_reads_its_own_commit() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let m = mount_hub(&hub, None, cfg());
    let r = fx.repo(RepoType::Model, "acme/tiny-gpt2").unwrap();
    let main_sha = r.refs["main"].clone();
    let forms = [
        ("acme/tiny-gpt2".to_owned(), "main"),
        ("acme/tiny-gpt2@main".to_owned(), "main"),
        ("acme/tiny-gpt2@v1.0".to_owned(), "v1.0"),
        ("acme/tiny-gpt2@refs%2Fpr%2F1".to_owned(), "refs/pr/1"),
        (format!("acme/tiny-gpt2@{main_sha}"), "main"),
    ];
    for (dir, rev) in forms {
        let c = r.resolve(rev).unwrap();
        let commit = getxattr(&m.join(&dir), "user.hf.commit").unwrap();
        assert_eq!(String::from_utf8(commit).unwrap(), c.sha, "{dir}");
        for (path, data) in &c.files {
            assert_eq!(
                sha256_file(&m.join(&format!("{dir}/{path}"))).unwrap(),
                data.sha256_hex(),
                "{dir}/{path}"
            );
        }
        let got: BTreeSet<String> = std::fs::read_dir(m.join(&dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: BTreeSet<String> = c
            .files
            .keys()
            .map(|p| p.split('/').next().unwrap().to_owned())
            .collect();
        assert_eq!(got, want, "{dir}");
    }
    let a = std::fs::read(m.join("acme/tiny-gpt2@main/config.json")).unwrap();
    let b = std::fs::read(m.join("acme/tiny-gpt2@v1.0/config.json")).unwrap();
    assert_ne!(a, b, "tag and branch hold different content");
    assert!(m.join("acme/tiny-gpt2@refs%2Fpr%2F1/pr-note.txt").is_file());
    assert!(m.join("spaces/acme/demo@main/app.py").is_file());
}

#[test]
fn missing_things_are_enoent() {
    if !support::fuse_available() {
        return;
    }
    let (hub, _) = start_hub();
    let m = mount_hub(&hub, Some(TOKEN_FULL), cfg());
    for p in [
        "acme/tiny-gpt2@main/nope.json",
        "acme/tiny-gpt2@no-such-branch",
        "acme/no-such-repo@main",
        "datasets/acme/corpus@main/data/nope",
        ".Trash",
        "acme/tiny-gpt2@..",
        "acme/tiny-gpt2@%2e%2e",
        "acme/tiny-gpt2@main%2F..%2F..",
    ] {
        let e = std::fs::metadata(m.join(p)).unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT, "{p}: {e}");
    }
}

#[test]
fn private_and_gated_repos_need_the_right_token() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let private = fx
        .commit(RepoType::Model, "acme/private-model", "main")
        .unwrap()
        .clone();
    let gated = fx
        .commit(RepoType::Model, "acme/gated-model", "main")
        .unwrap()
        .clone();
    {
        let m = mount_hub(&hub, None, cfg());
        let e = std::fs::metadata(m.join("acme/private-model@main")).unwrap_err();
        assert_eq!(errno(&e), libc::EACCES, "private without token: {e}");
        // Gated metadata is public; the bytes are not.
        let e = std::fs::read(m.join("acme/gated-model@main/config.json")).unwrap_err();
        assert_eq!(errno(&e), libc::EACCES, "gated without token: {e}");
    }
    {
        let m = mount_hub(&hub, Some(TOKEN_UNAPPROVED), cfg());
        let e = std::fs::read(m.join("acme/gated-model@main/config.json")).unwrap_err();
        assert_eq!(errno(&e), libc::EACCES, "gated, not approved: {e}");
        let e = std::fs::metadata(m.join("acme/private-model@main")).unwrap_err();
        assert!(
            matches!(errno(&e), libc::EACCES | libc::ENOENT),
            "private, no access: {e}"
        );
    }
    {
        let m = mount_hub(&hub, Some(TOKEN_FULL), cfg());
        for (dir, c) in [
            ("acme/private-model@main", &private),
            ("acme/gated-model@main", &gated),
        ] {
            for (path, data) in &c.files {
                assert_eq!(
                    sha256_file(&m.join(&format!("{dir}/{path}"))).unwrap(),
                    data.sha256_hex()
                );
            }
        }
    }
    let auth_on_cdn: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.listener == Listener::Cdn && r.authorization.is_some())
        .collect();
    assert!(
        auth_on_cdn.is_empty(),
        "the CDN saw a token: {auth_on_cdn:?}"
    );
    assert!(
        hub.requests().iter().any(|r| r.listener == Listener::Cdn),
        "LFS reads went to the CDN"
    );
}

#[test]
fn every_write_is_erofs() {
    if !support::fuse_available() {
        return;
    }
    let (hub, _) = start_hub();
    let m = mount_hub(&hub, None, cfg());
    let dir = m.join("acme/tiny-gpt2@main");
    let file = dir.join("config.json");
    assert!(file.is_file());
    let cases: Vec<(&str, std::io::Result<()>)> = vec![
        (
            "create",
            std::fs::File::create(dir.join("new.txt")).map(|_| ()),
        ),
        (
            "open for write",
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .map(|_| ()),
        ),
        (
            "append",
            std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .map(|_| ()),
        ),
        ("mkdir", std::fs::create_dir(dir.join("d"))),
        ("mkdir at root", std::fs::create_dir(m.join("not an org"))),
        ("unlink", std::fs::remove_file(&file)),
        ("rmdir", std::fs::remove_dir(m.join("datasets"))),
        ("rename", std::fs::rename(&file, dir.join("x.json"))),
        (
            "symlink",
            std::os::unix::fs::symlink("config.json", dir.join("ln")),
        ),
        ("link", std::fs::hard_link(&file, dir.join("hl"))),
        ("truncate", {
            let cp = CString::new(file.as_os_str().as_bytes()).unwrap();
            if unsafe { libc::truncate(cp.as_ptr(), 0) } < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }),
        ("chmod", {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        }),
        ("setxattr", {
            let cp = CString::new(file.as_os_str().as_bytes()).unwrap();
            let r = unsafe {
                libc::setxattr(cp.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0)
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }),
    ];
    for (what, r) in cases {
        let e = r.expect_err(what);
        assert_eq!(errno(&e), libc::EROFS, "{what}: {e}");
    }
    let meta = std::fs::metadata(&file).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o555
    );
}

#[test]
fn a_branch_moved_mid_load_keeps_the_load_on_one_commit() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = start_hub();
    let r = fx.repo(RepoType::Model, "acme/tiny-gpt2").unwrap();
    let (old_sha, new_sha) = (r.refs["main"].clone(), r.refs["v1.0"].clone());
    let old = r.resolve("main").unwrap().clone();
    let new = r.resolve("v1.0").unwrap().clone();
    let m = mount_hub(
        &hub,
        None,
        FsConfig {
            revision_ttl: Duration::from_millis(1500),
            ..cfg()
        },
    );
    let dir = m.join("acme/tiny-gpt2@main");
    let f = std::fs::File::open(dir.join("model.safetensors")).unwrap();
    let mut head = vec![0u8; 1000];
    f.read_at(&mut head, 0).unwrap();
    // The branch moves while the load is running.
    hub.with_fixtures(|fx| {
        fx.repo_mut(RepoType::Model, "acme/tiny-gpt2")
            .unwrap()
            .set_ref("main", &new_sha)
    });
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        // Keep using it: the name stays bound to the old commit.
        let c = std::fs::read(dir.join("config.json")).unwrap();
        assert_eq!(
            c,
            old.files["config.json"].to_vec(),
            "mid-load reads stay on {old_sha}"
        );
    }
    let mut all = vec![0u8; old.files["model.safetensors"].len() as usize];
    f.read_exact_at(&mut all, 0).unwrap();
    assert_eq!(
        sha256_hex(&all),
        old.files["model.safetensors"].sha256_hex(),
        "open file keeps its commit"
    );
    drop(f);
    // Idle past the TTL: a new load sees the new commit.
    std::thread::sleep(Duration::from_millis(2500));
    let commit = getxattr(&dir, "user.hf.commit").unwrap();
    assert_eq!(String::from_utf8(commit).unwrap(), new_sha);
    assert_eq!(
        std::fs::read(dir.join("config.json")).unwrap(),
        new.files["config.json"].to_vec()
    );
    // No range request ever named the branch: every read went to a commit sha.
    for req in hub.requests() {
        if req.path.contains("/resolve/") {
            assert!(
                !req.path.contains("/resolve/main/"),
                "read by branch name: {}",
                req.path
            );
        }
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
