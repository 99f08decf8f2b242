//! The Hub's wire formats, parsed: pure functions over bytes and header values, no I/O (fuzzed by
//! `fuzz/fuzz_targets/hub_responses.rs`). Revision info, tree pages, `Content-Range`, `Link`
//! pagination, `RateLimit` and the Hub's RFC 3339 dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::{EntryKind, HubError, TreeEntry};

/// Revision info (`/api/{type}s/{repo}/revision/{rev}`), the fields hubfs reads.
#[derive(Deserialize)]
pub(crate) struct RevisionJson {
    pub(crate) sha: Option<String>,
    #[serde(rename = "lastModified")]
    pub(crate) last_modified: Option<String>,
}

/// The `lfs` object of a tree entry.
#[derive(Deserialize)]
pub(crate) struct LfsJson {
    pub(crate) oid: String,
}

/// One entry of a tree page.
#[derive(Deserialize)]
pub(crate) struct TreeJson {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) oid: String,
    pub(crate) lfs: Option<LfsJson>,
}

/// The kind of a tree entry's `type`, `None` for a type hubfs does not show.
pub(crate) fn entry_kind(kind: &str) -> Option<EntryKind> {
    match kind {
        "file" => Some(EntryKind::File),
        "directory" => Some(EntryKind::Directory),
        _ => None,
    }
}

/// True when `path` is a direct child of folder `dir` ("" for the root): listings can answer
/// more than asked (a bucket's raw-prefix match, a misbehaving mirror), and the rest is dropped.
pub(crate) fn is_direct_child(path: &str, dir: &str) -> bool {
    let name = if dir.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
    };
    name.is_some_and(|n| !n.is_empty() && !n.contains('/'))
}

/// Parses one page of a tree listing of folder `dir` ("" for the root): the entries that are
/// direct children of it, with their etag (LFS sha256, else git oid). Entries of unknown type or
/// outside the folder are skipped (and logged); a body that is not a JSON array of entries is an
/// error.
pub fn parse_tree_page(body: &[u8], dir: &str) -> Result<Vec<TreeEntry>, String> {
    let page: Vec<TreeJson> =
        serde_json::from_slice(body).map_err(|e| format!("invalid tree JSON: {e}"))?;
    let mut out = Vec::with_capacity(page.len());
    for e in page {
        let Some(kind) = entry_kind(&e.kind) else {
            tracing::debug!(kind = %e.kind, path = %e.path, "skipping tree entry");
            continue;
        };
        if !is_direct_child(&e.path, dir) {
            tracing::warn!(entry = %e.path, folder = dir, "tree entry outside the folder listed; skipped");
            continue;
        }
        out.push(TreeEntry {
            etag: e.lfs.map(|l| l.oid).unwrap_or(e.oid),
            path: e.path,
            kind,
            size: if kind == EntryKind::File { e.size } else { 0 },
        });
    }
    Ok(out)
}

/// Parses `bytes a-b/total` (total may be `*`).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let a: u64 = a.trim().parse().ok()?;
    let b: u64 = b.trim().parse().ok()?;
    if b < a {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if total.is_some_and(|t| b >= t) {
        return None;
    }
    Some((a, b, total))
}

/// The `rel="next"` URL of a `Link` header, if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all("link") {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let Some(target) = pieces.next() else {
                continue;
            };
            let target = target.trim();
            if !(target.starts_with('<') && target.ends_with('>')) {
                continue;
            }
            let is_next = pieces.any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                return Some(target[1..target.len() - 1].to_owned());
            }
        }
    }
    None
}

/// Seconds until reset from a `RateLimit: "bucket";r=0;t=N` header, when nothing remains.
pub fn ratelimit_reset(v: &str) -> Option<Duration> {
    let mut r = None;
    let mut t = None;
    for p in v.split(';') {
        let p = p.trim();
        if let Some(x) = p.strip_prefix("r=") {
            r = x.parse::<u64>().ok();
        } else if let Some(x) = p.strip_prefix("t=") {
            t = x.parse::<u64>().ok();
        }
    }
    match (r, t) {
        (Some(0), Some(t)) => Some(Duration::from_secs(t + 1)),
        _ => None,
    }
}

/// Parses `2024-01-02T12:00:00.000Z` (RFC 3339, UTC or with an offset).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = s.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            // (`get`, not slicing: a non-ASCII byte may sit anywhere in what the Hub sent.)
            let sign = if r.starts_with('-') { -1 } else { 1 };
            let hours = r.get(1..3)?.parse::<i64>().ok()?;
            let minutes = r.get(4..6)?.parse::<i64>().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// A 206's `Content-Range` must be `bytes offset-end/size` (the total may be `*`).
pub fn check_content_range(
    cr: Option<&str>,
    offset: u64,
    end: u64,
    size: u64,
    url: &str,
) -> Result<(), HubError> {
    let fail = |message| HubError::Protocol {
        url: url.to_owned(),
        message,
    };
    let cr = cr.ok_or_else(|| fail("206 without Content-Range".into()))?;
    let (a, b, total) =
        parse_content_range(cr).ok_or_else(|| fail(format!("bad Content-Range {cr:?}")))?;
    if a != offset || b != end || total.is_some_and(|t| t != size) {
        return Err(fail(format!(
            "Content-Range {cr:?} does not match bytes {offset}-{end}/{size}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn tree_pages_keep_direct_children_with_lfs_etags() {
        let body = br#"[{"type":"directory","oid":"d1","size":0,"path":"data/train"},
            {"type":"file","oid":"f1","size":12,"path":"data/a.txt"},
            {"type":"file","oid":"ptr","size":99,"path":"data/w.bin","lfs":{"oid":"sha","size":99,"pointerSize":130}},
            {"type":"file","oid":"x","size":1,"path":"other/b.txt"},
            {"type":"file","oid":"y","size":1,"path":"data/deep/c.txt"},
            {"type":"submodule","oid":"z","size":0,"path":"data/sub"}]"#;
        let got = parse_tree_page(body, "data").unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|e| (e.path.as_str(), e.etag.as_str(), e.size))
            .collect();
        assert_eq!(
            names,
            [
                ("data/train", "d1", 0),
                ("data/a.txt", "f1", 12),
                ("data/w.bin", "sha", 99)
            ]
        );
        assert!(parse_tree_page(b"{}", "").is_err());
        assert!(
            parse_tree_page(b"[{\"type\":\"file\"}]", "").is_err(),
            "path is required"
        );
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes a-b/c"), None);
    }

    #[test]
    fn link_header_next() {
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<http://h/api/x?cursor=abc>; rel=\"next\", <http://h/p>; rel=\"prev\"",
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("http://h/api/x?cursor=abc"));
        let mut h2 = HeaderMap::new();
        h2.insert(
            "link",
            HeaderValue::from_static("<http://h/p>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h2), None);
    }

    #[test]
    fn rfc3339_dates_with_non_ascii_bytes_are_refused_not_a_panic() {
        for bad in [
            "2024-01-02T03:04:05+0é00",
            "2024-01-02T03:04:05é",
            "2024-01-02T03:04:0é",
            "2024-01-02T03:04:05.é",
            "2024-01-02T03:04:05-é:0",
            "é024-01-02T03:04:05Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        let t = parse_rfc3339("2024-01-02T12:00:00.000Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1704196800);
        let t2 = parse_rfc3339("2024-01-02T13:00:00+01:00").unwrap();
        assert_eq!(t, t2);
        assert!(parse_rfc3339("yesterday").is_none());
    }

    #[test]
    fn ratelimit_header() {
        assert_eq!(
            ratelimit_reset("\"api\";r=0;t=12"),
            Some(Duration::from_secs(13))
        );
        assert_eq!(ratelimit_reset("\"api\";r=5;t=12"), None);
    }
}
