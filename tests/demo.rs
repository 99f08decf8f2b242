//! The README's first command: `scripts/demo` mounts a working demo over the bundled fake Hub.
//! Runs `scripts/demo --check` with the binaries this test run built (no nested cargo build):
//! it mounts, compares files with the fake Hub's export, runs `hubfs status`, and cleans up.

mod support;

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_script_mounts_the_fake_hub_and_reads_byte_exact() {
    if !support::fuse_available() {
        return;
    }
    let hubfs = Path::new(env!("CARGO_BIN_EXE_hubfs"));
    let bin_dir = hubfs.parent().expect("binary dir");
    assert!(
        bin_dir.join("fakehub").exists(),
        "{} is missing: run `cargo build --workspace` first (the README's test command does)",
        bin_dir.join("fakehub").display()
    );
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo"))
        .arg("--check")
        .env("HUBFS_DEMO_BIN_DIR", bin_dir)
        .output()
        .expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/demo --check failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("hubfs is mounted at"), "{stdout}");
    assert!(
        stdout.contains("the demo mount reads byte-exact"),
        "{stdout}"
    );
    let mnt = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hubfs is mounted at "))
        .and_then(|l| l.split_whitespace().next())
        .expect("mountpoint in the output");
    assert!(
        !Path::new(mnt).exists(),
        "the demo left {mnt} behind after exiting"
    );
}
