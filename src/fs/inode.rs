//! The inode table: inode numbers for the nodes of the namespace, with the kernel's lookup counts
//! so that forgotten nodes are dropped. A node's identity (its [`NodeKey`]) maps to one inode
//! number for as long as the kernel remembers it, and to the same number each time it is made
//! again (a hash of the key; see [`stable_ino`]), so `readdir` can name an entry's inode number
//! without making the inode. Live inodes count their memory against the metadata budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use super::listing::{heap_bytes, MetaBudget};
use crate::hub::{FileRef, RepoId, RepoType};

/// The inode number a key gets when it is free: a hash of the key with the top bit set (numbers
/// counted up from 2 for the rare collision never get there).
pub fn stable_ino(key: &NodeKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() | (1 << 63)
}

/// Bookkeeping of one inode besides what its strings hold: the `Inode` and its `Arc`, its slot
/// in `by_ino` and hashbrown's spare capacity.
/// Set from the daemon's VmRSS with 200,000 file inodes held (docs/design.md, "Metadata
/// memory"): a file inode's estimate, about 680 bytes, is some 7% above the 633 measured.
pub const INODE_OVERHEAD: u64 = 224;

/// The root's inode number.
pub const ROOT_INO: u64 = 1;

/// A repo at one commit, reached through one directory name (`m@main`, `m@<sha>`, ...).
#[derive(Debug)]
pub struct Snapshot {
    /// The repo.
    pub repo: RepoId,
    /// The revision as the directory name gave it.
    pub revision: String,
    /// The commit everything under this directory is read at.
    pub commit: String,
    /// The commit date (mtime of everything under it).
    pub date: SystemTime,
    /// The access clock of the directory name, shared with later snapshots of the same name.
    pub name_state: Arc<RefName>,
}

/// One repo directory name under an org, e.g. `acme/m@main`: when it was last used, and the
/// commit it is bound to now.
#[derive(Debug, Default)]
pub struct RefName {
    /// Milliseconds since the filesystem started, at the last access to anything under the name.
    pub last_access_ms: AtomicU64,
    /// The current binding: the snapshot and the root inode for it.
    pub current: parking_lot::Mutex<Option<(Arc<Snapshot>, u64)>>,
}

/// What an inode is.
#[derive(Debug, Clone)]
pub enum Node {
    /// The mount root.
    Root,
    /// `/datasets` or `/spaces`.
    TypeDir(RepoType),
    /// A user or organisation directory.
    Org {
        /// Kind of repos listed under it.
        repo_type: RepoType,
        /// The org name.
        org: String,
    },
    /// A repo directory at a commit (`m@main`).
    RepoRoot(Arc<Snapshot>),
    /// A folder inside a repo.
    Dir {
        /// The repo and commit.
        snap: Arc<Snapshot>,
        /// Full path in the repo.
        path: String,
    },
    /// `/.hubfs`, the daemon's own directory (hidden from `ls /`).
    ControlDir,
    /// `/.hubfs/stats`: the counters as JSON, generated at each read.
    StatsFile,
    /// A file inside a repo.
    File {
        /// The repo and commit.
        snap: Arc<Snapshot>,
        /// What to read.
        file: Arc<FileRef>,
        /// The block cache's key for its bytes: `<etag>:<size>`, or `<repo>@<commit>/<path>`
        /// without an etag. Computed once, not on every read.
        content: Arc<str>,
    },
    /// Anything under `/buckets` (see [`crate::fs::buckets`]).
    Bucket(crate::fs::buckets::node::BucketNode),
}

impl Node {
    /// The snapshot a node lives in, for nodes inside a repo.
    pub fn snapshot(&self) -> Option<&Arc<Snapshot>> {
        match self {
            Node::RepoRoot(s) | Node::Dir { snap: s, .. } | Node::File { snap: s, .. } => Some(s),
            _ => None,
        }
    }

    /// True for everything but files.
    pub fn is_dir(&self) -> bool {
        !matches!(
            self,
            Node::File { .. }
                | Node::StatsFile
                | Node::Bucket(crate::fs::buckets::node::BucketNode::File { .. })
        )
    }

    /// The block cache key of a file's content (repo or bucket file).
    pub fn content(&self) -> Option<&Arc<str>> {
        match self {
            Node::File { content, .. }
            | Node::Bucket(crate::fs::buckets::node::BucketNode::File { content, .. }) => {
                Some(content)
            }
            _ => None,
        }
    }
}

/// The identity of a node: looking the same thing up twice yields the same inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeKey {
    /// The root.
    Root,
    /// A type directory.
    TypeDir(RepoType),
    /// An org directory.
    Org(RepoType, String),
    /// A repo directory: its org's inode, its name as written, and the commit it is bound to.
    Repo {
        /// Org directory inode.
        parent: u64,
        /// Name as written (`m@main`).
        name: String,
        /// The commit.
        commit: String,
    },
    /// `/.hubfs`.
    ControlDir,
    /// `/.hubfs/stats`.
    StatsFile,
    /// A file or folder: its repo directory inode and its path.
    Entry {
        /// Repo directory inode.
        root: u64,
        /// Full path in the repo.
        path: String,
    },
    /// Anything under `/buckets`.
    Bucket(crate::fs::buckets::node::BucketKey),
}

/// An inode: its number, what it is, and how many lookups the kernel holds.
#[derive(Debug)]
pub struct Inode {
    /// The inode number.
    pub ino: u64,
    /// What it is.
    pub node: Node,
    key: NodeKey,
    lookups: AtomicU64,
    bytes: u64,
}

impl Inode {
    /// Memory this inode holds, as counted against the metadata budget.
    pub fn approx_bytes(&self) -> u64 {
        self.bytes
    }

    /// For a file or folder inside a repo: the inode of its repo directory.
    pub fn key_root(&self) -> Option<u64> {
        match &self.key {
            NodeKey::Entry { root, .. } => Some(*root),
            _ => None,
        }
    }
}

/// Live inodes by number. A key is found at its [`stable_ino`]; only the keys whose stable
/// number another live inode held when they were made (and the root) are in `spill`, so no other
/// copy of a key is kept.
#[derive(Default)]
struct Inner {
    by_ino: HashMap<u64, Arc<Inode>>,
    spill: HashMap<NodeKey, u64>,
    next: u64,
}

impl Inner {
    fn find(&self, key: &NodeKey) -> Option<&Arc<Inode>> {
        match self.by_ino.get(&stable_ino(key)) {
            Some(i) if &i.key == key => Some(i),
            _ => self.spill.get(key).and_then(|ino| self.by_ino.get(ino)),
        }
    }
}

/// The table of live inodes.
pub struct InodeTable {
    inner: RwLock<Inner>,
    budget: Arc<MetaBudget>,
}

/// Memory a node's strings hold (a folder's path is held twice: in the key and the node; a
/// file's three times, with its `FileRef`).
fn node_bytes(key: &NodeKey, node: &Node) -> u64 {
    let key_heap = match key {
        NodeKey::Entry { path, .. } => heap_bytes(path.len()),
        NodeKey::Repo { name, commit, .. } => heap_bytes(name.len()) + heap_bytes(commit.len()),
        NodeKey::Org(_, o) => heap_bytes(o.len()),
        _ => 0,
    };
    let node_heap = match node {
        Node::Dir { path, .. } => heap_bytes(path.len()),
        Node::File { file, content, .. } => {
            std::mem::size_of::<FileRef>() as u64
                + 16
                + [
                    file.repo.namespace.len(),
                    file.repo.name.len(),
                    file.commit.len(),
                    file.path.len(),
                    file.etag.len(),
                    content.len() + 16,
                ]
                .iter()
                .map(|l| heap_bytes(*l))
                .sum::<u64>()
        }
        Node::Org { org, .. } => heap_bytes(org.len()),
        _ => 0,
    };
    INODE_OVERHEAD + key_heap + node_heap
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding only the root, not counting against any budget.
    pub fn new() -> Self {
        Self::with_budget(MetaBudget::new(u64::MAX))
    }

    /// A table holding only the root, counting live inodes' memory in `budget`.
    pub fn with_budget(budget: Arc<MetaBudget>) -> Self {
        let t = InodeTable {
            inner: RwLock::new(Inner {
                next: ROOT_INO + 1,
                ..Default::default()
            }),
            budget,
        };
        {
            let mut i = t.inner.write();
            i.by_ino.insert(
                ROOT_INO,
                Arc::new(Inode {
                    ino: ROOT_INO,
                    node: Node::Root,
                    key: NodeKey::Root,
                    lookups: AtomicU64::new(1),
                    bytes: 0,
                }),
            );
            i.spill.insert(NodeKey::Root, ROOT_INO);
        }
        t
    }

    /// The inode with this number, if live.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.inner.read().by_ino.get(&ino).cloned()
    }

    /// The inode for `key`, made with `make` if it does not exist yet (with no lookup counted:
    /// for inodes the kernel is not told about, or that [`InodeTable::add_lookup`] counts next).
    pub fn get_or_insert(&self, key: NodeKey, make: impl FnOnce() -> Node) -> Arc<Inode> {
        self.insert(key, make, 0)
    }

    /// The inode for `key`, made with `make` if needed, with one kernel lookup counted under the
    /// table's lock (so a `forget` racing the lookup can not drop it in between).
    pub fn lookup_insert(&self, key: NodeKey, make: impl FnOnce() -> Node) -> Arc<Inode> {
        self.insert(key, make, 1)
    }

    /// The live inode for `key`, with one kernel lookup counted, if there is one.
    pub fn lookup_existing(&self, key: &NodeKey) -> Option<Arc<Inode>> {
        let inner = self.inner.read();
        let i = inner.find(key)?;
        i.lookups.fetch_add(1, Ordering::Relaxed);
        Some(i.clone())
    }

    /// The number `key` has if it is live, else the one it would get ([`stable_ino`], unless
    /// another live inode has that number).
    pub fn peek_ino(&self, key: &NodeKey) -> u64 {
        let inner = self.inner.read();
        if let Some(i) = inner.find(key) {
            return i.ino;
        }
        stable_ino(key)
    }

    fn insert(&self, key: NodeKey, make: impl FnOnce() -> Node, lookups: u64) -> Arc<Inode> {
        {
            // One read guard: a second `read()` while holding the first deadlocks if a writer
            // queues between them (the lock is fair).
            let inner = self.inner.read();
            if let Some(i) = inner.find(&key) {
                i.lookups.fetch_add(lookups, Ordering::Relaxed);
                return i.clone();
            }
        }
        let mut inner = self.inner.write();
        if let Some(i) = inner.find(&key) {
            i.lookups.fetch_add(lookups, Ordering::Relaxed);
            return i.clone();
        }
        let stable = stable_ino(&key);
        let ino = if inner.by_ino.contains_key(&stable) {
            inner.next += 1;
            inner.next - 1
        } else {
            stable
        };
        let node = make();
        let bytes = node_bytes(&key, &node);
        let inode = Arc::new(Inode {
            ino,
            node,
            key: key.clone(),
            lookups: AtomicU64::new(lookups),
            bytes,
        });
        inner.by_ino.insert(ino, inode.clone());
        if ino != stable {
            inner.spill.insert(key, ino);
        }
        self.budget.inode_bytes.fetch_add(bytes, Ordering::Relaxed);
        inode
    }

    /// Counts one kernel lookup of `inode`.
    pub fn add_lookup(&self, inode: &Inode) {
        inode.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel forgot `n` lookups of `ino`; drops the inode when none are left (never the root).
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inner = self.inner.write();
        let Some(inode) = inner.by_ino.get(&ino).cloned() else {
            return;
        };
        let prev = inode
            .lookups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                Some(l.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev <= n {
            inner.by_ino.remove(&ino);
            if inner.spill.get(&inode.key) == Some(&ino) {
                inner.spill.remove(&inode.key);
            }
            self.budget
                .inode_bytes
                .fetch_sub(inode.bytes, Ordering::Relaxed);
        }
    }

    /// All live inodes matching `f` (for listing the orgs and repos already looked up).
    pub fn collect<T>(&self, mut f: impl FnMut(&Inode) -> Option<T>) -> Vec<T> {
        self.inner
            .read()
            .by_ino
            .values()
            .filter_map(|i| f(i))
            .collect()
    }

    /// Number of live inodes.
    pub fn len(&self) -> usize {
        self.inner.read().by_ino.len()
    }

    /// True when only the root is live.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a fair lock, a reader that takes the read lock a second time while holding it
    /// deadlocks as soon as a writer queues between the two; lookups of existing inodes racing
    /// inserts must all finish.
    #[test]
    fn lookups_racing_inserts_never_deadlock() {
        let t = Arc::new(InodeTable::new());
        let org = |i: u64| NodeKey::Org(RepoType::Model, format!("o{i}"));
        let make = |i: u64| {
            move || Node::Org {
                repo_type: RepoType::Model,
                org: format!("o{i}"),
            }
        };
        t.get_or_insert(org(0), make(0));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for r in 0..4u64 {
            let (t, done) = (t.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    t.get_or_insert(org(0), make(0));
                }
                let _ = done.send(r);
            });
        }
        {
            let (t, done) = (t.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for i in 1..20_000u64 {
                    t.get_or_insert(org(i), make(i));
                }
                let _ = done.send(99);
            });
        }
        for _ in 0..5 {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .expect("a lookup deadlocked");
        }
    }

    #[test]
    fn a_key_whose_number_is_taken_gets_another_and_is_still_found() {
        let t = InodeTable::new();
        let a = NodeKey::Org(RepoType::Model, "a".into());
        let b = NodeKey::Org(RepoType::Model, "b".into());
        // As a hash collision would: a's inode holds b's stable number.
        {
            let mut inner = t.inner.write();
            let taken = stable_ino(&b);
            inner.by_ino.insert(
                taken,
                Arc::new(Inode {
                    ino: taken,
                    node: Node::Root,
                    key: a.clone(),
                    lookups: AtomicU64::new(1),
                    bytes: 0,
                }),
            );
            inner.spill.insert(a.clone(), taken);
        }
        let ib = t.lookup_insert(b.clone(), || Node::Root);
        assert_ne!(ib.ino, stable_ino(&b));
        assert_eq!(t.get_or_insert(b.clone(), || unreachable!()).ino, ib.ino);
        assert_eq!(t.peek_ino(&b), ib.ino);
        assert_eq!(
            t.get_or_insert(a.clone(), || unreachable!()).ino,
            stable_ino(&b)
        );
        t.forget(ib.ino, 1);
        assert!(t.get(ib.ino).is_none());
        assert!(!t.inner.read().spill.contains_key(&b), "spill cleaned");
        t.forget(stable_ino(&b), 1);
        let again = t.get_or_insert(b.clone(), || Node::Root);
        assert_eq!(again.ino, stable_ino(&b), "its own number once free");
    }

    #[test]
    fn same_key_same_inode_and_forget_drops_it() {
        let t = InodeTable::new();
        let k = NodeKey::Org(RepoType::Model, "acme".into());
        let a = t.get_or_insert(k.clone(), || Node::Org {
            repo_type: RepoType::Model,
            org: "acme".into(),
        });
        t.add_lookup(&a);
        t.add_lookup(&a);
        let b = t.get_or_insert(k.clone(), || unreachable!("exists"));
        assert_eq!(a.ino, b.ino);
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some());
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none());
        let c = t.get_or_insert(k.clone(), || Node::Root);
        assert_eq!(c.ino, a.ino, "a key made again gets its number again");
        assert_eq!(t.peek_ino(&k), c.ino);
        assert_ne!(
            t.peek_ino(&NodeKey::Org(RepoType::Model, "other".into())),
            c.ino
        );
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }
}
