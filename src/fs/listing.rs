//! Folder listings at a commit, cached: a commit's tree never changes, so a listing fetched once
//! is good for as long as memory allows. Concurrent lookups in one folder share one fetch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::namespace::is_valid_entry_name;
use crate::hub::{EntryKind, HubError, RepoId, TreeEntry};
use crate::singleflight::SingleFlight;

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name in its folder.
    pub name: String,
    /// File or folder.
    pub kind: EntryKind,
    /// Size in bytes (0 for folders).
    pub size: u64,
    /// Content identity.
    pub etag: String,
}

/// A folder's entries, sorted by name.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries, sorted by name.
    pub entries: Vec<ListEntry>,
    index: HashMap<String, usize>,
}

impl Listing {
    /// Builds a listing from tree entries (full paths), dropping names that can not be files here.
    pub fn from_tree(entries: Vec<TreeEntry>) -> Self {
        let mut out: Vec<ListEntry> = entries
            .into_iter()
            .filter_map(|e| {
                let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_owned();
                if !is_valid_entry_name(&name) {
                    tracing::warn!(path = %e.path, "skipping entry with an unusable name");
                    return None;
                }
                Some(ListEntry {
                    name,
                    kind: e.kind,
                    size: e.size,
                    etag: e.etag,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        let index = out
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Listing {
            entries: out,
            index,
        }
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ListEntry> {
        self.index.get(name).map(|i| &self.entries[*i])
    }
}

type Key = (RepoId, String, String);

/// Listings by (repo, commit, folder), bounded by the total number of entries held.
pub struct ListingCache {
    max_entries: usize,
    inner: Mutex<(LruCache<Key, Arc<Listing>>, usize)>,
    flights: SingleFlight<Key, Arc<Listing>>,
}

impl ListingCache {
    /// A cache holding at most about `max_entries` entries over all folders.
    pub fn new(max_entries: usize) -> Self {
        ListingCache {
            max_entries,
            inner: Mutex::new((LruCache::unbounded(), 0)),
            flights: SingleFlight::default(),
        }
    }

    /// The listing of `path` in `repo` at `commit` if it is cached (no fetch, no reordering).
    pub fn cached(&self, repo: &RepoId, commit: &str, path: &str) -> Option<Arc<Listing>> {
        let key = (repo.clone(), commit.to_owned(), path.to_owned());
        self.inner.lock().0.peek(&key).cloned()
    }

    /// The listing of `path` in `repo` at `commit`, from cache or through `fetch`.
    pub async fn get<F, Fut>(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        fetch: F,
    ) -> Result<Arc<Listing>, HubError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<TreeEntry>, HubError>> + Send + 'static,
    {
        let key = (repo.clone(), commit.to_owned(), path.to_owned());
        if let Some(l) = self.inner.lock().0.get(&key) {
            return Ok(l.clone());
        }
        let fut = fetch();
        let listing = self
            .flights
            .run(key.clone(), move || async move {
                Ok(Arc::new(Listing::from_tree(fut.await?)))
            })
            .await?;
        let mut inner = self.inner.lock();
        let (lru, total) = &mut *inner;
        if lru.peek(&key).is_none() {
            *total += listing.entries.len();
            lru.put(key, listing.clone());
            while *total > self.max_entries && lru.len() > 1 {
                match lru.pop_lru() {
                    Some((_, l)) => *total -= l.entries.len(),
                    None => break,
                }
            }
        }
        Ok(listing)
    }
}
