//! Any name the kernel can hand hubfs: parsing never panics, and whatever parses can only ever
//! become one URL segment (never `/`, `.` or `..`) and one valid revision.
#![no_main]

use hubfs::fs::namespace::{is_valid_entry_name, parse_repo_dir, parse_root_name, RootName};
use hubfs::hub::urls::{encode_path, encode_segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(RootName::Org(org)) = parse_root_name(name) {
        let enc = encode_segment(&org).expect("a valid org encodes");
        assert!(!enc.contains('/') && enc != "." && enc != "..");
    }
    if let Some(dir) = parse_repo_dir(name) {
        for part in [&dir.repo, &dir.revision] {
            let enc = encode_segment(part).expect("a parsed name encodes");
            assert!(!enc.contains('/') && enc != "." && enc != "..", "{enc}");
        }
    }
    if is_valid_entry_name(name) {
        let enc = encode_segment(name).expect("a valid entry name encodes");
        assert!(!enc.contains('/'));
    }
    if let Ok(enc) = encode_path(name) {
        assert!(enc.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
    }
});
