//! The nodes under `/buckets` and a bucket's cached state: the types the inode table holds,
//! apart from the logic that fills them (`fs/buckets.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::hub::buckets::{BucketEntry, BucketFile, BucketId};

/// The directory at the mount root holding buckets.
pub const BUCKETS_DIR: &str = "buckets";
/// The extended attribute holding a bucket file's version.
pub const XATTR_XET_HASH: &str = "user.hf.xet-hash";

/// What a node under `/buckets` is.
#[derive(Debug, Clone)]
pub enum BucketNode {
    /// `/buckets`.
    Root,
    /// `/buckets/<ns>`.
    Namespace(String),
    /// A bucket's root (`path` empty) or a folder in it.
    Dir {
        /// The bucket.
        bucket: Arc<BucketState>,
        /// Folder path from the bucket root.
        path: String,
    },
    /// One version of one object.
    File {
        /// The bucket.
        bucket: Arc<BucketState>,
        /// The version read.
        file: Arc<BucketFile>,
        /// Block cache key: `xet:<hash>:<size>`.
        content: Arc<str>,
        /// The object's `mtime` (else the mount time).
        mtime: SystemTime,
    },
}

/// The identity of a node under `/buckets` (a file's includes its version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// `/buckets`.
    Root,
    /// A namespace.
    Namespace(String),
    /// A folder (or the bucket root, path "").
    Dir(BucketId, String),
    /// A file version: bucket, key, xet hash.
    File(BucketId, String, String),
}

pub(super) struct CachedListing {
    pub(super) entries: Arc<Vec<BucketEntry>>,
    /// `updatedAt` of the bucket when the listing was asked for.
    pub(super) updated_at: String,
    /// When it was last known current.
    pub(super) checked: Instant,
}

/// One bucket's cached state: the last `updatedAt` seen and its folder listings.
pub struct BucketState {
    /// The bucket.
    pub id: BucketId,
    pub(super) probe: Mutex<Option<(Instant, String)>>,
    pub(super) listings: Mutex<HashMap<String, CachedListing>>,
}

impl BucketState {
    /// Forgets what is known of the bucket: the next lookup asks bucket info and lists again
    /// (a read found that an object changed, so the listings are out of date).
    pub(super) fn invalidate(&self) {
        *self.probe.lock() = None;
        self.listings.lock().clear();
    }
}

impl std::fmt::Debug for BucketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BucketState({})", self.id)
    }
}

impl BucketState {
    /// A bucket nothing is known of yet.
    pub(super) fn new(id: &BucketId) -> Self {
        BucketState {
            id: id.clone(),
            probe: Mutex::new(None),
            listings: Mutex::new(HashMap::new()),
        }
    }
}

impl BucketNode {
    /// Whether it is a directory, its size and its mtime (`mount_time` for directories and
    /// objects without one).
    pub fn attr_parts(&self, mount_time: SystemTime) -> (bool, u64, SystemTime) {
        match self {
            BucketNode::File { file, mtime, .. } => (false, file.size, *mtime),
            _ => (true, 0, mount_time),
        }
    }
}

/// The block cache key of a bucket object's version: `xet:<hash>:<size>`.
pub(super) fn content_key(f: &BucketFile) -> Arc<str> {
    Arc::from(format!("xet:{}:{}", f.xet_hash, f.size))
}
