//! Block buffers, reused: one region of memory carved into buffers of one block each, handed to
//! fetches as they receive pieces and back to the pool when the last reference to the block is
//! dropped (it was evicted and no reply still sends it).
//!
//! A fresh heap allocation per block means touching fresh pages for every block the cache
//! fills: a page fault and a page of zeroes per 4 KiB, which on a virtual machine costs more
//! than the copy itself. The pool's region is mapped once, each buffer is touched once (the most
//! recently returned buffer is reused first, so a small working set stays small), and then
//! recycled; no buffer is zero-filled by us before it is written.
//!
//! The region is advised `MADV_NOHUGEPAGE`. Huge pages make fewer faults, but on a virtual
//! machine a 2 MiB page comes from memory the guest has not touched since boot, and the host backs
//! it page by page while the kernel zeroes it: measured here, a cold 1 GiB read cost the daemon
//! 1.9-3.3 CPU s/GiB with huge pages against 1.2-1.7 without (docs/benchmarks.md, "Huge pages").
//!
//! The pool holds at most `count` buffers, never more: a fetch that finds it empty gets a heap
//! buffer (counted) instead of waiting, so the pool is never a cause of back-pressure; the cache's
//! budget is. A buffer is handed out once until its block is dropped.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::hub::{HeapBuffer, PieceBuffer};

/// The pool of block buffers. Share it behind an `Arc`.
pub struct BufferPool {
    region: NonNull<u8>,
    region_len: usize,
    buf_size: usize,
    count: usize,
    /// Buffers given back, ready for reuse.
    free: Mutex<Vec<usize>>,
    /// Buffers never handed out yet start here (`count` when all have been).
    fresh: AtomicUsize,
    /// Buffers handed out now.
    out: AtomicUsize,
    /// Pieces that found the pool empty and went to the heap.
    misses: AtomicU64,
}

// SAFETY: the region is plain memory owned by the pool; each buffer of it is written only by the
// one holder of its index (see `take`), and read only once frozen.
unsafe impl Send for BufferPool {}
// SAFETY: as above; the shared state is behind a mutex and atomics.
unsafe impl Sync for BufferPool {}

impl BufferPool {
    /// A pool of `count` buffers of `buf_size` bytes each (no memory is touched until used).
    /// `None` if the region can not be mapped.
    pub fn new(count: usize, buf_size: usize) -> Option<Arc<Self>> {
        let region_len = count.checked_mul(buf_size)?.max(1);
        // SAFETY: an anonymous private mapping; no file, no fixed address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                region_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // No huge pages, even where transparent huge pages are `always` (see the module doc).
        // Advice only: failure changes nothing.
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(p, region_len, libc::MADV_NOHUGEPAGE) };
        Some(Arc::new(BufferPool {
            region: NonNull::new(p.cast())?,
            region_len,
            buf_size,
            count,
            free: Mutex::new(Vec::with_capacity(count)),
            fresh: AtomicUsize::new(0),
            out: AtomicUsize::new(0),
            misses: AtomicU64::new(0),
        }))
    }

    /// The size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers handed out now.
    pub fn in_use(&self) -> usize {
        self.out.load(Ordering::Relaxed)
    }

    /// Pieces that found the pool empty (and were received into heap memory instead).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// A buffer for a piece of `len` bytes: from the pool when it has one and the piece fits,
    /// else from the heap.
    pub fn buffer(self: &Arc<Self>, len: usize) -> Box<dyn PieceBuffer> {
        match (len <= self.buf_size).then(|| self.take()).flatten() {
            Some(idx) => Box::new(PoolBuffer {
                pool: self.clone(),
                idx: Some(idx),
                len: 0,
            }),
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Box::new(HeapBuffer::with_capacity(len))
            }
        }
    }

    /// An index no one holds, if any is left.
    fn take(&self) -> Option<usize> {
        let idx = match self.free.lock().pop() {
            Some(i) => i,
            None => self
                .fresh
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    (f < self.count).then_some(f + 1)
                })
                .ok()?,
        };
        self.out.fetch_add(1, Ordering::Relaxed);
        Some(idx)
    }

    fn give_back(&self, idx: usize) {
        self.out.fetch_sub(1, Ordering::Relaxed);
        self.free.lock().push(idx);
    }

    /// The memory of buffer `idx`.
    fn ptr(&self, idx: usize) -> *mut u8 {
        debug_assert!(idx < self.count);
        // SAFETY: idx < count, so the offset is within the region.
        unsafe { self.region.as_ptr().add(idx * self.buf_size) }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // Every buffer holds an `Arc` of the pool, so none is in use now.
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.region.as_ptr().cast(), self.region_len) };
    }
}

/// A pool buffer being written (by one fetch).
struct PoolBuffer {
    pool: Arc<BufferPool>,
    /// `None` once frozen (the index then belongs to the block).
    idx: Option<usize>,
    len: usize,
}

impl PieceBuffer for PoolBuffer {
    fn put(&mut self, data: &[u8]) {
        let Some(idx) = self.idx else { return };
        let n = data.len().min(self.pool.buf_size - self.len);
        // SAFETY: this buffer's index is held by no one else, and `len + n <= buf_size`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.pool.ptr(idx).add(self.len), n);
        }
        self.len += n;
    }

    fn spare(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        let Some(idx) = self.idx else {
            return &mut [];
        };
        // SAFETY: this buffer's index is held by no one else (and the borrow of `self` keeps it
        // so while the slice lives); `len <= buf_size`, so the slice is within buffer `idx`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.ptr(idx).add(self.len).cast(),
                self.pool.buf_size - self.len,
            )
        }
    }

    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.pool.buf_size);
        self.len = (self.len + n).min(self.pool.buf_size);
    }

    fn freeze(mut self: Box<Self>) -> Bytes {
        match self.idx.take() {
            Some(idx) => Bytes::from_owner(Block {
                pool: self.pool.clone(),
                idx,
                len: self.len,
            }),
            None => Bytes::new(),
        }
    }
}

impl Drop for PoolBuffer {
    fn drop(&mut self) {
        // A piece given up before it was complete (its request stopped).
        if let Some(idx) = self.idx.take() {
            self.pool.give_back(idx);
        }
    }
}

/// A frozen pool buffer: a block's bytes. Back to the pool when the last `Bytes` of it goes.
struct Block {
    pool: Arc<BufferPool>,
    idx: usize,
    len: usize,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: written by its one holder before it was frozen; never written again until given
        // back, which only happens when this is dropped.
        unsafe { std::slice::from_raw_parts(self.pool.ptr(self.idx), self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.give_back(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(pool: &Arc<BufferPool>, byte: u8, len: usize) -> Bytes {
        let mut b = pool.buffer(len);
        b.put(&vec![byte; len / 2]);
        b.put(&vec![byte; len - len / 2]);
        b.freeze()
    }

    #[test]
    fn buffers_are_reused_after_their_block_is_dropped() {
        let pool = BufferPool::new(2, 64).expect("pool");
        let a = fill(&pool, 1, 64);
        let b = fill(&pool, 2, 10);
        assert_eq!((&a[..], &b[..]), (&[1u8; 64][..], &[2u8; 10][..]));
        assert_eq!(pool.in_use(), 2);
        // Empty: the next piece goes to the heap, and the pool stays at its bound.
        let c = fill(&pool, 3, 64);
        assert_eq!(&c[..], &[3u8; 64][..]);
        assert_eq!((pool.in_use(), pool.misses()), (2, 1));
        let slice = a.slice(10..20);
        drop(a);
        assert_eq!(pool.in_use(), 2, "a slice keeps the block");
        drop(slice);
        assert_eq!(pool.in_use(), 1);
        let d = fill(&pool, 4, 64);
        assert_eq!(&d[..], &[4u8; 64][..]);
        assert_eq!(&b[..], &[2u8; 10][..], "other blocks untouched");
    }

    #[test]
    fn bytes_written_into_the_spare_room_are_the_blocks_bytes() {
        let pool = BufferPool::new(1, 64).expect("pool");
        let mut b = pool.buffer(64);
        b.put(&[1; 10]);
        let spare = b.spare();
        assert_eq!(spare.len(), 54, "the rest of the buffer");
        for (i, byte) in spare[..20].iter_mut().enumerate() {
            byte.write(i as u8);
        }
        // SAFETY: the first 20 bytes of the spare room were just written.
        unsafe { b.advance(20) };
        b.put(&[2; 4]);
        assert_eq!(b.spare().len(), 30);
        let block = b.freeze();
        let want: Vec<u8> = [vec![1; 10], (0..20).collect(), vec![2; 4]].concat();
        assert_eq!(&block[..], &want[..]);
        assert_eq!(pool.misses(), 0);
    }

    #[test]
    fn a_piece_given_up_returns_its_buffer() {
        let pool = BufferPool::new(1, 64).expect("pool");
        let mut b = pool.buffer(64);
        b.put(&[9; 30]);
        assert_eq!(pool.in_use(), 1);
        drop(b);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.misses(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Under random interleavings of taking, filling, slicing and dropping blocks from several
        /// threads, the pool never hands out more buffers than it has, and no buffer is handed to
        /// two live blocks at once (each block keeps exactly the bytes written into it).
        #[test]
        fn no_buffer_is_handed_to_two_blocks_and_the_bound_holds(
            ops in proptest::collection::vec((0u8..4, 1usize..64), 1..200),
            count in 1usize..8,
        ) {
            let pool = BufferPool::new(count, 64).expect("pool");
            let threads: Vec<_> = (0..3u8).map(|t| {
                let pool = pool.clone();
                let ops = ops.clone();
                std::thread::spawn(move || {
                    let mut live: Vec<(Bytes, u8)> = Vec::new();
                    for (i, (op, len)) in ops.into_iter().enumerate() {
                        let tag = (i as u8).wrapping_mul(3).wrapping_add(t);
                        match op {
                            0 | 1 => live.push((fill(&pool, tag, len), tag)),
                            2 if !live.is_empty() => {
                                live.swap_remove(len % live.len());
                            }
                            _ => {}
                        }
                        assert!(pool.in_use() <= count);
                        for (b, tag) in &live {
                            assert!(b.iter().all(|x| x == tag), "a block's bytes changed");
                        }
                    }
                })
            }).collect();
            for t in threads {
                t.join().expect("thread");
            }
            proptest::prop_assert_eq!(pool.in_use(), 0);
        }
    }
}
