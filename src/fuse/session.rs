//! How a hubfs FUSE session is set up: the mount options and worker threads fuser is given, and
//! the kernel read-ahead raised for the mount once it answers.

use std::path::Path;

use fuser::{Config, MountOption, SessionACL};

/// The fuser configuration hubfs mounts with.
pub fn fuse_config(allow_other: bool, threads: usize) -> Config {
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("hubfs".into()),
        MountOption::Subtype("hubfs".into()),
        MountOption::RO,
        MountOption::NoAtime,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
    ];
    cfg.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(threads.max(1));
    cfg.clone_fd = threads > 1;
    cfg
}

/// The kernel read-ahead we set for the mount, KiB: four FUSE requests' worth (4 MiB with 1 MiB
/// requests; more where the kernel allows larger ones). FUSE can only lower the default (128 KiB)
/// through its init reply, so it is raised through the mount's BDI in sysfs; the kernel then sends
/// reads of up to `max_pages` and keeps several in flight.
pub fn read_ahead_kb() -> u32 {
    (4 * super::readahead_to_ask() / 1024).max(4096)
}

/// Raises the kernel's read-ahead window for the mount at `mountpoint` (root only; a failure is
/// logged and harmless).
pub fn tune_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let kb = read_ahead_kb();
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => tracing::debug!(%path, kb, "kernel read-ahead raised"),
        Err(e) => tracing::debug!(%path, error = %e, "cannot raise kernel read-ahead"),
    }
}
