//! Which failures are worth another try, and how long to wait before it.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::HubError;

/// Bounded retries with exponential backoff and full jitter.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included. 1 means no retry.
    pub max_attempts: u32,
    /// The backoff before the second try; doubled each time after.
    pub base_delay: Duration,
    /// The longest backoff (also caps a server's `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (`attempt` counts from 1) after `err`.
    pub fn delay(&self, attempt: u32, err: &HubError) -> Duration {
        if let HubError::RateLimited {
            retry_after: Some(d),
            ..
        } = err
        {
            return (*d).min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        exp.mul_f64(jitter)
    }

    /// Runs `op` until it succeeds, fails for good, or the tries run out. `what` names the
    /// operation in the retry log lines.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, HubError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HubError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.max_attempts && e.is_transient() => {
                    let wait = self.delay(attempt, &e);
                    tracing::warn!(%what, attempt, ?wait, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HttpContext;

    fn status(s: u16) -> HubError {
        let context = HttpContext {
            status: s,
            ..Default::default()
        };
        match s {
            404 => HubError::NotFound {
                kind: crate::hub::NotFoundKind::Entry,
                context,
            },
            401 | 403 => HubError::Denied { context },
            429 => HubError::RateLimited {
                retry_after: None,
                context,
            },
            _ => HubError::Status { context },
        }
    }

    #[test]
    fn retry_decision_over_every_status_code() {
        for s in 100..600u16 {
            let want = s >= 500 || s == 408 || s == 429;
            assert_eq!(status(s).is_transient(), want, "status {s}");
        }
        let net = HubError::Network {
            url: "u".into(),
            message: "reset".into(),
        };
        assert!(net.is_transient());
        let stale = HubError::Stale {
            url: "u".into(),
            message: "m".into(),
        };
        assert!(!stale.is_transient());
        let untrusted = HubError::Tls {
            url: "u".into(),
            message: "UnknownIssuer".into(),
        };
        assert!(
            !untrusted.is_transient(),
            "a certificate hubfs does not trust stays untrusted"
        );
    }

    #[test]
    fn delay_doubles_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let e = status(503);
        for attempt in 1..10 {
            let d = p.delay(attempt, &e);
            let full = Duration::from_millis(100 * (1 << (attempt - 1))).min(p.max_delay);
            assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
        }
        let rl = HubError::RateLimited {
            retry_after: Some(Duration::from_millis(700)),
            context: HttpContext::default(),
        };
        assert_eq!(p.delay(1, &rl), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_at_max_attempts_and_on_final_errors() {
        let p = RetryPolicy::default();
        let mut n = 0;
        let r: Result<(), _> = p
            .run("t", || {
                n += 1;
                async { Err(status(500)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(n, p.max_attempts);
        let mut m = 0;
        let r: Result<(), _> = p
            .run("t", || {
                m += 1;
                async { Err(status(404)) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(m, 1);
    }
}
