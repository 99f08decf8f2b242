//! [`BucketClient`] over HTTP: bucket info, a namespace's buckets, folder listings and range
//! reads through `GET /buckets/{ns}/{name}/resolve/{path}` (HUB_PROTOCOL.md §12), with the same
//! redirect handling, token rules, retries and resumes as repo files.

use percent_encoding::utf8_percent_encode;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::{next_link, read_body, redact_url, Expect, HttpHub, MAX_PAGES};
use crate::hub::buckets::{
    parse_bucket_list, parse_info, parse_tree_page, BucketClient, BucketEntry, BucketFile,
    BucketId, BucketInfo,
};
use crate::hub::urls::{encode_path, encode_segment};
use crate::hub::{HubError, PieceSink};

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

/// Fails with `Stale` when an answer from the Hub's origin is about another version than `file`:
/// its `X-Xet-Hash` must be the pinned hash and `X-Linked-Size`, when present, the pinned size. A
/// redirect without `X-Xet-Hash` cannot be trusted to lead to the pinned version and is refused.
/// Bytes served by the Hub's origin itself (a mirror) must carry the hash or an `ETag` equal to it.
pub(super) fn check_version(
    headers: &HeaderMap,
    status: StatusCode,
    file: &BucketFile,
    url: &str,
) -> Result<(), HubError> {
    if !(status.is_redirection() || status.is_success()) {
        return Ok(());
    }
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let stale = |message: String| HubError::Stale {
        url: url.to_owned(),
        message,
    };
    if let Some(size) = get("x-linked-size") {
        if size.trim().parse::<u64>().ok() != Some(file.size) {
            return Err(stale(format!(
                "X-Linked-Size {size} but the object was opened at {} bytes",
                file.size
            )));
        }
    }
    let hash = get("x-xet-hash").map(str::trim).or_else(|| {
        get("etag")
            .filter(|_| status.is_success())
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
    });
    match hash {
        Some(h) if h == file.xet_hash => Ok(()),
        Some(h) => Err(stale(format!(
            "X-Xet-Hash {h}: the object changed since it was opened at {}",
            file.xet_hash
        ))),
        None => Err(HubError::Protocol {
            url: url.to_owned(),
            message: "bucket answer without X-Xet-Hash: cannot tell which version it serves".into(),
        }),
    }
}

impl HttpHub {
    async fn get_pages(&self, first: String) -> Result<Vec<(bytes::Bytes, String)>, HubError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let sent = self.get_ok(&url).await?;
            let next = next_link(sent.resp.headers());
            let shown = redact_url(&sent.url);
            let body = read_body(sent.resp, &shown, self.cfg.request_timeout, 256 << 20).await?;
            out.push((body, shown.clone()));
            match next {
                None => return Ok(out),
                Some(n) => url = self.next_page_url(&n, &shown)?,
            }
        }
        Err(HubError::Protocol {
            url: redact_url(&url),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }
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
        if offset.checked_add(len).is_none_or(|e| e > file.size) {
            return Err(HubError::Protocol {
                url: file.path.clone(),
                message: format!("range {offset}+{len} beyond size {}", file.size),
            });
        }
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
    use super::*;
    use reqwest::header::HeaderValue;

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
        let direct = headers(&[("etag", "\"h1\"")]);
        assert!(check_version(&direct, StatusCode::PARTIAL_CONTENT, &f, "u").is_ok());
        // Errors are classified by the caller, not reported as a version mismatch.
        assert!(check_version(&HeaderMap::new(), StatusCode::NOT_FOUND, &f, "u").is_ok());
    }
}
