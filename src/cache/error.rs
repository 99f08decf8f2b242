//! The cache's own failures, beside the client's: a read from the cache fails because its fetch
//! failed (the client's error, kept whole), or because of something the cache itself saw.

use crate::hub::HubError;

/// Why a read from the block cache failed. Cloned to every reader waiting on the same fetch.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CacheError {
    /// The Hub client failed the fetch.
    #[error(transparent)]
    Fetch(#[from] HubError),
    /// The fetch was stopped because no reader waited for it any longer (its reader was
    /// interrupted or died).
    #[error("fetch cancelled: no reader waits for it")]
    Cancelled,
    /// The fetch ended without delivering every block it was for: the client's answer had the
    /// wrong shape.
    #[error("fetch of {len} bytes at offset {offset}: {message}")]
    Incomplete {
        /// First byte of the fetch.
        offset: u64,
        /// Its length.
        len: u64,
        /// What was missing or wrong.
        message: String,
    },
    /// The cache is shutting down.
    #[error("the block cache is shut down")]
    ShutDown,
}

impl CacheError {
    /// True when the fetch stopped because its reader went away (nothing to report).
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            CacheError::Cancelled | CacheError::Fetch(HubError::Cancelled)
        )
    }
}
