//! Org listings: the repos of one type an org owns, from the Hub's search API, cached for a short
//! while (repos are created and deleted at any time; nothing here is pinned to a commit).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::hub::{HubError, RepoPage, RepoType};
use crate::singleflight::SingleFlight;

/// How long an org listing is reused before the Hub is asked again.
pub const ORG_LISTING_TTL: Duration = Duration::from_secs(30);
/// Most org listings kept (least recently used dropped first).
pub const MAX_ORGS: usize = 256;
/// Most pages of one org's repos followed (the search API gives up to 1000 a page).
pub const MAX_ORG_PAGES: usize = 100;

type Key = (RepoType, String);
/// An org's repo names and when they were fetched.
type Entry = (Instant, Arc<Vec<String>>);

/// Org listings by (type, org), each kept for [`ORG_LISTING_TTL`].
pub struct OrgListings {
    ttl: Duration,
    inner: Mutex<LruCache<Key, Entry>>,
    flights: SingleFlight<Key, Arc<Vec<String>>>,
}

impl Default for OrgListings {
    fn default() -> Self {
        Self::new(ORG_LISTING_TTL)
    }
}

impl OrgListings {
    /// Listings kept for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        OrgListings {
            ttl,
            inner: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_ORGS).expect("non-zero"),
            )),
            flights: SingleFlight::default(),
        }
    }

    /// The names of `org`'s repos of type `t`, sorted: cached if younger than the TTL, else every
    /// page through `fetch(cursor)` (concurrent callers share one walk).
    pub async fn get<F, Fut>(
        &self,
        t: RepoType,
        org: &str,
        fetch: F,
    ) -> Result<Arc<Vec<String>>, HubError>
    where
        F: Fn(Option<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<RepoPage, HubError>> + Send + 'static,
    {
        let key = (t, org.to_owned());
        if let Some((at, names)) = self.inner.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(names.clone());
            }
        }
        let names = self
            .flights
            .run(key.clone(), move || async move {
                let mut names = Vec::new();
                let mut cursor = None;
                for _ in 0..MAX_ORG_PAGES {
                    let page = fetch(cursor).await?;
                    names.extend(page.names);
                    match page.next {
                        Some(n) => cursor = Some(n),
                        None => break,
                    }
                }
                names.sort();
                names.dedup();
                Ok(Arc::new(names))
            })
            .await?;
        self.inner.lock().put(key, (Instant::now(), names.clone()));
        Ok(names)
    }
}
