//! The memory-only block cache. It knows bytes and memory, not HTTP or FUSE.

pub mod blocks;
pub mod prefetch;

pub use blocks::{fetch_from, BlockCache, FetchFn};
pub use prefetch::{Advice, PrefetchConfig, Prefetcher};
