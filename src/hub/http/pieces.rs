//! The bytes of one range being assembled across attempts, piece by piece, into memory the
//! caller's sink hands out.

use std::mem::MaybeUninit;

use bytes::Bytes;

use crate::hub::h1::Receiver;
use crate::hub::{HeapBuffer, PieceBuffer, PieceSink};

/// Pieces of a range being assembled across retries: complete pieces (kept, or handed to a sink
/// as each completes) plus the one being filled, in memory the sink gives (so a body's bytes are
/// copied once, from the connection's buffer into the block that keeps them).
pub struct Pieces<'a> {
    len: u64,
    piece: u64,
    done: Vec<Bytes>,
    /// Pieces completed so far (kept or handed on).
    pub(super) completed: usize,
    pub(super) sink: Option<&'a dyn PieceSink>,
    /// The piece being filled (made when its first byte arrives), and its bytes so far.
    cur: Option<Box<dyn PieceBuffer>>,
    cur_len: u64,
    got: u64,
}

impl<'a> Pieces<'a> {
    /// An empty range of `len` bytes in pieces of `piece`, kept until [`Pieces::finish`].
    pub fn new(len: u64, piece: u64) -> Self {
        let piece = piece.clamp(1, len.max(1));
        Pieces {
            len,
            piece,
            done: Vec::with_capacity(len.div_ceil(piece) as usize),
            completed: 0,
            sink: None,
            cur: None,
            cur_len: 0,
            got: 0,
        }
    }

    /// An empty range whose pieces go to `sink` as each completes, numbered from 0, received
    /// into the buffers `sink` hands out.
    pub fn streaming(len: u64, piece: u64, sink: &'a dyn PieceSink) -> Self {
        let mut p = Pieces::new(len, piece);
        p.done = Vec::new();
        p.sink = Some(sink);
        p
    }

    /// Bytes received so far.
    pub fn got(&self) -> u64 {
        self.got
    }

    /// Bytes still missing.
    pub fn missing(&self) -> u64 {
        self.len - self.got
    }

    /// The length of the piece being filled.
    fn target(&self) -> u64 {
        self.piece
            .min(self.len - self.completed as u64 * self.piece)
    }

    fn complete(&mut self, piece: Bytes) {
        match self.sink {
            Some(sink) => sink.deliver(self.completed, piece),
            None => self.done.push(piece),
        }
        self.completed += 1;
    }

    /// Appends received bytes; fails if they run past the range.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), String> {
        if self.got + data.len() as u64 > self.len {
            return Err(format!("body longer than the {} bytes asked for", self.len));
        }
        self.got += data.len() as u64;
        while !data.is_empty() {
            let target = self.target();
            let sink = self.sink;
            let cur = self.cur.get_or_insert_with(|| match sink {
                Some(s) => s.buffer(target as usize),
                None => Box::new(HeapBuffer::with_capacity(target as usize)),
            });
            let n = ((target - self.cur_len) as usize).min(data.len());
            cur.put(&data[..n]);
            self.cur_len += n as u64;
            data = &data[n..];
            if self.cur_len == target {
                if let Some(full) = self.cur.take() {
                    self.cur_len = 0;
                    self.complete(full.freeze());
                }
            }
        }
        Ok(())
    }

    /// The memory the next received bytes go into, in the piece being filled: at most `max`
    /// bytes, never past the piece or the range. Empty when the sink's buffer takes bytes through
    /// [`PieceBuffer::put`] only (then use [`Pieces::push`]) or nothing is missing.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [MaybeUninit<u8>] {
        if self.got == self.len {
            return &mut [];
        }
        let target = self.target();
        let room = ((target - self.cur_len) as usize).min(max);
        let sink = self.sink;
        let cur = self.cur.get_or_insert_with(|| match sink {
            Some(s) => s.buffer(target as usize),
            None => Box::new(HeapBuffer::with_capacity(target as usize)),
        });
        let spare = cur.spare();
        let n = spare.len().min(room);
        &mut spare[..n]
    }

    /// Counts `n` bytes written into the last [`Pieces::spare`] as received; hands the piece on
    /// when it is complete.
    ///
    /// # Safety
    /// The first `n` bytes of the slice the last `spare` returned were written since, and no
    /// other call on `self` came between.
    pub(crate) unsafe fn advance(&mut self, n: usize) {
        let Some(cur) = self.cur.as_mut() else {
            debug_assert_eq!(n, 0);
            return;
        };
        // SAFETY: as the caller promised, for the spare of this very buffer.
        unsafe { cur.advance(n) };
        self.cur_len += n as u64;
        self.got += n as u64;
        if self.cur_len == self.target() {
            if let Some(full) = self.cur.take() {
                self.cur_len = 0;
                self.complete(full.freeze());
            }
        }
    }

    /// The kept pieces (none when streaming), once every byte arrived.
    pub fn finish(self) -> Option<Vec<Bytes>> {
        (self.got == self.len).then_some(self.done)
    }
}

impl Receiver for Pieces<'_> {
    fn missing(&self) -> u64 {
        Pieces::missing(self)
    }

    fn push(&mut self, data: &[u8]) -> Result<(), String> {
        Pieces::push(self, data)
    }

    fn spare(&mut self, max: usize) -> &mut [MaybeUninit<u8>] {
        Pieces::spare(self, max)
    }

    unsafe fn advance(&mut self, n: usize) {
        // SAFETY: the caller's promise is the one `Pieces::advance` asks for.
        unsafe { Pieces::advance(self, n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_at_piece_boundaries_whatever_the_chunks() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for chunk in [1, 7, 100, 333, 1000] {
            let mut p = Pieces::new(1000, 256);
            for c in data.chunks(chunk) {
                p.push(c).unwrap();
            }
            let pieces = p.finish().unwrap();
            assert_eq!(
                pieces.iter().map(|b| b.len()).collect::<Vec<_>>(),
                [256, 256, 256, 232]
            );
            assert_eq!(pieces.concat(), data);
        }
        let mut p = Pieces::new(10, 4);
        p.push(&[0; 6]).unwrap();
        assert_eq!((p.got(), p.missing()), (6, 4));
        assert!(p.push(&[0; 5]).is_err(), "never more than asked");
        let short = Pieces::new(10, 4);
        assert!(short.finish().is_none(), "never fewer than asked");
    }
}
