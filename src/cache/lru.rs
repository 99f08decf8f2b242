//! The blocks held in memory, in two classes with their own eviction order:
//!
//! - **read**: blocks a reader has taken (or fetched for a reader). Least recently used first.
//! - **consumed**: blocks a sequential reader read to their end. It will not come back for them
//!   (the kernel's page cache keeps them), so they are evicted before any other block, and only
//!   the most recent `keep_consumed` bytes of them are kept at all (for reads the kernel sends
//!   out of order): the rest are dropped at once, so their buffers go back to the pool and a
//!   stream's memory stays its window, not the whole cache. A reader coming back for a consumed
//!   block makes it read again.
//! - **unread**: read-ahead not yet read. Read-ahead never evicts these for more read-ahead
//!   (which would fetch the same bytes twice when several streams share the cache), unless they
//!   went unread for longer than a stale age (the reader left). A reader's own fetch may evict
//!   them, oldest first, as a last resort.
//!
//! The store counts the bytes it holds; the cache decides how many it may hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

/// A block of one content.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BlockKey {
    pub(crate) content: Arc<str>,
    pub(crate) index: u64,
}

/// The cached blocks.
pub(crate) struct Store {
    read: LruCache<BlockKey, Bytes>,
    consumed: LruCache<BlockKey, Bytes>,
    unread: LruCache<BlockKey, (Bytes, Instant)>,
    bytes: u64,
    consumed_bytes: u64,
    /// Consumed blocks beyond this many bytes are dropped.
    keep_consumed: u64,
    /// Consumed blocks dropped for that, in all.
    dropped_behind: u64,
    unread_bytes: u64,
    /// Read-ahead evicted before anyone read it (wasted fetches), in all.
    wasted: u64,
}

impl Store {
    /// An empty store that keeps at most `keep_consumed` bytes of consumed blocks.
    pub(crate) fn new(keep_consumed: u64) -> Self {
        Store {
            read: LruCache::unbounded(),
            consumed: LruCache::unbounded(),
            unread: LruCache::unbounded(),
            bytes: 0,
            consumed_bytes: 0,
            keep_consumed,
            dropped_behind: 0,
            unread_bytes: 0,
            wasted: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes held as read-ahead not yet read.
    pub(crate) fn unread_bytes(&self) -> u64 {
        self.unread_bytes
    }

    /// Removes `key` from the unread class.
    fn take_unread(&mut self, key: &BlockKey) -> Option<Bytes> {
        let (b, _) = self.unread.pop(key)?;
        self.unread_bytes -= b.len() as u64;
        Some(b)
    }

    /// Removes `key` from the consumed class.
    fn take_consumed(&mut self, key: &BlockKey) -> Option<Bytes> {
        let b = self.consumed.pop(key)?;
        self.consumed_bytes -= b.len() as u64;
        Some(b)
    }

    /// Removes the oldest consumed block.
    fn pop_consumed_lru(&mut self) -> Option<Bytes> {
        let (_, b) = self.consumed.pop_lru()?;
        self.consumed_bytes -= b.len() as u64;
        Some(b)
    }

    /// Evicts the oldest consumed block, else the least recently used read block.
    fn pop_read_lru(&mut self) -> Option<Bytes> {
        self.pop_consumed_lru()
            .or_else(|| self.read.pop_lru().map(|(_, b)| b))
    }

    /// Files `b` as consumed and drops the oldest consumed blocks beyond `keep_consumed`.
    fn put_consumed(&mut self, key: BlockKey, b: Bytes) {
        self.consumed_bytes += b.len() as u64;
        if let Some(old) = self.consumed.put(key, b) {
            self.consumed_bytes -= old.len() as u64;
            self.bytes -= old.len() as u64;
        }
        while self.consumed_bytes > self.keep_consumed {
            let Some(b) = self.pop_consumed_lru() else {
                break;
            };
            self.bytes -= b.len() as u64;
            self.dropped_behind += b.len() as u64;
        }
    }

    /// Bytes of consumed blocks dropped beyond the kept ones, since the store was made.
    pub(crate) fn dropped_behind_bytes(&self) -> u64 {
        self.dropped_behind
    }

    /// Evicts the oldest unread block (wasted read-ahead).
    fn pop_unread_lru(&mut self) -> Option<Bytes> {
        let (_, (b, _)) = self.unread.pop_lru()?;
        self.unread_bytes -= b.len() as u64;
        self.wasted += b.len() as u64;
        Some(b)
    }

    /// Bytes of read-ahead evicted before anyone read them, since the store was made.
    pub(crate) fn wasted_bytes(&self) -> u64 {
        self.wasted
    }

    /// True when `key` is held.
    pub(crate) fn contains(&self, key: &BlockKey) -> bool {
        self.read.contains(key) || self.consumed.contains(key) || self.unread.contains(key)
    }

    /// The block for a reader: it becomes the most recently used read block.
    pub(crate) fn get(&mut self, key: &BlockKey) -> Option<Bytes> {
        if let Some(b) = self.read.get(key) {
            return Some(b.clone());
        }
        let b = match self.take_consumed(key) {
            Some(b) => b,
            None => self.take_unread(key)?,
        };
        self.read.put(key.clone(), b.clone());
        Some(b)
    }

    /// The block without changing any order (tests).
    #[cfg(test)]
    pub(crate) fn peek(&self, key: &BlockKey) -> Option<&Bytes> {
        self.read
            .peek(key)
            .or_else(|| self.consumed.peek(key))
            .or_else(|| self.unread.peek(key).map(|(b, _)| b))
    }

    fn replace(&mut self, old: Option<Bytes>) {
        if let Some(o) = old {
            self.bytes -= o.len() as u64;
        }
    }

    /// Adds a block a reader took; `consumed`: a sequential reader read it to its end.
    pub(crate) fn insert_read(&mut self, key: BlockKey, b: Bytes, consumed: bool) {
        let old = self.take_unread(&key);
        self.replace(old);
        let old = self.take_consumed(&key);
        self.replace(old);
        let old = self.read.pop(&key);
        self.replace(old);
        self.bytes += b.len() as u64;
        if consumed {
            self.put_consumed(key, b);
        } else {
            self.read.put(key, b);
        }
    }

    /// Adds read-ahead no reader has taken yet.
    pub(crate) fn insert_unread(&mut self, key: BlockKey, b: Bytes, now: Instant) {
        if self.read.contains(&key) || self.consumed.contains(&key) {
            return;
        }
        self.bytes += b.len() as u64;
        self.unread_bytes += b.len() as u64;
        let old = self.unread.put(key, (b, now)).map(|(o, _)| o);
        if let Some(o) = &old {
            self.unread_bytes -= o.len() as u64;
        }
        self.replace(old);
    }

    /// A reader took `key` (from a fetch that was filed before it looked): it is read now, and
    /// consumed when a sequential reader read it to its end.
    pub(crate) fn touch(&mut self, key: &BlockKey, consumed: bool) {
        if let Some(b) = self.take_unread(key) {
            self.read.put(key.clone(), b);
        }
        if consumed {
            if let Some(b) = self.read.pop(key) {
                self.put_consumed(key.clone(), b);
            }
        }
    }

    /// Makes room for `need` bytes of read-ahead under `limit`, given `others` bytes held
    /// elsewhere (in flight), keeping `reserve` bytes for readers' own fetches: read-ahead not
    /// yet read (but for read-ahead unread for at least `stale`) plus `others`, `need` and
    /// `reserve` must fit, and read blocks are evicted, least recently used first, to make it.
    /// Returns whether it fits; nothing is evicted when it can not.
    pub(crate) fn make_room_for_readahead(
        &mut self,
        need: u64,
        others: u64,
        reserve: u64,
        limit: u64,
        now: Instant,
        stale: Duration,
    ) -> bool {
        while self.unread_bytes + others + need + reserve > limit {
            match self.unread.peek_lru() {
                Some((_, (_, at))) if now.duration_since(*at) >= stale => {
                    if let Some(b) = self.pop_unread_lru() {
                        self.bytes -= b.len() as u64;
                    }
                }
                _ => return false,
            }
        }
        while self.bytes + others + need > limit {
            match self.pop_read_lru() {
                Some(b) => self.bytes -= b.len() as u64,
                None => return false,
            }
        }
        true
    }

    /// Evicts read blocks, then unread read-ahead, oldest first, until `need` more bytes fit
    /// under `limit` with `others` held elsewhere, or nothing is left. Returns whether they fit.
    pub(crate) fn make_room(&mut self, need: u64, others: u64, limit: u64) -> bool {
        while self.bytes + others + need > limit {
            let popped = match self.pop_read_lru() {
                Some(b) => Some(b),
                None => self.pop_unread_lru(),
            };
            match popped {
                Some(b) => self.bytes -= b.len() as u64,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey {
            content: Arc::from("c"),
            index: i,
        }
    }

    fn block() -> Bytes {
        Bytes::from(vec![0u8; 10])
    }

    #[test]
    fn readahead_does_not_evict_unread_readahead() {
        let now = Instant::now();
        let mut s = Store::new(u64::MAX);
        for i in 0..3 {
            s.insert_unread(key(i), block(), now);
        }
        let stale = Duration::from_secs(10);
        assert!(!s.make_room_for_readahead(10, 0, 0, 30, now, stale));
        assert_eq!(s.bytes(), 30, "nothing evicted");
        // A reader's fetch may.
        assert!(s.make_room(10, 0, 30));
        assert!(!s.contains(&key(0)), "the oldest unread went");
    }

    #[test]
    fn readahead_leaves_room_for_readers_fetches() {
        let now = Instant::now();
        let mut s = Store::new(u64::MAX);
        s.insert_unread(key(0), block(), now);
        s.insert_read(key(1), block(), false);
        let stale = Duration::from_secs(10);
        // 10 unread + 10 needed + 5 reserved fit in 25 (the read block is evicted)...
        assert!(s.make_room_for_readahead(10, 0, 5, 25, now, stale));
        assert!(!s.contains(&key(1)) && s.contains(&key(0)));
        // ...but not with 5 bytes in flight.
        assert!(!s.make_room_for_readahead(10, 5, 5, 25, now, stale));
        assert_eq!(s.wasted_bytes(), 0);
    }

    #[test]
    fn stale_readahead_gives_way() {
        let t0 = Instant::now();
        let mut s = Store::new(u64::MAX);
        s.insert_unread(key(0), block(), t0);
        let later = t0 + Duration::from_secs(11);
        assert!(s.make_room_for_readahead(10, 0, 0, 10, later, Duration::from_secs(10)));
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn consumed_blocks_go_first_and_reads_move_unread_to_read() {
        let now = Instant::now();
        let mut s = Store::new(u64::MAX);
        s.insert_read(key(0), block(), false);
        s.insert_read(key(1), block(), true);
        s.insert_unread(key(2), block(), now);
        assert_eq!(s.unread_bytes(), 10);
        assert!(s.get(&key(2)).is_some());
        assert_eq!(s.unread_bytes(), 0);
        assert!(s.make_room_for_readahead(10, 0, 0, 30, now, Duration::from_secs(10)));
        assert!(!s.contains(&key(1)), "the consumed block went first");
        assert!(s.contains(&key(0)) && s.contains(&key(2)));
        s.touch(&key(0), true);
        assert!(s.make_room(10, 0, 20));
        assert!(!s.contains(&key(0)));
        assert_eq!(s.bytes(), 10);
    }

    #[test]
    fn consumed_blocks_beyond_the_kept_bytes_are_dropped_and_a_reader_can_take_one_back() {
        let now = Instant::now();
        let mut s = Store::new(20);
        for i in 0..5 {
            s.insert_read(key(i), block(), true);
        }
        assert_eq!(s.bytes(), 20, "two consumed blocks kept");
        assert_eq!(s.dropped_behind_bytes(), 30);
        assert!(s.contains(&key(3)) && s.contains(&key(4)) && !s.contains(&key(2)));
        // A block read ahead, then consumed by a reader, joins them; the oldest goes.
        s.insert_unread(key(9), block(), now);
        s.touch(&key(9), false);
        s.touch(&key(9), true);
        assert!(!s.contains(&key(3)) && s.contains(&key(9)));
        assert_eq!(s.bytes(), 20);
        // A reader coming back for a consumed block makes it read: no longer dropped behind.
        assert!(s.get(&key(4)).is_some());
        for i in 10..13 {
            s.insert_read(key(i), block(), true);
        }
        assert!(s.contains(&key(4)));
        assert_eq!(s.bytes(), 30);
        // Eviction takes consumed blocks before read ones.
        assert!(s.make_room(10, 0, 30));
        assert!(s.contains(&key(4)) && !s.contains(&key(11)));
    }
}
