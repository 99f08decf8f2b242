//! Whatever a Hub, CDN or man in the middle sends: the parsers of tree listings, Link headers and
//! Content-Range, the dates of revisions and the direct client's response heads never panic, and
//! what they accept is consistent.
#![no_main]

use hubfs::hub::h1::{parse_head, Parsed};
use hubfs::hub::wire::{next_link, parse_content_range, parse_rfc3339, parse_tree_page};
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = match data.split_first() {
        Some((s, r)) => (*s, r),
        None => return,
    };
    match selector % 5 {
        0 => {
            let dir = if selector & 0x80 != 0 { "data" } else { "" };
            if let Ok(entries) = parse_tree_page(rest, dir) {
                for e in entries {
                    let name = e.path.strip_prefix(dir).unwrap_or(&e.path).trim_start_matches('/');
                    assert!(!name.is_empty() && !name.contains('/'), "{}", e.path);
                }
            }
        }
        1 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                if let Some((a, b, total)) = parse_content_range(s) {
                    assert!(a <= b);
                    if let Some(t) = total {
                        assert!(b < t);
                    }
                }
            }
        }
        2 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = parse_rfc3339(s);
            }
        }
        3 => {
            if let Ok(Parsed::Complete(head)) = parse_head(rest) {
                // The body starts within what was parsed.
                assert!(head.len <= rest.len());
            }
        }
        _ => {
            if let Ok(v) = HeaderValue::from_bytes(rest) {
                let mut h = HeaderMap::new();
                h.insert("link", v);
                let _ = next_link(&h);
            }
        }
    }
});
