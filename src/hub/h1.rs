//! A minimal HTTP/1.1 client for one kind of request: a ranged GET of a remembered CDN URL, whose
//! body is read from the socket straight into the sink's block buffers (issue 11).
//!
//! Through reqwest, a body's bytes are copied from the socket into hyper's read buffer (by the
//! kernel), handed out as `Bytes` chunks, and then copied once more, in user space, into the
//! pool buffer of the block that keeps them. Here the kernel copies them from the socket into
//! the block's buffer itself ([`Receiver::spare`]); over TLS, rustls decrypts into its own buffer
//! and one copy remains, as with reqwest.
//!
//! It takes only the plain case and hands everything else back ([`Outcome::Fallback`], before any
//! body byte is taken) for reqwest to do as before: a status other than 206 (or a 200 for a whole
//! file), a chunked or encoded body, no `Content-Length`, a head it cannot parse in full. Its
//! checks are the ones `range_once` makes: `Content-Range` must be the bytes asked for, of a file
//! of the listed size, and the body exactly that long. It never sends a token: it is used only
//! for URLs off the Hub's origin (see `HttpHub::direct_for`), and never through a proxy.
//!
//! Connections are kept alive per origin (at most `max_idle` idle each, for [`IDLE_FOR`]); the
//! number in use is bounded by the caller (one per range request, under its connection
//! semaphore). A connection whose body was not read to its end, or whose server says `close`, is
//! dropped, never reused. A reused connection that fails before its first response byte (the
//! server closed it while idle) is replaced by a fresh one, once per idle connection.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use url::{Position, Url};

use super::error::redact_url;
use super::wire::parse_content_range;
use super::HubError;
use crate::stats::Stats;

/// The longest response head read.
const MAX_HEAD: usize = 16 << 10;
/// Most header lines parsed (more: the response goes to reqwest).
const MAX_HEADERS: usize = 96;
/// How long an idle connection is kept for reuse.
pub const IDLE_FOR: Duration = Duration::from_secs(30);
/// Bytes read per call while looking for the end of the head (what follows it in the same read
/// is the start of the body, put into the piece by one small copy).
const HEAD_READ: usize = 4096;
/// Scratch memory for a sink whose buffers take [`crate::hub::PieceBuffer::put`] only.
const SCRATCH: usize = 64 << 10;

/// Where [`H1Client::range`] puts a body's bytes: the range being assembled (`http::Pieces`,
/// which hands each piece on as it completes).
pub trait Receiver {
    /// Bytes still missing.
    fn missing(&self) -> u64;
    /// Appends received bytes (a copy); fails if they run past the range.
    fn push(&mut self, data: &[u8]) -> Result<(), String>;
    /// Memory the next bytes may be read into, at most `max` bytes, never past the piece being
    /// filled; empty when the piece's buffer takes [`Receiver::push`] only.
    fn spare(&mut self, max: usize) -> &mut [MaybeUninit<u8>];
    /// Counts `n` bytes read into the last [`Receiver::spare`] as received.
    ///
    /// # Safety
    /// The first `n` bytes of the slice the last `spare` returned were written since, and no
    /// other call on `self` came between.
    unsafe fn advance(&mut self, n: usize);
}

/// What [`H1Client::range`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte asked for arrived, checked, into the range's pieces.
    Done,
    /// The answer was not the plain case this client takes (the reason says which); no byte of
    /// it was taken. Send the request through the general client.
    Fallback(String),
}

/// Where a connection goes: scheme, host, port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &Url) -> Option<Origin> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Origin {
            tls,
            host,
            port: url.port_or_known_default()?,
        })
    }
}

/// A connection, plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the head of a response says, as far as a ranged GET needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, `\r\n\r\n` included: the body starts after them.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// `Content-Length`, when given (and the same in every copy of the header).
    pub content_length: Option<u64>,
    /// `Content-Range`, as given.
    pub content_range: Option<String>,
    /// The connection may serve another request once the body is read: HTTP/1.1 without
    /// `Connection: close`.
    pub keep_alive: bool,
    /// Why the body is not a plain identity body of `Content-Length` bytes, if it is not
    /// (`Transfer-Encoding`, a `Content-Encoding` other than identity, no `Content-Length`).
    pub unusual: Option<String>,
}

/// What parsing a response head found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The whole head.
    Complete(Head),
    /// More bytes are needed.
    Partial,
    /// The head is valid HTTP but not one this client takes (the reason says why).
    Unusual(String),
}

/// Parses the response head at the start of `buf`. Fails on bytes that are not an HTTP/1.x
/// response head, or on conflicting `Content-Length`s.
pub fn parse_head(buf: &[u8]) -> Result<Parsed, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Ok(Parsed::Unusual(format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = resp.code.ok_or("response head without a status")?;
    let mut content_length = None;
    let mut content_range = None;
    let mut keep_alive = resp.version == Some(1);
    let mut unusual = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).map(str::trim);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = value
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!("bad Content-Length {:?}", String::from_utf8_lossy(h.value))
                })?;
            if content_length.is_some_and(|c| c != v) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("content-range") {
            content_range = value.ok().map(str::to_owned);
        } else if name.eq_ignore_ascii_case("connection") {
            let close = value.map_or(true, |v| {
                v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
            });
            if close {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            unusual = Some("a Transfer-Encoding".to_owned());
        } else if name.eq_ignore_ascii_case("content-encoding")
            && !value.is_ok_and(|v| v.eq_ignore_ascii_case("identity"))
        {
            unusual = Some("a Content-Encoding".to_owned());
        }
    }
    if unusual.is_none() && content_length.is_none() && !(100..200).contains(&status) {
        unusual = Some("no Content-Length".to_owned());
    }
    if (100..200).contains(&status) {
        unusual = Some(format!("an interim {status} answer"));
    }
    Ok(Parsed::Complete(Head {
        len,
        status,
        content_length,
        content_range,
        keep_alive,
        unusual,
    }))
}

/// The request for bytes `offset..=end` of `url` (no token, no body), or `None` for a URL this
/// client does not send (credentials in it, bytes a request line cannot carry).
fn request(url: &Url, offset: u64, end: u64) -> Option<Vec<u8>> {
    let target = &url[Position::BeforePath..Position::AfterQuery];
    let host = &url[Position::BeforeHost..Position::AfterPort];
    if target.is_empty()
        || host.is_empty()
        || !url.username().is_empty()
        || url.password().is_some()
        || !target
            .bytes()
            .chain(host.bytes())
            .all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    Some(
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={offset}-{end}\r\nUser-Agent: hubfs/{}\r\nAccept: */*\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes(),
    )
}

/// Why reading a response head failed.
enum HeadError {
    /// The connection failed or closed; `any` says whether a byte of the answer had arrived.
    Io { error: io::Error, any: bool },
    /// The bytes are not an HTTP response head.
    Bad(String),
    /// Longer than [`MAX_HEAD`].
    TooLong,
}

/// Sends `req` on `io` and reads the head of the answer: the bytes read (the head and what of the
/// body came with it) and the head.
async fn exchange(io: &mut Io, req: &[u8]) -> Result<(Vec<u8>, Parsed), HeadError> {
    let fail = |error, any| HeadError::Io { error, any };
    io.write_all(req).await.map_err(|e| fail(e, false))?;
    io.flush().await.map_err(|e| fail(e, false))?;
    let mut buf = Vec::with_capacity(HEAD_READ);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        let filled = buf.len();
        buf.resize(filled + HEAD_READ, 0);
        let n = match io.read(&mut buf[filled..]).await {
            Ok(n) => n,
            Err(e) => return Err(fail(e, filled > 0)),
        };
        buf.truncate(filled + n);
        if n == 0 {
            let error = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a whole response head",
            );
            return Err(fail(error, filled > 0));
        }
        match parse_head(&buf).map_err(HeadError::Bad)? {
            Parsed::Partial => continue,
            parsed => return Ok((buf, parsed)),
        }
    }
}

/// The TLS settings the direct client uses: the same trust as reqwest's (Mozilla's roots built
/// in, the system's store, the extra bundles; see [`super::tls`]), rustls with ring, HTTP/1.1.
fn tls_config(bundles: &[PathBuf]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for path in bundles {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("the CA bundle {} is not PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate of {} is unusable: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// An I/O error as the client's error: a TLS failure (see [`super::tls::tls_failure`]) or a
/// network one, with `what` in front.
fn io_error(url: &str, e: &io::Error, what: &str) -> HubError {
    match super::tls::tls_failure(e) {
        Some(message) => HubError::Tls {
            url: url.to_owned(),
            message,
        },
        None => HubError::Network {
            url: url.to_owned(),
            message: format!("{what}: {e}"),
        },
    }
}

/// The direct HTTP/1.1 client for ranged GETs; see the module doc.
pub struct H1Client {
    /// Deadline for connecting and receiving the head, and for each read of the body.
    timeout: Duration,
    ca_bundles: Vec<PathBuf>,
    /// Made at the first https request (reading the system's store takes a while).
    tls: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
    idle: Mutex<HashMap<Origin, Vec<(Io, Instant)>>>,
    max_idle: usize,
}

impl H1Client {
    /// A client whose every step (connect and head; each read of a body) must finish within
    /// `timeout`, trusting what reqwest trusts plus `ca_bundles`, keeping at most `max_idle` idle
    /// connections per origin.
    pub fn new(timeout: Duration, ca_bundles: Vec<PathBuf>, max_idle: usize) -> Self {
        H1Client {
            timeout,
            ca_bundles,
            tls: OnceLock::new(),
            idle: Mutex::new(HashMap::new()),
            max_idle,
        }
    }

    fn connector(&self) -> Result<&tokio_rustls::TlsConnector, String> {
        self.tls
            .get_or_init(|| {
                tls_config(&self.ca_bundles).map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Idle connections to `origin` now.
    pub fn idle_count(&self, url: &Url) -> usize {
        Origin::of(url)
            .and_then(|o| self.idle.lock().get(&o).map(Vec::len))
            .unwrap_or(0)
    }

    fn take_idle(&self, origin: &Origin) -> Option<Io> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(origin)?;
        while let Some((io, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(io);
            }
        }
        None
    }

    fn put_idle(&self, origin: Origin, io: Io) {
        let mut idle = self.idle.lock();
        let list = idle.entry(origin).or_default();
        list.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if list.len() < self.max_idle {
            list.push((io, Instant::now()));
        }
    }

    async fn connect(&self, origin: &Origin, shown: &str) -> Result<Io, HubError> {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| io_error(shown, &e, "cannot connect"))?;
        // Small requests go out at once (as reqwest's are).
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Io::Plain(tcp));
        }
        let connector = self.connector().map_err(|message| HubError::Tls {
            url: shown.to_owned(),
            message,
        })?;
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone()).map_err(|e| {
            HubError::Tls {
                url: shown.to_owned(),
                message: format!("not a TLS server name: {e}"),
            }
        })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| io_error(shown, &e, "TLS handshake failed"))?;
        Ok(Io::Tls(Box::new(tls)))
    }

    /// GETs bytes `offset..=end` of `url` (a file of `size` bytes) into `acc`, which lacks exactly
    /// those bytes, reading the body straight into the pieces' memory. Each attempt of a request
    /// counts in `stats.http_requests`. What arrives stays in `acc` when the body is cut.
    pub async fn range(
        &self,
        url: &Url,
        offset: u64,
        end: u64,
        size: u64,
        acc: &mut (dyn Receiver + Send),
        stats: &Stats,
    ) -> Result<Outcome, HubError> {
        let len = end - offset + 1;
        debug_assert_eq!(len, acc.missing());
        let (Some(origin), Some(req)) = (Origin::of(url), request(url, offset, end)) else {
            return Ok(Outcome::Fallback("a URL it does not send".into()));
        };
        let shown = redact_url(url.as_str());
        let timed_out = || HubError::Timeout {
            url: shown.clone(),
            after: self.timeout,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (mut io, buf, head) = loop {
            let (mut io, reused) = match self.take_idle(&origin) {
                Some(io) => (io, true),
                None => {
                    let io = tokio::time::timeout_at(deadline, self.connect(&origin, &shown))
                        .await
                        .map_err(|_| timed_out())??;
                    (io, false)
                }
            };
            Stats::add(&stats.http_requests, 1);
            match tokio::time::timeout_at(deadline, exchange(&mut io, &req)).await {
                Err(_) => return Err(timed_out()),
                Ok(Ok((buf, parsed))) => break (io, buf, parsed),
                // Closed by the server while idle: not an answer; a fresh connection is tried.
                Ok(Err(HeadError::Io { any: false, .. })) if reused => continue,
                Ok(Err(HeadError::Io { error, any })) => {
                    let what = if any {
                        "connection broke in the response head"
                    } else {
                        "no answer"
                    };
                    return Err(io_error(&shown, &error, what));
                }
                Ok(Err(HeadError::Bad(message))) => {
                    return Err(HubError::Protocol {
                        url: shown,
                        message,
                    })
                }
                Ok(Err(HeadError::TooLong)) => {
                    return Ok(Outcome::Fallback(format!(
                        "a response head over {MAX_HEAD} bytes"
                    )))
                }
            }
        };
        let head = match head {
            Parsed::Complete(h) => h,
            Parsed::Unusual(why) => return Ok(Outcome::Fallback(why)),
            Parsed::Partial => unreachable!("exchange reads until the head is complete"),
        };
        if let Some(why) = head.unusual {
            return Ok(Outcome::Fallback(why));
        }
        match head.status {
            206 => check_content_range(head.content_range.as_deref(), offset, end, size, &shown)?,
            200 if offset == 0 && len == size => {}
            s => return Ok(Outcome::Fallback(format!("status {s}"))),
        }
        let body_len = head.content_length.unwrap_or_default();
        if body_len != len {
            return Err(HubError::Protocol {
                url: shown,
                message: format!(
                    "Content-Length {body_len} for the {len} bytes of bytes {offset}-{end}"
                ),
            });
        }
        // The start of the body that came with the head: one small copy.
        let early = &buf[head.len..];
        let take = early.len().min(len as usize);
        let protocol = |message| HubError::Protocol {
            url: shown.clone(),
            message,
        };
        acc.push(&early[..take]).map_err(protocol)?;
        // Bytes past the body would be an answer to nothing: the connection is not reused.
        let reusable = head.keep_alive && early.len() == take;
        let mut remaining = len - take as u64;
        let mut scratch = Vec::new();
        while remaining > 0 {
            let max = usize::try_from(remaining).unwrap_or(usize::MAX);
            let spare = acc.spare(max);
            let read: Result<usize, ReadError> = if spare.is_empty() {
                // A sink without spare room: through scratch memory and `put`.
                scratch.resize(SCRATCH, 0);
                let lim = max.min(SCRATCH);
                match tokio::time::timeout(self.timeout, io.read(&mut scratch[..lim])).await {
                    Ok(Ok(n)) => acc
                        .push(&scratch[..n])
                        .map(|()| n)
                        .map_err(|m| ReadError::Hub(protocol(m))),
                    Ok(Err(e)) => Err(ReadError::Io(e)),
                    Err(_) => Err(ReadError::Hub(timed_out())),
                }
            } else {
                let n = read_into(&mut io, spare, self.timeout).await;
                if let Ok(Ok(n)) = n {
                    // SAFETY: `read_into` returns how many bytes of `spare` the read filled,
                    // and nothing touched `acc` since `spare`.
                    unsafe { acc.advance(n) };
                }
                match n {
                    Ok(Ok(n)) => Ok(n),
                    Ok(Err(e)) => Err(ReadError::Io(e)),
                    Err(_) => Err(ReadError::Hub(timed_out())),
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(ReadError::Io(e)) => {
                    let what = format!("body cut after {} bytes", len - remaining);
                    return Err(io_error(&shown, &e, &what));
                }
                Err(ReadError::Hub(e)) => return Err(e),
            };
            if n == 0 {
                return Err(HubError::Network {
                    url: shown.clone(),
                    message: format!(
                        "body cut after {} bytes: connection closed, {remaining} bytes missing",
                        len - remaining
                    ),
                });
            }
            remaining -= n as u64;
        }
        if reusable {
            self.put_idle(origin, io);
        }
        Ok(Outcome::Done)
    }
}

/// A failed read of a body.
enum ReadError {
    Io(io::Error),
    Hub(HubError),
}

/// One read from `io` into `spare`, within `timeout`: the bytes read (0 at the end of the
/// stream), all of them written at the start of `spare`.
async fn read_into(
    io: &mut Io,
    spare: &mut [MaybeUninit<u8>],
    timeout: Duration,
) -> Result<io::Result<usize>, tokio::time::error::Elapsed> {
    let mut rb = ReadBuf::uninit(spare);
    let read = std::future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut rb));
    let r = tokio::time::timeout(timeout, read).await?;
    Ok(r.map(|()| rb.filled().len()))
}

/// A 206's `Content-Range` must be `bytes offset-end/size` (the total may be `*`).
fn check_content_range(
    cr: Option<&str>,
    offset: u64,
    end: u64,
    size: u64,
    url: &str,
) -> Result<(), HubError> {
    let fail = |message| HubError::Protocol {
        url: url.to_owned(),
        message,
    };
    let cr = cr.ok_or_else(|| fail("206 without Content-Range".into()))?;
    let (a, b, total) =
        parse_content_range(cr).ok_or_else(|| fail(format!("bad Content-Range {cr:?}")))?;
    if a != offset || b != end || total.is_some_and(|t| t != size) {
        return Err(fail(format!(
            "Content-Range {cr:?} does not match bytes {offset}-{end}/{size}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
