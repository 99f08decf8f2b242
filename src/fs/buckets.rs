//! The `/buckets/<ns>/<bucket>/<path>` namespace: Storage Buckets as a read-only view.
//!
//! A bucket has no revisions, so consistency comes from versions instead of commits:
//! * a file inode is one version of an object (its key includes the `xetHash`), so an open file
//!   stays on the version it was opened at; every Hub answer for it is checked against that
//!   hash (`BucketClient::stream_object`), a change fails the read with ESTALE, and the block
//!   cache key includes the hash, so two versions' bytes never meet;
//! * folder listings are kept for the bucket TTL (`--bucket-ttl`); after it, bucket info is
//!   asked first and, when its `updatedAt` has not moved, the listings are kept for another TTL
//!   without listing again. A lookup after a change yields the new version's inode; handles open
//!   on the old one keep reading it (or get ESTALE once the Hub no longer serves it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use parking_lot::Mutex;

use super::inode::{Inode, Node, NodeKey};
use super::namespace::{is_valid_entry_name, is_valid_name};
use super::{Attr, DirEntry, FsError, FsResult, HubFs, Kind, Lifetime};
use crate::cache::{FetchFn, ReadTarget};
use crate::hub::buckets::{BucketEntry, BucketFile, BucketId};
use crate::hub::{EntryKind, HubClient, HubError};
use crate::singleflight::SingleFlight;

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

struct CachedListing {
    entries: Arc<Vec<BucketEntry>>,
    /// `updatedAt` of the bucket when the listing was asked for.
    updated_at: String,
    /// When it was last known current.
    checked: Instant,
}

/// One bucket's cached state: the last `updatedAt` seen and its folder listings.
pub struct BucketState {
    /// The bucket.
    pub id: BucketId,
    probe: Mutex<Option<(Instant, String)>>,
    listings: Mutex<HashMap<String, CachedListing>>,
}

impl BucketState {
    /// Forgets what is known of the bucket: the next lookup asks bucket info and lists again
    /// (a read found that an object changed, so the listings are out of date).
    fn invalidate(&self) {
        *self.probe.lock() = None;
        self.listings.lock().clear();
    }
}

impl std::fmt::Debug for BucketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BucketState({})", self.id)
    }
}

/// A namespace's buckets, and when they were listed.
type NamespaceList = (Instant, Arc<Vec<crate::hub::buckets::BucketInfo>>);

/// The buckets' caches, owned by the filesystem core.
pub struct Buckets {
    ttl: Duration,
    /// Namespace listings (`ls /buckets/<ns>`), for the TTL.
    namespaces: Mutex<HashMap<String, NamespaceList>>,
    states: Mutex<HashMap<BucketId, Arc<BucketState>>>,
    probing: SingleFlight<BucketId, String>,
    listing: SingleFlight<(BucketId, String), Arc<Vec<BucketEntry>>>,
}

impl Buckets {
    /// Caches whose listings and attributes live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Buckets {
            ttl,
            namespaces: Mutex::new(HashMap::new()),
            states: Mutex::new(HashMap::new()),
            probing: SingleFlight::default(),
            listing: SingleFlight::default(),
        }
    }

    fn state(&self, id: &BucketId) -> Arc<BucketState> {
        self.states
            .lock()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(BucketState {
                    id: id.clone(),
                    probe: Mutex::new(None),
                    listings: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }
}

/// Parses `--bucket NS/NAME [--subfolder PATH]`: valid names, and a folder path of valid entry
/// names (slashes at its ends ignored).
pub fn parse_bucket_mount(
    bucket: &str,
    subfolder: Option<&str>,
) -> Result<(BucketId, String), String> {
    let (ns, name) = bucket
        .split_once('/')
        .filter(|(n, b)| is_valid_name(n) && is_valid_name(b))
        .ok_or_else(|| format!("--bucket {bucket:?}: expected NS/NAME (valid Hub names)"))?;
    let sub = subfolder.unwrap_or("").trim_matches('/');
    if !sub.is_empty() && !sub.split('/').all(is_valid_entry_name) {
        return Err(format!("--subfolder {sub:?}: not a folder path"));
    }
    Ok((BucketId::new(ns, name), sub.to_owned()))
}

fn content_key(f: &BucketFile) -> Arc<str> {
    Arc::from(format!("xet:{}:{}", f.xet_hash, f.size))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Kind, size, mtime of a bucket node (all may change: short lifetime).
pub(super) fn attr_parts(b: &BucketNode, mount_time: SystemTime) -> (Kind, u64, SystemTime) {
    match b {
        BucketNode::File { file, mtime, .. } => (Kind::File, file.size, *mtime),
        _ => (Kind::Dir, 0, mount_time),
    }
}

impl<C: HubClient> HubFs<C> {
    fn bucket_inode(&self, key: BucketKey, make: impl FnOnce() -> BucketNode) -> Arc<Inode> {
        self.inodes
            .get_or_insert(NodeKey::Bucket(key), || Node::Bucket(make()))
    }

    /// The bucket folder a `--bucket` mount shows at its root.
    pub(super) fn bucket_mount_root(&self) -> Option<BucketNode> {
        let (id, path) = self.cfg.bucket_mount.as_ref()?;
        Some(BucketNode::Dir {
            bucket: self.buckets.state(id),
            path: path.clone(),
        })
    }

    /// `/buckets` itself.
    pub(super) fn buckets_root(&self) -> Arc<Inode> {
        self.bucket_inode(BucketKey::Root, || BucketNode::Root)
    }

    /// The bucket's current `updatedAt`, asked again only once the last answer is a TTL old.
    async fn updated_at(&self, st: &BucketState) -> FsResult<String> {
        if let Some((at, u)) = st.probe.lock().as_ref() {
            if at.elapsed() < self.buckets.ttl {
                return Ok(u.clone());
            }
        }
        let hub = self.hub.clone();
        let id = st.id.clone();
        let u = self
            .buckets
            .probing
            .run(st.id.clone(), move || async move {
                Ok(hub.bucket_info(&id).await?.updated_at)
            })
            .await?;
        *st.probe.lock() = Some((Instant::now(), u.clone()));
        Ok(u)
    }

    /// Folder `path` of the bucket: from the cache within the TTL, or when `updatedAt` has not
    /// moved since it was listed; else listed again.
    async fn bucket_listing(
        &self,
        st: &Arc<BucketState>,
        path: &str,
    ) -> FsResult<Arc<Vec<BucketEntry>>> {
        if let Some(c) = st.listings.lock().get(path) {
            if c.checked.elapsed() < self.buckets.ttl {
                return Ok(c.entries.clone());
            }
        }
        let updated = self.updated_at(st).await?;
        if let Some(c) = st.listings.lock().get_mut(path) {
            if c.updated_at == updated {
                c.checked = Instant::now();
                return Ok(c.entries.clone());
            }
        }
        let hub = self.hub.clone();
        let (id, p) = (st.id.clone(), path.to_owned());
        let entries = self
            .buckets
            .listing
            .run((st.id.clone(), path.to_owned()), move || async move {
                Ok(Arc::new(hub.list_bucket_dir(&id, &p).await?))
            })
            .await?;
        st.listings.lock().insert(
            path.to_owned(),
            CachedListing {
                entries: entries.clone(),
                updated_at: updated,
                checked: Instant::now(),
            },
        );
        Ok(entries)
    }

    fn bucket_entry_inode(&self, st: &Arc<BucketState>, e: &BucketEntry) -> Arc<Inode> {
        match e.kind {
            EntryKind::Directory => {
                self.bucket_inode(BucketKey::Dir(st.id.clone(), e.path.clone()), || {
                    BucketNode::Dir {
                        bucket: st.clone(),
                        path: e.path.clone(),
                    }
                })
            }
            EntryKind::File => {
                let key = BucketKey::File(st.id.clone(), e.path.clone(), e.xet_hash.clone());
                self.bucket_inode(key, || {
                    let file = BucketFile {
                        bucket: st.id.clone(),
                        path: e.path.clone(),
                        size: e.size,
                        xet_hash: e.xet_hash.clone(),
                    };
                    BucketNode::File {
                        content: content_key(&file),
                        file: Arc::new(file),
                        bucket: st.clone(),
                        mtime: e.mtime.unwrap_or(self.mount_time),
                    }
                })
            }
        }
    }

    /// Looks `name` up in a bucket directory node.
    pub(super) async fn bucket_lookup(&self, b: &BucketNode, name: &str) -> FsResult<Arc<Inode>> {
        match b {
            BucketNode::Root => {
                if !is_valid_name(name) {
                    return Err(FsError::NotFound);
                }
                Ok(
                    self.bucket_inode(BucketKey::Namespace(name.to_owned()), || {
                        BucketNode::Namespace(name.to_owned())
                    }),
                )
            }
            BucketNode::Namespace(ns) => {
                if !is_valid_name(name) {
                    return Err(FsError::NotFound);
                }
                let st = self.buckets.state(&BucketId::new(ns, name));
                // Bucket info says whether it exists and whether the token may read it.
                self.updated_at(&st).await?;
                Ok(
                    self.bucket_inode(BucketKey::Dir(st.id.clone(), String::new()), || {
                        BucketNode::Dir {
                            bucket: st.clone(),
                            path: String::new(),
                        }
                    }),
                )
            }
            BucketNode::Dir { bucket, path } => {
                if !is_valid_entry_name(name) {
                    return Err(FsError::NotFound);
                }
                let listing = self.bucket_listing(bucket, path).await?;
                let full = join(path, name);
                let e = listing
                    .iter()
                    .find(|e| e.path == full)
                    .ok_or(FsError::NotFound)?;
                Ok(self.bucket_entry_inode(bucket, e))
            }
            BucketNode::File { .. } => Err(FsError::NotDir),
        }
    }

    /// The entries of a bucket directory node.
    pub(super) async fn bucket_readdir(&self, b: &BucketNode) -> FsResult<Vec<DirEntry>> {
        match b {
            BucketNode::Root => {
                let mut v = self.inodes.collect(|i| match &i.node {
                    Node::Bucket(BucketNode::Namespace(ns)) => Some(DirEntry {
                        ino: i.ino,
                        kind: Kind::Dir,
                        name: ns.clone(),
                    }),
                    _ => None,
                });
                v.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(v)
            }
            BucketNode::Namespace(ns) => {
                let cached = self.buckets.namespaces.lock().get(ns).cloned();
                let list = match cached {
                    Some((at, l)) if at.elapsed() < self.buckets.ttl => l,
                    _ => {
                        let l = Arc::new(self.hub.list_buckets(ns).await?);
                        let entry = (Instant::now(), l.clone());
                        self.buckets.namespaces.lock().insert(ns.clone(), entry);
                        l
                    }
                };
                Ok(list
                    .iter()
                    .filter(|b| is_valid_name(&b.name))
                    .map(|b| {
                        let st = self.buckets.state(&BucketId::new(ns, &b.name));
                        let i =
                            self.bucket_inode(BucketKey::Dir(st.id.clone(), String::new()), || {
                                BucketNode::Dir {
                                    bucket: st.clone(),
                                    path: String::new(),
                                }
                            });
                        DirEntry {
                            ino: i.ino,
                            kind: Kind::Dir,
                            name: b.name.clone(),
                        }
                    })
                    .collect())
            }
            BucketNode::Dir { bucket, path } => {
                let listing = self.bucket_listing(bucket, path).await?;
                Ok(listing
                    .iter()
                    .filter_map(|e| {
                        let name = e.path.rsplit('/').next()?.to_owned();
                        if !is_valid_entry_name(&name) {
                            return None;
                        }
                        let i = self.bucket_entry_inode(bucket, e);
                        Some(DirEntry {
                            ino: i.ino,
                            kind: if e.kind == EntryKind::Directory {
                                Kind::Dir
                            } else {
                                Kind::File
                            },
                            name,
                        })
                    })
                    .collect())
            }
            BucketNode::File { .. } => Err(FsError::NotDir),
        }
    }

    /// The shard a loader reads after `file` (`...-00002-of-00004...` after `...-00001-...`),
    /// at the version its folder's cached listing names, when that listing is at hand.
    pub(super) fn bucket_next_shard(
        &self,
        st: &Arc<BucketState>,
        file: &BucketFile,
    ) -> Option<ReadTarget> {
        let (dir, name) = file
            .path
            .rsplit_once('/')
            .unwrap_or(("", file.path.as_str()));
        let next = join(dir, &super::shards::next_shard_name(name)?);
        let e = {
            let listings = st.listings.lock();
            listings
                .get(dir)?
                .entries
                .iter()
                .find(|e| e.path == next && e.kind == EntryKind::File)?
                .clone()
        };
        let f = Arc::new(BucketFile {
            bucket: st.id.clone(),
            path: e.path,
            size: e.size,
            xet_hash: e.xet_hash,
        });
        let content = content_key(&f);
        Some(self.bucket_target(st, &f, &content))
    }

    /// A bucket file version as read-ahead and the block cache fetch it: every fetch checks the
    /// version (ESTALE when the object changed).
    /// A read that finds the object changed also makes the bucket's listings be asked again.
    pub(super) fn bucket_target(
        &self,
        st: &Arc<BucketState>,
        file: &Arc<BucketFile>,
        content: &Arc<str>,
    ) -> ReadTarget {
        let hub = self.hub.clone();
        let f = file.clone();
        let st = st.clone();
        let fetch: FetchFn = Arc::new(move |off, len, piece, sink| {
            let hub = hub.clone();
            let f = f.clone();
            let st = st.clone();
            async move {
                let r = match hub.stream_object(&f, off, len, piece, &*sink).await {
                    // The version was deleted: for the file as opened, that is a change too.
                    Err(HubError::NotFound { context, .. }) => Err(HubError::Stale {
                        message: format!("the object is gone ({context})"),
                        url: context.url,
                    }),
                    r => r,
                };
                if let Err(HubError::Stale { message, .. }) = &r {
                    tracing::warn!(bucket = %f.bucket, path = %f.path, %message, "bucket object changed since it was opened: ESTALE; the bucket is listed again at the next lookup");
                    st.invalidate();
                }
                r
            }
            .boxed()
        });
        ReadTarget {
            content: content.clone(),
            size: file.size,
            fetch,
        }
    }
}

/// The attributes' lifetime of bucket nodes: they may change at any time.
pub(super) const LIFETIME: Lifetime = Lifetime::Short;

/// The attributes of a bucket node.
pub(super) fn attr(ino: u64, b: &BucketNode, mount_time: SystemTime, uid: u32, gid: u32) -> Attr {
    let (kind, size, mtime) = attr_parts(b, mount_time);
    Attr {
        ino,
        kind,
        size,
        mtime,
        perm: if kind == Kind::Dir { 0o555 } else { 0o444 },
        uid,
        gid,
        lifetime: LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_mount_arguments() {
        let (id, sub) = parse_bucket_mount("acme/ckpt", Some("/runs/a/")).unwrap();
        assert_eq!(id, BucketId::new("acme", "ckpt"));
        assert_eq!(sub, "runs/a");
        assert_eq!(parse_bucket_mount("acme/ckpt", None).unwrap().1, "");
        for bad in ["acme", "acme/", "/ckpt", "a/b/c", ".x/y"] {
            assert!(parse_bucket_mount(bad, None).is_err(), "{bad}");
        }
        assert!(parse_bucket_mount("acme/ckpt", Some("a/../b")).is_err());
    }
}
