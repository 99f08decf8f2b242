//! The real Hub client over HTTP (reqwest, rustls). Redirects are followed by hand so that the
//! token goes to the endpoint's origin only, and so that a file's CDN URL is remembered until its
//! signature expires. Every response is checked: a range read returns exactly the bytes asked for
//! or an error.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use url::Url;

use super::error::redact_url;
use super::proxy::ProxyConfig;
use super::retry::RetryPolicy;
use super::token::Credentials;
use super::urls::Urls;
use super::HubError;
use crate::stats::Stats;

mod buckets;
mod identity;
mod meta;
pub mod pieces;
mod range;
mod redirects;
mod repo;
mod transport;

/// Most tree pages followed for one folder (1000 entries each).
const MAX_PAGES: usize = 100_000;

/// Settings of the HTTP client.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Base URL, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// The token, sent as `Authorization: Bearer` to the endpoint's origin only; a token file is
    /// followed as it changes (see [`super::token`]).
    pub credentials: Credentials,
    /// PEM bundles of extra CAs to trust, on top of the built-in and system roots (see
    /// [`super::tls`]). A bundle that cannot be used makes [`HttpHub::new`] fail.
    pub ca_bundles: Vec<std::path::PathBuf>,
    /// Forward proxies (see [`super::proxy`]); the default goes direct.
    pub proxy: ProxyConfig,
    /// Deadline of one attempt: for connecting and receiving response headers, and for each
    /// chunk of a body to arrive. A stalled attempt is then retried (a body resumed).
    pub request_timeout: Duration,
    /// How long a range read may go without progress, over all its attempts, before it fails.
    pub read_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Most range-request bodies downloaded at once (each is one connection).
    pub max_connections: usize,
    /// Ranged GETs of remembered CDN URLs go through the direct HTTP/1.1 client, which reads
    /// bodies straight into the block buffers (`super::h1`; never through a proxy).
    pub direct_reads: bool,
}

impl HttpConfig {
    /// Defaults for `endpoint`: no token, 30 s deadlines, default retries.
    pub fn new(endpoint: &str) -> Self {
        HttpConfig {
            endpoint: endpoint.to_owned(),
            credentials: Credentials::None,
            ca_bundles: Vec::new(),
            proxy: ProxyConfig::default(),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            max_connections: 16,
            direct_reads: true,
        }
    }
}

/// A remembered redirect target (a CDN URL) and until when it may be used.
struct CachedRedirect {
    url: String,
    valid_until: Instant,
}

/// The Hub client over HTTP.
pub struct HttpHub {
    client: reqwest::Client,
    urls: Urls,
    origin: url::Origin,
    cfg: HttpConfig,
    redirects: Mutex<LruCache<String, CachedRedirect>>,
    /// Per resolve URL with no remembered redirect: held by the one request asking the Hub for
    /// it, so that parts started together make one `/resolve` call, not one each.
    resolving: Mutex<LruCache<String, Arc<tokio::sync::Mutex<()>>>>,
    connections: tokio::sync::Semaphore,
    stats: Arc<Stats>,
    /// Reads remembered CDN URLs straight into the sink's buffers (`None` through a proxy, or
    /// when `direct_reads` is off).
    direct: Option<super::h1::H1Client>,
}

impl HttpHub {
    /// A client for `cfg.endpoint`. Fails on an endpoint that is not an http(s) URL, or a CA
    /// bundle that cannot be read or holds no certificate.
    pub fn new(cfg: HttpConfig) -> Result<Self, HubError> {
        let base = Url::parse(&cfg.endpoint).map_err(|e| HubError::Protocol {
            url: cfg.endpoint.clone(),
            message: format!("invalid endpoint: {e}"),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HubError::Protocol {
                url: cfg.endpoint.clone(),
                message: "endpoint must be http or https".into(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.request_timeout)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("hubfs/", env!("CARGO_PKG_VERSION")))
            // Proxies come from `cfg.proxy` only (reqwest's own reading of the environment
            // knows no `host:port` in NO_PROXY).
            .no_proxy();
        if let Some(p) = cfg.proxy.to_reqwest() {
            builder = builder.proxy(p);
        }
        for path in &cfg.ca_bundles {
            for cert in super::tls::load_bundle(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| HubError::Network {
            url: cfg.endpoint.clone(),
            message: format!("cannot build HTTP client: {e}"),
        })?;
        Ok(HttpHub {
            client,
            urls: Urls::new(&cfg.endpoint),
            origin: base.origin(),
            redirects: Mutex::new(LruCache::new(NonZeroUsize::new(4096).expect("non-zero"))),
            resolving: Mutex::new(LruCache::new(NonZeroUsize::new(1024).expect("non-zero"))),
            connections: tokio::sync::Semaphore::new(cfg.max_connections.max(1)),
            stats: Arc::new(Stats::default()),
            direct: (cfg.direct_reads && cfg.proxy.is_direct()).then(|| {
                super::h1::H1Client::new(
                    cfg.request_timeout,
                    cfg.ca_bundles.clone(),
                    cfg.max_connections.max(1),
                )
            }),
            cfg,
        })
    }

    /// Counts requests, retries and in-flight requests into `stats` (shared with the filesystem).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = stats;
        self
    }

    /// The URL builder for this endpoint.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.origin
    }

    /// Where to fetch a tree listing's next page. A link on the endpoint's origin is used as
    /// given. A link on another origin (a reverse proxy or mirror passes the Hub's `Link` header
    /// through, naming the Hub itself) is followed on the endpoint: its base URL plus the link's
    /// path and query. So the next page comes through the same mirror, and the token never goes
    /// to the origin the link named.
    fn next_page_url(&self, link: &str, shown: &str) -> Result<String, HubError> {
        let parsed = Url::parse(link).map_err(|e| HubError::Protocol {
            url: shown.to_owned(),
            message: format!("bad next link: {e}"),
        })?;
        if self.same_origin(&parsed) {
            return Ok(link.to_owned());
        }
        let mut on_endpoint = format!("{}{}", self.urls.endpoint(), parsed.path());
        if let Some(q) = parsed.query() {
            on_endpoint.push('?');
            on_endpoint.push_str(q);
        }
        tracing::debug!(link = %redact_url(link), next = %redact_url(&on_endpoint), "next-page link names another origin; following it on the endpoint");
        Ok(on_endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_links_on_other_origins_are_followed_on_the_endpoint() {
        let hub = HttpHub::new(HttpConfig::new("http://mirror:8080/hf")).unwrap();
        let upstream = "https://huggingface.co/api/models/a/b/tree/c?recursive=false&cursor=xyz";
        assert_eq!(
            hub.next_page_url(upstream, "u").unwrap(),
            "http://mirror:8080/hf/api/models/a/b/tree/c?recursive=false&cursor=xyz"
        );
        let same = "http://mirror:8080/hf/api/models/a/b/tree/c?cursor=2";
        assert_eq!(hub.next_page_url(same, "u").unwrap(), same);
        assert!(hub.next_page_url("not a url", "u").is_err());
    }
}
