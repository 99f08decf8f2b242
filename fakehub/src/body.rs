//! Response bodies on their way out: [`tracked`] counts the bytes of every response into its
//! request record and ends the record when the body ends; [`shaped`] paces a body to the rate cap
//! and applies a stall or a crawl.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::{Frame, SizeHint};
use parking_lot::RwLock;

use crate::record::RecordGuard;
use crate::shaping::Shaping;

/// Chunk size of rate-capped bodies: each chunk waits for its share of the rate.
const PACE_CHUNK: usize = 64 * 1024;

/// A body that counts its data frames into a request record and ends the record at its end of
/// stream, at an error, or when it is dropped (whichever comes first). It keeps the inner body's
/// size hint, so a `Content-Length` stays exact. Costs one atomic add per frame.
struct Tracked {
    inner: Body,
    guard: RecordGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.guard.add_bytes(d.len() as u64);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.guard.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with its body counted into `guard`'s record, which ends when the body does.
pub(crate) fn tracked(resp: Response, guard: RecordGuard) -> Response {
    let (parts, inner) = resp.into_parts();
    Response::from_parts(parts, Body::new(Tracked { inner, guard }))
}

/// How [`shaped`] changes a body beyond the live rate cap.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BodyPlan {
    /// Divide the rate cap by this (a crawl).
    pub(crate) crawl_factor: Option<f64>,
    /// Pause this long once this fraction of the body is sent (a stall).
    pub(crate) stall: Option<(f64, Duration)>,
}

/// Pacing and stall state of one shaped body.
struct Shaper {
    inner: axum::body::BodyDataStream,
    pending: Bytes,
    shaping: Arc<RwLock<Shaping>>,
    crawl_factor: Option<f64>,
    /// (byte offset in the body, pause), until the pause has happened.
    stall: Option<(u64, Duration)>,
    sent: u64,
    /// (instant, bytes sent then, rate) the current pacing is measured from.
    anchor: Option<(tokio::time::Instant, u64, u64)>,
}

impl Shaper {
    /// The rate this body is paced at now: the live cap, divided for a crawl.
    fn rate(&self) -> Option<u64> {
        let cap = self.shaping.read().bytes_per_sec.filter(|r| *r > 0)?;
        Some(match self.crawl_factor {
            Some(f) => ((cap as f64 / f.max(1.0)) as u64).max(1),
            None => cap,
        })
    }

    /// The next chunk to send, after any pause it is due.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, axum::Error>> {
        if self.pending.is_empty() {
            match self.inner.next().await? {
                Ok(b) => self.pending = b,
                Err(e) => return Some(Err(e)),
            }
        }
        let rate = self.rate();
        let mut n = match rate {
            Some(_) => self.pending.len().min(PACE_CHUNK),
            None => self.pending.len(),
        };
        if let Some((at, pause)) = self.stall {
            if self.sent >= at {
                tokio::time::sleep(pause).await;
                self.stall = None;
                // Resume at the rate, not in a burst that makes up for the pause.
                self.anchor = None;
            } else {
                n = n.min((at - self.sent) as usize);
            }
        }
        match rate {
            None => self.anchor = None,
            Some(rate) => {
                let anchor = match self.anchor {
                    Some(a) if a.2 == rate => a,
                    _ => (tokio::time::Instant::now(), self.sent, rate),
                };
                self.anchor = Some(anchor);
                let due = (self.sent + n as u64 - anchor.1) as f64 / rate as f64;
                tokio::time::sleep_until(anchor.0 + Duration::from_secs_f64(due)).await;
            }
        }
        self.sent += n as u64;
        Some(Ok(self.pending.split_to(n)))
    }
}

/// Re-streams a response body so that the bytes sent so far never exceed rate × elapsed (the
/// rate is re-read from `shaping` per chunk, so [`crate::FakeHub::set_shaping`] acts on bodies in
/// flight too), dividing the rate for a crawl and pausing once for a stall, as `plan` says.
pub(crate) fn shaped(shaping: &Arc<RwLock<Shaping>>, resp: Response, plan: BodyPlan) -> Response {
    let (mut parts, body) = resp.into_parts();
    let hint = body.size_hint().exact();
    if hint == Some(0) {
        return Response::from_parts(parts, body);
    }
    if let Some(n) = hint {
        // Keep a Content-Length (the stream below has no exact size of its own).
        parts
            .headers
            .entry("content-length")
            .or_insert_with(|| HeaderValue::from(n));
    }
    // The stall point is a fraction of the body: of its exact size, else of its Content-Length
    // (a streamed body), else of nothing (the pause comes before the first byte).
    let len = hint
        .or_else(|| {
            parts
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let st = Shaper {
        inner: body.into_data_stream(),
        pending: Bytes::new(),
        shaping: shaping.clone(),
        crawl_factor: plan.crawl_factor,
        stall: plan
            .stall
            .map(|(at, pause)| (((len as f64) * at) as u64, pause)),
        sent: 0,
        anchor: None,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((chunk, st))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
