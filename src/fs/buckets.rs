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

pub(crate) mod node;

pub use node::{BucketKey, BucketNode, BucketState, BUCKETS_DIR, XATTR_XET_HASH};

use node::{content_key, CachedListing};

use super::error::{FsError, FsResult};
use super::inode::{Inode, InodeTable, Node, NodeKey};
use super::namespace::{is_valid_entry_name, is_valid_name};
use crate::cache::{FetchFn, ReadTarget};
use crate::hub::buckets::{BucketEntry, BucketFile, BucketId};
use crate::hub::{EntryKind, HubClient, HubError};
use crate::singleflight::SingleFlight;

/// A namespace's buckets, and when they were listed.
type NamespaceList = (Instant, Arc<Vec<crate::hub::buckets::BucketInfo>>);

/// The buckets' caches, owned by the filesystem core.
pub struct Buckets {
    ttl: Duration,
    max_entries: usize,
    /// Namespace listings (`ls /buckets/<ns>`), for the TTL.
    namespaces: Mutex<HashMap<String, NamespaceList>>,
    states: Mutex<HashMap<BucketId, Arc<BucketState>>>,
    probing: SingleFlight<BucketId, String>,
    listing: SingleFlight<(BucketId, String), Arc<Vec<BucketEntry>>>,
}

/// What one cached bucket folder entry is counted as against `--metadata-size` (its path, its
/// `xetHash`, size and times, and the map's overhead).
pub const BUCKET_ENTRY_BYTES: u64 = 256;

impl Buckets {
    /// Caches whose listings and attributes live `ttl`, holding at most `max_entries` folder
    /// entries in all.
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Buckets {
            ttl,
            max_entries,
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
            .or_insert_with(|| Arc::new(BucketState::new(id)))
            .clone()
    }

    /// Makes room for a listing of `incoming` entries: when the cached listings of every bucket
    /// would hold more than `max_entries`, they are all forgotten (listed again when used).
    fn make_room(&self, incoming: usize) {
        let states: Vec<Arc<BucketState>> = self.states.lock().values().cloned().collect();
        let held: usize = states
            .iter()
            .map(|s| {
                s.listings
                    .lock()
                    .values()
                    .map(|l| l.entries.len())
                    .sum::<usize>()
            })
            .sum();
        if held + incoming > self.max_entries {
            tracing::debug!(
                held,
                incoming,
                max = self.max_entries,
                "bucket listings over their bound: forgotten"
            );
            for s in states {
                s.listings.lock().clear();
            }
        }
    }
}

/// The entry at `path` of a listing sorted by path.
fn find<'a>(listing: &'a [BucketEntry], path: &str) -> Option<&'a BucketEntry> {
    listing
        .binary_search_by(|e| e.path.as_str().cmp(path))
        .ok()
        .map(|i| &listing[i])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The bucket logic over the core's parts it needs, borrowed for one call (so that this module
/// does not depend on `HubFs`).
pub struct BucketFs<'a, C> {
    /// The Hub client.
    pub hub: &'a Arc<C>,
    /// The inode table.
    pub inodes: &'a InodeTable,
    /// The buckets' caches.
    pub caches: &'a Buckets,
    /// The mtime of directories.
    pub mount_time: SystemTime,
    /// `--bucket` (and `--subfolder`): the bucket folder at the mount root.
    pub mount: Option<(&'a BucketId, &'a str)>,
}

impl<C: HubClient> BucketFs<'_, C> {
    fn bucket_inode(&self, key: BucketKey, make: impl FnOnce() -> BucketNode) -> Arc<Inode> {
        self.inodes
            .get_or_insert(NodeKey::Bucket(key), || Node::Bucket(make()))
    }

    /// The bucket folder a `--bucket` mount shows at its root.
    pub fn mount_root(&self) -> Option<BucketNode> {
        let (id, path) = self.mount?;
        Some(BucketNode::Dir {
            bucket: self.caches.state(id),
            path: path.to_owned(),
        })
    }

    /// `/buckets` itself.
    pub fn root(&self) -> Arc<Inode> {
        self.bucket_inode(BucketKey::Root, || BucketNode::Root)
    }

    /// The bucket's current `updatedAt`, asked again only once the last answer is a TTL old.
    async fn updated_at(&self, st: &BucketState) -> FsResult<String> {
        if let Some((at, u)) = st.probe.lock().as_ref() {
            if at.elapsed() < self.caches.ttl {
                return Ok(u.clone());
            }
        }
        let hub = self.hub.clone();
        let id = st.id.clone();
        let u = self
            .caches
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
            if c.checked.elapsed() < self.caches.ttl {
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
            .caches
            .listing
            .run((st.id.clone(), path.to_owned()), move || async move {
                let mut entries = hub.list_bucket_dir(&id, &p).await?;
                // Sorted by path (bytes) for lookups by binary search and sorted `ls`; a path
                // given twice (pages that overlap) is kept once.
                entries.sort_by(|a, b| a.path.cmp(&b.path));
                entries.dedup_by(|a, b| a.path == b.path);
                Ok(Arc::new(entries))
            })
            .await?;
        self.caches.make_room(entries.len());
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
    pub async fn lookup(&self, b: &BucketNode, name: &str) -> FsResult<Arc<Inode>> {
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
                let st = self.caches.state(&BucketId::new(ns, name));
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
                let e = find(&listing, &full).ok_or(FsError::NotFound)?;
                Ok(self.bucket_entry_inode(bucket, e))
            }
            BucketNode::File { .. } => Err(FsError::NotDir),
        }
    }

    /// The entries of a bucket directory node: each one's inode and name.
    pub async fn readdir(&self, b: &BucketNode) -> FsResult<Vec<(Arc<Inode>, String)>> {
        match b {
            BucketNode::Root => {
                let mut v = self.inodes.collect(|i| match &i.node {
                    Node::Bucket(BucketNode::Namespace(ns)) => Some(ns.clone()),
                    _ => None,
                });
                v.sort();
                Ok(v.into_iter()
                    .map(|ns| {
                        let i = self.bucket_inode(BucketKey::Namespace(ns.clone()), || {
                            BucketNode::Namespace(ns.clone())
                        });
                        (i, ns)
                    })
                    .collect())
            }
            BucketNode::Namespace(ns) => {
                let cached = self.caches.namespaces.lock().get(ns).cloned();
                let list = match cached {
                    Some((at, l)) if at.elapsed() < self.caches.ttl => l,
                    _ => {
                        let l = Arc::new(self.hub.list_buckets(ns).await?);
                        let entry = (Instant::now(), l.clone());
                        self.caches.namespaces.lock().insert(ns.clone(), entry);
                        l
                    }
                };
                Ok(list
                    .iter()
                    .filter(|b| is_valid_name(&b.name))
                    .map(|b| {
                        let st = self.caches.state(&BucketId::new(ns, &b.name));
                        let i =
                            self.bucket_inode(BucketKey::Dir(st.id.clone(), String::new()), || {
                                BucketNode::Dir {
                                    bucket: st.clone(),
                                    path: String::new(),
                                }
                            });
                        (i, b.name.clone())
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
                        Some((self.bucket_entry_inode(bucket, e), name))
                    })
                    .collect())
            }
            BucketNode::File { .. } => Err(FsError::NotDir),
        }
    }

    /// The shard a loader reads after `file` (`...-00002-of-00004...` after `...-00001-...`),
    /// at the version its folder's cached listing names, when that listing is at hand.
    pub fn next_shard(&self, st: &Arc<BucketState>, file: &BucketFile) -> Option<ReadTarget> {
        let (dir, name) = file
            .path
            .rsplit_once('/')
            .unwrap_or(("", file.path.as_str()));
        let next = join(dir, &super::shards::next_shard_name(name)?);
        let e = {
            let listings = st.listings.lock();
            let e = find(&listings.get(dir)?.entries, &next)?;
            (e.kind == EntryKind::File).then(|| e.clone())?
        };
        let f = Arc::new(BucketFile {
            bucket: st.id.clone(),
            path: e.path,
            size: e.size,
            xet_hash: e.xet_hash,
        });
        let content = content_key(&f);
        Some(self.target(st, &f, &content))
    }

    /// A bucket file version as read-ahead and the block cache fetch it: every fetch checks the
    /// version (ESTALE when the object changed).
    /// A read that finds the object changed also makes the bucket's listings be asked again.
    pub fn target(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_root(b: &str, sub: Option<&str>) -> Result<(BucketId, String), String> {
        match crate::fs::MountRoot::parse_bucket(b, sub)? {
            crate::fs::MountRoot::Bucket { bucket, subfolder } => Ok((bucket, subfolder)),
            other => Err(format!("not a bucket root: {other:?}")),
        }
    }

    #[test]
    fn bucket_mount_arguments() {
        let (id, sub) = bucket_root("acme/ckpt", Some("/runs/a/")).unwrap();
        assert_eq!(id, BucketId::new("acme", "ckpt"));
        assert_eq!(sub, "runs/a");
        assert_eq!(bucket_root("acme/ckpt", None).unwrap().1, "");
        for bad in ["acme", "acme/", "/ckpt", "a/b/c", ".x/y"] {
            assert!(bucket_root(bad, None).is_err(), "{bad}");
        }
        assert!(bucket_root("acme/ckpt", Some("a/../b")).is_err());
    }
}
