//! Requests and response heads of the direct client: the request line it sends, and what the
//! head of an answer says, read from a connection and parsed with `httparse`.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::{Position, Url};

use super::conn::Io;

/// The longest response head read.
pub(super) const MAX_HEAD: usize = 16 << 10;
/// Most header lines parsed (more: the response goes to reqwest).
pub(super) const MAX_HEADERS: usize = 96;
/// Bytes read per call while looking for the end of the head (what follows it in the same read
/// is the start of the body, put into the piece by one small copy).
pub(super) const HEAD_READ: usize = 4096;

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
pub(super) fn request(url: &Url, offset: u64, end: u64) -> Option<Vec<u8>> {
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
pub(super) enum HeadError {
    /// The connection failed or closed; `any` says whether a byte of the answer had arrived.
    Io { error: io::Error, any: bool },
    /// The bytes are not an HTTP response head.
    Bad(String),
    /// Longer than [`MAX_HEAD`].
    TooLong,
}

/// Sends `req` on `io` and reads the head of the answer: the bytes read (the head and what of the
/// body came with it) and the head.
pub(super) async fn exchange(io: &mut Io, req: &[u8]) -> Result<(Vec<u8>, Parsed), HeadError> {
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
