//! The real Hub client over HTTP (reqwest, rustls). Redirects are followed by hand so that the
//! token goes to the endpoint's origin only, and so that a file's CDN URL is remembered until its
//! signature expires. Every response is checked: a range read returns exactly the bytes asked for
//! or an error.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use lru::LruCache;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use super::auth::Token;
use super::error::redact_url;
use super::proxy::ProxyConfig;
use super::retry::RetryPolicy;
use super::token::Credentials;
use super::urls::Urls;
use super::wire::{
    next_link, parse_content_range, parse_rfc3339, parse_tree_page, ratelimit_reset, RevisionJson,
};
use super::{
    CommitInfo, FileRef, HeapBuffer, HttpContext, HubClient, HubError, NotFoundKind, PieceBuffer,
    PieceSink, RepoId, TreeEntry,
};
use crate::stats::Stats;
use std::sync::Arc;

mod buckets;
mod meta;

/// Most redirects followed for one request (Hub → resolve-cache or CDN, renamed repos).
const MAX_REDIRECTS: usize = 8;
/// Most tree pages followed for one folder (1000 entries each).
const MAX_PAGES: usize = 100_000;
/// How long a CDN URL without an `Expires` parameter is reused.
const DEFAULT_REDIRECT_TTL: Duration = Duration::from_secs(300);
/// A remembered CDN URL is dropped this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

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
    /// Issue 11: reads remembered CDN URLs straight into the sink's buffers (`None` through a
    /// proxy).
    direct: Option<super::h1::H1Client>,
}

/// Decrements the in-flight gauge when a range request ends, however it ends.
struct InflightGuard<'a>(&'a Stats);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        Stats::sub(&self.0.inflight_requests, 1);
    }
}

/// A response after redirects, with the URL that produced it.
struct Sent {
    resp: Response,
    url: String,
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

    /// The `Authorization` header for `token`, marked sensitive so it is never printed.
    fn bearer(token: &Token, url: &Url) -> Result<HeaderValue, HubError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            HubError::Protocol {
                url: redact_url(url.as_str()),
                message: "the token has characters not allowed in a header".into(),
            }
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// Sends `method url`, following redirects; the token goes only to the endpoint's origin.
    /// A 401 from the endpoint's origin re-reads a token file at once, and the hop is sent again
    /// (once) if the token changed.
    async fn send(
        &self,
        method: Method,
        url: &str,
        range: Option<&str>,
        expect: Option<&Expect<'_>>,
    ) -> Result<Sent, HubError> {
        let mut current = Url::parse(url).map_err(|e| HubError::Protocol {
            url: redact_url(url),
            message: format!("bad URL: {e}"),
        })?;
        let mut hops = 0;
        let mut resent_after_401 = false;
        loop {
            let mut req = self.client.request(method.clone(), current.clone());
            if let Some(r) = range {
                req = req.header(RANGE, r);
            }
            let hub_origin = self.same_origin(&current);
            let token = if hub_origin {
                self.cfg.credentials.current()
            } else {
                None
            };
            if let Some(t) = &token {
                req = req.header(AUTHORIZATION, Self::bearer(t, &current)?);
            }
            let shown = redact_url(current.as_str());
            Stats::add(&self.stats.http_requests, 1);
            let resp = match tokio::time::timeout(self.cfg.request_timeout, req.send()).await {
                Err(_) => {
                    return Err(HubError::Timeout {
                        url: shown,
                        after: self.cfg.request_timeout,
                    })
                }
                Ok(Err(e)) => {
                    return Err(match super::tls::tls_failure(&e) {
                        Some(message) => HubError::Tls {
                            url: shown,
                            message,
                        },
                        None => HubError::Network {
                            url: shown,
                            message: error_chain(&e),
                        },
                    })
                }
                Ok(Ok(r)) => r,
            };
            if hub_origin && resp.status() == StatusCode::UNAUTHORIZED && !resent_after_401 {
                let now = self.cfg.credentials.refresh();
                if now != token {
                    tracing::info!(url = %shown, "401 with the old token; sending again with the token file's new one");
                    resent_after_401 = true;
                    continue;
                }
            }
            if let (Some(file), true) = (expect, hub_origin) {
                file.check(resp.headers(), resp.status(), &shown)?;
            }
            if resp.status().is_redirection() {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(HubError::Protocol {
                        url: redact_url(url),
                        message: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                let loc = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| HubError::Protocol {
                        url: shown.clone(),
                        message: format!("{} without a Location", resp.status()),
                    })?;
                let next = current.join(loc).map_err(|e| HubError::Protocol {
                    url: shown.clone(),
                    message: format!("bad Location: {e}"),
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(HubError::Protocol {
                        url: shown,
                        message: "redirect to a non-http URL".into(),
                    });
                }
                tracing::trace!(from = %shown, to = %redact_url(next.as_str()), "redirect");
                current = next;
                resent_after_401 = false;
                continue;
            }
            return Ok(Sent {
                resp,
                url: current.to_string(),
            });
        }
    }

    /// GET with retries; returns the successful response or the classified error.
    async fn get_ok(&self, url: &str) -> Result<Sent, HubError> {
        self.cfg
            .retry
            .run("GET", || async {
                let sent = self.send(Method::GET, url, None, None).await?;
                if sent.resp.status().is_success() {
                    Ok(sent)
                } else {
                    Err(error_from_response(sent.resp, &sent.url).await)
                }
            })
            .await
    }

    async fn body_json<T: for<'de> Deserialize<'de>>(&self, sent: Sent) -> Result<T, HubError> {
        let url = redact_url(&sent.url);
        let bytes = read_body(sent.resp, &url, self.cfg.request_timeout, 256 << 20).await?;
        serde_json::from_slice(&bytes).map_err(|e| HubError::Protocol {
            url,
            message: format!("invalid JSON: {e}"),
        })
    }

    fn cached_redirect(&self, key: &str) -> Option<String> {
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

    fn remember_redirect(&self, key: &str, target: &str) {
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
    fn is_cdn_rejection(&self, e: &HubError) -> bool {
        match e {
            HubError::Denied { context } | HubError::Status { context } => {
                matches!(context.status, 403 | 410)
                    && Url::parse(&context.url).is_ok_and(|u| !self.same_origin(&u))
            }
            _ => false,
        }
    }

    fn forget_redirect(&self, key: &str) {
        self.redirects.lock().pop(key);
    }

    /// Issue 11: the direct client and the parsed URL, when `start_url` is a remembered URL off
    /// the Hub's origin (a CDN: no token, no identity headers to check) and there is no proxy.
    fn direct_for(&self, start_url: &str, resolve: &str) -> Option<(&super::h1::H1Client, Url)> {
        let h1 = self.direct.as_ref()?;
        if start_url == resolve {
            return None;
        }
        let url = Url::parse(start_url).ok()?;
        (!self.same_origin(&url)).then_some((h1, url))
    }

    /// One ranged GET of the bytes `acc` still lacks, from `start_url` (the resolve URL or a
    /// remembered CDN URL), checked; what arrives is added to `acc` even when the body is cut.
    /// The URL that serves them is remembered under `key`. Returns the URL that served the bytes.
    #[allow(clippy::too_many_arguments)]
    async fn range_once(
        &self,
        start_url: &str,
        resolve: &str,
        key: &str,
        leader: Option<tokio::sync::OwnedMutexGuard<()>>,
        file: &Expect<'_>,
        base: u64,
        acc: &mut Pieces<'_>,
    ) -> Result<String, HubError> {
        // One permit per range request in flight: bounds connections and buffered bodies.
        let _permit = self
            .connections
            .acquire()
            .await
            .map_err(|_| HubError::Protocol {
                url: redact_url(start_url),
                message: "client shut down".into(),
            })?;
        Stats::add(&self.stats.inflight_requests, 1);
        let _inflight = InflightGuard(&self.stats);
        if let Some(sink) = acc.sink {
            sink.started();
        }
        let offset = base + acc.got();
        let len = acc.missing();
        let end = offset + len - 1;
        // ---- issue 11: a remembered CDN URL is read by the direct client, its body straight
        // into the sink's buffers; an answer it does not take goes through reqwest below.
        if let Some((h1, url)) = self.direct_for(start_url, resolve) {
            match h1
                .range(&url, offset, end, file.size(), acc, &self.stats)
                .await?
            {
                super::h1::Outcome::Done => {
                    Stats::add(&self.stats.direct_range_requests, 1);
                    return Ok(start_url.to_owned());
                }
                super::h1::Outcome::Fallback(why) => {
                    tracing::debug!(url = %redact_url(start_url), %why, "direct client passed the answer on; through reqwest");
                }
            }
        }
        // ---- end issue 11 ----
        let range = format!("bytes={offset}-{end}");
        let sent = self
            .send(Method::GET, start_url, Some(&range), Some(file))
            .await?;
        let url = redact_url(&sent.url);
        match sent.resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = sent
                    .resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| HubError::Protocol {
                        url: url.clone(),
                        message: "206 without Content-Range".into(),
                    })?;
                let (a, b, total) = parse_content_range(cr).ok_or_else(|| HubError::Protocol {
                    url: url.clone(),
                    message: format!("bad Content-Range {cr:?}"),
                })?;
                if a != offset || b != end || total.is_some_and(|t| t != file.size()) {
                    return Err(HubError::Protocol {
                        url,
                        message: format!(
                            "Content-Range {cr:?} does not match bytes {offset}-{end}/{}",
                            file.size()
                        ),
                    });
                }
            }
            StatusCode::OK if offset == 0 && len == file.size() => {}
            StatusCode::OK => {
                return Err(HubError::Protocol {
                    url,
                    message: format!("200 instead of 206 for bytes {offset}-{end}"),
                })
            }
            _ => return Err(error_from_response(sent.resp, &sent.url).await),
        }
        if start_url == resolve {
            // The bytes are coming: the URL that serves them is good for the other parts now,
            // not only once this body ends (a Hub answering bytes itself is remembered too).
            self.remember_redirect(key, &sent.url);
        }
        drop(leader);
        read_pieces(sent.resp, &url, self.cfg.request_timeout, acc).await?;
        Ok(sent.url)
    }
}

/// Pieces of a range being assembled across retries: complete pieces (kept, or handed to a sink
/// as each completes) plus the one being filled, in memory the sink gives (so a body's bytes are
/// copied once, from the connection's buffer into the block that keeps them).
pub struct Pieces<'a> {
    len: u64,
    piece: u64,
    done: Vec<Bytes>,
    /// Pieces completed so far (kept or handed on).
    completed: usize,
    sink: Option<&'a dyn PieceSink>,
    /// The piece being filled (made when its first byte arrives), and its bytes so far.
    cur: Option<Box<dyn PieceBuffer>>,
    cur_len: u64,
    got: u64,
}

impl<'a> Pieces<'a> {
    /// An empty range of `len` bytes in pieces of `piece`, kept until [`Pieces::finish`].
    pub fn new(len: u64, piece: u64) -> Self {
        let piece = piece.clamp(1, len.max(1));
        Pieces {
            len,
            piece,
            done: Vec::with_capacity(len.div_ceil(piece) as usize),
            completed: 0,
            sink: None,
            cur: None,
            cur_len: 0,
            got: 0,
        }
    }

    /// An empty range whose pieces go to `sink` as each completes, numbered from 0, received
    /// into the buffers `sink` hands out.
    pub fn streaming(len: u64, piece: u64, sink: &'a dyn PieceSink) -> Self {
        let mut p = Pieces::new(len, piece);
        p.done = Vec::new();
        p.sink = Some(sink);
        p
    }

    /// Bytes received so far.
    pub fn got(&self) -> u64 {
        self.got
    }

    /// Bytes still missing.
    pub fn missing(&self) -> u64 {
        self.len - self.got
    }

    /// The length of the piece being filled.
    fn target(&self) -> u64 {
        self.piece
            .min(self.len - self.completed as u64 * self.piece)
    }

    fn complete(&mut self, piece: Bytes) {
        match self.sink {
            Some(sink) => sink.deliver(self.completed, piece),
            None => self.done.push(piece),
        }
        self.completed += 1;
    }

    /// Appends received bytes; fails if they run past the range.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), String> {
        if self.got + data.len() as u64 > self.len {
            return Err(format!("body longer than the {} bytes asked for", self.len));
        }
        self.got += data.len() as u64;
        while !data.is_empty() {
            let target = self.target();
            let sink = self.sink;
            let cur = self.cur.get_or_insert_with(|| match sink {
                Some(s) => s.buffer(target as usize),
                None => Box::new(HeapBuffer::with_capacity(target as usize)),
            });
            let n = ((target - self.cur_len) as usize).min(data.len());
            cur.put(&data[..n]);
            self.cur_len += n as u64;
            data = &data[n..];
            if self.cur_len == target {
                if let Some(full) = self.cur.take() {
                    self.cur_len = 0;
                    self.complete(full.freeze());
                }
            }
        }
        Ok(())
    }

    // ---- issue 11: receiving straight into the piece's memory (used by `super::h1`) ----

    /// The memory the next received bytes go into, in the piece being filled: at most `max`
    /// bytes, never past the piece or the range. Empty when the sink's buffer takes bytes through
    /// [`PieceBuffer::put`] only (then use [`Pieces::push`]) or nothing is missing.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [std::mem::MaybeUninit<u8>] {
        if self.got == self.len {
            return &mut [];
        }
        let target = self.target();
        let room = ((target - self.cur_len) as usize).min(max);
        let sink = self.sink;
        let cur = self.cur.get_or_insert_with(|| match sink {
            Some(s) => s.buffer(target as usize),
            None => Box::new(HeapBuffer::with_capacity(target as usize)),
        });
        let spare = cur.spare();
        let n = spare.len().min(room);
        &mut spare[..n]
    }

    /// Counts `n` bytes written into the last [`Pieces::spare`] as received; hands the piece on
    /// when it is complete.
    ///
    /// # Safety
    /// The first `n` bytes of the slice the last `spare` returned were written since, and no
    /// other call on `self` came between.
    pub(crate) unsafe fn advance(&mut self, n: usize) {
        let Some(cur) = self.cur.as_mut() else {
            debug_assert_eq!(n, 0);
            return;
        };
        // SAFETY: as the caller promised, for the spare of this very buffer.
        unsafe { cur.advance(n) };
        self.cur_len += n as u64;
        self.got += n as u64;
        if self.cur_len == self.target() {
            if let Some(full) = self.cur.take() {
                self.cur_len = 0;
                self.complete(full.freeze());
            }
        }
    }

    /// The kept pieces (none when streaming), once every byte arrived.
    pub fn finish(self) -> Option<Vec<Bytes>> {
        (self.got == self.len).then_some(self.done)
    }
}

impl super::h1::Receiver for Pieces<'_> {
    fn missing(&self) -> u64 {
        Pieces::missing(self)
    }

    fn push(&mut self, data: &[u8]) -> Result<(), String> {
        Pieces::push(self, data)
    }

    fn spare(&mut self, max: usize) -> &mut [std::mem::MaybeUninit<u8>] {
        Pieces::spare(self, max)
    }

    unsafe fn advance(&mut self, n: usize) {
        // SAFETY: the caller's promise is the one `Pieces::advance` asks for.
        unsafe { Pieces::advance(self, n) }
    }
}

// ---- end issue 11 ----

impl HubClient for HttpHub {
    async fn resolve_revision(
        &self,
        repo: &RepoId,
        revision: &str,
    ) -> Result<CommitInfo, HubError> {
        let url = self.urls.revision_info(repo, revision)?;
        let sent = self.get_ok(&url).await?;
        let shown = redact_url(&sent.url);
        let info: RevisionJson = self.body_json(sent).await?;
        let sha = info
            .sha
            .filter(|s| super::urls::is_commit_sha(s))
            .ok_or(HubError::Protocol {
                url: shown,
                message: "revision info without a 40-hex sha".into(),
            })?;
        Ok(CommitInfo {
            sha,
            date: info.last_modified.as_deref().and_then(parse_rfc3339),
        })
    }

    async fn list_dir(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<Vec<TreeEntry>, HubError> {
        let mut url = self.urls.tree(repo, commit, path)?;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let sent = self.get_ok(&url).await?;
            let next = next_link(sent.resp.headers());
            let shown = redact_url(&sent.url);
            let body = read_body(sent.resp, &shown, self.cfg.request_timeout, 256 << 20).await?;
            let page = parse_tree_page(&body, path).map_err(|message| HubError::Protocol {
                url: shown.clone(),
                message,
            })?;
            out.extend(page);
            match next {
                None => return Ok(out),
                Some(n) => url = self.next_page_url(&n, &shown)?,
            }
        }
        Err(HubError::Protocol {
            url: redact_url(&url),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    async fn list_page(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<super::TreePage, HubError> {
        self.tree_page(repo, commit, path, cursor).await
    }

    async fn paths_info(
        &self,
        repo: &RepoId,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<TreeEntry>, HubError> {
        self.post_paths_info(repo, commit, paths).await
    }

    async fn list_repos(
        &self,
        repo_type: super::RepoType,
        author: &str,
        cursor: Option<&str>,
    ) -> Result<super::RepoPage, HubError> {
        self.search_page(repo_type, author, cursor).await
    }

    async fn stream_range(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        if len == 0 {
            return Ok(());
        }
        check_range(&file.path, offset, len, file.size)?;
        let resolve = self.urls.resolve(&file.repo, &file.commit, &file.path)?;
        let file = Expect::Repo(file);
        self.stream_via(&resolve, &resolve, &file, offset, len, piece, sink)
            .await
    }
}

/// What the bytes being read must be, checked on every answer from the Hub's origin: a repo file
/// at a commit, or one version of a bucket object.
pub(crate) enum Expect<'a> {
    /// See [`check_identity`].
    Repo(&'a FileRef),
    /// `X-Xet-Hash` must be the version's hash (see `buckets::check_version`).
    Bucket(&'a super::buckets::BucketFile),
}

impl Expect<'_> {
    fn size(&self) -> u64 {
        match self {
            Expect::Repo(f) => f.size,
            Expect::Bucket(f) => f.size,
        }
    }

    fn path(&self) -> &str {
        match self {
            Expect::Repo(f) => &f.path,
            Expect::Bucket(f) => &f.path,
        }
    }

    fn check(&self, headers: &HeaderMap, status: StatusCode, url: &str) -> Result<(), HubError> {
        match self {
            Expect::Repo(f) => check_identity(headers, f, url),
            Expect::Bucket(f) => buckets::check_version(headers, status, f, url),
        }
    }
}

impl HttpHub {
    /// Reads `len` bytes from `offset` of what `resolve` serves, checked against `file`, with
    /// retries and resumes; a CDN URL is remembered under `key` (which names the content).
    #[allow(clippy::too_many_arguments)]
    async fn stream_via(
        &self,
        resolve: &str,
        key: &str,
        file: &Expect<'_>,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        let policy = &self.cfg.retry;
        let deadline = self.cfg.read_timeout;
        let mut acc = Pieces::streaming(len, piece, sink);
        let mut failures = 0;
        let mut last_progress = Instant::now();
        let mut reresolved = false;
        loop {
            let mut cached = self.cached_redirect(key);
            let mut leader = None;
            if cached.is_none() {
                // One request asks the Hub where the bytes are; the others wait for its answer.
                let lock = self
                    .resolving
                    .lock()
                    .get_or_insert(key.to_owned(), Default::default)
                    .clone();
                let guard = lock.lock_owned().await;
                cached = self.cached_redirect(key);
                if cached.is_none() {
                    leader = Some(guard);
                }
            }
            let start = cached.as_deref().unwrap_or(resolve);
            let before = acc.completed;
            let result = self
                .range_once(start, resolve, key, leader, file, offset, &mut acc)
                .await;
            if acc.completed > before {
                // Progress (a whole piece: a few bytes before each stall are not): the deadline
                // and the failure count start over; a cut body resumes from the first missing byte.
                last_progress = Instant::now();
                failures = 0;
            }
            let err = match result {
                Ok(final_url) => {
                    return acc.finish().map(drop).ok_or_else(|| HubError::Protocol {
                        url: redact_url(&final_url),
                        message: "range incomplete".into(),
                    });
                }
                Err(_) if acc.missing() == 0 => {
                    // Every byte arrived (the error came after the body, e.g. at its end): the
                    // range is complete, and a retry would ask for nothing.
                    return acc.finish().map(drop).ok_or_else(|| HubError::Protocol {
                        url: redact_url(start),
                        message: "range incomplete".into(),
                    });
                }
                Err(e) => e,
            };
            if cached.is_some() || self.is_cdn_rejection(&err) {
                // A remembered CDN URL that failed (expired, refused, unreachable), or a CDN that
                // refused a fresh URL (403/410): the URL is not reused and the Hub is asked for a
                // new one, once without counting as a failure.
                self.forget_redirect(key);
                if !reresolved {
                    reresolved = true;
                    tracing::debug!(error = %err, "remembered redirect failed; re-resolving");
                    continue;
                }
            }
            failures += 1;
            let idle = last_progress.elapsed();
            if !err.is_transient() || failures >= policy.max_attempts || idle >= deadline {
                if idle >= deadline {
                    tracing::warn!(path = %file.path(), ?idle, error = %err, "no progress within the read timeout");
                }
                return Err(err);
            }
            let wait = policy.delay(failures, &err).min(deadline - idle);
            Stats::add(&self.stats.retries, 1);
            tracing::warn!(path = %file.path(), offset = offset + acc.got(), missing = acc.missing(), failures, ?wait, error = %err, "range read failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Reads a body into `acc`, failing when it stalls for `read_timeout`, runs long, or ends short.
/// Bytes that arrived before a failure stay in `acc`.
async fn read_pieces(
    mut resp: Response,
    url: &str,
    read_timeout: Duration,
    acc: &mut Pieces<'_>,
) -> Result<(), HubError> {
    let start = acc.got();
    while let Some(chunk) = next_chunk(&mut resp, url, read_timeout, acc.got() - start).await? {
        acc.push(&chunk).map_err(|message| HubError::Protocol {
            url: url.to_owned(),
            message,
        })?;
    }
    if acc.missing() != 0 {
        return Err(HubError::Protocol {
            url: url.to_owned(),
            message: format!(
                "short body: {} bytes, {} missing",
                acc.got() - start,
                acc.missing()
            ),
        });
    }
    Ok(())
}

/// The next chunk of a body (`None` at its end), failing when none arrives within
/// `read_timeout` or the stream breaks; `got` (bytes received so far) goes into the message.
async fn next_chunk(
    resp: &mut Response,
    url: &str,
    read_timeout: Duration,
    got: u64,
) -> Result<Option<Bytes>, HubError> {
    match tokio::time::timeout(read_timeout, resp.chunk()).await {
        Err(_) => Err(HubError::Timeout {
            url: url.to_owned(),
            after: read_timeout,
        }),
        Ok(Err(e)) => Err(HubError::Network {
            url: url.to_owned(),
            message: format!("body cut after {got} bytes: {}", error_chain(&e)),
        }),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Reads a (JSON) body, failing when it stalls for `read_timeout` or exceeds `limit`.
async fn read_body(
    mut resp: Response,
    url: &str,
    read_timeout: Duration,
    limit: u64,
) -> Result<Bytes, HubError> {
    let mut buf = BytesMut::new();
    while let Some(c) = next_chunk(&mut resp, url, read_timeout, buf.len() as u64).await? {
        if buf.len() as u64 + c.len() as u64 > limit {
            return Err(HubError::Protocol {
                url: url.to_owned(),
                message: format!("body longer than {limit} bytes"),
            });
        }
        buf.extend_from_slice(&c);
    }
    Ok(buf.freeze())
}

/// Classifies a non-success response, reading the Hub's error headers and JSON body.
async fn error_from_response(resp: Response, url: &str) -> HubError {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let error_code = header("x-error-code");
    let mut message = header("x-error-message");
    let request_id = header("x-request-id");
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| header("ratelimit").and_then(|v| ratelimit_reset(&v)));
    if message.is_none() {
        if let Ok(Ok(Some(body))) = tokio::time::timeout(Duration::from_secs(5), async {
            resp.bytes().await.map(Some)
        })
        .await
        {
            message = serde_json::from_slice::<serde_json::Value>(&body[..body.len().min(65536)])
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        }
    }
    let context = HttpContext {
        status,
        url: redact_url(url),
        error_code,
        message,
        request_id,
    };
    let code = context.error_code.as_deref();
    match (status, code) {
        (_, Some("GatedRepo")) => HubError::Gated { context },
        (404, Some("RevisionNotFound")) => HubError::NotFound {
            kind: NotFoundKind::Revision,
            context,
        },
        (404, Some("EntryNotFound")) => HubError::NotFound {
            kind: NotFoundKind::Entry,
            context,
        },
        (404, Some("RepoNotFound")) => HubError::NotFound {
            kind: NotFoundKind::Repo,
            context,
        },
        (404, _) => HubError::NotFound {
            kind: NotFoundKind::Other,
            context,
        },
        (401 | 403, _) => HubError::Denied { context },
        (429, _) => HubError::RateLimited {
            retry_after,
            context,
        },
        _ => HubError::Status { context },
    }
}

/// Fails with `Stale` when a response from the endpoint's origin says it is about another
/// commit or another version of the file than the file was opened at:
/// * `X-Repo-Commit`, when present, must be the file's commit;
/// * `X-Linked-Etag` (the `/resolve` hop of an LFS file), when present, must be its etag, and
///   `X-Linked-Size`, when present, its size;
/// * `ETag` must be its etag only on an answer that also carries `X-Repo-Commit`: that is the
///   Hub answering for the file itself (a direct answer, `resolve-cache`). An answer without it is
///   a byte server on the endpoint's origin (a mirror serving CDN objects), whose `ETag` is its
///   own; its bytes are checked by `Content-Range` and length in `range_once`.
fn check_identity(headers: &HeaderMap, file: &FileRef, url: &str) -> Result<(), HubError> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let stale = |message: String| HubError::Stale {
        url: url.to_owned(),
        message,
    };
    let commit = get("x-repo-commit");
    if let Some(c) = commit {
        if c != file.commit {
            return Err(stale(format!(
                "X-Repo-Commit {c} but the file is read at {}",
                file.commit
            )));
        }
    }
    if let Some(size) = get("x-linked-size") {
        if size.trim().parse::<u64>().ok() != Some(file.size) {
            return Err(stale(format!(
                "X-Linked-Size {size} but the file's listing says {} bytes",
                file.size
            )));
        }
    }
    let tag = get("x-linked-etag").or_else(|| commit.and_then(|_| get("etag")));
    if let Some(tag) = tag {
        let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
        if !file.etag.is_empty() && !tag.is_empty() && tag != file.etag {
            return Err(stale(format!(
                "ETag {tag} but the file's listing says {}",
                file.etag
            )));
        }
    }
    Ok(())
}

/// A range of `len` bytes at `offset` must lie within the file's `size` (asked of the client: a
/// caller's bug, reported without a request).
fn check_range(path: &str, offset: u64, len: u64, size: u64) -> Result<(), HubError> {
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(HubError::Protocol {
            url: path.to_owned(),
            message: format!("range {offset}+{len} beyond size {size}"),
        });
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    // reqwest puts the URL (with any signature) in its message: cut queries out.
    redact_queries(&s)
}

fn redact_queries(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_query = false;
    for ch in s.chars() {
        if ch == '?' {
            in_query = true;
            out.push_str("?<redacted>");
            continue;
        }
        if in_query && (ch.is_whitespace() || ch == ')' || ch == '"') {
            in_query = false;
        }
        if !in_query {
            out.push(ch);
        }
    }
    out
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
    use reqwest::header::HeaderValue;

    /// A server answering every request with a 206 whose chunked body carries every byte asked
    /// for and then breaks off without its final chunk; counts the requests.
    fn server_cutting_after_the_last_byte(
        data: Vec<u8>,
    ) -> (String, Arc<std::sync::atomic::AtomicU64>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                let mut range = None;
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        let (a, b) = v.trim().split_once('-').expect("range");
                        range = Some((
                            a.parse::<usize>().expect("a"),
                            b.parse::<usize>().expect("b"),
                        ));
                    }
                    line.clear();
                }
                let (a, b) = range.unwrap_or((0, data.len() - 1));
                let body = &data[a..=b];
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                    data.len(),
                    body.len()
                );
                let _ = s.write_all(body);
                let _ = s.write_all(b"\r\n");
                // ...and no "0\r\n\r\n": the connection closes.
            }
        });
        (format!("http://{addr}"), count)
    }

    #[test]
    fn pieces_split_at_piece_boundaries_whatever_the_chunks() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for chunk in [1, 7, 100, 333, 1000] {
            let mut p = Pieces::new(1000, 256);
            for c in data.chunks(chunk) {
                p.push(c).unwrap();
            }
            let pieces = p.finish().unwrap();
            assert_eq!(
                pieces.iter().map(|b| b.len()).collect::<Vec<_>>(),
                [256, 256, 256, 232]
            );
            assert_eq!(pieces.concat(), data);
        }
        let mut p = Pieces::new(10, 4);
        p.push(&[0; 6]).unwrap();
        assert_eq!((p.got(), p.missing()), (6, 4));
        assert!(p.push(&[0; 5]).is_err(), "never more than asked");
        let short = Pieces::new(10, 4);
        assert!(short.finish().is_none(), "never fewer than asked");
    }

    #[test]
    fn identity_checks_commit_and_etag() {
        let file = FileRef {
            repo: RepoId::new(crate::hub::RepoType::Model, "a", "b"),
            commit: "c".repeat(40),
            path: "x".into(),
            size: 1,
            etag: "abc".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"c".repeat(40)).unwrap(),
        );
        h.insert("etag", HeaderValue::from_static("W/\"abc\""));
        assert!(check_identity(&h, &file, "u").is_ok());
        h.insert("x-linked-etag", HeaderValue::from_static("\"other\""));
        assert!(matches!(
            check_identity(&h, &file, "u"),
            Err(HubError::Stale { .. })
        ));
        let mut h2 = HeaderMap::new();
        h2.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"d".repeat(40)).unwrap(),
        );
        assert!(matches!(
            check_identity(&h2, &file, "u"),
            Err(HubError::Stale { .. })
        ));
    }

    #[test]
    fn identity_of_mirror_served_bytes_is_their_size_not_their_etag() {
        let file = FileRef {
            repo: RepoId::new(crate::hub::RepoType::Model, "a", "b"),
            commit: "c".repeat(40),
            path: "w.safetensors".into(),
            size: 1000,
            etag: "sha256hex".into(),
        };
        // A CDN object served on the endpoint's origin: its own ETag, no X-Repo-Commit.
        let mut cdn = HeaderMap::new();
        cdn.insert("etag", HeaderValue::from_static("\"cdn-own-etag\""));
        assert!(check_identity(&cdn, &file, "u").is_ok());
        // The same ETag on an answer that names its commit is the Hub's: it must match.
        let mut hub = cdn.clone();
        hub.insert(
            "x-repo-commit",
            HeaderValue::from_str(&"c".repeat(40)).unwrap(),
        );
        assert!(matches!(
            check_identity(&hub, &file, "u"),
            Err(HubError::Stale { .. })
        ));
        // The /resolve hop of an LFS file: X-Linked-Etag and X-Linked-Size must match.
        let mut resolve = hub.clone();
        resolve.insert("x-linked-etag", HeaderValue::from_static("\"sha256hex\""));
        resolve.insert("x-linked-size", HeaderValue::from_static("1000"));
        assert!(check_identity(&resolve, &file, "u").is_ok());
        resolve.insert("x-linked-size", HeaderValue::from_static("999"));
        assert!(matches!(
            check_identity(&resolve, &file, "u"),
            Err(HubError::Stale { .. })
        ));
    }

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

    #[tokio::test]
    async fn a_range_whose_every_byte_arrived_is_complete_even_if_the_body_then_breaks() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let (endpoint, requests) = server_cutting_after_the_last_byte(data.clone());
        let mut cfg = HttpConfig::new(&endpoint);
        cfg.retry.base_delay = Duration::from_millis(1);
        let hub = HttpHub::new(cfg).expect("client");
        let file = FileRef {
            repo: RepoId::new(crate::hub::RepoType::Model, "a", "b"),
            commit: "c".repeat(40),
            path: "f.bin".into(),
            size: data.len() as u64,
            etag: String::new(),
        };
        let got = hub
            .read_range(&file, 1000, 3000, 1024)
            .await
            .expect("complete");
        assert_eq!(got.concat(), &data[1000..4000]);
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no retry for bytes that all arrived"
        );
    }

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

    #[test]
    fn queries_are_redacted_from_error_text() {
        let s = redact_queries("error sending request for url (http://cdn/x?Signature=abc)");
        assert!(!s.contains("abc"));
        assert!(s.contains("http://cdn/x?<redacted>)"));
    }
}
