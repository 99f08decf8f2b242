//! What the bytes being read must be: the checks made on every answer from the Hub's origin, so
//! that a read never mixes two versions of a file.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::hub::buckets::BucketFile;
use crate::hub::{FileRef, HubError};

/// What the bytes being read must be, checked on every answer from the Hub's origin: a repo file
/// at a commit, or one version of a bucket object.
pub(crate) enum Expect<'a> {
    /// See [`check_identity`].
    Repo(&'a FileRef),
    /// `X-Xet-Hash` must be the version's hash (see [`check_version`]).
    Bucket(&'a BucketFile),
}

impl Expect<'_> {
    pub(super) fn size(&self) -> u64 {
        match self {
            Expect::Repo(f) => f.size,
            Expect::Bucket(f) => f.size,
        }
    }

    pub(super) fn path(&self) -> &str {
        match self {
            Expect::Repo(f) => &f.path,
            Expect::Bucket(f) => &f.path,
        }
    }

    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        status: StatusCode,
        url: &str,
    ) -> Result<(), HubError> {
        match self {
            Expect::Repo(f) => check_identity(headers, f, url),
            Expect::Bucket(f) => check_version(headers, status, f, url),
        }
    }
}

/// Fails with `Stale` when a response from the endpoint's origin says it is about another
/// commit or another version of the file than the file was opened at:
/// * `X-Repo-Commit`, when present, must be the file's commit;
/// * `X-Linked-Etag` (the `/resolve` hop of an LFS file), when present, must be its etag, and
///   `X-Linked-Size`, when present, its size;
/// * `ETag` must be its etag only on an answer that also carries `X-Repo-Commit`: that is the
///   Hub answering for the file itself (a direct answer, `resolve-cache`). An answer without it is
///   a byte server on the endpoint's origin (a mirror serving CDN objects), whose `ETag` is its
///   own; its bytes are checked by `Content-Range` and length in `range_once`.
pub(super) fn check_identity(
    headers: &HeaderMap,
    file: &FileRef,
    url: &str,
) -> Result<(), HubError> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let stale = |message: String| HubError::Stale {
        url: url.to_owned(),
        message,
    };
    let commit = get("x-repo-commit");
    if let Some(c) = commit {
        if c != file.commit {
            return Err(stale(format!(
                "X-Repo-Commit {c} but the file is read at {}",
                file.commit
            )));
        }
    }
    if let Some(size) = get("x-linked-size") {
        if size.trim().parse::<u64>().ok() != Some(file.size) {
            return Err(stale(format!(
                "X-Linked-Size {size} but the file's listing says {} bytes",
                file.size
            )));
        }
    }
    let tag = get("x-linked-etag").or_else(|| commit.and_then(|_| get("etag")));
    if let Some(tag) = tag {
        let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
        if !file.etag.is_empty() && !tag.is_empty() && tag != file.etag {
            return Err(stale(format!(
                "ETag {tag} but the file's listing says {}",
                file.etag
            )));
        }
    }
    Ok(())
}

/// Fails with `Stale` when an answer from the Hub's origin is about another version than `file`:
/// its `X-Xet-Hash` must be the pinned hash and `X-Linked-Size`, when present, the pinned size.
/// An answer without `X-Xet-Hash` (a redirect, or bytes from a mirror on the endpoint that drops
/// it) cannot be tied to the pinned version and is refused (`Protocol`, EIO): a cache keyed by
/// URL could hand out another version's bytes.
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
    match get("x-xet-hash").map(str::trim) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::RepoId;
    use reqwest::header::HeaderValue;

    #[test]
    fn identity_checks_commit_and_etag() {
        let file = FileRef {
            repo: RepoId::new(crate::hub::RepoType::Model, "a", "b"),
            commit: "c".repeat(40),
            path: "x".into(),
            size: 1,
            etag: "abc".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"c".repeat(40)).unwrap(),
        );
        h.insert("etag", HeaderValue::from_static("W/\"abc\""));
        assert!(check_identity(&h, &file, "u").is_ok());
        h.insert("x-linked-etag", HeaderValue::from_static("\"other\""));
        assert!(matches!(
            check_identity(&h, &file, "u"),
            Err(HubError::Stale { .. })
        ));
        let mut h2 = HeaderMap::new();
        h2.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"d".repeat(40)).unwrap(),
        );
        assert!(matches!(
            check_identity(&h2, &file, "u"),
            Err(HubError::Stale { .. })
        ));
    }

    #[test]
    fn identity_of_mirror_served_bytes_is_their_size_not_their_etag() {
        let file = FileRef {
            repo: RepoId::new(crate::hub::RepoType::Model, "a", "b"),
            commit: "c".repeat(40),
            path: "w.safetensors".into(),
            size: 1000,
            etag: "sha256hex".into(),
        };
        // A CDN object served on the endpoint's origin: its own ETag, no X-Repo-Commit.
        let mut cdn = HeaderMap::new();
        cdn.insert("etag", HeaderValue::from_static("\"cdn-own-etag\""));
        assert!(check_identity(&cdn, &file, "u").is_ok());
        // The same ETag on an answer that names its commit is the Hub's: it must match.
        let mut hub = cdn.clone();
        hub.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"c".repeat(40)).unwrap(),
        );
        assert!(matches!(
            check_identity(&hub, &file, "u"),
            Err(HubError::Stale { .. })
        ));
        // The /resolve hop of an LFS file: X-Linked-Etag and X-Linked-Size must match.
        let mut resolve = hub.clone();
        resolve.insert("x-linked-etag", HeaderValue::from_static("\"sha256hex\""));
        resolve.insert("x-linked-size", HeaderValue::from_static("1000"));
        assert!(check_identity(&resolve, &file, "u").is_ok());
        resolve.insert("x-linked-size", HeaderValue::from_static("999"));
        assert!(matches!(
            check_identity(&resolve, &file, "u"),
            Err(HubError::Stale { .. })
        ));
    }
}
