//! Names bound to commits: a repo directory (`name@rev`) resolved to its snapshot's root inode,
//! a branch or tag re-resolved only after `revision_ttl` without access (and the old commit kept
//! while the Hub fails), and the root of a one-repo mount bound once, at mount.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use super::inode::{Inode, Node, NodeKey, Snapshot, ROOT_INO};
use super::namespace::parse_repo_dir;
use super::{FsError, FsResult, HubFs, MountRoot};
use crate::hub::{HubClient, HubError, RepoId, RepoType};

impl<C: HubClient> HubFs<C> {
    pub(super) fn org_inode(&self, repo_type: RepoType, org: String) -> Arc<Inode> {
        self.inodes
            .get_or_insert(NodeKey::Org(repo_type, org.clone()), || Node::Org {
                repo_type,
                org,
            })
    }

    /// Resolves a repo directory name (`m@rev`) under an org to its snapshot's root inode,
    /// re-resolving a branch or tag only after `revision_ttl` without access.
    pub(super) async fn repo_root(
        &self,
        org_ino: u64,
        repo_type: RepoType,
        org: &str,
        name: &str,
    ) -> FsResult<Arc<Inode>> {
        let parsed = parse_repo_dir(name).ok_or(FsError::NotFound)?;
        let key = (repo_type, org.to_owned(), name.to_owned());
        if let Some(at) = self.missing.lock().get(&key) {
            if at.elapsed() < self.cfg.negative_ttl {
                return Err(FsError::NotFound);
            }
        }
        let state = self.refs.lock().entry(key.clone()).or_default().clone();
        let now = self.now_ms();
        let fresh = |last: u64| {
            parsed.is_pinned()
                || now.saturating_sub(last) < self.cfg.revision_ttl.as_millis() as u64
        };
        let current = state.current.lock().clone();
        if let Some((snap, _)) = &current {
            if fresh(state.last_access_ms.load(Ordering::Relaxed)) {
                state.last_access_ms.store(now, Ordering::Relaxed);
                return Ok(self.repo_inode(org_ino, name, snap.clone()));
            }
        }
        let repo = RepoId::new(repo_type, org, &parsed.repo);
        let hub = self.hub.clone();
        let (r2, rev2) = (repo.clone(), parsed.revision.clone());
        let info = self
            .resolving
            .run(
                (repo.clone(), parsed.revision.clone()),
                move || async move { hub.resolve_revision(&r2, &rev2).await },
            )
            .await;
        let info = match (info, current.clone()) {
            (Ok(i), _) => i,
            (Err(e), Some((snap, _))) if e.is_transient() => {
                // The Hub is unreachable or failing: keep serving the commit the name is bound to
                // (its content is immutable) rather than failing every path under it.
                tracing::warn!(repo = %repo, revision = %parsed.revision, commit = %snap.commit, error = %e, "cannot re-resolve; still serving the previous commit");
                state.last_access_ms.store(now, Ordering::Relaxed);
                return Ok(self.repo_inode(org_ino, name, snap));
            }
            (Err(e), _) => {
                if matches!(e, HubError::NotFound { .. }) {
                    self.missing.lock().put(key.clone(), Instant::now());
                    let mut refs = self.refs.lock();
                    if state.current.lock().is_none() {
                        refs.remove(&key);
                    }
                }
                return Err(e.into());
            }
        };
        if parsed.is_pinned() && info.sha != parsed.revision {
            return Err(FsError::NotFound);
        }
        let snap = match current {
            Some((s, _)) if s.commit == info.sha => s,
            old => {
                if let Some((o, _)) = old {
                    tracing::info!(repo = %repo, revision = %parsed.revision, from = %o.commit, to = %info.sha, "revision moved; new loads see the new commit");
                }
                Arc::new(Snapshot {
                    repo,
                    revision: parsed.revision.clone(),
                    commit: info.sha.clone(),
                    date: info.date.unwrap_or(UNIX_EPOCH),
                    name_state: state.clone(),
                })
            }
        };
        let inode = self.repo_inode(org_ino, name, snap.clone());
        *state.current.lock() = Some((snap, inode.ino));
        state.last_access_ms.store(now, Ordering::Relaxed);
        Ok(inode)
    }

    pub(super) fn repo_inode(&self, org_ino: u64, name: &str, snap: Arc<Snapshot>) -> Arc<Inode> {
        let key = NodeKey::Repo {
            parent: org_ino,
            name: name.to_owned(),
            commit: snap.commit.clone(),
        };
        self.inodes
            .get_or_insert(key, || Node::RepoRoot(snap.clone()))
    }

    /// For a one-repo mount, the inode the root (`ino` 1) stands for, once resolved.
    pub(super) fn mounted_root(&self, ino: u64) -> Option<Arc<Inode>> {
        if ino != ROOT_INO {
            return None;
        }
        self.mounted.lock().clone()
    }

    /// Binds the root of a one-repo mount: resolves its revision to a commit once (the mount is
    /// pinned to it for its life) and walks to its subfolder, which must be a folder at that
    /// commit. Returns the commit, or `None` for a whole-Hub mount (nothing to do). Call it
    /// before mounting: until it succeeds, the root is the whole Hub.
    pub async fn resolve_root(&self) -> FsResult<Option<String>> {
        let MountRoot::Repo {
            repo,
            revision,
            subfolder,
        } = self.cfg.root.clone()
        else {
            return Ok(None);
        };
        let info = self.hub.resolve_revision(&repo, &revision).await?;
        if crate::hub::urls::is_commit_sha(&revision) && info.sha != revision {
            return Err(FsError::NotFound);
        }
        let snap = Arc::new(Snapshot {
            repo: repo.clone(),
            // Pinned: the root never re-resolves (its inode cannot change under the kernel).
            revision: info.sha.clone(),
            commit: info.sha.clone(),
            date: info.date.unwrap_or(UNIX_EPOCH),
            name_state: Default::default(),
        });
        let org = self.org_inode(repo.repo_type, repo.namespace.clone());
        let top = self.repo_inode(
            org.ino,
            &format!("{}@{}", repo.name, info.sha),
            snap.clone(),
        );
        // The kernel never sees these inodes (it sees ino 1): one held lookup keeps them.
        self.inodes.add_lookup(&org);
        self.inodes.add_lookup(&top);
        let mut at = top.clone();
        let mut dir = String::new();
        for seg in subfolder.split('/').filter(|s| !s.is_empty()) {
            let child = self.entry(top.ino, &snap, &dir, seg).await?;
            if !child.node.is_dir() {
                return Err(FsError::NotDir);
            }
            self.inodes.add_lookup(&child);
            dir = if dir.is_empty() {
                seg.to_owned()
            } else {
                format!("{dir}/{seg}")
            };
            at = child;
        }
        *self.mounted.lock() = Some(at);
        Ok(Some(info.sha))
    }
}
