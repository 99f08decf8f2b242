//! Test support: a mounted hubfs in a temp dir that unmounts on drop, and prerequisite checks that
//! fail loudly instead of skipping (a skip is allowed only when asked for with
//! `HUBFS_ALLOW_SKIP=1`, and never under `CI=true`).

#![allow(dead_code)]

pub mod daemon;
pub mod mounted;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hubfs::fs::{FsConfig, HubFs};
use hubfs::hub::HubClient;
use hubfs::stats::Stats;

/// A test's prerequisite is missing: a failure, unless `HUBFS_ALLOW_SKIP=1` asks for a skip (and
/// `CI` is not `true`), in which case it prints `SKIPPED: <why>` and returns.
pub fn missing_prerequisite(why: &str) {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let allow = std::env::var("HUBFS_ALLOW_SKIP").as_deref() == Ok("1");
    if ci || !allow {
        panic!(
            "{why}: this test cannot run here, and a test that cannot run fails \
             (`HUBFS_ALLOW_SKIP=1` turns this into a skip outside CI; `scripts/test` installs \
             every prerequisite)"
        );
    }
    eprintln!("SKIPPED (HUBFS_ALLOW_SKIP=1): {why}");
}

/// True when this machine can mount FUSE (`/dev/fuse` and root). Otherwise a failure, or a
/// skip with `HUBFS_ALLOW_SKIP=1` (see [`missing_prerequisite`]).
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && nix::unistd::geteuid().is_root();
    if !ok {
        missing_prerequisite("FUSE tests need /dev/fuse and root");
    }
    ok
}

/// A mounted filesystem; unmounts when dropped.
pub struct Mounted<C: HubClient> {
    pub dir: tempfile::TempDir,
    pub fs: Arc<HubFs<C>>,
    session: Option<fuser::BackgroundSession>,
    rt: Option<tokio::runtime::Runtime>,
}

impl<C: HubClient> Mounted<C> {
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl<C: HubClient> Drop for Mounted<C> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Mounts `hub` with `cfg` in a fresh temp dir, on its own runtime.
pub fn mount<C: HubClient>(hub: Arc<C>, cfg: FsConfig) -> Mounted<C> {
    mount_with_stats(hub, cfg, Arc::new(Stats::default()))
}

/// [`mount`], counting into `stats` (share it with the client to see its counters too).
pub fn mount_with_stats<C: HubClient>(hub: Arc<C>, cfg: FsConfig, stats: Arc<Stats>) -> Mounted<C> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("hubfs-test-")
        .tempdir()
        .expect("tempdir");
    let fs = Arc::new(HubFs::new(hub, cfg, stats));
    let session =
        hubfs::mount::spawn(fs.clone(), rt.handle().clone(), dir.path(), false, 4).expect("mount");
    // Wait until the kernel answers for the mount.
    for _ in 0..100 {
        if std::fs::metadata(dir.path().join("datasets")).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Mounted {
        dir,
        fs,
        session: Some(session),
        rt: Some(rt),
    }
}

/// Hex sha256 of bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b);
    format!("{:x}", h.finalize())
}

/// Hex sha256 of a file read in 1 MiB chunks through `read`.
pub fn sha256_file(p: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The errno of an io error (panics on a non-OS error).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("not an OS error: {e}"))
}

/// The mount-relative directory of a fixture repo at a ref: `datasets/acme/corpus@refs%2Fpr%2F1`.
pub fn repo_dir(t: fakehub::RepoType, id: &str, rev: &str) -> String {
    let prefix = match t {
        fakehub::RepoType::Model => "",
        fakehub::RepoType::Dataset => "datasets/",
        fakehub::RepoType::Space => "spaces/",
    };
    format!("{prefix}{id}@{}", rev.replace('/', "%2F"))
}

/// An HTTP Hub client for a fake Hub, with an optional token.
pub fn http_hub(hub: &fakehub::FakeHub, token: Option<&str>) -> Arc<hubfs::hub::http::HttpHub> {
    http_hub_with(hub, token, Duration::from_secs(10))
}

/// The fake Hub serving the standard fixtures (default options), and those fixtures.
pub fn standard_hub() -> (fakehub::FakeHub, fakehub::Fixtures) {
    let fx = fakehub::Fixtures::standard();
    let hub =
        fakehub::FakeHub::start(fx.clone(), fakehub::FakeHubOptions::default()).expect("fake hub");
    (hub, fx)
}

/// An HTTP Hub client with a given `--read-timeout` and fast retries.
pub fn http_hub_with(
    hub: &fakehub::FakeHub,
    token: Option<&str>,
    read_timeout: Duration,
) -> Arc<hubfs::hub::http::HttpHub> {
    http_hub_counting(hub, token, read_timeout, Arc::new(Stats::default()))
}

/// [`http_hub_with`], counting requests into `stats`.
pub fn http_hub_counting(
    hub: &fakehub::FakeHub,
    token: Option<&str>,
    read_timeout: Duration,
    stats: Arc<Stats>,
) -> Arc<hubfs::hub::http::HttpHub> {
    http_hub_at(&hub.endpoint(), token, read_timeout, stats)
}

/// An HTTP Hub client for any endpoint (a mirror in front of a fake Hub), with fast retries.
pub fn http_hub_at(
    endpoint: &str,
    token: Option<&str>,
    read_timeout: Duration,
    stats: Arc<Stats>,
) -> Arc<hubfs::hub::http::HttpHub> {
    let mut cfg = hubfs::hub::http::HttpConfig::new(endpoint);
    cfg.credentials = token.and_then(hubfs::hub::auth::Token::parse).into();
    cfg.request_timeout = read_timeout;
    cfg.read_timeout = read_timeout;
    cfg.retry.base_delay = Duration::from_millis(10);
    cfg.retry.max_delay = Duration::from_millis(200);
    cfg.retry.max_attempts = 8;
    Arc::new(
        hubfs::hub::http::HttpHub::new(cfg)
            .expect("client")
            .with_stats(stats),
    )
}

/// True when something is mounted at exactly `p` (from /proc/self/mountinfo).
pub fn is_mounted(p: &Path) -> bool {
    let canon = std::fs::canonicalize(p).unwrap_or(p.to_owned());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == canon.to_str())
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
}
