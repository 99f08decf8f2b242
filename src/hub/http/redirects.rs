//! Remembered redirects: the CDN URL a file's `/resolve` led to, reused by the file's other
//! reads until its signature expires (less a margin), and forgotten when the CDN refuses it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use url::Url;

use super::{CachedRedirect, HttpHub};
use crate::hub::HubError;

/// How long a CDN URL without an `Expires` parameter is reused.
const DEFAULT_REDIRECT_TTL: Duration = Duration::from_secs(300);
/// A remembered CDN URL is dropped this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

impl HttpHub {
    pub(super) fn cached_redirect(&self, key: &str) -> Option<String> {
        let mut cache = self.redirects.lock();
        match cache.get(key) {
            Some(c) if c.valid_until > Instant::now() => Some(c.url.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    /// Where a read of the content named `key` starts: its remembered CDN URL, or else (`None`)
    /// the resolve URL, with the guard that makes this request the one asking the Hub for it;
    /// the others wait for its answer and then use the URL it remembered.
    pub(super) async fn redirect_or_lead(
        &self,
        key: &str,
    ) -> (Option<String>, Option<tokio::sync::OwnedMutexGuard<()>>) {
        if let Some(url) = self.cached_redirect(key) {
            return (Some(url), None);
        }
        let lock = self
            .resolving
            .lock()
            .get_or_insert(key.to_owned(), Default::default)
            .clone();
        let guard = lock.lock_owned().await;
        match self.cached_redirect(key) {
            Some(url) => (Some(url), None),
            None => (None, Some(guard)),
        }
    }

    pub(super) fn remember_redirect(&self, key: &str, target: &str) {
        let ttl = redirect_ttl(target);
        if ttl.is_zero() {
            return;
        }
        self.redirects.lock().put(
            key.to_owned(),
            CachedRedirect {
                url: target.to_owned(),
                valid_until: Instant::now() + ttl,
            },
        );
    }

    /// A 403 or 410 from a host other than the Hub's: a signed URL the CDN refused.
    pub(super) fn is_cdn_rejection(&self, e: &HubError) -> bool {
        match e {
            HubError::Denied { context } | HubError::Status { context } => {
                matches!(context.status, 403 | 410)
                    && Url::parse(&context.url).is_ok_and(|u| !self.same_origin(&u))
            }
            _ => false,
        }
    }

    pub(super) fn forget_redirect(&self, key: &str) {
        self.redirects.lock().pop(key);
    }
}

/// How long a redirect target may be reused: until its `Expires` query parameter (epoch seconds)
/// minus a margin, else a default.
fn redirect_ttl(target: &str) -> Duration {
    let Ok(u) = Url::parse(target) else {
        return Duration::ZERO;
    };
    let expires = u
        .query_pairs()
        .find(|(k, _)| k.eq_ignore_ascii_case("expires"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    match expires {
        None => DEFAULT_REDIRECT_TTL,
        Some(e) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Duration::from_secs(e.saturating_sub(now)).saturating_sub(EXPIRY_MARGIN)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_ttl_follows_expires() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let u = format!("http://cdn/x?Expires={}&Signature=s", now + 3600);
        let ttl = redirect_ttl(&u);
        assert!(ttl > Duration::from_secs(3400) && ttl <= Duration::from_secs(3540));
        let past = format!("http://cdn/x?Expires={}", now - 10);
        assert_eq!(redirect_ttl(&past), Duration::ZERO);
        assert_eq!(redirect_ttl("http://cdn/x"), DEFAULT_REDIRECT_TTL);
    }
}
