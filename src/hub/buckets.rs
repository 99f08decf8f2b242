//! Storage Buckets, the client side (HUB_PROTOCOL.md §12): what hubfs reads from a bucket, as a
//! trait beside [`super::HubClient`], and the wire format of bucket answers.
//!
//! A bucket has no revisions: an object's version is its `xetHash`. A [`BucketFile`] names one
//! version, and every read of it checks that the Hub still serves that version (`X-Xet-Hash`),
//! failing with [`HubError::Stale`] otherwise, so a reader never gets bytes of two versions.

use std::future::Future;
use std::time::SystemTime;

use serde::Deserialize;

use super::{EntryKind, HubError, PieceSink};

/// A bucket, `namespace/name`; both parts are validated names (see `fs::namespace`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId {
    /// The user or organisation.
    pub namespace: String,
    /// The bucket's name.
    pub name: String,
}

impl BucketId {
    /// A bucket id from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        BucketId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for BucketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "buckets/{}/{}", self.namespace, self.name)
    }
}

/// What bucket info says: enough to tell whether anything changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// The bucket's name (the part after the namespace).
    pub name: String,
    /// Private buckets need a token.
    pub private: bool,
    /// `updatedAt` as the Hub wrote it: it changes on every mutation, so equal strings mean
    /// nothing changed (compared as text, whatever its precision).
    pub updated_at: String,
}

/// One entry of a bucket folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketEntry {
    /// Full key (files) or folder path, from the bucket root.
    pub path: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes; 0 for directories.
    pub size: u64,
    /// The file's version (`xetHash`); empty for directories.
    pub xet_hash: String,
    /// The uploader's `mtime`, else `uploadedAt`, when given.
    pub mtime: Option<SystemTime>,
}

/// One version of one bucket object: what a range read needs, and what it must match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BucketFile {
    /// The bucket.
    pub bucket: BucketId,
    /// The object's key.
    pub path: String,
    /// Size in bytes of this version.
    pub size: u64,
    /// This version's `xetHash`.
    pub xet_hash: String,
}

/// What the filesystem needs from the Hub's Storage Buckets. Every method is bounded in time.
pub trait BucketClient: Send + Sync + 'static {
    /// `GET /api/buckets/{ns}/{name}`.
    fn bucket_info(
        &self,
        bucket: &BucketId,
    ) -> impl Future<Output = Result<BucketInfo, HubError>> + Send;

    /// The buckets of namespace `ns` the token can see, every page.
    fn list_buckets(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<Vec<BucketInfo>, HubError>> + Send;

    /// The direct children of folder `path` ("" for the root), every page, the raw-prefix
    /// answer filtered to the folder.
    fn list_bucket_dir(
        &self,
        bucket: &BucketId,
        path: &str,
    ) -> impl Future<Output = Result<Vec<BucketEntry>, HubError>> + Send;

    /// Reads `len` bytes of `file` from `offset` as [`super::HubClient::stream_range`] does, but
    /// only while the Hub serves `file.xet_hash`: an answer naming another version fails with
    /// [`HubError::Stale`] before any of its bytes are delivered.
    fn stream_object(
        &self,
        file: &BucketFile,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> impl Future<Output = Result<(), HubError>> + Send;
}

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
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::with_capacity(page.len());
    for e in page {
        let kind = match e.kind.as_str() {
            "file" => EntryKind::File,
            "directory" => EntryKind::Directory,
            _ => continue,
        };
        match e.path.strip_prefix(&prefix) {
            Some(name) if !name.is_empty() && !name.contains('/') => {}
            _ => continue,
        }
        if kind == EntryKind::File && e.xet_hash.is_empty() {
            return Err(format!("bucket file {:?} without a xetHash", e.path));
        }
        let time = e.mtime.as_deref().or(e.uploaded_at.as_deref());
        out.push(BucketEntry {
            mtime: time.and_then(super::http::parse_rfc3339),
            size: if kind == EntryKind::File { e.size } else { 0 },
            xet_hash: e.xet_hash,
            path: e.path,
            kind,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            super::super::http::parse_rfc3339("2026-01-02T03:04:05Z")
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
