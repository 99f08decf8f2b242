//! The filesystem core: the namespace, inodes, snapshot consistency and reads, generic over a
//! [`HubClient`]. It knows inodes and errors, not URLs or FUSE replies, so tests drive it directly
//! with an in-memory Hub; the FUSE adapter (`crate::fuse`) is a thin layer over it.

pub mod buckets;
pub mod deadline;
mod dirs;
pub mod error;
pub mod inode;
pub mod listing;
pub mod namespace;
pub mod orgs;
mod read;
mod revisions;
pub mod root;
pub mod shards;
mod xattrs;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

pub use error::{FsError, FsResult};
use inode::{Inode, InodeTable, Node, NodeKey, RefName, ROOT_INO};
use listing::{ListingCache, MetaBudget};
use namespace::{parse_root_name, RootName};
use orgs::OrgListings;
pub use root::MountRoot;

use crate::cache::{BlockCache, MemoryPlan, PrefetchConfig, Prefetcher};
use crate::hub::{CommitInfo, FileRef, HubClient, RepoId, RepoType};

/// The default metadata limit (`--metadata-size`): listing pages and inodes together.
pub const DEFAULT_METADATA_BYTES: u64 = 64 << 20;
use crate::singleflight::SingleFlight;
use crate::stats::Stats;

pub use root::XATTR_COMMIT;
/// The daemon's own directory at the mount root (hidden from `readdir`).
pub const CONTROL_DIR: &str = ".hubfs";
/// The counters file in [`CONTROL_DIR`].
pub const STATS_FILE: &str = "stats";

/// Settings of the filesystem core.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Owner of every file and directory.
    pub uid: u32,
    /// Group of every file and directory.
    pub gid: u32,
    /// A branch or tag is re-resolved only after nothing under it was used for this long.
    pub revision_ttl: Duration,
    /// Block size of the cache.
    pub block_size: u64,
    /// Capacity of the block cache in bytes.
    pub cache_bytes: u64,
    /// Most bytes one range request fetches.
    pub max_request_bytes: u64,
    /// Range requests the client runs at once (`--max-connections`): read-ahead keeps this many
    /// parts in flight when the cache allows.
    pub connections: usize,
    /// Memory for metadata (`--metadata-size`): cached listing pages plus live inodes. Pages are
    /// evicted, least recently used first, to stay within it; inodes the kernel holds are freed
    /// when it forgets them.
    pub metadata_bytes: u64,
    /// Read-ahead of sequential readers (its sizes come from the memory plan).
    pub prefetch: PrefetchConfig,
    /// How long a repo or revision the Hub said does not exist is answered ENOENT without asking
    /// again (loaders probe many names).
    pub negative_ttl: Duration,
    /// What the root directory is: the whole Hub, one repo (folder) pinned to a commit (resolved
    /// by [`HubFs::resolve_root`] before mounting), or one bucket (folder) (`.hubfs` stays at the
    /// root in every case).
    pub root: MountRoot,
    /// Permission bits of every file (read and execute bits only; default 0444).
    pub file_mode: u16,
    /// Permission bits of every directory (read and execute bits only; default 0555).
    pub dir_mode: u16,
    /// No FUSE read waits longer than this for the next of its blocks (`--read-timeout`): it
    /// fails with `EIO` instead, whatever the fetches under it do.
    pub read_deadline: Duration,
    /// How long listings and attributes under `/buckets` are used before bucket info is asked
    /// whether the bucket changed (`--bucket-ttl`).
    pub bucket_ttl: Duration,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            revision_ttl: Duration::from_secs(60),
            block_size: 32 << 10,
            cache_bytes: 512 << 20,
            max_request_bytes: 8 << 20,
            connections: 16,
            metadata_bytes: DEFAULT_METADATA_BYTES,
            prefetch: PrefetchConfig::default(),
            negative_ttl: Duration::from_secs(30),
            root: MountRoot::Hub,
            file_mode: 0o444,
            dir_mode: 0o555,
            read_deadline: Duration::from_secs(30),
            bucket_ttl: Duration::from_secs(5),
        }
    }
}

/// The block cache's key for `file`'s content: its etag and size (shared by every path and commit
/// with that content), or its path at the commit when it has no etag.
fn content_key(file: &FileRef) -> String {
    if file.etag.is_empty() {
        format!("{}@{}/{}", file.repo, file.commit, file.path)
    } else {
        format!("{}:{}", file.etag, file.size)
    }
}

/// File or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory (mode 0555).
    Dir,
    /// A regular file (mode 0444).
    File,
}

/// How long the kernel may cache an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Immutable (inside a commit, or a sha-pinned repo directory): cache for long.
    Immutable,
    /// May change: a branch or tag directory name, the root, org and type directories.
    Short,
    /// Changes at every read (`/.hubfs/stats`): never cached, read directly.
    Volatile,
}

/// Attributes of an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time: the commit date inside repos, the mount time elsewhere.
    pub mtime: SystemTime,
    /// Permission bits: 0444 or 0555.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// How long the kernel may keep this (and the name that led to it).
    pub lifetime: Lifetime,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Name.
    pub name: String,
}

/// The filesystem core.
pub struct HubFs<C: HubClient> {
    hub: Arc<C>,
    cfg: FsConfig,
    inodes: InodeTable,
    blocks: Arc<BlockCache>,
    prefetcher: Arc<Prefetcher>,
    /// Opens not yet released, per content key.
    open_files: Mutex<std::collections::HashMap<Arc<str>, u64>>,
    listings: ListingCache,
    budget: Arc<MetaBudget>,
    orgs: OrgListings,
    /// Paths inside repos paths-info said do not exist, and when: (repo root inode, path).
    absent: Mutex<lru::LruCache<(u64, String), Instant>>,
    /// Entries paths-info gave besides the one asked for (the next checkpoint shard).
    side: Mutex<lru::LruCache<(listing::FolderKey, Box<str>), listing::ListEntry>>,
    refs: Mutex<std::collections::HashMap<(RepoType, String, String), Arc<RefName>>>,
    resolving: SingleFlight<(RepoId, String), CommitInfo>,
    /// Repo directory names the Hub said do not exist, and when.
    missing: Mutex<lru::LruCache<(RepoType, String, String), Instant>>,
    stats: Arc<Stats>,
    started: Instant,
    mount_time: SystemTime,
    /// For a one-repo mount: the repo (folder) inode the root stands for, once resolved.
    mounted: Mutex<Option<Arc<Inode>>>,
    /// Reads that timed out lately (the kernel's retries of them share their deadline).
    deadlines: deadline::ReadDeadlines,
    buckets: buckets::Buckets,
}

impl<C: HubClient> HubFs<C> {
    /// A filesystem over `hub`.
    pub fn new(hub: Arc<C>, cfg: FsConfig, stats: Arc<Stats>) -> Self {
        let plan = MemoryPlan::for_capacity(
            cfg.cache_bytes,
            cfg.block_size,
            cfg.connections,
            cfg.max_request_bytes,
        );
        let blocks = BlockCache::new(plan, stats.clone());
        let budget = MetaBudget::new(cfg.metadata_bytes);
        HubFs {
            // Bucket listings hold at most a metadata limit's worth of entries of their own (they are
            // not in the repo listings' shared budget).
            buckets: buckets::Buckets::new(
                cfg.bucket_ttl,
                (cfg.metadata_bytes / buckets::BUCKET_ENTRY_BYTES).max(1) as usize,
            ),
            hub,
            prefetcher: Prefetcher::new(cfg.prefetch.clone(), blocks.clone()),
            open_files: Mutex::new(Default::default()),
            listings: ListingCache::new(budget.clone()),
            inodes: InodeTable::with_budget(budget.clone()),
            budget,
            orgs: OrgListings::default(),
            absent: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4096).expect("non-zero"),
            )),
            side: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(1024).expect("non-zero"),
            )),
            cfg,
            blocks,
            refs: Mutex::new(Default::default()),
            resolving: SingleFlight::default(),
            missing: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(4096).expect("non-zero"),
            )),
            stats,
            started: Instant::now(),
            mount_time: SystemTime::now(),
            mounted: Mutex::new(None),
            deadlines: Default::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The gauges sampled now (memory, inodes, uptime).
    pub fn gauges(&self) -> crate::stats::Gauges {
        crate::stats::Gauges {
            cache_bytes: self.blocks.cached_bytes(),
            readahead_unread_bytes: self.blocks.unread_bytes(),
            readahead_wasted_bytes_total: self.blocks.wasted_bytes(),
            consumed_dropped_bytes_total: self.blocks.dropped_behind_bytes(),
            block_buffers_in_use: self.blocks.pool_usage().0,
            block_buffers_from_heap_total: self.blocks.pool_usage().1,
            inflight_bytes: self.blocks.inflight_bytes(),
            cache_capacity_bytes: self.blocks.capacity(),
            inodes: self.inodes.len() as u64,
            metadata_bytes: self.budget.used(),
            listing_pages: self.listings.pages_cached() as u64,
            listing_pages_fetched_total: self.listings.pages_fetched(),
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// The `/.hubfs/stats` document.
    pub fn stats_json(&self) -> String {
        crate::stats::to_json(&self.stats, &self.gauges())
    }

    /// The block cache.
    pub fn block_cache(&self) -> &Arc<BlockCache> {
        &self.blocks
    }

    /// The settings.
    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn node(&self, ino: u64) -> FsResult<Arc<Inode>> {
        let inode = match self.mounted_root(ino) {
            Some(i) => i,
            None => self.inodes.get(ino).ok_or(FsError::StaleInode(ino))?,
        };
        if let Some(s) = inode.node.snapshot() {
            s.name_state
                .last_access_ms
                .store(self.now_ms(), Ordering::Relaxed);
        }
        Ok(inode)
    }

    fn attr_of(&self, inode: &Inode) -> Attr {
        if let Node::Bucket(b) = &inode.node {
            let (dir, size, mtime) = b.attr_parts(self.mount_time);
            return Attr {
                ino: inode.ino,
                kind: if dir { Kind::Dir } else { Kind::File },
                size,
                mtime,
                perm: if dir { 0o555 } else { 0o444 },
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                // A bucket can change at any time.
                lifetime: Lifetime::Short,
            };
        }
        let (kind, size, mtime, lifetime) = match &inode.node {
            Node::Root | Node::TypeDir(_) | Node::Org { .. } | Node::ControlDir => {
                (Kind::Dir, 0, self.mount_time, Lifetime::Short)
            }
            Node::StatsFile => (Kind::File, 0, SystemTime::now(), Lifetime::Volatile),
            Node::RepoRoot(s) => {
                let pinned = s.revision == s.commit;
                let l = if pinned {
                    Lifetime::Immutable
                } else {
                    Lifetime::Short
                };
                (Kind::Dir, 0, s.date, l)
            }
            Node::Dir { snap, .. } => (Kind::Dir, 0, snap.date, Lifetime::Immutable),
            Node::File { snap, file, .. } => {
                (Kind::File, file.size, snap.date, Lifetime::Immutable)
            }
            Node::Bucket(_) => unreachable!("answered above"),
        };
        Attr {
            ino: inode.ino,
            kind,
            size,
            mtime,
            perm: if kind == Kind::Dir {
                self.cfg.dir_mode
            } else {
                self.cfg.file_mode
            },
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            lifetime,
        }
    }

    /// Looks `name` up in directory `parent`; counts one kernel lookup on success.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let p = self.node(parent)?;
        let child = match &p.node {
            _ if parent == ROOT_INO && name == CONTROL_DIR => self
                .inodes
                .get_or_insert(NodeKey::ControlDir, || Node::ControlDir),
            Node::Root if self.cfg.root.bucket().is_some() => {
                let root = self.bucket_fs().mount_root().ok_or(FsError::NotFound)?;
                self.bucket_fs().lookup(&root, name).await?
            }
            Node::ControlDir if name == STATS_FILE => self
                .inodes
                .get_or_insert(NodeKey::StatsFile, || Node::StatsFile),
            Node::ControlDir => return Err(FsError::NotFound),
            Node::Root if name == buckets::BUCKETS_DIR => self.bucket_fs().root(),
            Node::Bucket(b) => self.bucket_fs().lookup(b, name).await?,
            Node::Root => match parse_root_name(name).ok_or(FsError::NotFound)? {
                RootName::TypeDir(t) => self
                    .inodes
                    .get_or_insert(NodeKey::TypeDir(t), || Node::TypeDir(t)),
                RootName::Org(org) => self.org_inode(RepoType::Model, org),
            },
            Node::TypeDir(t) => match parse_root_name(name) {
                Some(RootName::Org(org)) => self.org_inode(*t, org),
                _ => return Err(FsError::NotFound),
            },
            Node::Org { repo_type, org } => self.repo_root(p.ino, *repo_type, org, name).await?,
            // Counted by `entry` itself, under the inode table's lock.
            Node::RepoRoot(snap) => {
                let child = self.entry(p.ino, snap, "", name).await?;
                return Ok(self.attr_of(&child));
            }
            Node::Dir { snap, path } => {
                let root = Self::root_ino_of(&p)?;
                let child = self.entry(root, snap, path, name).await?;
                return Ok(self.attr_of(&child));
            }
            Node::File { .. } | Node::StatsFile => return Err(FsError::NotDir),
        };
        self.inodes.add_lookup(&child);
        Ok(self.attr_of(&child))
    }

    /// The repo directory inode for a folder inode's snapshot (entries are keyed under it).
    fn root_ino_of(inode: &Inode) -> FsResult<u64> {
        inode.key_root().ok_or(FsError::StaleInode(inode.ino))
    }

    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let inode = self.node(ino)?;
        // The root of a one-repo mount is that repo's inode under the root's number.
        Ok(Attr {
            ino,
            ..self.attr_of(&inode)
        })
    }

    /// The bucket logic over this core's parts.
    fn bucket_fs(&self) -> buckets::BucketFs<'_, C> {
        buckets::BucketFs {
            hub: &self.hub,
            inodes: &self.inodes,
            caches: &self.buckets,
            mount_time: self.mount_time,
            mount: self.cfg.root.bucket(),
        }
    }

    async fn bucket_entries(&self, b: &buckets::BucketNode) -> FsResult<Vec<DirEntry>> {
        let entries = self.bucket_fs().readdir(b).await?;
        Ok(entries
            .into_iter()
            .map(|(i, name)| DirEntry {
                ino: i.ino,
                kind: if i.node.is_dir() {
                    Kind::Dir
                } else {
                    Kind::File
                },
                name,
            })
            .collect())
    }

    /// Checks that `ino` may be opened: files only, and never for writing. Each successful open
    /// is to be matched by one [`HubFs::release`].
    pub fn open(&self, ino: u64, write: bool) -> FsResult<()> {
        let inode = self.node(ino)?;
        if write {
            return Err(FsError::ReadOnly);
        }
        if inode.node.is_dir() {
            return Err(FsError::IsDir);
        }
        if let Some(content) = inode.node.content() {
            let first = {
                let mut open = self.open_files.lock();
                let n = open.entry(content.clone()).or_insert(0);
                *n += 1;
                *n == 1
            };
            if first {
                self.prefetcher.opened(content);
            }
        }
        Ok(())
    }

    /// The kernel released an open of `ino` (its last descriptor and mapping are gone). When no
    /// open of its content is left, its read-ahead stops (what is in flight completes).
    pub fn release(&self, ino: u64) {
        let Ok(inode) = self.node(ino) else {
            return;
        };
        let Some(content) = inode.node.content() else {
            return;
        };
        let last = {
            let mut open = self.open_files.lock();
            match open.get_mut(content) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    open.remove(content);
                    true
                }
                None => false,
            }
        };
        if last {
            self.prefetcher.closed(content);
        }
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
    }

    /// Opens of files not yet released, over all files (for stats and tests).
    pub fn open_handles(&self) -> u64 {
        self.open_files.lock().values().sum()
    }

    /// Number of live inodes (for stats and tests).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The root inode number.
    pub fn root(&self) -> u64 {
        ROOT_INO
    }
}
