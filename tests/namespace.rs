//! The mounted namespace (the real HTTP client against the fake Hub): listings, revision forms,
//! missing names, and a branch that moves mid-load.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use fakehub::{RepoType, TOKEN_FULL};
use hubfs::fs::FsConfig;
use support::mounted::{cfg, getxattr, mount_hub, start_hub};
use support::{errno, sha256_file, sha256_hex};

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
