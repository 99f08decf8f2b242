//! Errors from the Hub client, with the HTTP context needed to act on them (status, the Hub's
//! `X-Error-Code`, its message, the request id). URLs kept here never carry a query string, so a
//! signed CDN URL's signature never reaches a log line.

use std::fmt;
use std::time::Duration;

/// What was not found, from the Hub's `X-Error-Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotFoundKind {
    /// `RepoNotFound`: the repo does not exist or is private to others.
    Repo,
    /// `RevisionNotFound`: no such branch, tag or commit.
    Revision,
    /// `EntryNotFound`: no such file or folder at that commit.
    Entry,
    /// A 404 without a known code.
    Other,
}

/// The HTTP side of a failed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpContext {
    /// The HTTP status.
    pub status: u16,
    /// The request URL without its query string.
    pub url: String,
    /// The `X-Error-Code` header, if any.
    pub error_code: Option<String>,
    /// `X-Error-Message`, else the JSON body's `error` field.
    pub message: Option<String>,
    /// `X-Request-Id`, to quote when reporting a problem.
    pub request_id: Option<String>,
}

impl fmt::Display for HttpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} from {}", self.status, self.url)?;
        if let Some(code) = &self.error_code {
            write!(f, " [{code}]")?;
        }
        if let Some(msg) = &self.message {
            write!(f, ": {msg}")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// An error from the Hub client. Cheap to clone, so one failed fetch can be reported to every
/// reader that waited on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HubError {
    /// 404: the repo, revision or file does not exist for us. (A 401 `RepoNotFound`, which the
    /// Hub gives for a missing or private repo when no token is sent, is [`HubError::Denied`].)
    #[error("not found: {context}")]
    NotFound {
        /// Repo, revision or entry.
        kind: NotFoundKind,
        /// The response.
        context: HttpContext,
    },
    /// 401/403 on a gated repo: the token is missing or not approved.
    #[error("gated repo: {context}")]
    Gated {
        /// The response.
        context: HttpContext,
    },
    /// 401 with no token on a repo that needs one, 401 for an invalid token, or another 403.
    #[error("access denied: {context}")]
    Denied {
        /// The response.
        context: HttpContext,
    },
    /// 429 from the Hub or CDN.
    #[error("rate limited: {context}")]
    RateLimited {
        /// `Retry-After` (or the RateLimit reset), when given.
        retry_after: Option<Duration>,
        /// The response.
        context: HttpContext,
    },
    /// Any other unexpected status (5xx, 408, 416, ...).
    #[error("unexpected response: {context}")]
    Status {
        /// The response.
        context: HttpContext,
    },
    /// Connection refused/reset, DNS, TLS, a broken body stream.
    #[error("network error talking to {url}: {message}")]
    Network {
        /// The URL without its query.
        url: String,
        /// What failed.
        message: String,
    },
    /// No response, or no progress on the body, within the deadline.
    #[error("timed out after {after:?} talking to {url}")]
    Timeout {
        /// The URL without its query.
        url: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// TLS failed: the server's certificate is not trusted or not valid for its name, the
    /// handshake failed, or a CA bundle given to hubfs cannot be used (then `url` is its path).
    /// The message says which and what to do. Not retried: it does not fix itself.
    #[error("TLS error with {url}: {message}")]
    Tls {
        /// The URL without its query (or the CA bundle's path).
        url: String,
        /// What failed, and the fix.
        message: String,
    },
    /// The response broke the protocol: wrong `Content-Range`, short body, bad JSON, a redirect loop.
    #[error("protocol error from {url}: {message}")]
    Protocol {
        /// The URL without its query.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The response was for another commit or another version of the file than asked for.
    #[error("content changed under us at {url}: {message}")]
    Stale {
        /// The URL without its query.
        url: String,
        /// Expected and received identities.
        message: String,
    },
    /// A name or revision that can not be put in a URL safely (`..`, empty, NUL).
    #[error("invalid name: {0:?}")]
    InvalidName(String),
    /// The fetch was stopped because every reader waiting for it went away (interrupted or
    /// exited); nobody is told but a reader that joins at that very moment, which retries.
    #[error("fetch cancelled: no reader waits for it any more")]
    Cancelled,
    /// The task making the request ended without an answer: it panicked, or the runtime is
    /// shutting down. Final (not retried): the same work would likely end the same way.
    #[error("the task asking the Hub ended without an answer: {0}")]
    TaskFailed(String),
}

impl HubError {
    /// True for failures that may pass on another try: network errors, timeouts, 5xx, 408, 429
    /// and responses that broke the protocol (a cut body, a wrong `Content-Range`). Not-found,
    /// access, TLS and stale-content errors are final. The retry policy and the core (which keeps
    /// serving a bound commit when the Hub fails transiently) both ask this.
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Network { .. }
            | HubError::Timeout { .. }
            | HubError::Protocol { .. }
            | HubError::RateLimited { .. } => true,
            HubError::Status { context } => context.status >= 500 || context.status == 408,
            _ => false,
        }
    }

    /// The HTTP status behind this error, if it came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            HubError::NotFound { context, .. }
            | HubError::Gated { context }
            | HubError::Denied { context }
            | HubError::RateLimited { context, .. }
            | HubError::Status { context } => Some(context.status),
            _ => None,
        }
    }
}

/// Returns `url` without its query string and fragment, for errors and logs.
pub fn redact_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_query_and_signature() {
        assert_eq!(
            redact_url("https://cdn.example/x/abc?Expires=1&Signature=secret"),
            "https://cdn.example/x/abc"
        );
        assert_eq!(redact_url("http://h/p#frag"), "http://h/p");
        assert_eq!(redact_url("http://h/p"), "http://h/p");
    }

    #[test]
    fn context_display_carries_code_message_and_request_id() {
        let c = HttpContext {
            status: 404,
            url: "http://h/api/models/a/b/revision/x".into(),
            error_code: Some("RevisionNotFound".into()),
            message: Some("Invalid rev id: x".into()),
            request_id: Some("req-1".into()),
        };
        let s = c.to_string();
        assert!(s.contains("404") && s.contains("RevisionNotFound"));
        assert!(s.contains("Invalid rev id: x") && s.contains("req-1"));
    }
}
