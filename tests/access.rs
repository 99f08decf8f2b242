//! Mounted access rules (the real HTTP client against the fake Hub): tokens for private and gated
//! repos, and EROFS for every write.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use fakehub::{Listener, RepoType, TOKEN_FULL, TOKEN_UNAPPROVED};
use support::mounted::{cfg, mount_hub, start_hub};
use support::{errno, sha256_file};

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
