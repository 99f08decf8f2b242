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

use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use url::Url;

mod conn;
mod head;

pub use conn::IDLE_FOR;
use conn::{io_error, Connector, IdlePool, Io, Origin};
use head::{exchange, request, HeadError, MAX_HEAD};
pub use head::{parse_head, Head, Parsed};

use super::error::redact_url;
use super::wire::check_content_range;
use super::HubError;
use crate::stats::Stats;

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

/// The direct HTTP/1.1 client for ranged GETs; see the module doc.
pub struct H1Client {
    /// Deadline for connecting and receiving the head, and for each read of the body.
    timeout: Duration,
    connector: Connector,
    idle: IdlePool,
}

impl H1Client {
    /// A client whose every step (connect and head; each read of a body) must finish within
    /// `timeout`, trusting what reqwest trusts plus `ca_bundles`, keeping at most `max_idle` idle
    /// connections per origin.
    pub fn new(timeout: Duration, ca_bundles: Vec<PathBuf>, max_idle: usize) -> Self {
        H1Client {
            timeout,
            connector: Connector::new(ca_bundles),
            idle: IdlePool::new(max_idle),
        }
    }

    /// Idle connections to the origin of `url` now.
    pub fn idle_count(&self, url: &Url) -> usize {
        Origin::of(url).map_or(0, |o| self.idle.count(&o))
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
        let (mut io, buf, head) = match self.answer(&origin, &req, &shown, stats).await? {
            Answer::Head(io, buf, head) => (io, buf, head),
            Answer::Fallback(why) => return Ok(Outcome::Fallback(why)),
        };
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
        acc.push(&early[..take])
            .map_err(|message| HubError::Protocol {
                url: shown.clone(),
                message,
            })?;
        // Bytes past the body would be an answer to nothing: the connection is not reused.
        let reusable = head.keep_alive && early.len() == take;
        self.receive(&mut io, acc, len, len - take as u64, &shown)
            .await?;
        if reusable {
            self.idle.put(origin, io);
        }
        Ok(Outcome::Done)
    }

    /// Sends `req` on an idle connection to `origin` (a fresh one if none, or if the idle one
    /// turns out closed) and reads the head of the answer, all within one `timeout`.
    async fn answer(
        &self,
        origin: &Origin,
        req: &[u8],
        shown: &str,
        stats: &Stats,
    ) -> Result<Answer, HubError> {
        let timed_out = || HubError::Timeout {
            url: shown.to_owned(),
            after: self.timeout,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (io, buf, parsed) = loop {
            let (mut io, reused) = match self.idle.take(origin) {
                Some(io) => (io, true),
                None => {
                    let io =
                        tokio::time::timeout_at(deadline, self.connector.connect(origin, shown))
                            .await
                            .map_err(|_| timed_out())??;
                    (io, false)
                }
            };
            Stats::add(&stats.http_requests, 1);
            match tokio::time::timeout_at(deadline, exchange(&mut io, req)).await {
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
                    return Err(io_error(shown, &error, what));
                }
                Ok(Err(HeadError::Bad(message))) => {
                    return Err(HubError::Protocol {
                        url: shown.to_owned(),
                        message,
                    })
                }
                Ok(Err(HeadError::TooLong)) => {
                    return Ok(Answer::Fallback(format!(
                        "a response head over {MAX_HEAD} bytes"
                    )))
                }
            }
        };
        match parsed {
            Parsed::Complete(Head {
                unusual: Some(why), ..
            })
            | Parsed::Unusual(why) => Ok(Answer::Fallback(why)),
            Parsed::Complete(head) => Ok(Answer::Head(io, buf, head)),
            Parsed::Partial => Err(HubError::Protocol {
                url: shown.to_owned(),
                message: "incomplete response head".into(),
            }),
        }
    }

    /// Reads the last `remaining` bytes of a body of `len` from `io` into `acc`, each read
    /// within `timeout`, straight into `acc`'s spare memory where it has some.
    async fn receive(
        &self,
        io: &mut Io,
        acc: &mut (dyn Receiver + Send),
        len: u64,
        mut remaining: u64,
        shown: &str,
    ) -> Result<(), HubError> {
        let timed_out = || HubError::Timeout {
            url: shown.to_owned(),
            after: self.timeout,
        };
        let mut scratch = Vec::new();
        while remaining > 0 {
            let max = usize::try_from(remaining).unwrap_or(usize::MAX);
            let spare = acc.spare(max);
            let read: Result<usize, ReadError> = if spare.is_empty() {
                // A sink without spare room: through scratch memory and `put`.
                scratch.resize(SCRATCH, 0);
                let lim = max.min(SCRATCH);
                match tokio::time::timeout(self.timeout, io.read(&mut scratch[..lim])).await {
                    Ok(Ok(n)) => acc.push(&scratch[..n]).map(|()| n).map_err(|message| {
                        ReadError::Hub(HubError::Protocol {
                            url: shown.to_owned(),
                            message,
                        })
                    }),
                    Ok(Err(e)) => Err(ReadError::Io(e)),
                    Err(_) => Err(ReadError::Hub(timed_out())),
                }
            } else {
                let n = read_into(io, spare, self.timeout).await;
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
                    return Err(io_error(shown, &e, &what));
                }
                Err(ReadError::Hub(e)) => return Err(e),
            };
            if n == 0 {
                return Err(HubError::Network {
                    url: shown.to_owned(),
                    message: format!(
                        "body cut after {} bytes: connection closed, {remaining} bytes missing",
                        len - remaining
                    ),
                });
            }
            remaining -= n as u64;
        }
        Ok(())
    }
}

/// The head of an answer the client takes, with the connection and the bytes read so far, or
/// why it hands the answer back.
enum Answer {
    Head(Io, Vec<u8>, Head),
    Fallback(String),
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

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
