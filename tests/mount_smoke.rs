//! A real mount over the in-memory Hub: the kernel path works at all.

mod support;

use hubfs::fs::FsConfig;
use hubfs::hub::memory::{fake_sha, MemoryHub};
use hubfs::hub::{RepoId, RepoType};

#[test]
fn mount_list_and_read_through_the_kernel() {
    if !support::fuse_available() {
        return;
    }
    let hub = MemoryHub::new();
    let r = RepoId::new(RepoType::Model, "acme", "m");
    hub.add_commit(
        &r,
        &fake_sha(1),
        &[("config.json", b"{\"v\":1}"), ("a/b.txt", b"bee")],
    );
    hub.set_ref(&r, "main", &fake_sha(1));
    let m = support::mount(hub, FsConfig::default());
    assert_eq!(
        std::fs::read(m.join("acme/m@main/config.json")).unwrap(),
        b"{\"v\":1}"
    );
    assert_eq!(
        std::fs::read_to_string(m.join("acme/m/a/b.txt")).unwrap(),
        "bee"
    );
    let mut names: Vec<String> = std::fs::read_dir(m.join("acme/m@main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "config.json"]);
}
