//! The memory-only block cache. It knows bytes and memory, not HTTP or FUSE.

pub mod blocks;

pub use blocks::{BlockCache, FetchFn};
