//! Folder listings at a commit, one Hub page at a time. A commit's tree never changes, so a page
//! fetched once is good for as long as memory allows; pages are cached and evicted as units,
//! least recently used first, within the metadata budget ([`MetaBudget`]) that inodes share.
//!
//! A folder is known by its *skeleton*: for each page fetched so far, the index of its first
//! entry, its length and the cursor that fetches it again, plus the cursor of the next page not
//! fetched yet. Entry `i` of a folder is always entry `i` of the same page, so `readdir` offsets
//! stay valid across evictions: an evicted page is fetched again with its own cursor, once, and
//! no page is fetched to reach another.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::namespace::is_valid_entry_name;
use crate::hub::{EntryKind, HubError, RepoId, TreeEntry, TreePage};
use crate::singleflight::SingleFlight;

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name in its folder.
    pub name: Box<str>,
    /// File or folder.
    pub kind: EntryKind,
    /// Size in bytes (0 for folders).
    pub size: u64,
    /// Content identity.
    pub etag: Box<str>,
}

impl ListEntry {
    /// The entry for a tree entry (full path), or `None` when its name can not be a file name.
    pub fn from_tree(e: TreeEntry) -> Option<Self> {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        if !is_valid_entry_name(name) {
            tracing::warn!(path = %e.path, "skipping entry with an unusable name");
            return None;
        }
        Some(ListEntry {
            name: name.into(),
            kind: e.kind,
            size: e.size,
            etag: e.etag.into(),
        })
    }

    /// Memory this entry holds: the struct plus its two heap strings, with the allocator's
    /// rounding (16-byte granules and an 8-byte header).
    pub fn approx_bytes(&self) -> u64 {
        std::mem::size_of::<Self>() as u64
            + heap_bytes(self.name.len())
            + heap_bytes(self.etag.len())
    }
}

/// What glibc malloc takes for `len` bytes (0 for none).
pub fn heap_bytes(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        ((len as u64 + 8).div_ceil(16) * 16).max(32)
    }
}

/// One page of a folder, sorted by name (so a name is found by binary search).
#[derive(Debug, Default)]
pub struct Page {
    /// The entries, sorted by name, without duplicates.
    pub entries: Vec<ListEntry>,
    bytes: u64,
}

impl Page {
    fn from_tree(entries: Vec<TreeEntry>) -> Self {
        let mut out: Vec<ListEntry> = entries
            .into_iter()
            .filter_map(ListEntry::from_tree)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        out.shrink_to_fit();
        let bytes = PAGE_OVERHEAD + out.iter().map(ListEntry::approx_bytes).sum::<u64>();
        Page {
            entries: out,
            bytes,
        }
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&ListEntry> {
        self.entries
            .binary_search_by(|e| (*e.name).cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Memory the page holds (what it counts against the budget).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Bookkeeping of one cached page besides its entries (LRU node, key, skeleton slot).
const PAGE_OVERHEAD: u64 = 256;
/// Most folder skeletons kept (each a few hundred bytes; least recently used dropped first).
pub const MAX_FOLDERS: usize = 16_384;

/// The metadata memory limit, shared by listing pages and inodes.
#[derive(Debug)]
pub struct MetaBudget {
    limit: u64,
    /// Bytes held by live inodes (kept by the inode table).
    pub inode_bytes: AtomicU64,
    /// Bytes held by cached pages and folder skeletons.
    pub listing_bytes: AtomicU64,
}

impl MetaBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MetaBudget {
            limit,
            inode_bytes: AtomicU64::new(0),
            listing_bytes: AtomicU64::new(0),
        })
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes counted now (inodes plus listings).
    pub fn used(&self) -> u64 {
        self.inode_bytes.load(Ordering::Relaxed) + self.listing_bytes.load(Ordering::Relaxed)
    }
}

/// A folder at a commit: (repo, commit, path from the repo root).
pub type FolderKey = Arc<(RepoId, String, String)>;

/// A folder key.
pub fn folder_key(repo: &RepoId, commit: &str, path: &str) -> FolderKey {
    Arc::new((repo.clone(), commit.to_owned(), path.to_owned()))
}

#[derive(Debug, Clone)]
struct PageMeta {
    start: u64,
    len: u64,
    cursor: Option<Arc<str>>,
    /// The first and last names of the page (it is sorted): a lookup reads only the pages whose
    /// range holds the name.
    range: Option<(Box<str>, Box<str>)>,
}

impl PageMeta {
    fn may_hold(&self, name: &str) -> bool {
        self.range
            .as_ref()
            .is_some_and(|(a, b)| &**a <= name && name <= &**b)
    }
}

#[derive(Debug, Default)]
struct Folder {
    pages: Vec<PageMeta>,
    /// `Some(cursor)`: the page after the last known one; `None` with pages known: the end.
    next: Option<Arc<str>>,
    complete: bool,
    /// Pages of this folder now cached.
    cached: usize,
}

impl Folder {
    fn bytes(&self) -> u64 {
        let cursors: usize = self
            .pages
            .iter()
            .map(|p| {
                p.cursor.as_ref().map_or(0, |c| c.len())
                    + p.range.as_ref().map_or(0, |(a, b)| a.len() + b.len())
            })
            .sum();
        192 + self.pages.len() as u64 * 48 + cursors as u64
    }

    /// The page holding entry `index`, if the skeleton knows it.
    fn page_of(&self, index: u64) -> Option<usize> {
        let i = self.pages.partition_point(|p| p.start + p.len <= index);
        (i < self.pages.len()).then_some(i)
    }

    fn known_len(&self) -> u64 {
        self.pages.last().map_or(0, |p| p.start + p.len)
    }
}

/// What the cache knows of a name in a folder without asking the Hub.
#[derive(Debug)]
pub enum Found {
    /// On a cached page.
    Entry(ListEntry),
    /// Every page of the folder is cached and none has it.
    Absent,
    /// Not on a cached page, and some page is not cached.
    Unknown,
}

/// Entries of a folder from some index on: a page and where in it to start.
pub struct Slice {
    /// The page.
    pub page: Arc<Page>,
    /// The first entry wanted, in `page.entries`.
    pub from: usize,
    /// The folder index of `page.entries[0]`.
    pub start: u64,
}

/// A page as fetched, with the cursor of the page after it.
type Fetched = Arc<(Arc<Page>, Option<String>)>;

struct Inner {
    folders: LruCache<FolderKey, Folder>,
    pages: LruCache<(FolderKey, usize), Arc<Page>>,
}

/// Listing pages by (folder, page number), bounded by the [`MetaBudget`].
pub struct ListingCache {
    budget: Arc<MetaBudget>,
    inner: Mutex<Inner>,
    flights: SingleFlight<(FolderKey, usize), Fetched>,
    pages_fetched: Arc<AtomicU64>,
}

impl ListingCache {
    /// A cache counting its pages against `budget`.
    pub fn new(budget: Arc<MetaBudget>) -> Self {
        ListingCache {
            budget,
            inner: Mutex::new(Inner {
                folders: LruCache::new(NonZeroUsize::new(MAX_FOLDERS).expect("non-zero")),
                pages: LruCache::unbounded(),
            }),
            flights: SingleFlight::default(),
            pages_fetched: Arc::default(),
        }
    }

    /// Pages fetched from the Hub so far.
    pub fn pages_fetched(&self) -> u64 {
        self.pages_fetched.load(Ordering::Relaxed)
    }

    /// Pages cached now.
    pub fn pages_cached(&self) -> usize {
        self.inner.lock().pages.len()
    }

    /// Looks `name` up in the cached pages of `key` (no fetch). A lookup does not make a page
    /// recently used (only `readdir` does): a scan that lists a folder and then stats its entries
    /// in order (`ls -l`, `find -printf %s`) evicts the pages it has stat-ed first, not the ones
    /// still ahead of it.
    pub fn find(&self, key: &FolderKey, name: &str) -> Found {
        let inner = self.inner.lock();
        let Some(folder) = inner.folders.peek(key) else {
            return Found::Unknown;
        };
        let all_cached = folder.complete && folder.cached == folder.pages.len();
        for (i, meta) in folder.pages.iter().enumerate() {
            if !meta.may_hold(name) {
                continue;
            }
            let k = (key.clone(), i);
            if let Some(e) = inner.pages.peek(&k).and_then(|p| p.get(name).cloned()) {
                return Found::Entry(e);
            }
        }
        if all_cached {
            Found::Absent
        } else {
            Found::Unknown
        }
    }

    /// The entry `name` of `key` if a cached page has it (no fetch, no reordering).
    pub fn cached_entry(&self, key: &FolderKey, name: &str) -> Option<ListEntry> {
        let inner = self.inner.lock();
        let folder = inner.folders.peek(key)?;
        folder
            .pages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.may_hold(name))
            .find_map(|(i, _)| inner.pages.peek(&(key.clone(), i))?.get(name).cloned())
    }

    /// The entries of `key` from folder index `index` on, at least one page's worth when there
    /// are any: `None` past the end. `fetch(cursor)` fetches one page (`None`: the first).
    pub async fn slice_from<F, Fut>(
        &self,
        key: &FolderKey,
        index: u64,
        fetch: F,
    ) -> Result<Option<Slice>, HubError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<TreePage, HubError>> + Send + 'static,
    {
        loop {
            // Which page holds `index`, or which page to fetch next to learn it.
            let (n, cursor) = {
                let mut inner = self.inner.lock();
                let folder = inner
                    .folders
                    .get_or_insert_mut(key.clone(), Folder::default);
                match folder.page_of(index) {
                    Some(i) => (i, folder.pages[i].cursor.clone()),
                    None if folder.complete => return Ok(None),
                    None => (folder.pages.len(), folder.next.clone()),
                }
            };
            let page = self.page(key, n, cursor, &fetch).await?;
            let inner = self.inner.lock();
            let Some(folder) = inner.folders.peek(key) else {
                continue;
            };
            if let Some(meta) = folder.pages.get(n) {
                if index < meta.start + meta.len && index >= meta.start {
                    return Ok(Some(Slice {
                        from: (index - meta.start) as usize,
                        start: meta.start,
                        page,
                    }));
                }
            }
            if folder.complete && index >= folder.known_len() {
                return Ok(None);
            }
        }
    }

    /// Page `n` of `key` from the cache, else fetched once with `cursor` (concurrent callers share
    /// the fetch), recorded in the skeleton and counted against the budget.
    async fn page<F, Fut>(
        &self,
        key: &FolderKey,
        n: usize,
        cursor: Option<Arc<str>>,
        fetch: &F,
    ) -> Result<Arc<Page>, HubError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<TreePage, HubError>> + Send + 'static,
    {
        let pk = (key.clone(), n);
        if let Some(p) = self.inner.lock().pages.get(&pk) {
            return Ok(p.clone());
        }
        if n > 0 && cursor.is_none() {
            return Err(HubError::Protocol {
                url: key.2.clone(),
                message: format!("listing page {n} has no cursor"),
            });
        }
        let fut = fetch(cursor.as_deref().map(str::to_owned));
        let counter = self.pages_fetched.clone();
        let fetched = self
            .flights
            .run(pk.clone(), move || async move {
                let tp = fut.await?;
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Arc::new((Arc::new(Page::from_tree(tp.entries)), tp.next)))
            })
            .await?;
        let (page, next) = (fetched.0.clone(), fetched.1.clone());
        self.file_page(key, n, cursor, next, &page)?;
        Ok(page)
    }

    /// Records page `n` (fetched with `cursor`, followed by `next`; idempotent)
    /// in the skeleton and the cache, then evicts down to the budget.
    fn file_page(
        &self,
        key: &FolderKey,
        n: usize,
        cursor: Option<Arc<str>>,
        next: Option<String>,
        page: &Arc<Page>,
    ) -> Result<(), HubError> {
        let mut inner = self.inner.lock();
        let len = page.entries.len() as u64;
        let folder = inner
            .folders
            .get_or_insert_mut(key.clone(), Folder::default);
        let before = folder.bytes();
        if n == folder.pages.len() {
            let start = folder.known_len();
            let range = match (page.entries.first(), page.entries.last()) {
                (Some(a), Some(b)) => Some((a.name.clone(), b.name.clone())),
                _ => None,
            };
            folder.pages.push(PageMeta {
                start,
                len,
                cursor,
                range,
            });
            folder.next = next.map(Arc::from);
            folder.complete = folder.next.is_none();
        } else if n > folder.pages.len() {
            return Ok(());
        } else if folder.pages[n].len != len {
            return Err(HubError::Protocol {
                url: key.2.clone(),
                message: format!(
                    "page {n} of a folder at one commit had {} entries and now {len}",
                    folder.pages[n].len
                ),
            });
        }
        let grown = folder.bytes() - before;
        let pk = (key.clone(), n);
        let added = if inner.pages.put(pk, page.clone()).is_none() {
            if let Some(f) = inner.folders.peek_mut(key) {
                f.cached += 1;
            }
            page.bytes()
        } else {
            0
        };
        self.budget
            .listing_bytes
            .fetch_add(added + grown, Ordering::Relaxed);
        self.evict(&mut inner);
        Ok(())
    }

    /// Drops least recently used pages (always keeping the newest) while the budget is exceeded
    /// and pages hold more than half of it: inodes the kernel holds cannot be evicted, and
    /// dropping every page for them would make each later lookup a Hub request.
    fn evict(&self, inner: &mut Inner) {
        while self.over_budget() && inner.pages.len() > 1 {
            let Some(((fk, _), p)) = inner.pages.pop_lru() else {
                break;
            };
            self.budget
                .listing_bytes
                .fetch_sub(p.bytes(), Ordering::Relaxed);
            if let Some(f) = inner.folders.peek_mut(&fk) {
                f.cached = f.cached.saturating_sub(1);
            }
        }
    }

    fn over_budget(&self) -> bool {
        self.budget.used() > self.budget.limit()
            && self.budget.listing_bytes.load(Ordering::Relaxed) > self.budget.limit() / 2
    }

    /// Evicts pages until the budget holds again (after inodes grew), keeping the newest page
    /// and at least half the budget's worth of pages.
    pub fn trim(&self) {
        if self.over_budget() {
            self.evict(&mut self.inner.lock());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::RepoType;

    fn entries(from: usize, n: usize) -> Vec<TreeEntry> {
        (from..from + n)
            .map(|i| TreeEntry {
                path: format!("d/f{i:05}"),
                kind: EntryKind::File,
                size: i as u64,
                etag: format!("{i:040x}"),
            })
            .collect()
    }

    /// A folder of `total` entries in pages of `page`; cursors are the next index.
    fn fetcher(
        total: usize,
        page: usize,
        calls: Arc<AtomicU64>,
    ) -> impl Fn(Option<String>) -> futures::future::Ready<Result<TreePage, HubError>> {
        move |c| {
            calls.fetch_add(1, Ordering::Relaxed);
            let from: usize = c.map_or(0, |c| c.parse().unwrap_or(0));
            let n = page.min(total - from);
            futures::future::ready(Ok(TreePage {
                entries: entries(from, n),
                next: (from + n < total).then(|| (from + n).to_string()),
            }))
        }
    }

    #[tokio::test]
    async fn pages_are_fetched_once_and_evicted_as_units_within_the_budget() {
        let probe = Page::from_tree(entries(0, 100));
        // Room for about three pages of 100 entries.
        let budget = MetaBudget::new(probe.bytes() * 3 + 2000);
        let cache = ListingCache::new(budget.clone());
        let key = folder_key(&RepoId::new(RepoType::Dataset, "o", "r"), "c", "d");
        let calls = Arc::new(AtomicU64::new(0));
        let f = fetcher(1000, 100, calls.clone());
        let mut index = 0;
        let mut names = Vec::new();
        while let Some(s) = cache.slice_from(&key, index, &f).await.unwrap() {
            for e in &s.page.entries[s.from..] {
                names.push(e.name.to_string());
            }
            index = s.start + s.page.entries.len() as u64;
            assert!(
                budget.used() <= budget.limit(),
                "within the budget at every page"
            );
        }
        assert_eq!(names.len(), 1000);
        assert_eq!(calls.load(Ordering::Relaxed), 10, "each page once");
        assert!(
            cache.pages_cached() <= 3,
            "{} pages cached",
            cache.pages_cached()
        );
        // The last page is cached: a name on it is found; one on an evicted page is unknown,
        // and so is a name on no page (the folder is not wholly cached).
        assert!(matches!(cache.find(&key, "f00999"), Found::Entry(_)));
        assert!(matches!(cache.find(&key, "f00001"), Found::Unknown));
        assert!(matches!(cache.find(&key, "nothing"), Found::Unknown));
        // Reading from an offset on an evicted page fetches that page alone, with its cursor.
        let s = cache.slice_from(&key, 150, &f).await.unwrap().unwrap();
        assert_eq!((s.start, s.from), (100, 50));
        assert_eq!(&*s.page.entries[s.from].name, "f00150");
        assert_eq!(calls.load(Ordering::Relaxed), 11);
        assert!(cache.slice_from(&key, 1000, &f).await.unwrap().is_none());
        assert_eq!(calls.load(Ordering::Relaxed), 11, "the end is known");
    }

    #[tokio::test]
    async fn a_wholly_cached_folder_answers_absent_names_without_the_hub() {
        let cache = ListingCache::new(MetaBudget::new(64 << 20));
        let key = folder_key(&RepoId::new(RepoType::Model, "o", "r"), "c", "d");
        let calls = Arc::new(AtomicU64::new(0));
        let f = fetcher(250, 100, calls.clone());
        let mut index = 0;
        while let Some(s) = cache.slice_from(&key, index, &f).await.unwrap() {
            index = s.start + s.page.entries.len() as u64;
        }
        assert!(matches!(cache.find(&key, "f00120"), Found::Entry(_)));
        assert!(matches!(cache.find(&key, "ghost"), Found::Absent));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }
}
