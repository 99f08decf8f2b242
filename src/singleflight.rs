//! Coalescing of identical concurrent requests: the first caller starts the work on the runtime,
//! later callers with the same key wait for the same result. The work runs to completion even if
//! every waiter goes away, so its result is never lost halfway.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use crate::hub::HubError;

type SharedResult<V> = Shared<BoxFuture<'static, Result<V, HubError>>>;

/// One in-flight computation per key.
pub struct SingleFlight<K, V: Clone> {
    inflight: Mutex<HashMap<K, (u64, SharedResult<V>)>>,
    next_id: AtomicU64,
}

impl<K, V> Default for SingleFlight<K, V>
where
    V: Clone,
{
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Turns a spawned task into a shareable result future.
pub fn spawn_shared<V, F>(fut: F) -> SharedResult<V>
where
    V: Clone + Send + Sync + 'static,
    F: Future<Output = Result<V, HubError>> + Send + 'static,
{
    let handle = tokio::spawn(fut);
    async move {
        handle.await.unwrap_or_else(|e| {
            Err(HubError::Protocol {
                url: String::new(),
                message: format!("fetch task failed: {e}"),
            })
        })
    }
    .boxed()
    .shared()
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `make()` unless a run for `key` is already in flight, and returns its result.
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> Result<V, HubError>
    where
        F: Future<Output = Result<V, HubError>> + Send + 'static,
    {
        let (id, fut) = {
            let mut map = self.inflight.lock();
            match map.get(&key) {
                Some((id, f)) => (*id, f.clone()),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let f = spawn_shared(make());
                    map.insert(key.clone(), (id, f.clone()));
                    (id, f)
                }
            }
        };
        let out = fut.await;
        let mut map = self.inflight.lock();
        if map.get(&key).is_some_and(|(i, _)| *i == id) {
            map.remove(&key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf: Arc<SingleFlight<&'static str, u64>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let sf = sf.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                sf.run("k", move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(7)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Once done, a new call runs again.
        let runs2 = runs.clone();
        sf.run("k", move || async move {
            runs2.fetch_add(1, Ordering::SeqCst);
            Ok(8)
        })
        .await
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
