//! Operations around a mount, on the real binary: systemd readiness, the fstab mount helper, the
//! stats file, `hubfs status`, `hubfs path` and the Prometheus endpoint.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fakehub::RepoType;
use support::{is_mounted, sha256_file};

const BIN: &str = env!("CARGO_BIN_EXE_hubfs");

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts a leftover mount when a test fails half-way.
struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ready_is_sent_only_once_the_mount_answers_and_stats_are_served() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path());
    let sockdir = tempfile::tempdir().unwrap();
    let sock_path = sockdir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = free_port();
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "mount",
            mnt.path().to_str().unwrap(),
            "--foreground",
            "--endpoint",
            &hub.endpoint(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).expect("READY=1 within 20 s");
    // At the moment READY=1 arrives, the mount already answers.
    let stats =
        std::fs::read_to_string(mnt.path().join(".hubfs/stats")).expect("mount answers at READY");
    assert_eq!(&buf[..n], b"READY=1");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["bytes_served_total"], 0);

    // Reads show up in the counters; the control directory stays out of `ls /`.
    let c = fx
        .commit(RepoType::Model, "acme/tiny-gpt2", "main")
        .unwrap();
    let data = &c.files["model.safetensors"];
    let p = mnt.path().join("acme/tiny-gpt2@main/model.safetensors");
    assert_eq!(sha256_file(&p).unwrap(), data.sha256_hex());
    // A reader is served from blocks as they arrive; the fetch's bytes are counted when its run
    // ends and is filed, a moment later.
    let stats_now = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(mnt.path().join(".hubfs/stats")).unwrap())
            .unwrap()
    };
    let t = Instant::now();
    let mut v = stats_now();
    while v["bytes_fetched_total"].as_u64().unwrap() < data.len()
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
        v = stats_now();
    }
    assert!(
        v["bytes_served_total"].as_u64().unwrap() >= data.len(),
        "{v}"
    );
    assert!(
        v["bytes_fetched_total"].as_u64().unwrap() >= data.len(),
        "{v}"
    );
    assert!(v["http_requests_total"].as_u64().unwrap() > 0, "{v}");
    let root: Vec<String> = std::fs::read_dir(mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!root.iter().any(|n| n == ".hubfs"), "{root:?}");

    // hubfs status: mounted, with the counters.
    let out = Command::new(BIN)
        .args(["status", mnt.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("is mounted") && text.contains("bytes_served_total"),
        "{text}"
    );

    // Prometheus text on the loopback port.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("hubfs_bytes_served_total "), "{resp}");

    support::sigterm(&child);
    assert!(child.wait().unwrap().success());
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let out = Command::new(BIN)
        .args(["status", mnt.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "status after unmount");
}

#[test]
fn the_fstab_helper_mounts_like_mount8_runs_it_and_detaches() {
    if !support::fuse_available() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let bindir = tempfile::tempdir().unwrap();
    let helper = bindir.path().join("mount.fuse.hubfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let _guard = Unmount(mnt.path());
    let home = tempfile::tempdir().unwrap();
    // As mount(8) runs it for `hubfs MNT fuse.hubfs ro,_netdev,cache_size=64MiB,endpoint=... 0 0`.
    let opts = format!(
        "ro,_netdev,nofail,x-systemd.automount,cache_size=64MiB,revision_ttl=30s,endpoint={}",
        hub.endpoint()
    );
    let status = Command::new(&helper)
        .args(["hubfs", mnt.path().to_str().unwrap(), "-o", &opts])
        .env("HOME", home.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the helper returns once the mount answers"
    );
    assert!(is_mounted(mnt.path()), "mounted when the helper returned");
    let c = fx.commit(RepoType::Model, "acme/sharded", "main").unwrap();
    for (path, data) in &c.files {
        assert_eq!(
            sha256_file(&mnt.path().join(format!("acme/sharded@main/{path}"))).unwrap(),
            data.sha256_hex()
        );
    }
    // `hubfs path` against the live mount.
    let out = Command::new(BIN)
        .args([
            "path",
            "acme/sharded",
            "--mount",
            mnt.path().to_str().unwrap(),
            "--pin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sha = &fx.repo(RepoType::Model, "acme/sharded").unwrap().refs["main"];
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        mnt.path()
            .join(format!("acme/sharded@{sha}"))
            .display()
            .to_string()
    );
    let out = Command::new(BIN)
        .args([
            "path",
            "acme/corpus",
            "--type",
            "dataset",
            "--revision",
            "refs/pr/1",
            "--mount",
            "/mnt/hf",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/mnt/hf/datasets/acme/corpus@refs%2Fpr%2F1"
    );
    // Unmounting externally ends the detached daemon cleanly.
    nix::mount::umount2(mnt.path(), nix::mount::MntFlags::empty()).unwrap();
    wait("the unmount", || !is_mounted(mnt.path()));
    // Unknown options are refused before anything is mounted.
    let bad = Command::new(&helper)
        .args([
            "hubfs",
            mnt.path().to_str().unwrap(),
            "-o",
            "bogus_option=1",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown mount option"));
    assert!(!is_mounted(mnt.path()));
}
