//! Shared set-up of the mounted tests (`reads.rs`, `namespace.rs`, `access.rs`): the fake Hub over
//! the standard fixtures and a mount of it through the real HTTP client.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{http_hub, mount, Mounted};
use fakehub::{FakeHub, FakeHubOptions, Fixtures, RepoType};
use hubfs::fs::FsConfig;

pub type HttpMount = Mounted<hubfs::hub::http::HttpHub>;

/// The fake Hub over the standard fixtures, listing 50 entries per page, and those fixtures.
pub fn start_hub() -> (FakeHub, Fixtures) {
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

pub fn cfg() -> FsConfig {
    FsConfig {
        cache_bytes: 64 << 20,
        ..FsConfig::default()
    }
}

pub fn mount_hub(hub: &FakeHub, token: Option<&str>, cfg: FsConfig) -> HttpMount {
    mount(http_hub(hub, token), cfg)
}

/// A mount without a token whose block cache holds `cache_bytes`.
pub fn mount_with_cache(hub: &FakeHub, cache_bytes: u64) -> HttpMount {
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
pub fn public_files(fx: &Fixtures) -> Vec<(RepoType, String, String, String, String, u64)> {
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

pub fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
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
