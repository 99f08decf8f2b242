//! The inode table: inode numbers for the nodes of the namespace, with the kernel's lookup counts
//! so that forgotten nodes are dropped. A node's identity (its [`NodeKey`]) maps to one inode
//! number for as long as the kernel remembers it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use crate::hub::{FileRef, RepoId, RepoType};

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
}

impl Inode {
    /// For a file or folder inside a repo: the inode of its repo directory.
    pub fn key_root(&self) -> Option<u64> {
        match &self.key {
            NodeKey::Entry { root, .. } => Some(*root),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<NodeKey, u64>,
    next: u64,
}

/// The table of live inodes.
pub struct InodeTable {
    inner: RwLock<Inner>,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding only the root.
    pub fn new() -> Self {
        let t = InodeTable {
            inner: RwLock::new(Inner {
                next: ROOT_INO + 1,
                ..Default::default()
            }),
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
                }),
            );
            i.by_key.insert(NodeKey::Root, ROOT_INO);
        }
        t
    }

    /// The inode with this number, if live.
    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        self.inner.read().by_ino.get(&ino).cloned()
    }

    /// The inode for `key`, made with `make` if it does not exist yet.
    pub fn get_or_insert(&self, key: NodeKey, make: impl FnOnce() -> Node) -> Arc<Inode> {
        {
            // One read guard: a second `read()` while holding the first deadlocks if a writer
            // queues between them (the lock is fair).
            let inner = self.inner.read();
            if let Some(i) = inner.by_key.get(&key).and_then(|ino| inner.by_ino.get(ino)) {
                return i.clone();
            }
        }
        let mut inner = self.inner.write();
        if let Some(i) = inner.by_key.get(&key).and_then(|ino| inner.by_ino.get(ino)) {
            return i.clone();
        }
        let ino = inner.next;
        inner.next += 1;
        let inode = Arc::new(Inode {
            ino,
            node: make(),
            key: key.clone(),
            lookups: AtomicU64::new(0),
        });
        inner.by_ino.insert(ino, inode.clone());
        inner.by_key.insert(key, ino);
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
            if inner.by_key.get(&inode.key) == Some(&ino) {
                inner.by_key.remove(&inode.key);
            }
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
        let c = t.get_or_insert(k, || Node::Root);
        assert_ne!(c.ino, a.ino, "inode numbers are not reused");
        t.forget(ROOT_INO, 100);
        assert!(t.get(ROOT_INO).is_some());
    }
}
