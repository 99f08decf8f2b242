//! Range reads: one ranged GET checked against what was asked (status, `Content-Range`, the
//! file's identity), its body read into [`Pieces`], and the attempts around it: a remembered CDN
//! URL tried first, one `/resolve` per file at a time, retries of transient failures, and a cut
//! body resumed from its first missing byte, until no progress within the read timeout.

use std::time::{Duration, Instant};

use reqwest::header::CONTENT_RANGE;
use reqwest::{Response, StatusCode};

use url::Url;

use super::identity::Expect;
use super::pieces::Pieces;
use super::transport::{error_from_response, next_chunk, Ask};
use super::HttpHub;
use crate::hub::error::redact_url;
use crate::hub::h1::{H1Client, Outcome};
use crate::hub::wire::check_content_range;
use crate::hub::{HubError, PieceSink};
use crate::stats::Stats;

/// Decrements the in-flight gauge when a range request ends, however it ends.
struct InflightGuard<'a>(&'a Stats);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        Stats::sub(&self.0.inflight_requests, 1);
    }
}

impl HttpHub {
    /// The direct client and the parsed URL, when `start_url` is a remembered URL off the Hub's
    /// origin (a CDN: no token, no identity headers to check) and there is no proxy.
    fn direct_for(&self, start_url: &str, resolve: &str) -> Option<(&H1Client, Url)> {
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
    pub(super) async fn range_once(
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
        // A remembered CDN URL is read by the direct client, its body straight into the sink's
        // buffers; an answer it does not take goes through reqwest below.
        if let Some((h1, url)) = self.direct_for(start_url, resolve) {
            match h1
                .range(&url, offset, end, file.size(), acc, &self.stats)
                .await?
            {
                Outcome::Done => {
                    Stats::add(&self.stats.direct_range_requests, 1);
                    return Ok(start_url.to_owned());
                }
                Outcome::Fallback(why) => {
                    tracing::debug!(url = %redact_url(start_url), %why, "direct client passed the answer on; through reqwest");
                }
            }
        }
        let range = format!("bytes={offset}-{end}");
        let sent = self
            .send(Ask::Get(Some(&range)), start_url, Some(file))
            .await?;
        let url = redact_url(&sent.url);
        match sent.resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = sent.resp.headers().get(CONTENT_RANGE);
                let cr = cr.map(|v| v.to_str().unwrap_or("(not text)"));
                check_content_range(cr, offset, end, file.size(), &url)?;
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

    /// Reads `len` bytes from `offset` of what `resolve` serves, checked against `file`, with
    /// retries and resumes; a CDN URL is remembered under `key` (which names the content).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn stream_via(
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
            let (cached, leader) = self.redirect_or_lead(key).await;
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
                Ok(final_url) => return complete(acc, &final_url),
                // Every byte arrived (the error came after the body, e.g. at its end): the range
                // is complete, and a retry would ask for nothing.
                Err(_) if acc.missing() == 0 => return complete(acc, start),
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

/// The end of a range read whose last attempt, from `url`, ended: every byte arrived or a
/// protocol error.
fn complete(acc: Pieces<'_>, url: &str) -> Result<(), HubError> {
    acc.finish().map(drop).ok_or_else(|| HubError::Protocol {
        url: redact_url(url),
        message: "range incomplete".into(),
    })
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

/// A range of `len` bytes at `offset` must lie within the file's `size` (asked of the client: a
/// caller's bug, reported without a request).
pub(super) fn check_range(path: &str, offset: u64, len: u64, size: u64) -> Result<(), HubError> {
    if offset.checked_add(len).is_none_or(|e| e > size) {
        return Err(HubError::Protocol {
            url: path.to_owned(),
            message: format!("range {offset}+{len} beyond size {size}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::http::HttpConfig;
    use crate::hub::{FileRef, HubClient, RepoId};
    use std::sync::Arc;

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
}
