//! Sending one request: redirects followed by hand so that the token goes to the endpoint's
//! origin only (and a 401 re-reads a token file once), deadlines on every attempt, bodies read
//! under a deadline and a size bound, and a non-success answer classified into a [`HubError`]
//! with its HTTP context (status, `X-Error-Code`, request id).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;
use url::Url;

use super::identity::Expect;
use super::{HttpHub, MAX_PAGES};
use crate::hub::auth::Token;
use crate::hub::error::redact_url;
use crate::hub::wire::{next_link, ratelimit_reset};
use crate::hub::{HttpContext, HubError, NotFoundKind};
use crate::stats::Stats;

/// Most redirects followed for one request (Hub → resolve-cache or CDN, renamed repos).
pub(super) const MAX_REDIRECTS: usize = 8;

/// What one request asks, asked again on every hop of its redirects.
#[derive(Clone, Copy)]
pub(super) enum Ask<'a> {
    /// A GET, of this byte range (`bytes=a-b`) if given; every redirect is followed.
    Get(Option<&'a str>),
    /// A form POST of this body; only 307 and 308 (which keep method and body) are followed,
    /// any other redirect is the answer.
    PostForm(&'a str),
}

impl Ask<'_> {
    fn follows(self, status: StatusCode) -> bool {
        match self {
            Ask::Get(_) => true,
            Ask::PostForm(_) => matches!(
                status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ),
        }
    }
}

/// A response after redirects, with the URL that produced it.
pub(super) struct Sent {
    pub(super) resp: Response,
    pub(super) url: String,
}

impl HttpHub {
    /// The `Authorization` header for `token`, marked sensitive so it is never printed.
    pub(super) fn bearer(token: &Token, url: &Url) -> Result<HeaderValue, HubError> {
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
    pub(super) async fn send(
        &self,
        ask: Ask<'_>,
        url: &str,
        expect: Option<&Expect<'_>>,
    ) -> Result<Sent, HubError> {
        let mut current = Url::parse(url).map_err(|e| HubError::Protocol {
            url: redact_url(url),
            message: format!("bad URL: {e}"),
        })?;
        let mut hops = 0;
        let mut resent_after_401 = false;
        loop {
            let hub_origin = self.same_origin(&current);
            let token = if hub_origin {
                self.cfg.credentials.current()
            } else {
                None
            };
            let shown = redact_url(current.as_str());
            let resp = self.send_hop(ask, &current, token.as_ref()).await?;
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
            if !resp.status().is_redirection() || !ask.follows(resp.status()) {
                return Ok(Sent {
                    resp,
                    url: current.to_string(),
                });
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(HubError::Protocol {
                    url: redact_url(url),
                    message: format!("more than {MAX_REDIRECTS} redirects"),
                });
            }
            let next = redirect_target(&resp, &current, &shown)?;
            tracing::trace!(from = %shown, to = %redact_url(next.as_str()), "redirect");
            current = next;
            resent_after_401 = false;
        }
    }

    /// One hop of [`HttpHub::send`]: what `ask` asks of `url`, with `token` (if any), answered
    /// with headers within the per-attempt deadline; counted in `http_requests`.
    async fn send_hop(
        &self,
        ask: Ask<'_>,
        url: &Url,
        token: Option<&Token>,
    ) -> Result<Response, HubError> {
        let mut req = match ask {
            Ask::Get(range) => {
                let req = self.client.request(Method::GET, url.clone());
                match range {
                    Some(r) => req.header(RANGE, r),
                    None => req,
                }
            }
            Ask::PostForm(body) => self
                .client
                .request(Method::POST, url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.to_owned()),
        };
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, Self::bearer(t, url)?);
        }
        Stats::add(&self.stats.http_requests, 1);
        match tokio::time::timeout(self.cfg.request_timeout, req.send()).await {
            Err(_) => Err(HubError::Timeout {
                url: redact_url(url.as_str()),
                after: self.cfg.request_timeout,
            }),
            Ok(Err(e)) => Err(send_failure(&e, url.as_str())),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// GET with retries; returns the successful response or the classified error.
    pub(super) async fn get_ok(&self, url: &str) -> Result<Sent, HubError> {
        self.ask_ok(Ask::Get(None), url).await
    }

    /// `ask` of `url` with retries of transient failures; returns the successful response or
    /// the classified error.
    pub(super) async fn ask_ok(&self, ask: Ask<'_>, url: &str) -> Result<Sent, HubError> {
        let what = match ask {
            Ask::Get(_) => "GET",
            Ask::PostForm(_) => "POST",
        };
        self.cfg
            .retry
            .run(what, || async {
                let sent = self.send(ask, url, None).await?;
                if sent.resp.status().is_success() {
                    Ok(sent)
                } else {
                    Err(error_from_response(sent.resp, &sent.url).await)
                }
            })
            .await
    }

    /// GETs `first` and every page its `Link: rel="next"` headers lead to (on the endpoint, see
    /// `next_page_url`), at most [`MAX_PAGES`]: each page's body and the URL it came from (shown
    /// without its query).
    pub(super) async fn get_pages(&self, first: String) -> Result<Vec<(Bytes, String)>, HubError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let sent = self.get_ok(&url).await?;
            let next = next_link(sent.resp.headers());
            let shown = redact_url(&sent.url);
            let body = read_body(sent.resp, &shown, self.cfg.request_timeout, 256 << 20).await?;
            out.push((body, shown.clone()));
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

    pub(super) async fn body_json<T: for<'de> Deserialize<'de>>(
        &self,
        sent: Sent,
    ) -> Result<T, HubError> {
        let url = redact_url(&sent.url);
        let bytes = read_body(sent.resp, &url, self.cfg.request_timeout, 256 << 20).await?;
        serde_json::from_slice(&bytes).map_err(|e| HubError::Protocol {
            url,
            message: format!("invalid JSON: {e}"),
        })
    }
}

/// Where a redirect `resp` to `current` leads: its `Location`, resolved against `current`, which
/// must be an http(s) URL.
pub(super) fn redirect_target(
    resp: &Response,
    current: &Url,
    shown: &str,
) -> Result<Url, HubError> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HubError::Protocol {
            url: shown.to_owned(),
            message: format!("{} without a Location", resp.status()),
        })?;
    let next = current.join(loc).map_err(|e| HubError::Protocol {
        url: shown.to_owned(),
        message: format!("bad Location: {e}"),
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(HubError::Protocol {
            url: shown.to_owned(),
            message: "redirect to a non-http URL".into(),
        });
    }
    Ok(next)
}

/// A request to `url` that got no answer: a TLS failure (named as such) or another network error.
pub(super) fn send_failure(e: &reqwest::Error, url: &str) -> HubError {
    let url = redact_url(url);
    match crate::hub::tls::tls_failure(e) {
        Some(message) => HubError::Tls { url, message },
        None => HubError::Network {
            url,
            message: error_chain(e),
        },
    }
}

/// The next chunk of a body (`None` at its end), failing when none arrives within
/// `read_timeout` or the stream breaks; `got` (bytes received so far) goes into the message.
pub(super) async fn next_chunk(
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
pub(super) async fn read_body(
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
pub(super) async fn error_from_response(resp: Response, url: &str) -> HubError {
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

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

pub(super) fn redact_queries(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_redacted_from_error_text() {
        let s = redact_queries("error sending request for url (http://cdn/x?Signature=abc)");
        assert!(!s.contains("abc"));
        assert!(s.contains("http://cdn/x?<redacted>)"));
    }
}
