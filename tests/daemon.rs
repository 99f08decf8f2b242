//! The `hubfs` binary as users run it: mount, read, prove no disk writes, clean stop on SIGTERM,
//! clear messages for a missing, busy or stale mountpoint, and a daemon unmounted from outside
//! that leaves a newer mount at its path alone.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fakehub::RepoType;
use support::daemon::Daemon;
use support::{is_mounted, repo_dir, sha256_file};

const BIN: &str = env!("CARGO_BIN_EXE_hubfs");

fn wait_for(what: &str, d: &Daemon, f: impl FnMut() -> bool) {
    d.wait_for(what, f)
}

fn start(mnt: &Path, endpoint: &str) -> Daemon {
    support::daemon::spawn(mnt, &["--endpoint", endpoint, "--cache-size", "64MiB"], &[])
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn stop(d: Daemon) -> (std::process::ExitStatus, String) {
    support::sigterm(&d.child);
    wait_exit(d, "on SIGTERM")
}

/// Waits up to 15 s for the daemon to exit (failing with `why` it should have); its exit status
/// and log. The caller checks the unmount itself: the drop guard does not do it for it.
fn wait_exit(mut d: Daemon, why: &str) -> (std::process::ExitStatus, String) {
    let t = Instant::now();
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            d.mountpoint = None;
            return (st, d.log());
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "hubfs did not stop {why}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_serves_correct_bytes_writes_nothing_to_disk_and_stops_cleanly() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let d = start(mnt.path(), &hub.endpoint());
    wait_for("the mount", &d, || {
        is_mounted(mnt.path()) && mnt.path().join("datasets").is_dir()
    });
    let pid = d.child.id();
    let before = write_bytes(pid);
    for (t, id) in [
        (RepoType::Model, "acme/sharded"),
        (RepoType::Model, "acme/tiny-gpt2"),
        (RepoType::Dataset, "acme/corpus"),
    ] {
        let c = fx.repo(t, id).unwrap().resolve("main").unwrap();
        for (path, data) in c.files.iter().take(50) {
            let p = mnt
                .path()
                .join(format!("{}/{path}", repo_dir(t, id, "main")));
            assert_eq!(
                sha256_file(&p).unwrap(),
                data.sha256_hex(),
                "{}",
                p.display()
            );
        }
    }
    assert_eq!(write_bytes(pid), before, "the daemon wrote bytes to disk");
    assert_eq!(write_bytes(pid), 0, "the daemon wrote bytes to disk");
    let left: Vec<_> = std::fs::read_dir(d.home.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the daemon created files in HOME/cwd: {left:?}"
    );
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with('/') && !p.starts_with("/dev/") && !p.starts_with("/proc/"))
        .collect();
    assert!(fds.is_empty(), "the daemon holds files open: {fds:?}");
    let (status, log) = stop(d);
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(log.contains("unmounted"), "log:\n{log}");
    assert!(!is_mounted(mnt.path()), "still mounted after SIGTERM");
}

#[test]
fn missing_busy_and_stale_mountpoints_get_clear_messages() {
    if !support::fuse_available() {
        return;
    }
    let (hub, _) = support::standard_hub();
    // Missing.
    let out = Command::new(BIN)
        .args([
            "mount",
            "/nonexistent/hubfs-mnt",
            "--endpoint",
            &hub.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("mkdir -p"),
        "{err}"
    );
    // Busy.
    let mnt = tempfile::tempdir().unwrap();
    let d = start(mnt.path(), &hub.endpoint());
    d.wait_mounted();
    let out = Command::new(BIN)
        .args([
            "mount",
            mnt.path().to_str().unwrap(),
            "--endpoint",
            &hub.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busy"), "{err}");
    // Stale: the daemon is killed; a new one recovers the mountpoint.
    let mut d = d;
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    // (A name not looked up yet: the kernel may answer `datasets` from its cache.)
    let e = std::fs::metadata(mnt.path().join("spaces")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let d2 = start(mnt.path(), &hub.endpoint());
    wait_for("the remount", &d2, || {
        mnt.path().join("acme/tiny-gpt2@main/config.json").is_file()
    });
    let (status, log) = stop(d2);
    assert!(status.success(), "{log}");
    assert!(log.contains("stale"), "the recovery is logged: {log}");
}

#[test]
fn help_explains_every_mount_option() {
    let out = Command::new(BIN)
        .args(["mount", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--endpoint",
        "--token-file",
        "--cache-size",
        "--revision-ttl",
        "--allow-other",
        "--read-timeout",
        "HF_TOKEN",
        "HF_ENDPOINT",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    let top = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("mount"));
}

#[test]
fn the_token_never_reaches_logs_at_trace_level_nor_the_cdn() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let d = support::daemon::spawn(
        mnt.path(),
        &["--endpoint", &hub.endpoint()],
        &[("HF_TOKEN", fakehub::TOKEN_FULL), ("HUBFS_LOG", "trace")],
    );
    d.wait_mounted();
    for id in ["acme/private-model", "acme/gated-model"] {
        let c = fx.commit(RepoType::Model, id, "main").unwrap();
        for (path, data) in &c.files {
            let p = mnt.path().join(format!("{id}@main/{path}"));
            assert_eq!(
                sha256_file(&p).unwrap(),
                data.sha256_hex(),
                "{}",
                p.display()
            );
        }
    }
    let (status, log) = stop(d);
    assert!(status.success());
    assert!(
        log.len() > 1000 && log.contains("TRACE"),
        "trace logging was on"
    );
    assert!(
        !log.contains(fakehub::TOKEN_FULL),
        "the token appears in the log"
    );
    assert!(
        !log.contains(&fakehub::TOKEN_FULL[8..]),
        "part of the token appears in the log"
    );
    let cdn_auth = hub
        .requests()
        .into_iter()
        .filter(|r| r.listener == fakehub::Listener::Cdn)
        .filter(|r| r.authorization.is_some())
        .count();
    assert_eq!(cdn_auth, 0, "the CDN saw an Authorization header");
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.listener == fakehub::Listener::Hub
                && r.authorization.as_deref() == Some(&format!("Bearer {}", fakehub::TOKEN_FULL))),
        "the Hub got the token"
    );
}

#[test]
fn a_daemon_unmounted_from_outside_leaves_a_new_mount_at_its_path_alone() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let first = start(mnt.path(), &hub.endpoint());
    first.wait_mounted();
    // Held still, so that the new mount is up before it notices it lost its own.
    let pid = nix::unistd::Pid::from_raw(first.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // Unmounted from outside (`umount`, `hubfs unmount`), then mounted again at once, as a quick
    // restart does.
    nix::mount::umount2(mnt.path(), nix::mount::MntFlags::empty()).unwrap();
    let second = start(mnt.path(), &hub.endpoint());
    second.wait_mounted();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let (status, log) = wait_exit(first, "after losing its mount");
    assert!(status.success(), "{status:?}; log:\n{log}");
    assert!(log.contains("external unmount"), "log:\n{log}");
    // The first daemon's exit took nothing with it: the second mount still serves.
    assert!(
        is_mounted(mnt.path()),
        "the new mount went away when the old daemon exited; its log:\n{}",
        second.log()
    );
    let c = fx
        .repo(RepoType::Model, "acme/tiny-gpt2")
        .unwrap()
        .resolve("main")
        .unwrap();
    let (path, data) = c.files.iter().next().unwrap();
    let p = mnt.path().join(format!(
        "{}/{path}",
        repo_dir(RepoType::Model, "acme/tiny-gpt2", "main")
    ));
    assert_eq!(sha256_file(&p).unwrap(), data.sha256_hex());
    let (status, log) = stop(second);
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(!is_mounted(mnt.path()), "still mounted after SIGTERM");
}
