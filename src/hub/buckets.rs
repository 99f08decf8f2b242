//! Storage Buckets, the client side (HUB_PROTOCOL.md §12): what hubfs reads from a bucket, as a
//! trait beside [`super::HubClient`]. The wire format is parsed in `http/buckets.rs`.
//!
//! A bucket has no revisions: an object's version is its `xetHash`. A [`BucketFile`] names one
//! version, and every read of it checks that the Hub still serves that version (`X-Xet-Hash`),
//! failing with [`HubError::Stale`] otherwise, so a reader never gets bytes of two versions.

use std::future::Future;
use std::time::SystemTime;

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
