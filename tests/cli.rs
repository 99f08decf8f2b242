//! The command line as users type it, on the real binary: `hubfs mount` returning once the mount
//! answers (and failing with the reason), `-o` options, `--log-file`, `--debug`, modes, one-repo
//! and subfolder mounts (also from an fstab source), `hubfs unmount`, `hubfs status` and
//! `hubfs path` on such mounts, and the read deadline against a Hub that stops mid-body.

mod support;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fakehub::{RepoType, Shaping};
use support::{is_mounted, sha256_file};

const BIN: &str = env!("CARGO_BIN_EXE_hubfs");

/// Lazily unmounts what a failed test left mounted (its daemon then exits).
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `hubfs ARGS` to completion with a clean environment (HOME in `home`).
fn hubfs(args: &[&str], home: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run hubfs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn hubfs_mount_returns_once_the_mount_answers_and_hubfs_unmount_ends_it() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path().to_owned());
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("hubfs.log");
    let out = hubfs(
        &[
            "mount",
            p(mnt.path()),
            "--endpoint",
            &hub.endpoint(),
            "-o",
            "ro,nodev,nosuid,noatime,_netdev,default_permissions,cache_size=64MiB",
            "-odebug",
            "--log-file",
            p(&log),
        ],
        home.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    // At the moment it returns, the mount answers.
    assert!(is_mounted(mnt.path()));
    assert!(mnt.path().join(".hubfs/stats").is_file());
    let c = fx.commit(RepoType::Model, "acme/sharded", "main").unwrap();
    for (path, data) in &c.files {
        let f = mnt.path().join(format!("acme/sharded@main/{path}"));
        assert_eq!(sha256_file(&f).unwrap(), data.sha256_hex(), "{path}");
    }
    let status = hubfs(&["status", p(mnt.path())], home.path());
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("root: the whole Hub"),
        "{}",
        text(&status)
    );
    // The daemon logs to the file, at debug level (--debug, given as -o debug).
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("mounted") && logged.contains("DEBUG"),
        "{logged}"
    );
    let out = hubfs(&["unmount", p(mnt.path())], home.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(mnt.path()));
    // Not a hubfs mount (any more): a clear refusal.
    let out = hubfs(&["unmount", p(mnt.path())], home.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a mount point"),
        "{}",
        text(&out)
    );
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("unmounted") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon did not stop after hubfs unmount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hubfs_mount_fails_with_the_reason_and_mounts_nothing() {
    if !support::fuse_available() {
        return;
    }
    let (hub, _) = support::standard_hub();
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path().to_owned());
    let ep = hub.endpoint();
    let m = p(mnt.path());
    let file_root = ["--repo", "acme/tiny-gpt2", "--subfolder", "config.json"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["mount", "/nonexistent/hubfs-cli", "--endpoint", &ep],
            "does not exist",
        ),
        (
            vec!["mount", m, "--endpoint", &ep, "-o", "ro,bogus"],
            "unknown mount option",
        ),
        (
            vec!["mount", m, "--endpoint", &ep, "--file-mode", "0644"],
            "read-only",
        ),
        (
            vec!["mount", m, "--endpoint", &ep, "--repo", "acme/no-such-repo"],
            "cannot mount acme/no-such-repo@main",
        ),
        (
            vec![
                "mount",
                m,
                "--endpoint",
                &ep,
                "--repo",
                "acme/tiny-gpt2",
                "--subfolder",
                "nope",
            ],
            "cannot mount acme/tiny-gpt2@main, folder nope: no such file",
        ),
        (
            [vec!["mount", m, "--endpoint", &ep], file_root.to_vec()].concat(),
            "not a directory",
        ),
        (
            vec![
                "mount",
                m,
                "--endpoint",
                "http://127.0.0.1:9",
                "--repo",
                "acme/tiny-gpt2",
            ],
            "cannot mount acme/tiny-gpt2@main",
        ),
        (vec!["mount", m, "--subfolder", "x"], "--repo"),
    ];
    for (args, want) in cases {
        let out = hubfs(&args, home.path());
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want),
            "{args:?}: wanted {want:?} in\n{}",
            text(&out)
        );
        assert!(!is_mounted(mnt.path()), "{args:?} left a mount");
    }
    // A tmpfs is not a hubfs mount: `hubfs unmount` leaves it alone.
    nix::mount::mount(
        Some("tmpfs"),
        mnt.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let out = hubfs(&["unmount", m], home.path());
    let still = is_mounted(mnt.path());
    let _ = nix::mount::umount2(mnt.path(), nix::mount::MntFlags::MNT_DETACH);
    assert!(!out.status.success() && still, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a hubfs mount (it is a tmpfs mount)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_one_repo_mount_is_that_repo_pinned_to_its_commit() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path().to_owned());
    let id = "acme/tiny-gpt2";
    let repo = fx.repo(RepoType::Model, id).unwrap();
    let main = fx.commit(RepoType::Model, id, "main").unwrap();
    let out = hubfs(
        &[
            "mount",
            "--repo",
            &format!("{id}@main"),
            p(mnt.path()),
            "--endpoint",
            &hub.endpoint(),
            "--revision-ttl",
            "1s",
            "--file-mode",
            "0440",
            "--dir-mode",
            "0550",
        ],
        home.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = std::fs::read_dir(mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = main.files.keys().cloned().collect();
    assert_eq!(names, want, "the root lists the repo's top folder");
    for (path, data) in &main.files {
        assert_eq!(
            sha256_file(&mnt.path().join(path)).unwrap(),
            data.sha256_hex()
        );
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&mnt.path().join("config.json")), 0o440);
    assert_eq!(mode(mnt.path()), 0o550);
    let commit = hubfs::commands::getxattr(mnt.path(), hubfs::fs::XATTR_COMMIT).unwrap();
    assert_eq!(String::from_utf8(commit).unwrap(), main.sha);

    // status and path know what the mount is.
    let st = hubfs(&["status", p(mnt.path())], home.path());
    assert!(
        String::from_utf8_lossy(&st.stdout)
            .contains(&format!("root: repo {id}@main (commit {})", main.sha)),
        "{}",
        text(&st)
    );
    let path = hubfs(
        &["path", id, "--mount", p(mnt.path()), "--pin"],
        home.path(),
    );
    assert!(path.status.success(), "{}", text(&path));
    assert_eq!(String::from_utf8_lossy(&path.stdout).trim(), p(mnt.path()));
    let other = hubfs(
        &["path", id, "--revision", "v1.0", "--mount", p(mnt.path())],
        home.path(),
    );
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("serves only"),
        "{}",
        text(&other)
    );

    // The branch moves: the mount stays on the commit it was mounted at.
    let v1 = repo.refs["v1.0"].clone();
    hub.with_fixtures(|fx| {
        fx.repo_mut(RepoType::Model, id)
            .unwrap()
            .set_ref("main", &v1)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::read(mnt.path().join("config.json")).unwrap(),
        main.files["config.json"].to_vec()
    );
    let out = hubfs(&["unmount", p(mnt.path())], home.path());
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_subfolder_mount_from_an_fstab_line_whose_source_is_the_repo() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let home = tempfile::tempdir().unwrap();
    let bindir = tempfile::tempdir().unwrap();
    let helper = bindir.path().join("mount.fuse.hubfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path().to_owned());
    // As mount(8) runs it for
    // `datasets/acme/corpus@main /data fuse.hubfs ro,subfolder=data/train,... 0 0`.
    let opts = format!(
        "ro,_netdev,subfolder=data/train,cache_size=64MiB,endpoint={}",
        hub.endpoint()
    );
    let out = Command::new(&helper)
        .args(["datasets/acme/corpus@main", p(mnt.path()), "-o", &opts])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let c = fx.commit(RepoType::Dataset, "acme/corpus", "main").unwrap();
    let mut seen = 0;
    for (path, data) in &c.files {
        if let Some(rel) = path.strip_prefix("data/train/") {
            assert_eq!(
                sha256_file(&mnt.path().join(rel)).unwrap(),
                data.sha256_hex()
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
    assert!(!mnt.path().join("README.md").exists());
    let st = hubfs(&["status", p(mnt.path())], home.path());
    assert!(
        String::from_utf8_lossy(&st.stdout)
            .contains("root: folder data/train of repo datasets/acme/corpus@main"),
        "{}",
        text(&st)
    );
    let out = hubfs(&["unmount", "--lazy", p(mnt.path())], home.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(mnt.path()));

    // The same with flags: --repo-type instead of the prefix, a folder two levels down.
    let out = hubfs(
        &[
            "mount",
            p(mnt.path()),
            "--endpoint",
            &hub.endpoint(),
            "--repo",
            "acme/corpus",
            "--repo-type",
            "dataset",
            "--subfolder",
            "data/train/extra",
        ],
        home.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(mnt.path().join("deep/file.txt")).unwrap(),
        c.files["data/train/extra/deep/file.txt"].to_vec()
    );
    let out = hubfs(&["unmount", p(mnt.path())], home.path());
    assert!(out.status.success(), "{}", text(&out));
}

/// Mounts in the foreground with `--read-timeout 5s`, then makes every byte response of the fake
/// Hub stop for 30 s part-way (or, with `plain`, right after its headers) and reads 1 MiB not
/// cached yet with `pread` until it fails (a `pread` may first return the part that arrived,
/// which must be right). Returns (errno of the failing call, the longest call).
fn stalled_read(plain: bool) -> (Option<i32>, Duration) {
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let d = support::daemon::spawn(
        mnt.path(),
        &[
            "--endpoint",
            &hub.endpoint(),
            "--read-timeout",
            "5s",
            "--cache-size",
            "64MiB",
        ],
        &[],
    );
    d.wait_mounted();
    let shard = "model-00002-of-00003.safetensors";
    let data = fx
        .file(RepoType::Model, "acme/sharded", "main", shard)
        .unwrap()
        .clone();
    let f = std::fs::File::open(mnt.path().join(format!("acme/sharded@main/{shard}"))).unwrap();
    if plain {
        hub.set_faults(fakehub::Faults {
            rate: 1.0,
            kinds: vec![fakehub::FaultKind::Stall(Duration::from_secs(30))],
            seed: 1,
            include_api: false,
        });
    } else {
        hub.set_shaping(Shaping {
            slow_fraction: 1.0,
            stall: Duration::from_secs(30),
            ..Shaping::default()
        });
    }
    let mut buf = vec![0u8; 1 << 20];
    let (start, mut got) = (200_000u64, 0usize);
    let mut calls = Vec::new();
    let errno = loop {
        let t = Instant::now();
        let r = f.read_at(&mut buf[got..], start + got as u64);
        calls.push(t.elapsed());
        match r {
            Ok(0) => panic!("EOF inside the file"),
            Ok(n) => {
                assert_eq!(
                    buf[got..got + n],
                    data.read_at(start + got as u64, n)[..],
                    "wrong bytes"
                );
                got += n;
                if got == buf.len() {
                    break None;
                }
            }
            Err(e) => break e.raw_os_error(),
        }
        assert!(calls.len() < 50, "no end to short reads: {calls:?}");
    };
    eprintln!("stalled read (plain: {plain}): {errno:?}; pread calls took {calls:?} ({got} bytes)");
    (errno, calls.into_iter().max().unwrap_or_default())
}

#[test]
fn a_hub_that_stops_mid_body_fails_the_read_within_the_read_timeout() {
    if !support::fuse_available() {
        return;
    }
    let (errno, took) = stalled_read(false);
    assert_eq!(errno, Some(libc::EIO));
    // The Done-when: within --read-timeout + 2 s (a pread took 68.5 s before).
    assert!(took <= Duration::from_secs(7), "a pread took {took:?}");
}

#[test]
fn a_body_that_never_starts_fails_the_read_within_the_read_timeout() {
    if !support::fuse_available() {
        return;
    }
    let (errno, took) = stalled_read(true);
    assert_eq!(errno, Some(libc::EIO));
    // It took 10.3 s, about twice --read-timeout, before.
    assert!(took <= Duration::from_secs(7), "a pread took {took:?}");
}
