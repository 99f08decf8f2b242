//! An in-memory Hub for tests of the filesystem core without HTTP or a mount. It keeps call
//! counters so tests can pin down how many Hub requests an operation costs, and can be told to
//! fail or to stall.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

mod buckets;

use super::{
    CommitInfo, EntryKind, FileRef, HttpContext, HubClient, HubError, NotFoundKind, PieceSink,
    RepoId, TreeEntry,
};

#[derive(Default)]
struct Repo {
    refs: HashMap<String, String>,
    commits: HashMap<String, BTreeMap<String, Bytes>>,
    denied: Option<HubError>,
}

/// How many calls of each kind the fake has answered.
#[derive(Default, Debug)]
pub struct Calls {
    /// `resolve_revision` calls.
    pub resolve: AtomicU64,
    /// `list_dir` calls.
    pub list: AtomicU64,
    /// `read_range` calls.
    pub range: AtomicU64,
    /// Bytes returned by `read_range`.
    pub bytes: AtomicU64,
    /// `bucket_info` calls.
    pub bucket_info: AtomicU64,
    /// Bucket objects put (numbers the versions).
    pub puts: AtomicU64,
}

/// The in-memory Hub.
#[derive(Default)]
pub struct MemoryHub {
    repos: Mutex<HashMap<RepoId, Repo>>,
    /// Counters of answered calls.
    pub calls: Calls,
    range_delay: Mutex<Option<Duration>>,
    buckets: Mutex<BTreeMap<crate::hub::buckets::BucketId, buckets::MemBucket>>,
}

fn not_found(kind: NotFoundKind, what: &str) -> HubError {
    HubError::NotFound {
        kind,
        context: HttpContext {
            status: 404,
            url: format!("memory://{what}"),
            ..Default::default()
        },
    }
}

/// A deterministic fake commit sha for tests.
pub fn fake_sha(n: u64) -> String {
    format!("{:040x}", 0x00c0_ffee_0000_u64 + n)
}

impl MemoryHub {
    /// An empty Hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds commit `sha` of `repo` with these files (path, content).
    pub fn add_commit(&self, repo: &RepoId, sha: &str, files: &[(&str, &[u8])]) {
        let mut repos = self.repos.lock();
        let r = repos.entry(repo.clone()).or_default();
        r.commits.insert(
            sha.to_owned(),
            files
                .iter()
                .map(|(p, c)| ((*p).to_owned(), Bytes::copy_from_slice(c)))
                .collect(),
        );
    }

    /// Points branch or tag `name` of `repo` at `sha`.
    pub fn set_ref(&self, repo: &RepoId, name: &str, sha: &str) {
        let mut repos = self.repos.lock();
        repos
            .entry(repo.clone())
            .or_default()
            .refs
            .insert(name.to_owned(), sha.to_owned());
    }

    /// Makes every call about `repo` fail with `err` (a gated or private repo).
    pub fn deny(&self, repo: &RepoId, err: HubError) {
        self.repos.lock().entry(repo.clone()).or_default().denied = Some(err);
    }

    /// Makes every `read_range` wait this long first (to test coalescing of concurrent readers).
    pub fn set_range_delay(&self, d: Option<Duration>) {
        *self.range_delay.lock() = d;
    }

    fn with_commit<T>(
        &self,
        repo: &RepoId,
        commit: &str,
        f: impl FnOnce(&BTreeMap<String, Bytes>) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let repos = self.repos.lock();
        let r = repos
            .get(repo)
            .ok_or_else(|| not_found(NotFoundKind::Repo, &repo.to_string()))?;
        if let Some(e) = &r.denied {
            return Err(e.clone());
        }
        let files = r
            .commits
            .get(commit)
            .ok_or_else(|| not_found(NotFoundKind::Revision, commit))?;
        f(files)
    }
}

impl HubClient for MemoryHub {
    async fn resolve_revision(
        &self,
        repo: &RepoId,
        revision: &str,
    ) -> Result<CommitInfo, HubError> {
        self.calls.resolve.fetch_add(1, Ordering::Relaxed);
        let repos = self.repos.lock();
        let r = repos
            .get(repo)
            .ok_or_else(|| not_found(NotFoundKind::Repo, &repo.to_string()))?;
        if let Some(e) = &r.denied {
            return Err(e.clone());
        }
        let sha = match r.refs.get(revision) {
            Some(s) => s.clone(),
            None if r.commits.contains_key(revision) => revision.to_owned(),
            None => return Err(not_found(NotFoundKind::Revision, revision)),
        };
        Ok(CommitInfo {
            sha,
            date: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        })
    }

    async fn list_dir(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<Vec<TreeEntry>, HubError> {
        self.calls.list.fetch_add(1, Ordering::Relaxed);
        self.with_commit(repo, commit, |files| {
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            let mut dirs = BTreeSet::new();
            let mut out = Vec::new();
            for (p, content) in files.iter() {
                let Some(rest) = p.strip_prefix(&prefix) else {
                    continue;
                };
                match rest.split_once('/') {
                    Some((d, _)) => {
                        dirs.insert(format!("{prefix}{d}"));
                    }
                    None => out.push(TreeEntry {
                        path: p.clone(),
                        kind: EntryKind::File,
                        size: content.len() as u64,
                        etag: format!("{:x}-{}", fxhash(content), content.len()),
                    }),
                }
            }
            if out.is_empty() && dirs.is_empty() && !path.is_empty() {
                return Err(not_found(NotFoundKind::Entry, path));
            }
            out.extend(dirs.into_iter().map(|d| TreeEntry {
                path: d,
                kind: EntryKind::Directory,
                size: 0,
                etag: String::new(),
            }));
            Ok(out)
        })
    }

    async fn stream_range(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        self.calls.range.fetch_add(1, Ordering::Relaxed);
        sink.started();
        let delay = *self.range_delay.lock();
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let bytes = self.with_commit(&file.repo, &file.commit, |files| {
            let content = files
                .get(&file.path)
                .ok_or_else(|| not_found(NotFoundKind::Entry, &file.path))?;
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= content.len() as u64);
            match end {
                Some(end) => Ok(content.slice(offset as usize..end as usize)),
                None => Err(HubError::Protocol {
                    url: file.path.clone(),
                    message: "range beyond end".into(),
                }),
            }
        })?;
        self.calls.bytes.fetch_add(len, Ordering::Relaxed);
        for (i, p) in super::split_pieces(bytes, piece).into_iter().enumerate() {
            sink.deliver(i, p);
        }
        Ok(())
    }
}

fn fxhash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100000001b3)
    })
}

/// Seconds since the epoch of the fake commits' date.
pub fn fake_commit_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}
