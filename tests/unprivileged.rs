//! hubfs mounted by a user who is not root, through the setuid `fusermount3`, as on a
//! distribution's desktop or a shared login node: the CI user `hubfs-test` (made by `.ci/run`,
//! with `/dev/fuse` mode 0666 as Debian ships it) mounts, reads byte-exact, unmounts, and after
//! its daemon is killed (-9) mounts again on the same directory, clearing the dead mount without
//! root (`fusermount3 -u -z`).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fakehub::RepoType;
use support::is_mounted;

/// The unprivileged user CI creates.
const USER: &str = "hubfs-test";

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Some("the test runs as root (to switch to the test user)".into());
    }
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        return Some(format!("no user {USER} (.ci/run creates it)"));
    }
    match std::fs::metadata("/dev/fuse") {
        Ok(m) if m.mode() & 0o006 == 0o006 => {}
        Ok(m) => {
            return Some(format!(
                "/dev/fuse is mode {:o}: others cannot open it (.ci/run makes it 0666)",
                m.mode() & 0o777
            ))
        }
        Err(e) => return Some(format!("/dev/fuse: {e}")),
    }
    let setuid = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .any(|m| m.mode() & 0o4000 != 0 && m.uid() == 0);
    if !setuid {
        return Some("no setuid-root fusermount3 (apt-get install fuse3)".into());
    }
    if which("setpriv").is_none() {
        return Some("setpriv not found (util-linux)".into());
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// Lazily unmounts (as root) what a failed test left.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The test user's world: its uid/gid, a HOME it owns, and a copy of the binary it can run.
struct AsUser {
    uid: u32,
    gid: u32,
    home: tempfile::TempDir,
    bin: PathBuf,
}

impl AsUser {
    fn new() -> AsUser {
        let u = nix::unistd::User::from_name(USER).unwrap().unwrap();
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = home.path().join("hubfs");
        std::fs::copy(env!("CARGO_BIN_EXE_hubfs"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(home.path(), Some(u.uid), Some(u.gid)).unwrap();
        AsUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home,
            bin,
        }
    }

    /// `setpriv` to the user (no supplementary groups, no capabilities) running `prog args`.
    fn command(&self, prog: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--inh-caps=-all", "--"])
            .arg(prog)
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(self.home.path());
        c
    }

    fn hubfs(&self, args: &[&str]) -> Output {
        self.command(&self.bin, args).output().unwrap()
    }

    /// The bytes of `path` as the user reads them.
    fn cat(&self, path: &Path) -> Vec<u8> {
        let out = self
            .command(Path::new("/bin/cat"), &[path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    }

    fn mountpoint(&self) -> PathBuf {
        let m = self.home.path().join("mnt");
        std::fs::create_dir(&m).unwrap();
        nix::unistd::chown(
            &m,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .unwrap();
        m
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_user_who_is_not_root_mounts_reads_unmounts_and_recovers_a_stale_mount() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the unprivileged mount test cannot run: {why}; CI=true forbids skipping it");
        }
        eprintln!("SKIPPED: {why} (set CI=true to make this a failure)");
        return;
    }
    let (hub, fx) = support::standard_hub();
    let user = AsUser::new();
    let mnt = user.mountpoint();
    let _guard = Unmount(mnt.clone());
    let m = mnt.to_str().unwrap();
    let ep = hub.endpoint();
    let c = fx
        .commit(RepoType::Model, "acme/tiny-gpt2", "main")
        .unwrap();
    let rel = "acme/tiny-gpt2@main/model.safetensors";
    let want = c.files["model.safetensors"].to_vec();

    // Mount (returns once the mount answers), read, unmount: all as the user.
    let out = user.hubfs(&["mount", m, "--endpoint", &ep, "--cache-size", "64MiB"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(is_mounted(&mnt));
    assert_eq!(user.cat(&mnt.join(rel)), want);
    let out = user.hubfs(&["unmount", m]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&mnt), "still mounted after hubfs unmount");

    // A daemon in the foreground, killed with -9: its mount stays behind, dead.
    let log = user.home.path().join("first.log");
    let mut d = user
        .command(
            &user.bin,
            &[
                "mount",
                m,
                "--foreground",
                "--endpoint",
                &ep,
                "--cache-size",
                "64MiB",
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap().contains("mounted") {
        assert!(
            d.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(t.elapsed() < Duration::from_secs(20), "no mount");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(user.cat(&mnt.join(rel)), want);
    d.kill().unwrap();
    d.wait().unwrap();
    assert!(is_mounted(&mnt), "the dead mount is still there");
    // (stat may be answered from cached attributes; listing reaches the dead connection.)
    let stat = user.command(Path::new("/bin/ls"), &[m]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&stat.stderr).contains("not connected"),
        "{}",
        text(&stat)
    );

    // Mounting again on the same directory, still as the user, clears it and serves.
    let log = user.home.path().join("second.log");
    let out = user.hubfs(&[
        "mount",
        m,
        "--endpoint",
        &ep,
        "--cache-size",
        "64MiB",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\nlog: {}",
        text(&out),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The first daemon, whose mount `hubfs unmount` took away, notices within 200 ms and exits;
    // as it goes it must not unmount what is mounted at the path by then (fuser 0.18.0 did,
    // through an inverted "still mounted?" check: vendor/fuser/HUBFS-PATCH.md). Give it time.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        is_mounted(&mnt),
        "the new mount went away\nlog: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(user.cat(&mnt.join(rel)), want);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("stale"), "the recovery is logged: {logged}");
    let out = user.hubfs(&["unmount", m]);
    assert!(
        out.status.success(),
        "{}\nlog: {}\nmountinfo: {}",
        text(&out),
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    );
    assert!(!is_mounted(&mnt));
}
