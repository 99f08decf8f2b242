//! [`BucketClient`] over HTTP: bucket info, a namespace's buckets, folder listings and range
//! reads through `GET /buckets/{ns}/{name}/resolve/{path}` (HUB_PROTOCOL.md §12), with the same
//! redirect handling, token rules, retries and resumes as repo files.

use percent_encoding::utf8_percent_encode;
use serde::Deserialize;

use super::identity::Expect;
use super::transport::read_body;

use super::HttpHub;
use crate::hub::buckets::{BucketClient, BucketEntry, BucketFile, BucketId, BucketInfo};
use crate::hub::error::redact_url;
use crate::hub::urls::{encode_path, encode_segment};
use crate::hub::{EntryKind, HubError, PieceSink};

#[derive(Deserialize)]
struct InfoJson {
    id: String,
    #[serde(default)]
    private: bool,
    #[serde(rename = "updatedAt", default)]
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct EntryJson {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(rename = "xetHash", default)]
    xet_hash: String,
    #[serde(default)]
    mtime: Option<String>,
    #[serde(rename = "uploadedAt", default)]
    uploaded_at: Option<String>,
}

fn info_from(j: InfoJson) -> BucketInfo {
    BucketInfo {
        name: j.id.rsplit('/').next().unwrap_or(&j.id).to_owned(),
        private: j.private,
        updated_at: j.updated_at.unwrap_or_default(),
    }
}

/// Parses bucket info.
pub fn parse_info(body: &[u8]) -> Result<BucketInfo, String> {
    serde_json::from_slice::<InfoJson>(body)
        .map(info_from)
        .map_err(|e| format!("invalid bucket info JSON: {e}"))
}

/// Parses one page of a namespace's bucket list.
pub fn parse_bucket_list(body: &[u8]) -> Result<Vec<BucketInfo>, String> {
    serde_json::from_slice::<Vec<InfoJson>>(body)
        .map(|v| v.into_iter().map(info_from).collect())
        .map_err(|e| format!("invalid bucket list JSON: {e}"))
}

/// Parses one page of a non-recursive bucket tree of folder `dir`: the entries that are direct
/// children of it. The Hub matches a raw key prefix (`logs` also answers `logs_x/...`), so
/// entries outside `dir/` are dropped here; unknown types are skipped.
pub fn parse_tree_page(body: &[u8], dir: &str) -> Result<Vec<BucketEntry>, String> {
    let page: Vec<EntryJson> =
        serde_json::from_slice(body).map_err(|e| format!("invalid bucket tree JSON: {e}"))?;
    let mut out = Vec::with_capacity(page.len());
    for e in page {
        let Some(kind) = crate::hub::wire::entry_kind(&e.kind) else {
            continue;
        };
        if !crate::hub::wire::is_direct_child(&e.path, dir) {
            continue;
        }
        if kind == EntryKind::File && e.xet_hash.is_empty() {
            return Err(format!("bucket file {:?} without a xetHash", e.path));
        }
        let time = e.mtime.as_deref().or(e.uploaded_at.as_deref());
        out.push(BucketEntry {
            mtime: time.and_then(crate::hub::wire::parse_rfc3339),
            size: if kind == EntryKind::File { e.size } else { 0 },
            xet_hash: e.xet_hash,
            path: e.path,
            kind,
        });
    }
    Ok(out)
}

/// Every character but the unreserved ones escaped (`quote(s, safe="")`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn bucket_part(b: &BucketId) -> Result<String, HubError> {
    Ok(format!(
        "{}/{}",
        encode_segment(&b.namespace)?,
        encode_segment(&b.name)?
    ))
}

fn protocol(url: &str) -> impl Fn(String) -> HubError + '_ {
    move |message| HubError::Protocol {
        url: url.to_owned(),
        message,
    }
}

impl BucketClient for HttpHub {
    async fn bucket_info(&self, bucket: &BucketId) -> Result<BucketInfo, HubError> {
        let url = format!(
            "{}/api/buckets/{}",
            self.urls.endpoint(),
            bucket_part(bucket)?
        );
        let sent = self.get_ok(&url).await?;
        let shown = redact_url(&sent.url);
        let body = read_body(sent.resp, &shown, self.cfg.request_timeout, 1 << 20).await?;
        parse_info(&body).map_err(protocol(&shown))
    }

    async fn list_buckets(&self, ns: &str) -> Result<Vec<BucketInfo>, HubError> {
        let url = format!(
            "{}/api/buckets/{}",
            self.urls.endpoint(),
            encode_segment(ns)?
        );
        let mut out = Vec::new();
        for (body, shown) in self.get_pages(url).await? {
            out.extend(parse_bucket_list(&body).map_err(protocol(&shown))?);
        }
        Ok(out)
    }

    async fn list_bucket_dir(
        &self,
        bucket: &BucketId,
        path: &str,
    ) -> Result<Vec<BucketEntry>, HubError> {
        let mut url = format!(
            "{}/api/buckets/{}/tree",
            self.urls.endpoint(),
            bucket_part(bucket)?
        );
        if !path.is_empty() {
            encode_path(path)?;
            url.push('/');
            url.push_str(&utf8_percent_encode(path, SEGMENT).to_string());
        }
        // Always explicit (HUB_PROTOCOL.md §12: the documented default and a test disagree).
        url.push_str("?recursive=false");
        let mut out = Vec::new();
        for (body, shown) in self.get_pages(url).await? {
            out.extend(parse_tree_page(&body, path).map_err(protocol(&shown))?);
        }
        Ok(out)
    }

    async fn stream_object(
        &self,
        file: &BucketFile,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        if len == 0 {
            return Ok(());
        }
        super::range::check_range(&file.path, offset, len, file.size)?;
        let resolve = format!(
            "{}/buckets/{}/resolve/{}",
            self.urls.endpoint(),
            bucket_part(&file.bucket)?,
            encode_path(&file.path)?
        );
        // The signed URL a version redirects to serves that version: remembered per hash, so a
        // new version never reuses an old version's URL (nor the other way round).
        let key = format!("{resolve}#xet={}", file.xet_hash);
        let expect = Expect::Bucket(file);
        self.stream_via(&resolve, &key, &expect, offset, len, piece, sink)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::identity::check_version;
    use super::*;
    use reqwest::header::HeaderMap;
    use reqwest::header::HeaderValue;
    use reqwest::StatusCode;

    fn file() -> BucketFile {
        BucketFile {
            bucket: BucketId::new("acme", "ckpt"),
            path: "a.bin".into(),
            size: 10,
            xet_hash: "h1".into(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_changed_version_is_stale_and_an_unversioned_redirect_refused() {
        let f = file();
        let found = StatusCode::FOUND;
        let ok = headers(&[("x-xet-hash", "h1"), ("x-linked-size", "10")]);
        assert!(check_version(&ok, found, &f, "u").is_ok());
        let moved = headers(&[("x-xet-hash", "h2"), ("x-linked-size", "10")]);
        assert!(matches!(
            check_version(&moved, found, &f, "u"),
            Err(HubError::Stale { .. })
        ));
        let resized = headers(&[("x-xet-hash", "h1"), ("x-linked-size", "11")]);
        assert!(matches!(
            check_version(&resized, found, &f, "u"),
            Err(HubError::Stale { .. })
        ));
        assert!(matches!(
            check_version(&HeaderMap::new(), found, &f, "u"),
            Err(HubError::Protocol { .. })
        ));
        let direct = headers(&[("x-xet-hash", "h1")]);
        assert!(check_version(&direct, StatusCode::PARTIAL_CONTENT, &f, "u").is_ok());
        // A mirror's own ETag says nothing of the version.
        let mirror = headers(&[("etag", "\"h1\"")]);
        assert!(matches!(
            check_version(&mirror, StatusCode::PARTIAL_CONTENT, &f, "u"),
            Err(HubError::Protocol { .. })
        ));
        // Errors are classified by the caller, not reported as a version mismatch.
        assert!(check_version(&HeaderMap::new(), StatusCode::NOT_FOUND, &f, "u").is_ok());
    }

    #[test]
    fn raw_prefix_answers_are_filtered_to_the_folder() {
        let body = br#"[
            {"type":"file","path":"logs/a.txt","size":3,"xetHash":"aa","mtime":"2026-01-02T03:04:05.000Z","uploadedAt":"2026-01-03T00:00:00.000Z"},
            {"type":"directory","path":"logs/sub","uploadedAt":"2026-01-03T00:00:00.000Z"},
            {"type":"directory","path":"logs_x","uploadedAt":"2026-01-03T00:00:00.000Z"},
            {"type":"file","path":"logs_y.txt","size":1,"xetHash":"bb"},
            {"type":"symlink","path":"logs/l"}
        ]"#;
        let got = parse_tree_page(body, "logs").unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["logs/a.txt", "logs/sub"]);
        assert_eq!(got[0].size, 3);
        assert_eq!(got[0].xet_hash, "aa");
        assert_eq!(
            got[0].mtime,
            crate::hub::wire::parse_rfc3339("2026-01-02T03:04:05Z")
        );
        assert_eq!(got[1].kind, EntryKind::Directory);
        let root = parse_tree_page(body, "").unwrap();
        assert_eq!(root.len(), 2, "logs_x and logs_y.txt at the root");
    }

    #[test]
    fn a_file_without_its_version_is_refused() {
        let body = br#"[{"type":"file","path":"a","size":3}]"#;
        assert!(parse_tree_page(body, "").is_err());
    }

    #[test]
    fn info_keeps_updated_at_as_text() {
        let i = parse_info(br#"{"id":"acme/ckpt","private":true,"createdAt":"x","size":1,"totalFiles":1,"updatedAt":"2026-12-02T15:42:24.123Z"}"#).unwrap();
        assert_eq!(i.name, "ckpt");
        assert!(i.private);
        assert_eq!(i.updated_at, "2026-12-02T15:42:24.123Z");
    }
}
