//! Directories: `readdir` from an offset (a folder one listing page at a time, an org from the
//! search API), and the lookup of a name inside a repo (a cached page, else paths-info).

use std::sync::Arc;
use std::time::Instant;

use super::inode::{Inode, Node, NodeKey, RefName, Snapshot, ROOT_INO};
use super::listing::{folder_key, Found, ListEntry};
use super::namespace::{is_valid_entry_name, is_valid_name};
use super::{content_key, Attr, DirEntry, FsError, FsResult, HubFs, Kind, STATS_FILE};
use crate::hub::{EntryKind, FileRef, HubClient, RepoType};

fn kind_of(k: EntryKind) -> Kind {
    match k {
        EntryKind::Directory => Kind::Dir,
        EntryKind::File => Kind::File,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

impl<C: HubClient> HubFs<C> {
    /// `lookup` when it needs no Hub call (a name inside a repo that is live, on a cached page,
    /// or known missing): `Some` with the answer, counted like [`HubFs::lookup`]; `None` when it
    /// must go to the Hub (or is not inside a repo), and then `lookup` does the whole work.
    pub fn lookup_cached(&self, parent: u64, name: &str) -> Option<FsResult<Attr>> {
        if parent == ROOT_INO && name == super::CONTROL_DIR {
            // The daemon's own directory, also at the root of a one-repo mount (whose root is a
            // repo root, where a cached listing would answer ENOENT).
            return None;
        }
        let p = self.node(parent).ok()?;
        let (root, snap, dir) = match &p.node {
            Node::RepoRoot(s) => (p.ino, s, ""),
            Node::Dir { snap, path } => (Self::root_ino_of(&p).ok()?, snap, path.as_str()),
            _ => return None,
        };
        let got = self.entry_cached(root, snap, dir, name)?;
        Some(got.map(|i| self.attr_of(&i)))
    }

    /// The memory-only part of [`HubFs::entry`]: `None` when paths-info must be asked.
    fn entry_cached(
        &self,
        root: u64,
        snap: &Arc<Snapshot>,
        dir: &str,
        name: &str,
    ) -> Option<FsResult<Arc<Inode>>> {
        if !is_valid_entry_name(name) {
            return Some(Err(FsError::NotFound));
        }
        let path = join(dir, name);
        let ikey = NodeKey::Entry {
            root,
            path: path.clone(),
        };
        if let Some(live) = self.inodes.lookup_existing(&ikey) {
            return Some(Ok(live));
        }
        let key = folder_key(&snap.repo, &snap.commit, dir);
        match self.listings.find(&key, name) {
            Found::Entry(e) => Some(Ok(self.counted_entry(ikey, snap, path, &e))),
            Found::Absent => Some(Err(FsError::NotFound)),
            Found::Unknown => {
                let missing = self
                    .absent
                    .lock()
                    .get(&(root, path))
                    .is_some_and(|at| at.elapsed() < self.cfg.negative_ttl);
                missing.then_some(Err(FsError::NotFound))
            }
        }
    }

    fn counted_entry(
        &self,
        ikey: NodeKey,
        snap: &Arc<Snapshot>,
        path: String,
        e: &ListEntry,
    ) -> Arc<Inode> {
        let inode = self
            .inodes
            .lookup_insert(ikey, || Self::entry_node(snap, path, e));
        self.listings.trim();
        inode
    }

    /// The inode of `name` in folder `dir` of a snapshot, with one kernel lookup counted. The live
    /// inode if there is one; else from a cached listing page; `ENOENT` at once when every page
    /// of the folder is cached (or the name was missing a moment ago); else one paths-info
    /// request.
    pub(super) async fn entry(
        &self,
        root: u64,
        snap: &Arc<Snapshot>,
        dir: &str,
        name: &str,
    ) -> FsResult<Arc<Inode>> {
        if let Some(done) = self.entry_cached(root, snap, dir, name) {
            return done;
        }
        let path = join(dir, name);
        let key = folder_key(&snap.repo, &snap.commit, dir);
        // A checkpoint shard's lookup also asks for the next shard (one request), so that
        // read-ahead can go on to it without a listing (`HubFs::next_shard`).
        let next = super::shards::next_shard_name(name).map(|n| join(dir, &n));
        let mut ask = vec![path.clone()];
        ask.extend(next.clone());
        let got = self.hub.paths_info(&snap.repo, &snap.commit, &ask).await?;
        let (mine, others): (Vec<_>, Vec<_>) = got.into_iter().partition(|e| e.path == path);
        for e in others {
            if Some(&e.path) == next.as_ref() {
                if let Some(le) = ListEntry::from_tree(e) {
                    self.side.lock().put((key.clone(), le.name.clone()), le);
                }
            }
        }
        let Some(found) = mine.into_iter().next().and_then(ListEntry::from_tree) else {
            self.absent.lock().put((root, path), Instant::now());
            return Err(FsError::NotFound);
        };
        let ikey = NodeKey::Entry {
            root,
            path: path.clone(),
        };
        Ok(self.counted_entry(ikey, snap, path, &found))
    }

    fn entry_node(snap: &Arc<Snapshot>, path: String, e: &ListEntry) -> Node {
        match e.kind {
            EntryKind::Directory => Node::Dir {
                snap: snap.clone(),
                path,
            },
            EntryKind::File => {
                let file = FileRef {
                    repo: snap.repo.clone(),
                    commit: snap.commit.clone(),
                    path,
                    size: e.size,
                    etag: e.etag.to_string(),
                };
                let content = Arc::from(content_key(&file));
                Node::File {
                    snap: snap.clone(),
                    file: Arc::new(file),
                    content,
                }
            }
        }
    }

    /// Every entry of directory `ino` (without `.` and `..`), all pages.
    pub async fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let more = self.readdir_at(ino, out.len() as u64).await?;
            if more.is_empty() {
                return Ok(out);
            }
            out.extend(more);
        }
    }

    /// The entries of directory `ino` from entry `start` on (counted from 0, without `.` and
    /// `..`): inside a repo, the rest of the listing page holding `start` (fetched if it is not
    /// cached); elsewhere, all the rest. Empty past the end. No inode is made: each entry carries
    /// the number its inode has or will have.
    pub async fn readdir_at(&self, ino: u64, start: u64) -> FsResult<Vec<DirEntry>> {
        let inode = self.node(ino)?;
        let all = match &inode.node {
            // (`inode.ino`, not `ino`: the root of a one-repo mount is a repo root under number 1.)
            Node::RepoRoot(snap) => return self.folder_from(inode.ino, snap, "", start).await,
            Node::Dir { snap, path } => {
                let root = Self::root_ino_of(&inode)?;
                return self.folder_from(root, snap, path, start).await;
            }
            Node::File { .. } | Node::StatsFile => return Err(FsError::NotDir),
            Node::Bucket(b) => self.bucket_entries(b).await?,
            Node::Root if self.cfg.root.bucket().is_some() => {
                let root = self.bucket_fs().mount_root().ok_or(FsError::NotFound)?;
                self.bucket_entries(&root).await?
            }
            Node::Root => {
                let mut v: Vec<DirEntry> =
                    [(RepoType::Dataset, "datasets"), (RepoType::Space, "spaces")]
                        .into_iter()
                        .map(|(t, n)| DirEntry {
                            ino: self.inodes.peek_ino(&NodeKey::TypeDir(t)),
                            kind: Kind::Dir,
                            name: n.to_owned(),
                        })
                        .collect();
                v.push(DirEntry {
                    ino: self.bucket_fs().root().ino,
                    kind: Kind::Dir,
                    name: super::buckets::BUCKETS_DIR.to_owned(),
                });
                v.extend(self.known_orgs(RepoType::Model));
                v
            }
            Node::TypeDir(t) => self.known_orgs(*t),
            Node::ControlDir => vec![DirEntry {
                ino: self.inodes.peek_ino(&NodeKey::StatsFile),
                kind: Kind::File,
                name: STATS_FILE.to_owned(),
            }],
            Node::Org { repo_type, org } => self.org_entries(ino, *repo_type, org).await?,
        };
        Ok(all.into_iter().skip(start as usize).collect())
    }

    /// Folder `dir` of a snapshot from entry `start`: the rest of the page that holds it.
    async fn folder_from(
        &self,
        root: u64,
        snap: &Arc<Snapshot>,
        dir: &str,
        start: u64,
    ) -> FsResult<Vec<DirEntry>> {
        let key = folder_key(&snap.repo, &snap.commit, dir);
        let hub = self.hub.clone();
        let (repo, commit, path) = (snap.repo.clone(), snap.commit.clone(), dir.to_owned());
        let fetch = move |cursor: Option<String>| {
            let (hub, repo, commit, path) =
                (hub.clone(), repo.clone(), commit.clone(), path.clone());
            async move {
                hub.list_page(&repo, &commit, &path, cursor.as_deref())
                    .await
            }
        };
        let Some(slice) = self.listings.slice_from(&key, start, fetch).await? else {
            return Ok(Vec::new());
        };
        Ok(slice.page.entries[slice.from..]
            .iter()
            .map(|e| DirEntry {
                ino: self.inodes.peek_ino(&NodeKey::Entry {
                    root,
                    path: join(dir, &e.name),
                }),
                kind: kind_of(e.kind),
                name: e.name.to_string(),
            })
            .collect())
    }

    /// An org directory: its repos of that type from the search API (by name, `main`), and every
    /// other directory name already bound under it (`m@v1`), sorted.
    async fn org_entries(&self, org_ino: u64, t: RepoType, org: &str) -> FsResult<Vec<DirEntry>> {
        let hub = self.hub.clone();
        let author = org.to_owned();
        let fetch = move |cursor: Option<String>| {
            let (hub, author) = (hub.clone(), author.clone());
            async move { hub.list_repos(t, &author, cursor.as_deref()).await }
        };
        // The Hub failing to list the org leaves the names already bound here: the mount keeps
        // answering, as it does for cached listings when the Hub is down.
        let listed = match self.orgs.get(t, org, fetch).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(org, error = %e, "cannot list the org's repos; showing the names already resolved");
                Arc::default()
            }
        };
        let bound: Vec<(String, Arc<RefName>)> = self
            .refs
            .lock()
            .iter()
            .filter(|((rt, o, _), _)| *rt == t && o == org)
            .map(|((_, _, n), s)| (n.clone(), s.clone()))
            .collect();
        let mut out: std::collections::BTreeMap<String, u64> = listed
            .iter()
            .filter(|n| is_valid_name(n))
            .map(|n| {
                // Not bound to a commit yet: the number of no live inode, stable per name.
                let placeholder = NodeKey::Repo {
                    parent: org_ino,
                    name: n.clone(),
                    commit: String::new(),
                };
                (n.clone(), self.inodes.peek_ino(&placeholder))
            })
            .collect();
        for (name, state) in bound {
            if let Some((_, rino)) = state.current.lock().as_ref() {
                out.insert(name, *rino);
            }
        }
        Ok(out
            .into_iter()
            .map(|(name, ino)| DirEntry {
                ino,
                kind: Kind::Dir,
                name,
            })
            .collect())
    }

    pub(super) fn known_orgs(&self, t: RepoType) -> Vec<DirEntry> {
        let mut v = self.inodes.collect(|i| match &i.node {
            Node::Org { repo_type, org } if *repo_type == t => Some(DirEntry {
                ino: i.ino,
                kind: Kind::Dir,
                name: org.clone(),
            }),
            _ => None,
        });
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The entry `name` of folder `dir` of a file's commit, if a cached page has it or a
    /// paths-info answer brought it along.
    pub(super) fn cached_entry(&self, file: &FileRef, dir: &str, name: &str) -> Option<ListEntry> {
        let key = folder_key(&file.repo, &file.commit, dir);
        self.listings
            .cached_entry(&key, name)
            .or_else(|| self.side.lock().peek(&(key, Box::from(name))).cloned())
    }
}
