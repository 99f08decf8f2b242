//! The client commands, each run in its own process beside a mount: `hubfs path`, `hubfs status`
//! and `hubfs unmount` (the services that run inside the daemon are in `service`).

use std::io;
use std::path::{Path, PathBuf};

use crate::cli::PathArgs;
use crate::fs::namespace::{is_valid_name, is_valid_revision};
use crate::fs::{CONTROL_DIR, STATS_FILE, XATTR_COMMIT};
use crate::hub::{HubClient, RepoId, RepoType};

/// The mount-relative directory of a repo at a revision: `datasets/org/name@refs%2Fpr%2F1`.
pub fn repo_path(repo_type: RepoType, repo_id: &str, revision: &str) -> Result<String, String> {
    let (org, name) = repo_id
        .split_once('/')
        .filter(|(o, n)| is_valid_name(o) && is_valid_name(n))
        .ok_or_else(|| format!("invalid repo id {repo_id:?}: expected org/name"))?;
    if !is_valid_revision(revision) {
        return Err(format!("invalid revision {revision:?}"));
    }
    let rev = crate::hub::urls::encode_segment(revision).map_err(|e| e.to_string())?;
    Ok(format!("{}{org}/{name}@{rev}", repo_type.url_prefix()))
}

/// Reads extended attribute `name` of `path`.
pub fn getxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let n = std::ffi::CString::new(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `hubfs path`: the repo's path under the mount; with `--pin`, at the commit it resolves to now
/// (the mount's `user.hf.commit`, else one Hub request).
pub fn path_command(args: &PathArgs) -> Result<PathBuf, String> {
    let t = args.repo_type.repo_type();
    let rel = repo_path(t, &args.repo_id, &args.revision)?;
    if let Some(root) = one_repo_root(&args.mount) {
        return root.path_of(t, &args.repo_id, &args.revision, &args.mount);
    }
    if !args.pin {
        return Ok(args.mount.join(rel));
    }
    let sha = match getxattr(&args.mount.join(&rel), XATTR_COMMIT) {
        Ok(v) => String::from_utf8(v).map_err(|_| "bad commit attribute".to_owned())?,
        Err(_) => resolve_via_hub(t, args)?,
    };
    Ok(args.mount.join(repo_path(t, &args.repo_id, &sha)?))
}

fn resolve_via_hub(t: RepoType, args: &PathArgs) -> Result<String, String> {
    let endpoint = crate::config::choose_endpoint(
        args.endpoint.as_deref(),
        std::env::var("HF_ENDPOINT").ok().as_deref(),
    );
    let mut cfg = crate::hub::http::HttpConfig::new(&endpoint);
    cfg.credentials = crate::hub::auth::find_token(None, &crate::hub::auth::ProcessEnv)
        .map_err(|e| e.to_string())?
        .map(|(t, _)| t)
        .into();
    (cfg.ca_bundles, cfg.proxy) =
        crate::config::network_settings(None, &crate::hub::auth::ProcessEnv)?;
    let hub = crate::hub::http::HttpHub::new(cfg).map_err(|e| e.to_string())?;
    let (org, name) = args.repo_id.split_once('/').unwrap_or_default();
    let repo = RepoId::new(t, org, name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(hub.resolve_revision(&repo, &args.revision))
        .map(|c| c.sha)
        .map_err(|e| format!("cannot resolve {}@{}: {e}", args.repo_id, args.revision))
}

/// What the root of a one-repo mount is, from its extended attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneRepoRoot {
    /// `acme/m`, `datasets/acme/corpus`.
    pub repo: String,
    /// The revision it was mounted from.
    pub revision: String,
    /// The commit it is pinned to.
    pub commit: String,
    /// The folder of the repo it shows (empty for the repo's top).
    pub folder: String,
}

impl OneRepoRoot {
    /// `hubfs path` on this mount: the mountpoint itself, when it is the repo asked for at the
    /// revision asked for (its name or its commit); an error saying what the mount serves
    /// otherwise.
    fn path_of(
        &self,
        t: RepoType,
        repo_id: &str,
        revision: &str,
        mount: &Path,
    ) -> Result<PathBuf, String> {
        let want = format!("{}{repo_id}", t.url_prefix());
        let serves = format!(
            "the mount at {} serves only {}@{} (commit {}){}",
            mount.display(),
            self.repo,
            self.revision,
            self.commit,
            if self.folder.is_empty() {
                String::new()
            } else {
                format!(", folder {}", self.folder)
            }
        );
        if want != self.repo || (revision != self.revision && revision != self.commit) {
            return Err(format!("{serves}: no path for {want}@{revision} there"));
        }
        if !self.folder.is_empty() {
            return Err(format!("{serves}: the repo's top is not in it"));
        }
        Ok(mount.to_owned())
    }
}

/// The repo a hubfs mount at `mount` is rooted at, if it is a one-repo mount.
pub fn one_repo_root(mount: &Path) -> Option<OneRepoRoot> {
    let get = |name: &str| -> Option<String> {
        getxattr(mount, name)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    };
    if !is_hubfs_mount(mount) {
        return None;
    }
    Some(OneRepoRoot {
        repo: get(crate::fs::root::XATTR_REPO)?,
        revision: get(crate::fs::root::XATTR_REVISION)?,
        commit: get(XATTR_COMMIT)?,
        folder: get(crate::fs::root::XATTR_PATH).unwrap_or_default(),
    })
}

/// `hubfs unmount`: unmounts the hubfs mount at `mountpoint` (root: umount2, lazily with
/// `lazy`; others: `fusermount3 -u [-z]`). Refuses, unmounting nothing, when it is not one.
pub fn unmount_command(mountpoint: &Path, lazy: bool) -> Result<(), String> {
    let shown = mountpoint.display();
    match crate::mountpoint::mount_type(mountpoint).as_deref() {
        Some("fuse.hubfs") => {}
        Some("fuse") if is_hubfs_mount(mountpoint) => {}
        Some(other) => {
            return Err(format!(
                "{shown} is not a hubfs mount (it is a {other} mount): nothing unmounted"
            ))
        }
        None => {
            return Err(format!(
                "{shown} is not a mount point: hubfs is not mounted there"
            ))
        }
    }
    if nix::unistd::geteuid().is_root() {
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        nix::mount::umount2(mountpoint, flags).map_err(|e| match e {
            nix::errno::Errno::EBUSY => format!(
                "{shown} is busy: files in it are open or a process works in it; close them, or unmount with --lazy"
            ),
            e => format!("umount {shown}: {e}"),
        })
    } else {
        crate::mountpoint::fusermount(mountpoint, lazy)
    }
}

/// True when a hubfs mount is at exactly `path`.
pub fn is_hubfs_mount(path: &Path) -> bool {
    crate::mountpoint::mount_type(path).is_some_and(|t| t == "fuse.hubfs" || t == "fuse")
        && path.join(CONTROL_DIR).join(STATS_FILE).exists()
}

/// `hubfs status`: a line saying whether the mount is up, then its counters.
pub fn status_command(mountpoint: &Path) -> (bool, String) {
    if !is_hubfs_mount(mountpoint) {
        return (
            false,
            format!("hubfs is not mounted at {}\n", mountpoint.display()),
        );
    }
    let root = match one_repo_root(mountpoint) {
        Some(r) if r.folder.is_empty() => {
            format!("root: repo {}@{} (commit {})", r.repo, r.revision, r.commit)
        }
        Some(r) => format!(
            "root: folder {} of repo {}@{} (commit {})",
            r.folder, r.repo, r.revision, r.commit
        ),
        None => "root: the whole Hub".to_owned(),
    };
    match std::fs::read_to_string(mountpoint.join(CONTROL_DIR).join(STATS_FILE)) {
        Ok(stats) => (
            true,
            format!(
                "hubfs is mounted at {}\n{root}\n{stats}",
                mountpoint.display()
            ),
        ),
        Err(e) => (
            false,
            format!("hubfs at {} does not answer: {e}\n", mountpoint.display()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths() {
        assert_eq!(
            repo_path(RepoType::Model, "meta-llama/Llama-2-7b", "main").unwrap(),
            "meta-llama/Llama-2-7b@main"
        );
        assert_eq!(
            repo_path(RepoType::Dataset, "acme/corpus", "refs/pr/1").unwrap(),
            "datasets/acme/corpus@refs%2Fpr%2F1"
        );
        assert_eq!(
            repo_path(RepoType::Space, "acme/demo", "v1.0").unwrap(),
            "spaces/acme/demo@v1.0"
        );
        for bad in ["gpt2", "a/b/c", "../x", "a/.."] {
            assert!(repo_path(RepoType::Model, bad, "main").is_err(), "{bad}");
        }
        assert!(repo_path(RepoType::Model, "a/b", "..").is_err());
    }
}
