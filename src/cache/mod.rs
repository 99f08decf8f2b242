//! The memory-only block cache. It knows bytes and memory, not HTTP or FUSE.
//!
//! - [`budget`]: the memory plan, how `--cache-size` is divided (the one place for its fractions);
//! - [`lru`]: the blocks held, read and unread, and their eviction order;
//! - [`pool`]: block buffers, mapped once and reused;
//! - [`runs`]: fetches in flight, streamed block by block, with hedging of stragglers (when to
//!   hedge: `clock`);
//! - [`blocks`]: the cache itself: reads, the runs they start, the budget they take;
//! - `readahead`: read-ahead runs into the cache, under the plan's reserve;
//! - [`prefetch`]: the read-ahead scheduler, over the sequential streams of `streams`;
//! - [`error`]: why a read from the cache failed.

pub mod blocks;
pub mod budget;
mod clock;
pub mod error;
pub(crate) mod lru;
pub mod pool;
pub mod prefetch;
mod readahead;
pub mod runs;
mod streams;

pub use blocks::{fetch_from, BlockCache, OnDone, ReadMode};
pub use budget::MemoryPlan;
pub use error::CacheError;
pub use prefetch::{Advice, PrefetchConfig, Prefetcher, ReadTarget};
pub use readahead::Prefetched;
pub use runs::FetchFn;
