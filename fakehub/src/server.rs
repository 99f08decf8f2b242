//! The HTTP side: a Hub listener (API, `/resolve/`, `/api/resolve-cache/`) and a CDN listener
//! (signed, expiring, content-addressed LFS objects) on two loopback ports.

// Handlers short-circuit with a ready `Response` as the error value; boxing it buys nothing here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use parking_lot::{Mutex, RwLock};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

mod buckets;
pub use buckets::{xet_hash_of, Bucket, BucketObject, Buckets};

use crate::admin;
use crate::body::{shaped, tracked, BodyPlan};
use crate::faults::{FaultKind, FaultState, Faults, ReqClass};
use crate::fixtures::{
    all_dirs, is_sha40, sha1_hex, sha256_of, Access, Commit, FileData, Fixtures, Repo, RepoType,
    TOKEN_FULL, TOKEN_UNAPPROVED,
};
use crate::record::{Arrival, Listener, RequestLog, RequestRecord};
use crate::shaping::{Shaping, SlowKind, SlowPlan, TailDraws};

/// Options of a [`FakeHub`].
#[derive(Clone, Debug)]
pub struct FakeHubOptions {
    /// Tree listing page size, default 1000 (50 at most when `expand=true`).
    pub page_size: usize,
    /// Files of at least this size, or named *.safetensors/*.bin/*.parquet/*.gguf, are LFS
    /// (0-byte files never are); default 10 KiB.
    pub lfs_threshold: u64,
    /// Expiry of signed CDN URLs, default 3600 s. Zero makes every CDN URL expired at once.
    pub redirect_ttl: Duration,
    /// Hub listener address, default 127.0.0.1:0.
    pub hub_addr: Option<SocketAddr>,
    /// CDN listener address, default 127.0.0.1:0 (always a different port = different origin).
    pub cdn_addr: Option<SocketAddr>,
    /// Initial traffic shaping (default none); change it live with [`FakeHub::set_shaping`].
    pub shaping: Shaping,
    /// `/resolve/` answers LFS files itself (200/206 with the bytes), as a Hub mirror service
    /// does, instead of redirecting to the CDN. The answer carries `X-Repo-Commit`,
    /// `X-Linked-Etag`, `X-Linked-Size` and an `ETag` of its own. Default off.
    pub resolve_direct: bool,
}

impl Default for FakeHubOptions {
    fn default() -> Self {
        FakeHubOptions {
            page_size: 1000,
            lfs_threshold: 10 * 1024,
            redirect_ttl: Duration::from_secs(3600),
            hub_addr: None,
            cdn_addr: None,
            shaping: Shaping::default(),
            resolve_direct: false,
        }
    }
}

const SIGNING_SECRET: &str = "fakehub-cdn-signing-secret";
const STREAM_CHUNK: usize = 256 * 1024;

struct Shared {
    fixtures: RwLock<Fixtures>,
    opts: FakeHubOptions,
    hub_endpoint: String,
    cdn_endpoint: String,
    log: Arc<RequestLog>,
    cdn_objects: Mutex<HashMap<String, FileData>>,
    /// Read per chunk by shaped bodies (live rate changes).
    shaping: Arc<RwLock<Shaping>>,
    /// The per-request latency and slow-response draws, reseeded by `set_shaping`.
    tail: Mutex<TailDraws>,
    faults: Mutex<FaultState>,
    /// True while paused: connections are dropped on accept and live ones are closed.
    paused: tokio::sync::watch::Sender<bool>,
    /// The tokens accepted and what each may read ([`TOKEN_FULL`], [`TOKEN_UNAPPROVED`] at start).
    tokens: RwLock<HashMap<String, Auth>>,
    /// Storage Buckets (see [`buckets`]).
    buckets: RwLock<Buckets>,
}

/// A running fake Hub: two listeners on a background tokio runtime. Drop shuts both down.
pub struct FakeHub {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHub")
            .field("hub", &self.shared.hub_endpoint)
            .field("cdn", &self.shared.cdn_endpoint)
            .finish()
    }
}

impl FakeHub {
    /// Starts both listeners on its own tokio runtime (a background thread), so it works from plain
    /// #[test] functions and from inside other tokio runtimes alike. Returns once both are accepting.
    pub fn start(fixtures: Fixtures, opts: FakeHubOptions) -> std::io::Result<FakeHub> {
        let local: SocketAddr = ([127, 0, 0, 1], 0).into();
        let hub_l = std::net::TcpListener::bind(opts.hub_addr.unwrap_or(local))?;
        let cdn_l = std::net::TcpListener::bind(opts.cdn_addr.unwrap_or(local))?;
        hub_l.set_nonblocking(true)?;
        cdn_l.set_nonblocking(true)?;
        let hub_addr = hub_l.local_addr()?;
        let cdn_addr = cdn_l.local_addr()?;
        let shaping = opts.shaping.clone();
        let shared = Arc::new(Shared {
            fixtures: RwLock::new(fixtures),
            opts,
            hub_endpoint: format!("http://{hub_addr}"),
            cdn_endpoint: format!("http://{cdn_addr}"),
            log: Arc::new(RequestLog::new()),
            cdn_objects: Mutex::new(HashMap::new()),
            tail: Mutex::new(TailDraws::new(shaping.seed)),
            shaping: Arc::new(RwLock::new(shaping)),
            faults: Mutex::new(FaultState::new()),
            paused: tokio::sync::watch::Sender::new(false),
            tokens: RwLock::new(HashMap::from([
                (TOKEN_FULL.to_owned(), Auth::Full),
                (TOKEN_UNAPPROVED.to_owned(), Auth::Unapproved),
            ])),
            buckets: RwLock::new(Buckets::default()),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fakehub".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fakehub-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listeners = (|| {
                        Ok::<_, std::io::Error>((
                            tokio::net::TcpListener::from_std(hub_l)?,
                            tokio::net::TcpListener::from_std(cdn_l)?,
                        ))
                    })();
                    let (hub, cdn) = match listeners {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    tokio::spawn(accept_loop(hub, sh.clone(), Listener::Hub));
                    tokio::spawn(accept_loop(cdn, sh.clone(), Listener::Cdn));
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("fakehub runtime thread died")),
        }
        Ok(FakeHub {
            shared,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The Hub base URL, `"http://127.0.0.1:PORT"` (no trailing slash).
    pub fn endpoint(&self) -> String {
        self.shared.hub_endpoint.clone()
    }

    /// The CDN base URL, `"http://127.0.0.1:PORT"` (no trailing slash).
    pub fn cdn_endpoint(&self) -> String {
        self.shared.cdn_endpoint.clone()
    }

    /// Every request both listeners have received so far (since the last `clear_requests`), in
    /// arrival order, as it stands now: a request still in flight has `end: None` and the body
    /// bytes sent so far. The admin endpoints (`/_fakehub/...`) are never in it.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// Forgets the recorded requests (request numbers keep counting up).
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Mutates the live fixtures (move a branch, add a commit) under a lock; later requests see it.
    pub fn with_fixtures<R>(&self, f: impl FnOnce(&mut Fixtures) -> R) -> R {
        let mut g = self.shared.fixtures.write();
        f(&mut g)
    }

    /// The current traffic shaping.
    pub fn shaping(&self) -> Shaping {
        self.shared.shaping.read().clone()
    }

    /// Changes the traffic shaping live and reseeds its draws with `shaping.seed`. Latency and
    /// slow responses apply to requests that arrive afterwards; the rate cap is re-read per chunk
    /// by bodies that started shaped (a body that started unshaped stays unshaped).
    pub fn set_shaping(&self, shaping: Shaping) {
        let mut tail = self.shared.tail.lock();
        *tail = TailDraws::new(shaping.seed);
        *self.shared.shaping.write() = shaping;
    }

    /// Replaces the fault injection settings and reseeds the draw (counts are kept).
    pub fn set_faults(&self, f: Faults) {
        self.shared.faults.lock().set(f);
    }

    /// Counts of faults injected so far, by kind name (e.g. `"CutBody"`, see [`FaultKind::name`]).
    pub fn faults_injected(&self) -> BTreeMap<String, u64> {
        self.shared.faults.lock().counts()
    }

    /// Makes both listeners refuse service: open connections (idle or mid-response) are closed
    /// and new ones are accepted and closed at once, so clients see connection errors.
    /// [`FakeHub::resume`] restores normal service on the same ports.
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Accepts `token` from now on with the access of [`TOKEN_FULL`] (every private and gated
    /// repo), as when a user creates a new token.
    pub fn add_token(&self, token: &str) {
        self.shared
            .tokens
            .write()
            .insert(token.to_owned(), Auth::Full);
    }

    /// Stops accepting `token` (any token, the built-in ones included): later requests carrying
    /// it get 401 "Invalid credentials in Authorization header", as for a revoked token.
    pub fn revoke_token(&self, token: &str) {
        self.shared.tokens.write().remove(token);
    }

    /// Ends a [`FakeHub::pause`].
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Shuts both listeners down and waits for the runtime thread.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// Python's `quote(s)`: unreserved characters kept, everything else percent-encoded.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn quote_path(p: &str) -> String {
    p.split('/')
        .map(|s| utf8_percent_encode(s, QUOTE).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        let enc: String = s
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c.to_string()
                } else {
                    utf8_percent_encode(c.encode_utf8(&mut [0; 4]), NON_ALPHANUMERIC).to_string()
                }
            })
            .collect();
        HeaderValue::from_str(&enc).unwrap_or_else(|_| HeaderValue::from_static("?"))
    })
}

fn set(resp: &mut Response, name: &'static str, value: &str) {
    resp.headers_mut()
        .insert(HeaderName::from_static(name), header_value(value));
}

fn response(status: StatusCode, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn json_response(v: &Value) -> Response {
    let mut r = response(StatusCode::OK, Body::from(v.to_string()));
    set(&mut r, "content-type", "application/json; charset=utf-8");
    r
}

fn text_response(status: StatusCode, text: &str) -> Response {
    let mut r = response(status, Body::from(text.to_string()));
    set(&mut r, "content-type", "text/plain; charset=utf-8");
    r
}

/// An error with `X-Error-Code` (if any), `X-Error-Message` and a JSON `{"error": msg}` body.
fn error(status: StatusCode, code: Option<&str>, msg: &str) -> Response {
    let mut r = response(status, Body::from(json!({ "error": msg }).to_string()));
    set(&mut r, "content-type", "application/json; charset=utf-8");
    if let Some(c) = code {
        set(&mut r, "x-error-code", c);
    }
    set(&mut r, "x-error-message", msg);
    r
}

fn bad_request(msg: &str) -> Response {
    error(StatusCode::BAD_REQUEST, None, msg)
}

fn not_found_route() -> Response {
    error(StatusCode::NOT_FOUND, None, "Not Found")
}

fn decode(s: &str) -> Result<String, Response> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad_request("Invalid percent-encoding in URL"))
}

fn query_params(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    form_params(q.as_bytes())
}

fn form_params(body: &[u8]) -> Vec<(String, String)> {
    let s = String::from_utf8_lossy(body);
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| {
                percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.to_ascii_lowercase()).as_deref(),
        Some("true" | "1" | "yes")
    )
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn sign(sha: &str, expires: u64) -> String {
    sha256_of(format!("{sha}:{expires}:{SIGNING_SECRET}").as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Connections (own accept loop: a handler can drop its connection, and pause closes them all)

async fn accept_loop(l: tokio::net::TcpListener, s: Arc<Shared>, listener: Listener) {
    loop {
        let stream = match l.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let mut paused = s.paused.subscribe();
        if *paused.borrow_and_update() {
            drop(stream);
            continue;
        }
        let s = s.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let kill = Arc::new(tokio::sync::Notify::new());
            let k = kill.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    let kill = k.clone();
                    async move {
                        match entry(s, req.map(Body::new), listener).await {
                            Some(r) => Ok::<_, Infallible>(r),
                            None => {
                                // Reset: the connection task drops the socket without a response.
                                kill.notify_one();
                                std::future::pending().await
                            }
                        }
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = paused.wait_for(|p| *p) => {}
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Entry point (shaping, faults, record every request, add X-Request-Id)

/// Marks a response a fault was applied to (set by the handlers for body-level faults).
#[derive(Clone)]
struct AppliedFault(FaultKind);

fn applied(mut r: Response, k: FaultKind) -> Response {
    r.extensions_mut().insert(AppliedFault(k));
    r
}

/// Which fault class a request belongs to, if any.
fn classify(listener: Listener, method: &Method, uri: &Uri, ranged: bool) -> Option<ReqClass> {
    let path = uri.path();
    match listener {
        Listener::Cdn => (method == Method::GET && ranged && path.starts_with("/cdn/"))
            .then_some(ReqClass::CdnBytes),
        Listener::Hub => {
            if path.starts_with("/api/resolve-cache/") {
                return (method == Method::GET && ranged).then_some(ReqClass::HubBytes);
            }
            if path.starts_with("/api/") {
                return Some(ReqClass::Api);
            }
            let segs: Vec<&str> = path.split('/').skip(1).collect();
            let resolve = match segs.first() {
                Some(&"datasets" | &"spaces") => segs.get(3) == Some(&"resolve"),
                _ => segs.get(2) == Some(&"resolve"),
            };
            (resolve && method == Method::GET && ranged).then_some(ReqClass::HubBytes)
        }
    }
}

/// A fake commit id different from `sha`.
fn other_commit(sha: &str) -> String {
    sha1_hex(format!("fakehub-commit-change:{sha}").as_bytes())
}

/// Returns `None` when the connection must be dropped without a response.
async fn entry(s: Arc<Shared>, req: Request, listener: Listener) -> Option<Response> {
    let (parts, body) = req.into_parts();
    if listener == Listener::Hub {
        if let Some(r) = admin::route(&s.log, &parts.method, parts.uri.path()) {
            return Some(r);
        }
    }
    let hdr = |n: &str| {
        parts
            .headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let range = hdr("range");
    let guard = s.log.begin(Arrival {
        listener,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        range: range.clone(),
        authorization: hdr("authorization"),
    });
    let body = if parts.method == Method::POST {
        match axum::body::to_bytes(body, 16 << 20).await {
            Ok(b) => Ok(b),
            Err(_) => Err(bad_request("Request body too large or unreadable")),
        }
    } else {
        Ok(bytes::Bytes::new())
    };
    let class = classify(listener, &parts.method, &parts.uri, range.is_some());
    let byte_range = matches!(class, Some(ReqClass::HubBytes | ReqClass::CdnBytes));
    let (shaping, draw) = {
        let mut tail = s.tail.lock();
        let shaping = s.shaping.read().clone();
        let draw = tail.draw(&shaping, byte_range);
        (shaping, draw)
    };
    if !draw.latency.is_zero() {
        tokio::time::sleep(draw.latency).await;
    }
    let fault = class.and_then(|c| s.faults.lock().draw(c));
    let mut resp = match body {
        Err(r) => r,
        Ok(body) => match listener {
            Listener::Hub => hub(
                &s,
                &parts.method,
                &parts.uri,
                &parts.headers,
                &body,
                fault.as_ref(),
            ),
            Listener::Cdn => cdn(
                &s,
                &parts.method,
                &parts.uri,
                &parts.headers,
                fault.as_ref(),
            ),
        },
    };
    let mut injected = resp.extensions_mut().remove::<AppliedFault>().map(|a| a.0);
    if let Some(k) = fault {
        // Redirects are never faulted, except that a commit change shows wherever X-Repo-Commit is.
        let redirect = resp.headers().contains_key("location");
        match &k {
            FaultKind::Status500 | FaultKind::Status503 | FaultKind::TooManyRequests { .. }
                if !redirect =>
            {
                resp = match &k {
                    FaultKind::Status500 => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        None,
                        "Internal Error - We're working hard to fix this as soon as possible!",
                    ),
                    FaultKind::Status503 => {
                        error(StatusCode::SERVICE_UNAVAILABLE, None, "Service Unavailable")
                    }
                    FaultKind::TooManyRequests { retry_after_secs } => {
                        let mut r = error(
                            StatusCode::TOO_MANY_REQUESTS,
                            None,
                            "You have exceeded our hourly quotas for action: resolve. We \
                             invite you to retry later.",
                        );
                        set(&mut r, "retry-after", &retry_after_secs.to_string());
                        r
                    }
                    _ => unreachable!("matched above"),
                };
                injected = Some(k);
            }
            FaultKind::Reset if !redirect => {
                s.faults.lock().count(&k);
                guard.set_outcome(0, Some(k));
                return None;
            }
            FaultKind::CommitChange => {
                if let Some(sha) = resp
                    .headers()
                    .get("x-repo-commit")
                    .and_then(|v| v.to_str().ok())
                    .map(other_commit)
                {
                    set(&mut resp, "x-repo-commit", &sha);
                    injected = Some(k);
                }
            }
            _ => {}
        }
    }
    if let Some(k) = &injected {
        s.faults.lock().count(k);
    }
    let plan = body_plan(&shaping, draw.slow.filter(|_| serves_range_body(&resp)));
    if let Some(kind) = plan.slow {
        guard.set_slow(kind);
    }
    if (shaping.bytes_per_sec.is_some() || plan.slow.is_some()) && parts.method != Method::HEAD {
        resp = shaped(&s.shaping, resp, plan.body);
    }
    set(
        &mut resp,
        "x-request-id",
        &format!("Root=1-fakehub-{:08x}", guard.id()),
    );
    guard.set_outcome(resp.status().as_u16(), injected);
    Some(tracked(resp, guard))
}

/// True for a 206 or 200 response: the byte-range responses a slow draw applies to (the caller
/// drew only for ranged GETs on byte-serving paths).
fn serves_range_body(resp: &Response) -> bool {
    matches!(resp.status(), StatusCode::PARTIAL_CONTENT | StatusCode::OK)
}

/// A body plan and the slow kind it applies.
struct SlowApplied {
    body: BodyPlan,
    slow: Option<SlowKind>,
}

/// What a slow draw does to the body under `shaping`: a stall always applies; a crawl needs a
/// rate cap to divide.
fn body_plan(shaping: &Shaping, slow: Option<SlowPlan>) -> SlowApplied {
    let none = SlowApplied {
        body: BodyPlan::default(),
        slow: None,
    };
    let Some(plan) = slow else { return none };
    match plan.kind {
        SlowKind::Stall => SlowApplied {
            body: BodyPlan {
                stall: Some((plan.at, shaping.stall)),
                ..BodyPlan::default()
            },
            slow: Some(SlowKind::Stall),
        },
        SlowKind::Crawl if shaping.bytes_per_sec.is_some() => SlowApplied {
            body: BodyPlan {
                crawl_factor: Some(shaping.crawl_factor),
                ..BodyPlan::default()
            },
            slow: Some(SlowKind::Crawl),
        },
        SlowKind::Crawl => none,
    }
}

// ---------------------------------------------------------------------------------------------
// Auth and repo lookup

#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Anonymous,
    Full,
    Unapproved,
}

fn parse_auth(s: &Shared, headers: &HeaderMap) -> Result<Auth, Response> {
    let Some(v) = headers.get("authorization") else {
        return Ok(Auth::Anonymous);
    };
    let invalid = || {
        error(
            StatusCode::UNAUTHORIZED,
            None,
            "Invalid credentials in Authorization header",
        )
    };
    let v = v.to_str().map_err(|_| invalid())?.trim();
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ if v.is_empty() => return Ok(Auth::Anonymous),
        _ => return Err(invalid()),
    };
    if token.is_empty() {
        return Ok(Auth::Anonymous);
    }
    s.tokens.read().get(token).copied().ok_or_else(invalid)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Metadata endpoints: gated repos answer without approval.
    Meta,
    /// File content: gated repos need approval.
    Files,
}

fn repo_not_found(auth: Auth) -> Response {
    let status = if auth == Auth::Anonymous {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::NOT_FOUND
    };
    error(status, Some("RepoNotFound"), "Repository not found")
}

fn can_see(repo: &Repo, auth: Auth) -> bool {
    repo.access != Access::Private || auth == Auth::Full
}

/// Where the org and name segments sit in the split raw path, to rebuild a renamed repo's URL.
struct IdPos {
    org: usize,
    name: usize,
}

/// Finds the repo, applying renames (307 to the new id) and access rules.
#[allow(clippy::too_many_arguments)]
fn lookup<'a>(
    fx: &'a Fixtures,
    t: RepoType,
    id: &str,
    auth: Auth,
    need: Need,
    segs: &[&str],
    pos: IdPos,
    uri: &Uri,
) -> Result<&'a Repo, Response> {
    let Some(repo) = fx.repo(t, id) else {
        if let Some(new) = fx
            .repos
            .iter()
            .find(|r| r.repo_type == t && r.renamed_from.iter().any(|o| o == id))
        {
            if can_see(new, auth) {
                let (org, name) = new.id.split_once('/').unwrap_or(("", new.id.as_str()));
                let mut s: Vec<String> = segs.iter().map(|x| x.to_string()).collect();
                s[pos.org] = org.to_string();
                s[pos.name] = name.to_string();
                let mut loc = format!("/{}", s.join("/"));
                if let Some(q) = uri.query() {
                    loc.push('?');
                    loc.push_str(q);
                }
                let mut r = text_response(
                    StatusCode::TEMPORARY_REDIRECT,
                    &format!("Temporary Redirect. Redirecting to {loc}"),
                );
                set(&mut r, "location", &loc);
                return Err(r);
            }
        }
        return Err(repo_not_found(auth));
    };
    if !can_see(repo, auth) {
        return Err(repo_not_found(auth));
    }
    if repo.access == Access::Gated && need == Need::Files && auth != Auth::Full {
        let kind = repo.repo_type.singular();
        let url = format!(
            "https://huggingface.co/{}{}",
            repo.repo_type.url_prefix(),
            repo.id
        );
        return Err(if auth == Auth::Anonymous {
            error(
                StatusCode::UNAUTHORIZED,
                Some("GatedRepo"),
                &format!(
                    "Access to {kind} {} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                    repo.id
                ),
            )
        } else {
            error(
                StatusCode::FORBIDDEN,
                Some("GatedRepo"),
                &format!(
                    "Access to {kind} {} is restricted and you are not in the authorized list. Visit {url} to ask for access.",
                    repo.id
                ),
            )
        });
    }
    Ok(repo)
}

fn revision_not_found(rev: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        Some("RevisionNotFound"),
        &format!("Invalid rev id: {rev}"),
    )
}

fn entry_not_found(commit: &str) -> Response {
    let mut r = error(
        StatusCode::NOT_FOUND,
        Some("EntryNotFound"),
        "Entry not found",
    );
    set(&mut r, "x-repo-commit", commit);
    r
}

/// Splits raw segments after `/tree/` or `/resolve/` into (revision, decoded path segments):
/// the longest prefix naming a ref or commit wins, else the first segment is the revision.
fn split_rev(repo: &Repo, rest: &[&str]) -> Result<(String, Vec<String>), Response> {
    let decoded = rest
        .iter()
        .map(|s| decode(s))
        .collect::<Result<Vec<_>, _>>()?;
    if decoded.is_empty() || decoded[0].is_empty() {
        return Err(bad_request("Missing revision"));
    }
    for k in (1..=decoded.len()).rev() {
        let cand = decoded[..k].join("/");
        if repo.commit_index(&cand).is_some() {
            return Ok((cand, decoded[k..].to_vec()));
        }
    }
    Ok((decoded[0].clone(), decoded[1..].to_vec()))
}

// ---------------------------------------------------------------------------------------------
// Entries

fn is_lfs(s: &Shared, path: &str, data: &FileData) -> bool {
    if data.is_empty() {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    data.len() >= s.opts.lfs_threshold
        || [".safetensors", ".bin", ".parquet", ".gguf"]
            .iter()
            .any(|e| lower.ends_with(e))
}

fn lfs_pointer(data: &FileData) -> String {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        data.sha256_hex(),
        data.len()
    )
}

fn pointer_blob_sha1(pointer: &str) -> String {
    let mut v = format!("blob {}\0", pointer.len()).into_bytes();
    v.extend_from_slice(pointer.as_bytes());
    sha1_hex(&v)
}

fn file_entry(s: &Shared, path: &str, data: &FileData) -> Value {
    if is_lfs(s, path, data) {
        let pointer = lfs_pointer(data);
        json!({"type": "file", "oid": pointer_blob_sha1(&pointer), "size": data.len(), "path": path,
               "lfs": {"oid": data.sha256_hex(), "size": data.len(), "pointerSize": pointer.len()}})
    } else {
        json!({"type": "file", "oid": data.git_blob_sha1(), "size": data.len(), "path": path})
    }
}

fn dir_oid(commit: &Commit, dir: &str) -> String {
    let prefix = format!("{dir}/");
    let mut text = String::from("tree\0");
    for (p, d) in commit.files.range(prefix.clone()..) {
        let Some(rel) = p.strip_prefix(&prefix) else {
            break;
        };
        text.push_str(rel);
        text.push('\0');
        text.push_str(&d.identity());
        text.push('\n');
    }
    sha1_hex(text.as_bytes())
}

fn dir_entry(commit: &Commit, dir: &str) -> Value {
    json!({"type": "directory", "oid": dir_oid(commit, dir), "size": 0, "path": dir})
}

fn is_dir(commit: &Commit, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    commit
        .files
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(p, _)| p.starts_with(&prefix))
}

/// The newest commit at or before `ci` since which `path` (file or directory) is unchanged.
fn last_commit(repo: &Repo, ci: usize, path: &str, dir: bool) -> Value {
    let state = |c: &Commit| -> Option<String> {
        if dir {
            is_dir(c, path).then(|| dir_oid(c, path))
        } else {
            c.files.get(path).map(|d| d.identity())
        }
    };
    let cur = state(&repo.commits[ci]);
    let mut j = ci;
    while j > 0 && state(&repo.commits[j - 1]) == cur {
        j -= 1;
    }
    let c = &repo.commits[j];
    json!({"id": c.sha, "title": c.title, "date": c.date})
}

fn entry_json(s: &Shared, repo: &Repo, ci: usize, e: &Listed, expand: bool) -> Value {
    let commit = &repo.commits[ci];
    let mut v = match e {
        Listed::Dir(d) => dir_entry(commit, d),
        Listed::File(p) => match commit.files.get(p) {
            Some(data) => file_entry(s, p, data),
            None => json!({"type": "file", "path": p}),
        },
    };
    if expand {
        let (p, dir) = match e {
            Listed::Dir(d) => (d.as_str(), true),
            Listed::File(f) => (f.as_str(), false),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("lastCommit".into(), last_commit(repo, ci, p, dir));
            if !dir {
                o.insert(
                    "securityFileStatus".into(),
                    json!({"status": "safe", "avScan": {"status": "safe"}, "pickleImportScan": {"status": "unscanned"}}),
                );
            }
        }
    }
    v
}

enum Listed {
    Dir(String),
    File(String),
}

/// Lists `dir` ("" = root) at `commit`: directories first, then files, each sorted by path.
/// `None` if `dir` is not a directory.
fn list_tree(commit: &Commit, dir: &str, recursive: bool) -> Option<Vec<Listed>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let files: Vec<&String> = commit
        .files
        .range(prefix.clone()..)
        .map(|(p, _)| p)
        .take_while(|p| p.starts_with(&prefix))
        .collect();
    if files.is_empty() && !dir.is_empty() {
        return None;
    }
    let mut dirs = std::collections::BTreeSet::new();
    let mut out_files = Vec::new();
    if recursive {
        for d in all_dirs(files.iter().copied()) {
            if d.len() > prefix.len() && d.starts_with(&prefix) || prefix.is_empty() {
                dirs.insert(d);
            }
        }
        out_files = files.iter().map(|p| p.to_string()).collect();
    } else {
        for p in &files {
            let rest = &p[prefix.len()..];
            match rest.find('/') {
                Some(i) => {
                    dirs.insert(format!("{prefix}{}", &rest[..i]));
                }
                None => out_files.push(p.to_string()),
            }
        }
    }
    let mut v: Vec<Listed> = dirs.into_iter().map(Listed::Dir).collect();
    v.extend(out_files.into_iter().map(Listed::File));
    Some(v)
}

// ---------------------------------------------------------------------------------------------
// Hub routes

fn hub(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    fault: Option<&FaultKind>,
) -> Response {
    let auth = match parse_auth(s, headers) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let path = uri.path();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let fx = s.fixtures.read();
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if let Some(r) = buckets::route(s, method, uri, &segs, body, auth) {
        return r;
    }

    if segs.first() == Some(&"api") {
        if segs.get(1) == Some(&"resolve-cache") {
            if segs.len() < 7 || !get_or_head {
                return not_found_route();
            }
            let Some(t) = RepoType::from_plural(segs[2]) else {
                return not_found_route();
            };
            let id = match (decode(segs[3]), decode(segs[4])) {
                (Ok(o), Ok(n)) => format!("{o}/{n}"),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let repo = match lookup(
                &fx,
                t,
                &id,
                auth,
                Need::Files,
                &segs,
                IdPos { org: 3, name: 4 },
                uri,
            ) {
                Ok(r) => r,
                Err(r) => return r,
            };
            return resolve_cache(repo, &segs[5..], method, headers, fault);
        }
        let Some(t) = segs.get(1).and_then(|p| RepoType::from_plural(p)) else {
            return not_found_route();
        };
        if segs.len() < 4 {
            return not_found_route();
        }
        let id = match (decode(segs[2]), decode(segs[3])) {
            (Ok(o), Ok(n)) => format!("{o}/{n}"),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let rest = &segs[4..];
        let action = rest.first().copied().unwrap_or("");
        let need = if action == "auth-check" {
            Need::Files
        } else {
            Need::Meta
        };
        let repo = match lookup(
            &fx,
            t,
            &id,
            auth,
            need,
            &segs,
            IdPos { org: 2, name: 3 },
            uri,
        ) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let params = query_params(uri.query());
        return match (action, rest.len()) {
            ("", _) if get_or_head => repo_info(s, repo, "main", &params),
            ("revision", n) if n >= 2 && get_or_head => {
                let parts = match rest[1..]
                    .iter()
                    .filter(|x| !x.is_empty())
                    .map(|x| decode(x))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(p) => p,
                    Err(r) => return r,
                };
                repo_info(s, repo, &parts.join("/"), &params)
            }
            ("tree", n) if n >= 2 && get_or_head => tree(s, repo, &rest[1..], uri, &params),
            ("paths-info", n) if n >= 2 && method == Method::POST => {
                paths_info(s, repo, &rest[1..], headers, body)
            }
            ("refs", 1) if get_or_head => refs(repo),
            ("auth-check", 1) if get_or_head => json_response(&json!({})),
            _ => not_found_route(),
        };
    }

    // /{prefix}{org}/{name}/resolve/{rev}/{path}
    let (t, org_i) = match segs.first() {
        Some(&"datasets") if segs.get(3) == Some(&"resolve") => (RepoType::Dataset, 1),
        Some(&"spaces") if segs.get(3) == Some(&"resolve") => (RepoType::Space, 1),
        _ if segs.get(2) == Some(&"resolve") => (RepoType::Model, 0),
        _ => return not_found_route(),
    };
    if !get_or_head {
        return not_found_route();
    }
    let id = match (decode(segs[org_i]), decode(segs[org_i + 1])) {
        (Ok(o), Ok(n)) => format!("{o}/{n}"),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let repo = match lookup(
        &fx,
        t,
        &id,
        auth,
        Need::Files,
        &segs,
        IdPos {
            org: org_i,
            name: org_i + 1,
        },
        uri,
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    resolve(s, repo, &segs[org_i + 3..], method, headers, fault)
}

fn repo_info(s: &Shared, repo: &Repo, rev: &str, params: &[(String, String)]) -> Response {
    let Some(ci) = repo.commit_index(rev) else {
        return revision_not_found(rev);
    };
    let commit = &repo.commits[ci];
    let blobs = truthy(param(params, "blobs"));
    let siblings: Vec<Value> = commit
        .files
        .iter()
        .map(|(p, d)| {
            if !blobs {
                return json!({ "rfilename": p });
            }
            let mut v = json!({"rfilename": p, "size": d.len()});
            if let Some(o) = v.as_object_mut() {
                if is_lfs(s, p, d) {
                    let pointer = lfs_pointer(d);
                    o.insert("blobId".into(), pointer_blob_sha1(&pointer).into());
                    o.insert(
                        "lfs".into(),
                        json!({"sha256": d.sha256_hex(), "size": d.len(), "pointerSize": pointer.len()}),
                    );
                } else {
                    o.insert("blobId".into(), d.git_blob_sha1().into());
                }
            }
            v
        })
        .collect();
    let author = repo.id.split_once('/').map_or("", |(a, _)| a);
    let created = repo
        .commits
        .first()
        .map(|c| c.date.clone())
        .unwrap_or_default();
    let mut v = json!({
        "_id": &sha1_hex(repo.id.as_bytes())[..24],
        "id": repo.id,
        "author": author,
        "sha": commit.sha,
        "lastModified": commit.date,
        "createdAt": created,
        "private": repo.access == Access::Private,
        "gated": if repo.access == Access::Gated { json!("manual") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": commit.files.values().map(|d| d.len()).sum::<u64>(),
    });
    if let Some(o) = v.as_object_mut() {
        match repo.repo_type {
            RepoType::Model => {
                o.insert("modelId".into(), repo.id.clone().into());
                if let Some(cfg) = commit
                    .files
                    .get("config.json")
                    .filter(|d| d.len() < (1 << 20))
                    .and_then(|d| serde_json::from_slice::<Value>(&d.to_vec()).ok())
                {
                    o.insert("library_name".into(), "transformers".into());
                    let mut c = serde_json::Map::new();
                    for k in ["architectures", "model_type"] {
                        if let Some(x) = cfg.get(k) {
                            c.insert(k.into(), x.clone());
                        }
                    }
                    o.insert("config".into(), Value::Object(c));
                }
            }
            RepoType::Space => {
                o.insert("sdk".into(), "gradio".into());
            }
            RepoType::Dataset => {}
        }
    }
    let mut r = json_response(&v);
    set(&mut r, "x-repo-commit", &commit.sha);
    r
}

fn tree(
    s: &Shared,
    repo: &Repo,
    rest: &[&str],
    uri: &Uri,
    params: &[(String, String)],
) -> Response {
    let (rev, path) = match split_rev(repo, rest) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(ci) = repo.commit_index(&rev) else {
        return revision_not_found(&rev);
    };
    let commit = &repo.commits[ci];
    let dir = path
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    let recursive = truthy(param(params, "recursive"));
    let expand = truthy(param(params, "expand"));
    let Some(all) = list_tree(commit, &dir, recursive) else {
        return entry_not_found(&commit.sha);
    };
    let page = if expand {
        s.opts.page_size.min(50)
    } else {
        s.opts.page_size
    }
    .max(1);
    let start = match param(params, "cursor") {
        None => 0,
        Some(c) => match parse_cursor(c) {
            Some(n) => n,
            None => return bad_request("Invalid cursor"),
        },
    };
    let end = all.len().min(start.saturating_add(page));
    let items: Vec<Value> = all
        .get(start.min(all.len())..end)
        .unwrap_or(&[])
        .iter()
        .map(|e| entry_json(s, repo, ci, e, expand))
        .collect();
    let mut r = json_response(&Value::Array(items));
    set(&mut r, "x-repo-commit", &commit.sha);
    if end < all.len() {
        let mut q: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .map(|p| p.to_string())
            .collect();
        q.push(format!("cursor={}", make_cursor(end)));
        let link = format!(
            "<{}{}?{}>; rel=\"next\"",
            s.hub_endpoint,
            uri.path(),
            q.join("&")
        );
        set(&mut r, "link", &link);
    }
    r
}

fn make_cursor(offset: usize) -> String {
    crate::fixtures::hex(format!("fakehub:{offset}").as_bytes())
}

fn parse_cursor(c: &str) -> Option<usize> {
    if !c.len().is_multiple_of(2) || !c.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&c[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?)
        .ok()?
        .strip_prefix("fakehub:")?
        .parse()
        .ok()
}

fn paths_info(
    s: &Shared,
    repo: &Repo,
    rest: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let rev = match rest
        .iter()
        .filter(|x| !x.is_empty())
        .map(|x| decode(x))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p.join("/"),
        Err(r) => return r,
    };
    let Some(ci) = repo.commit_index(&rev) else {
        return revision_not_found(&rev);
    };
    let commit = &repo.commits[ci];
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (paths, expand): (Vec<String>, bool) = if is_json {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return bad_request("Invalid JSON body");
        };
        let paths = v
            .get("paths")
            .and_then(|p| p.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        (
            paths,
            v.get("expand").and_then(|e| e.as_bool()).unwrap_or(false),
        )
    } else {
        let params = form_params(body);
        let paths = params
            .iter()
            .filter(|(k, _)| k == "paths" || k == "paths[]")
            .map(|(_, v)| v.clone())
            .collect();
        (paths, truthy(param(&params, "expand")))
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_matches('/').to_string();
        if p.is_empty() || !seen.insert(p.clone()) {
            continue;
        }
        let listed = if commit.files.contains_key(&p) {
            Listed::File(p)
        } else if is_dir(commit, &p) {
            Listed::Dir(p)
        } else {
            continue;
        };
        out.push(entry_json(s, repo, ci, &listed, expand));
    }
    let mut r = json_response(&Value::Array(out));
    set(&mut r, "x-repo-commit", &commit.sha);
    r
}

fn refs(repo: &Repo) -> Response {
    let mut branches = Vec::new();
    let mut tags = Vec::new();
    let mut converts = Vec::new();
    let mut prs = Vec::new();
    for (name, sha) in &repo.refs {
        let looks_like_tag = |n: &str| {
            let mut c = n.chars();
            match c.next() {
                Some('v') => c.next().is_some_and(|x| x.is_ascii_digit()),
                Some(x) => x.is_ascii_digit(),
                None => false,
            }
        };
        if name.starts_with("refs/pr/") {
            prs.push(json!({"name": name, "ref": name, "targetCommit": sha}));
        } else if let Some(c) = name.strip_prefix("refs/convert/") {
            converts.push(json!({"name": c, "ref": name, "targetCommit": sha}));
        } else if let Some(t) = name.strip_prefix("refs/tags/") {
            tags.push(json!({"name": t, "ref": name, "targetCommit": sha}));
        } else if let Some(b) = name.strip_prefix("refs/heads/") {
            branches.push(json!({"name": b, "ref": name, "targetCommit": sha}));
        } else if looks_like_tag(name) {
            tags.push(
                json!({"name": name, "ref": format!("refs/tags/{name}"), "targetCommit": sha}),
            );
        } else {
            branches.push(
                json!({"name": name, "ref": format!("refs/heads/{name}"), "targetCommit": sha}),
            );
        }
    }
    json_response(&json!({
        "branches": branches, "tags": tags, "converts": converts, "pullRequests": prs
    }))
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim().trim_start_matches("W/").trim_matches('"');
                t == etag || t == "*"
            })
        })
}

fn resolve(
    s: &Shared,
    repo: &Repo,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    fault: Option<&FaultKind>,
) -> Response {
    let (rev, path) = match split_rev(repo, rest) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(ci) = repo.commit_index(&rev) else {
        return revision_not_found(&rev);
    };
    let commit = &repo.commits[ci];
    let path = path.join("/");
    let Some(data) = commit.files.get(&path) else {
        return entry_not_found(&commit.sha);
    };
    let extra_direct = |etag: &str| {
        vec![
            ("etag", format!("\"{etag}\"")),
            ("x-repo-commit", commit.sha.clone()),
        ]
    };
    if data.is_empty() {
        let sha1 = data.git_blob_sha1();
        return serve_bytes(method, headers, data, &sha1, extra_direct(&sha1), fault);
    }
    if is_lfs(s, &path, data) && s.opts.resolve_direct {
        let sha = data.sha256_hex();
        // The mirror's own validator, like nginx's "<mtime>-<size>", not the sha256.
        let own = format!("{}-{:x}", &sha[..12], data.len());
        let extra = vec![
            ("etag", format!("\"{own}\"")),
            ("x-repo-commit", commit.sha.clone()),
            ("x-linked-etag", format!("\"{sha}\"")),
            ("x-linked-size", data.len().to_string()),
        ];
        return serve_bytes(method, headers, data, &own, extra, fault);
    }
    if is_lfs(s, &path, data) {
        let sha = data.sha256_hex();
        s.cdn_objects.lock().insert(sha.clone(), data.clone());
        let ttl = s.opts.redirect_ttl.as_secs_f64();
        let now = now_secs_f64();
        let expires = if ttl <= 0.0 {
            now.floor() as u64
        } else {
            (now + ttl).ceil() as u64
        };
        let loc = format!(
            "{}/cdn/{sha}?Expires={expires}&Signature={}&Key-Pair-Id=K1",
            s.cdn_endpoint,
            sign(&sha, expires)
        );
        let mut r = text_response(StatusCode::FOUND, &format!("Found. Redirecting to {loc}"));
        set(&mut r, "location", &loc);
        set(&mut r, "x-linked-etag", &format!("\"{sha}\""));
        set(&mut r, "x-linked-size", &data.len().to_string());
        set(&mut r, "x-repo-commit", &commit.sha);
        return r;
    }
    let sha1 = data.git_blob_sha1();
    if repo.access != Access::Public {
        return serve_bytes(method, headers, data, &sha1, extra_direct(&sha1), fault);
    }
    let loc = format!(
        "/api/resolve-cache/{}/{}/{}/{}?etag=%22{sha1}%22",
        repo.repo_type.api_plural(),
        repo.id,
        commit.sha,
        quote_path(&path)
    );
    let mut r = text_response(
        StatusCode::TEMPORARY_REDIRECT,
        &format!("Temporary Redirect. Redirecting to {loc}"),
    );
    set(&mut r, "location", &loc);
    set(&mut r, "x-repo-commit", &commit.sha);
    r
}

fn resolve_cache(
    repo: &Repo,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    fault: Option<&FaultKind>,
) -> Response {
    let decoded = match rest
        .iter()
        .map(|x| decode(x))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some((sha, path)) = decoded.split_first() else {
        return not_found_route();
    };
    let Some(commit) = repo.commits.iter().find(|c| is_sha40(sha) && &c.sha == sha) else {
        return revision_not_found(sha);
    };
    let path = path.join("/");
    let Some(data) = commit.files.get(&path) else {
        return entry_not_found(&commit.sha);
    };
    let sha1 = data.git_blob_sha1();
    let extra = vec![
        ("etag", format!("\"{sha1}\"")),
        ("x-repo-commit", commit.sha.clone()),
    ];
    serve_bytes(method, headers, data, &sha1, extra, fault)
}

// ---------------------------------------------------------------------------------------------
// Bytes with Range support

enum RangeReq {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(h: Option<&str>, size: u64) -> RangeReq {
    let Some(h) = h else { return RangeReq::Full };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::Full;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::Full,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.min(size - 1))
}

fn serve_bytes(
    method: &Method,
    headers: &HeaderMap,
    data: &FileData,
    etag: &str,
    extra: Vec<(&'static str, String)>,
    fault: Option<&FaultKind>,
) -> Response {
    let size = data.len();
    let with_extra = |mut r: Response| {
        for (k, v) in &extra {
            set(&mut r, k, v);
        }
        set(&mut r, "accept-ranges", "bytes");
        r
    };
    if etag_matches(headers, etag) {
        return with_extra(response(StatusCode::NOT_MODIFIED, Body::empty()));
    }
    let range = headers.get("range").and_then(|v| v.to_str().ok());
    let (mut status, mut start, mut end_excl) = match parse_range(range, size) {
        RangeReq::Full => (StatusCode::OK, 0, size),
        RangeReq::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        RangeReq::Unsatisfiable => {
            let mut r = text_response(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable");
            set(&mut r, "content-range", &format!("bytes */{size}"));
            return with_extra(r);
        }
    };
    // Body-level faults apply to ranged GETs answered with 206 only.
    let fault = fault.filter(|_| status == StatusCode::PARTIAL_CONTENT && method == Method::GET);
    let mut injected = None;
    let mut stall = None;
    let mut cut_at = None;
    match fault {
        Some(FaultKind::FullBody) => {
            (status, start, end_excl) = (StatusCode::OK, 0, size);
            injected = fault;
        }
        Some(FaultKind::WrongContentRange) => {
            let len = end_excl - start;
            // One block later (the requested length), else one block earlier, else one byte.
            let shifted = if end_excl + len <= size {
                Some(start + len)
            } else if start >= len {
                Some(start - len)
            } else if end_excl < size {
                Some(start + 1)
            } else if start > 0 {
                Some(start - 1)
            } else {
                None
            };
            if let Some(a) = shifted {
                end_excl = (a + len).min(size);
                start = a;
                injected = fault;
            }
        }
        Some(FaultKind::Stall(d)) => {
            stall = Some(*d);
            injected = fault;
        }
        Some(FaultKind::CutBody) => {
            cut_at = Some(start + (end_excl - start) / 2);
            injected = fault;
        }
        _ => {}
    }
    let len = end_excl - start;
    let body = if method == Method::HEAD {
        Body::empty()
    } else if len <= STREAM_CHUNK as u64 && stall.is_none() && cut_at.is_none() {
        Body::from(data.read_at(start, len as usize))
    } else {
        let data = data.clone();
        let stop = cut_at.unwrap_or(end_excl);
        let stream = futures::stream::unfold((start, stall), move |(off, stall)| {
            let data = data.clone();
            async move {
                if let Some(d) = stall {
                    tokio::time::sleep(d).await;
                }
                if off >= end_excl {
                    return None;
                }
                if off >= stop {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "fakehub: body cut (fault injection)",
                    );
                    // An error from the body makes hyper abort the connection mid-body.
                    return Some((Err(e), (end_excl, None)));
                }
                let n = (stop - off).min(STREAM_CHUNK as u64) as usize;
                let chunk = data.read_at(off, n);
                let next = off + n as u64;
                Some((Ok(bytes::Bytes::from(chunk)), (next, None)))
            }
        });
        Body::from_stream(stream)
    };
    let mut r = response(status, body);
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "content-length", &len.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut r,
            "content-range",
            &format!("bytes {start}-{}/{size}", end_excl - 1),
        );
    }
    let r = with_extra(r);
    match injected {
        Some(k) => applied(r, k.clone()),
        None => r,
    }
}

// ---------------------------------------------------------------------------------------------
// CDN

fn cdn_forbidden(msg: &str) -> Response {
    text_response(StatusCode::FORBIDDEN, msg)
}

fn cdn(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fault: Option<&FaultKind>,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let Some(sha) = uri.path().strip_prefix("/cdn/") else {
        return text_response(StatusCode::NOT_FOUND, "Not Found");
    };
    let sha = sha.to_string();
    let params = query_params(uri.query());
    let Some(expires) = param(&params, "Expires").and_then(|e| e.parse::<u64>().ok()) else {
        return cdn_forbidden("Missing or invalid Expires");
    };
    let Some(sig) = param(&params, "Signature") else {
        return cdn_forbidden("Missing Signature");
    };
    if sig != sign(&sha, expires) {
        return cdn_forbidden("Invalid signature");
    }
    if now_secs_f64() >= expires as f64 {
        return cdn_forbidden("Request has expired");
    }
    if fault == Some(&FaultKind::ExpiredRedirect) {
        return applied(
            cdn_forbidden("Request has expired"),
            FaultKind::ExpiredRedirect,
        );
    }
    let cached = s.cdn_objects.lock().get(&sha).cloned();
    let data = match cached {
        Some(d) => d,
        None => {
            let found = {
                let fx = s.fixtures.read();
                let mut found = None;
                'outer: for repo in &fx.repos {
                    for c in &repo.commits {
                        for (p, d) in &c.files {
                            if is_lfs(s, p, d) && d.sha256_hex() == sha {
                                found = Some(d.clone());
                                break 'outer;
                            }
                        }
                    }
                }
                found
            };
            match found {
                Some(d) => {
                    s.cdn_objects.lock().insert(sha.clone(), d.clone());
                    d
                }
                None => return text_response(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
    };
    let etag = sha256_of(sha.as_bytes());
    serve_bytes(
        method,
        headers,
        &data,
        &etag,
        vec![("etag", format!("\"{etag}\""))],
        fault,
    )
}
