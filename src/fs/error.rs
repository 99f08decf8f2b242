//! The filesystem's error type, and the one place where errors become errno values.

use crate::cache::CacheError;
use crate::hub::{HubError, NotFoundKind};

/// Why a filesystem operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// No such name (also: names that can never exist, like `.hidden` at the root).
    #[error("no such file or directory")]
    NotFound,
    /// The inode number is not (or no longer) known.
    #[error("stale inode {0}")]
    StaleInode(u64),
    /// A directory operation on a file.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// Any write: the filesystem is read-only.
    #[error("read-only filesystem")]
    ReadOnly,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// The Hub said no or failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The block cache failed a read for a reason of its own (see [`CacheError`]).
    #[error(transparent)]
    Cache(CacheError),
}

impl From<CacheError> for FsError {
    /// A failed fetch is the client's error (so it maps to errno as any Hub failure does);
    /// the cache's own failures stay the cache's.
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Fetch(h) => FsError::Hub(h),
            other => FsError::Cache(other),
        }
    }
}

impl FsError {
    /// The errno for the kernel: ENOENT for missing things, EACCES for private and gated repos,
    /// ESTALE for content that changed, EIO for network and protocol failures.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::StaleInode(_) => libc::ESTALE,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoAttr => libc::ENODATA,
            FsError::Hub(h) => match h {
                HubError::NotFound { .. } | HubError::InvalidName(_) => libc::ENOENT,
                HubError::Gated { .. } | HubError::Denied { .. } => libc::EACCES,
                HubError::Stale { .. } => libc::ESTALE,
                HubError::Cancelled => libc::EINTR,
                HubError::RateLimited { .. }
                | HubError::Status { .. }
                | HubError::Network { .. }
                | HubError::Timeout { .. }
                | HubError::Protocol { .. }
                | HubError::Tls { .. }
                | HubError::TaskFailed(_) => libc::EIO,
            },
            FsError::Cache(c) => match c {
                CacheError::Cancelled => libc::EINTR,
                CacheError::Fetch(_) | CacheError::Incomplete { .. } | CacheError::ShutDown => {
                    libc::EIO
                }
            },
        }
    }

    /// True when the error is worth a warning in the log (not a plain "no such file").
    pub fn is_noteworthy(&self) -> bool {
        !matches!(
            self,
            FsError::NotFound
                | FsError::NoAttr
                | FsError::ReadOnly
                | FsError::NotDir
                | FsError::IsDir
                | FsError::Hub(HubError::NotFound { .. })
                | FsError::Hub(HubError::InvalidName(_))
                | FsError::Hub(HubError::Cancelled)
                | FsError::Cache(CacheError::Cancelled)
        )
    }

    /// A hint for the log line that says how to fix it, when there is one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            FsError::Hub(HubError::Gated { .. }) => Some(
                "gated repo: accept its terms on the Hub with your account, and give hubfs that account's token (HF_TOKEN, HF_TOKEN_PATH, ~/.cache/huggingface/token or --token-file)",
            ),
            FsError::Hub(HubError::Denied { context }) if context.status == 401 => Some(
                "the Hub wants a (valid) token: the repo is private or the token was rejected; set HF_TOKEN or --token-file",
            ),
            FsError::Hub(HubError::Denied { .. }) => {
                Some("the token has no access to this repo (private repo, or token scope)")
            }
            FsError::Hub(HubError::NotFound {
                kind: NotFoundKind::Repo,
                ..
            }) => Some("no such repo, or it is private and the token cannot see it"),
            _ => None,
        }
    }
}

/// A filesystem result.
pub type FsResult<T> = Result<T, FsError>;

/// A FUSE read of the content `what` (its cache key) at `offset` that did not complete within
/// `after` (`--read-timeout`): `EIO`, logged with the content and the deadline.
pub fn read_timed_out(what: &str, offset: u64, after: std::time::Duration) -> FsError {
    tracing::warn!(content = %what, offset, ?after, "read not complete within --read-timeout; failing it (EIO)");
    FsError::Hub(HubError::Timeout {
        url: what.to_owned(),
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HttpContext;

    fn ctx(status: u16) -> HttpContext {
        HttpContext {
            status,
            ..Default::default()
        }
    }

    #[test]
    fn errno_mapping() {
        let cases: Vec<(FsError, i32)> = vec![
            (FsError::NotFound, libc::ENOENT),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NoAttr, libc::ENODATA),
            (
                HubError::NotFound {
                    kind: NotFoundKind::Entry,
                    context: ctx(404),
                }
                .into(),
                libc::ENOENT,
            ),
            (HubError::Gated { context: ctx(401) }.into(), libc::EACCES),
            (HubError::Denied { context: ctx(403) }.into(), libc::EACCES),
            (HubError::Status { context: ctx(502) }.into(), libc::EIO),
            (
                HubError::Tls {
                    url: "u".into(),
                    message: "m".into(),
                }
                .into(),
                libc::EIO,
            ),
            (
                HubError::Timeout {
                    url: "u".into(),
                    after: std::time::Duration::from_secs(1),
                }
                .into(),
                libc::EIO,
            ),
            (
                HubError::Stale {
                    url: "u".into(),
                    message: "m".into(),
                }
                .into(),
                libc::ESTALE,
            ),
            (HubError::Cancelled.into(), libc::EINTR),
            (HubError::TaskFailed("panicked".into()).into(), libc::EIO),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), want, "{e:?}");
        }
        assert!(FsError::from(HubError::Gated { context: ctx(401) })
            .hint()
            .is_some());
    }
}
