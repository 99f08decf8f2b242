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
    RepoId, RepoPage, RepoType, TreeEntry, TreePage,
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
    /// `list_page` calls (one per page).
    pub pages: AtomicU64,
    /// `paths_info` calls.
    pub paths_info: AtomicU64,
    /// `list_repos` calls (one per page).
    pub search: AtomicU64,
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
    /// Entries per `list_page` and `list_repos` page (0 means 1000, the Hub's).
    page_size: std::sync::atomic::AtomicUsize,
    search_error: Mutex<Option<HubError>>,
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

    /// Lists `page` entries per `list_page` page and repos per `list_repos` page.
    pub fn set_page_size(&self, page: usize) {
        self.page_size.store(page, Ordering::Relaxed);
    }

    /// Makes every `list_repos` fail with `err` (`None`: answer again).
    pub fn fail_search(&self, err: Option<HubError>) {
        *self.search_error.lock() = err;
    }

    fn page(&self) -> usize {
        match self.page_size.load(Ordering::Relaxed) {
            0 => 1000,
            n => n,
        }
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
        self.with_commit(repo, commit, |files| children(files, path))
    }

    async fn list_page(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<TreePage, HubError> {
        self.calls.pages.fetch_add(1, Ordering::Relaxed);
        let all = self.with_commit(repo, commit, |files| children(files, path))?;
        let (entries, next) = page_of(all, cursor, self.page())?;
        Ok(TreePage { entries, next })
    }

    async fn paths_info(
        &self,
        repo: &RepoId,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<TreeEntry>, HubError> {
        self.calls.paths_info.fetch_add(1, Ordering::Relaxed);
        self.with_commit(repo, commit, |files| {
            let mut out = Vec::new();
            for p in paths {
                let p = p.trim_matches('/');
                if let Some(c) = files.get(p) {
                    out.push(file_entry(p, c));
                } else if files
                    .keys()
                    .any(|k| k.strip_prefix(p).is_some_and(|r| r.starts_with('/')) && !p.is_empty())
                {
                    out.push(dir_entry(p.to_owned()));
                }
            }
            Ok(out)
        })
    }

    async fn list_repos(
        &self,
        repo_type: RepoType,
        author: &str,
        cursor: Option<&str>,
    ) -> Result<RepoPage, HubError> {
        self.calls.search.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.search_error.lock().clone() {
            return Err(e);
        }
        let names: Vec<String> = self
            .repos
            .lock()
            .iter()
            .filter(|(id, r)| {
                id.repo_type == repo_type && id.namespace == author && r.denied.is_none()
            })
            .map(|(id, _)| id.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (names, next) = page_of(names, cursor, self.page())?;
        Ok(RepoPage { names, next })
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

/// The direct children of `path` in `files`: files, then folders (sorted).
fn children(files: &BTreeMap<String, Bytes>, path: &str) -> Result<Vec<TreeEntry>, HubError> {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let mut dirs = BTreeSet::new();
    let mut out = Vec::new();
    for (p, content) in files.range(prefix.clone()..) {
        let Some(rest) = p.strip_prefix(&prefix) else {
            break;
        };
        match rest.split_once('/') {
            Some((d, _)) => {
                dirs.insert(format!("{prefix}{d}"));
            }
            None => out.push(file_entry(p, content)),
        }
    }
    if out.is_empty() && dirs.is_empty() && !path.is_empty() {
        return Err(not_found(NotFoundKind::Entry, path));
    }
    out.extend(dirs.into_iter().map(dir_entry));
    Ok(out)
}

fn file_entry(path: &str, content: &Bytes) -> TreeEntry {
    TreeEntry {
        path: path.to_owned(),
        kind: EntryKind::File,
        size: content.len() as u64,
        etag: format!("{:x}-{}", fxhash(content), content.len()),
    }
}

fn dir_entry(path: String) -> TreeEntry {
    TreeEntry {
        path,
        kind: EntryKind::Directory,
        size: 0,
        etag: String::new(),
    }
}

/// The page of `all` a cursor names (`None`: the first), `page` items long, and the next cursor:
/// the index of the next item, as text.
fn page_of<T>(
    all: Vec<T>,
    cursor: Option<&str>,
    page: usize,
) -> Result<(Vec<T>, Option<String>), HubError> {
    let start = match cursor {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| HubError::Protocol {
            url: "memory://cursor".into(),
            message: format!("bad cursor {c:?}"),
        })?,
    };
    let end = all.len().min(start.saturating_add(page.max(1)));
    let next = (end < all.len()).then(|| end.to_string());
    Ok((
        all.into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect(),
        next,
    ))
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
