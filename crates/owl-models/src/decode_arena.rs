//! Memory for the decode-layout (8-row interleaved) copies of a model's weights.
//!
//! Most projections of a small model are under 2 MiB (Qwen2.5-Coder 0.5B: 0.5–3 MB), too
//! small for a transparent huge page of their own, so a map per tensor faulted in 4 KiB
//! pages: 78k page faults and ~0.4 s of system time in a Qwen load → first token of 0.6–0.85
//! s. Copies are now carved from shared anonymous maps of [`CHUNK_BYTES`] asked for huge
//! pages (`MADV_HUGEPAGE`: Linux's default `madvise` mode), 64-byte aligned; a copy larger
//! than a quarter chunk gets a map of its own. Each piece keeps its chunk alive.
//!
//! The current chunk is per thread (a model is built on one thread) and [`seal`] ends it
//! when a load finishes, so models loaded one after another never share a chunk: dropping
//! one frees its memory.

use std::cell::RefCell;
use std::sync::Arc;

use crate::weights::WeightBytes;

/// Bytes of one shared map.
const CHUNK_BYTES: usize = 32 << 20;
/// Alignment of a piece: a cache line (the kernels' loads are unaligned-safe; this keeps a
/// piece's rows from sharing a line with its neighbour's).
const ALIGN: usize = 64;

/// One anonymous map; pieces are disjoint ranges of it.
struct Chunk {
    map: memmap2::MmapMut,
    base: *mut u8,
}

// SAFETY: each byte range of the map is written by exactly one owner (the `Piece` that was
// handed it, before it becomes `WeightBytes`) and only read afterwards; the map lives as long
// as the `Arc<Chunk>` every piece and view holds.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(len: usize) -> Option<Arc<Chunk>> {
        let mut map = memmap2::MmapMut::map_anon(len).ok()?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        let base = map.as_mut_ptr();
        Some(Arc::new(Chunk { map, base }))
    }

    /// Bytes `start..start + len` (a frozen piece) as read-only memory. Built from the base
    /// pointer, not by slicing the map: a slice of the whole map would alias the pieces
    /// other threads may still be writing.
    fn bytes(&self, start: usize, len: usize) -> &[u8] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.map.len()));
        // SAFETY: in bounds (asserted); the piece is no longer written (see `Send`/`Sync`).
        unsafe { std::slice::from_raw_parts(self.base.add(start), len) }
    }
}

thread_local! {
    /// The chunk pieces are carved from on this thread, and the bytes used of it.
    static CURRENT: RefCell<Option<(Arc<Chunk>, usize)>> = const { RefCell::new(None) };
}

/// `len` zeroed bytes for one weight's copy, written through [`Piece::as_mut_slice`] and then
/// frozen with [`Piece::into_bytes`]. `None` if no map can be made (the caller falls back to a
/// heap buffer).
pub(crate) fn piece(len: usize) -> Option<Piece> {
    if len > CHUNK_BYTES / 4 {
        return Some(Piece { chunk: Chunk::new(len.max(1))?, start: 0, len });
    }
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let fits = current.as_ref().is_some_and(|(_, used)| used.next_multiple_of(ALIGN) + len <= CHUNK_BYTES);
        if !fits {
            *current = Some((Chunk::new(CHUNK_BYTES)?, 0));
        }
        let (chunk, used) = current.as_mut()?;
        let start = used.next_multiple_of(ALIGN);
        *used = start + len;
        Some(Piece { chunk: Arc::clone(chunk), start, len })
    })
}

/// Ends this thread's current chunk: the next piece starts a new one. Called when a model
/// has been built, so that no later model shares its memory.
pub(crate) fn seal() {
    CURRENT.with(|current| current.borrow_mut().take());
}

/// A weight's range of a chunk, not yet frozen.
pub(crate) struct Piece {
    chunk: Arc<Chunk>,
    start: usize,
    len: usize,
}

impl Piece {
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `start..start + len` lies inside the map (checked when carved) and was
        // handed to this piece alone; nothing reads it before `into_bytes`. `&mut self`
        // makes this the only live reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.base.add(self.start), self.len) }
    }

    pub(crate) fn into_bytes(self) -> WeightBytes {
        let (start, len) = (self.start, self.len);
        WeightBytes::view(&self.chunk, |c| c.bytes(start, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of one thread share a chunk until sealed, are aligned and disjoint, keep
    /// their bytes after the others are written and dropped, and large ones get a map of
    /// their own.
    #[test]
    fn pieces_are_disjoint_aligned_and_sealed_apart() {
        seal();
        let mut a = piece(1000).expect("piece");
        let mut b = piece(5000).expect("piece");
        assert!(Arc::ptr_eq(&a.chunk, &b.chunk));
        assert_eq!((a.start, b.start), (0, 1024));
        a.as_mut_slice().fill(1);
        b.as_mut_slice().fill(2);
        let a = a.into_bytes();
        drop(b);
        assert!(a.as_slice().iter().all(|&x| x == 1) && a.len() == 1000);
        let big = piece(CHUNK_BYTES / 2).expect("piece");
        assert_eq!(big.start, 0);
        assert!(big.chunk.map.len() == CHUNK_BYTES / 2);
        seal();
        let c = piece(10).expect("piece");
        assert_eq!(c.start, 0, "a sealed chunk is not reused");
        seal();
    }
}
