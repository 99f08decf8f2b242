//! Coalescing of identical concurrent requests: the first caller starts the work on the runtime,
//! later callers with the same key wait for the same result. The work stops when every caller
//! waiting for it has gone away (its FUSE request was interrupted, its process died): the callers
//! keep what they get, so an abandoned result would be lost anyway, and a later caller then starts
//! afresh instead of joining work stuck on a Hub that has since recovered.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::hub::HubError;

type SharedResult<V> = Shared<BoxFuture<'static, Result<V, HubError>>>;

/// One run in flight, and who waits for it.
struct Flight<V: Clone> {
    id: u64,
    result: SharedResult<V>,
    waiters: usize,
    cancel: CancellationToken,
}

/// One in-flight computation per key.
pub struct SingleFlight<K, V: Clone> {
    inflight: Mutex<HashMap<K, Flight<V>>>,
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
        handle
            .await
            .unwrap_or_else(|e| Err(HubError::TaskFailed(e.to_string())))
    }
    .boxed()
    .shared()
}

/// A caller's claim on a flight; the last one dropped before the flight completes stops it.
struct Waiting<'a, K: Hash + Eq, V: Clone> {
    flights: &'a SingleFlight<K, V>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V: Clone> Drop for Waiting<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flights.inflight.lock();
        if let Some(f) = map.get_mut(&self.key).filter(|f| f.id == self.id) {
            f.waiters -= 1;
            if f.waiters == 0 {
                f.cancel.cancel();
                map.remove(&self.key);
            }
        }
    }
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
            match map.get_mut(&key) {
                Some(f) => {
                    f.waiters += 1;
                    (f.id, f.result.clone())
                }
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let cancel = CancellationToken::new();
                    let work = make();
                    let stop = cancel.clone();
                    let result = spawn_shared(async move {
                        tokio::select! {
                            r = work => r,
                            () = stop.cancelled() => Err(HubError::Cancelled),
                        }
                    });
                    map.insert(
                        key.clone(),
                        Flight {
                            id,
                            result: result.clone(),
                            waiters: 1,
                            cancel,
                        },
                    );
                    (id, result)
                }
            }
        };
        let waiting = Waiting {
            flights: self,
            key,
            id,
        };
        let out = fut.await;
        // Done: later callers start a new run.
        let mut map = self.inflight.lock();
        if map.get(&waiting.key).is_some_and(|f| f.id == id) {
            map.remove(&waiting.key);
        }
        drop(map);
        out
    }

    /// Runs in flight now.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().len()
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

    /// Sets its flag when dropped (the work was stopped or finished).
    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    async fn wait_for(flag: &std::sync::atomic::AtomicBool) {
        for _ in 0..200 {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("flag never set");
    }

    #[tokio::test]
    async fn work_stops_when_every_waiter_goes_away_and_the_next_call_starts_afresh() {
        let sf: Arc<SingleFlight<&'static str, u64>> = Arc::new(SingleFlight::default());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (sf, stopped) = (sf.clone(), stopped.clone());
            waiters.push(tokio::spawn(async move {
                sf.run("k", move || async move {
                    let _flag = DropFlag(stopped);
                    std::future::pending::<()>().await;
                    Ok(1)
                })
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiters[0].abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stopped.load(Ordering::SeqCst), "one waiter is left");
        waiters[1].abort();
        wait_for(&stopped).await;
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(sf.run("k", || async { Ok(2) }).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn work_that_panics_is_a_task_failure_not_a_protocol_error_and_the_next_call_runs_again()
    {
        let sf: SingleFlight<&'static str, u64> = SingleFlight::default();
        let got = sf
            .run("k", || async {
                if "k".len() == 1 {
                    panic!("boom");
                }
                Ok(1)
            })
            .await;
        assert!(matches!(got, Err(HubError::TaskFailed(_))), "{got:?}");
        assert!(!got.unwrap_err().is_transient());
        assert_eq!(sf.run("k", || async { Ok(2) }).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn the_remaining_waiter_gets_the_result() {
        let sf: Arc<SingleFlight<&'static str, u64>> = Arc::new(SingleFlight::default());
        let gate = Arc::new(tokio::sync::Notify::new());
        let spawn = |sf: Arc<SingleFlight<&'static str, u64>>, gate: Arc<tokio::sync::Notify>| {
            tokio::spawn(async move {
                sf.run("k", move || async move {
                    gate.notified().await;
                    Ok(9)
                })
                .await
            })
        };
        let first = spawn(sf.clone(), gate.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = spawn(sf.clone(), gate.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_one();
        assert_eq!(second.await.unwrap().unwrap(), 9);
        assert_eq!(sf.in_flight(), 0);
    }
}
