//! Dropping pages of a read-only file mapping from resident memory once their bytes have
//! been copied elsewhere (weights repacked at load, tensors streamed by a converter).

use memmap2::Mmap;

/// Drops the pages of `map` lying wholly inside `range` (a sub-slice of the map) from this
/// process's resident memory. The map stays valid: a later read faults the pages in again
/// from the file, unchanged. A range outside the map is ignored; the OS may refuse the
/// hint, which is not an error.
pub(crate) fn release_pages(map: &Mmap, range: &[u8]) {
    #[cfg(unix)]
    {
        let base = map.as_ptr() as usize;
        let (start, end) = (range.as_ptr() as usize, range.as_ptr() as usize + range.len());
        if start < base || end > base + map.len() {
            return;
        }
        const PAGE: usize = 4096;
        let (first, last) = ((start - base).next_multiple_of(PAGE), (end - base) / PAGE * PAGE);
        if first < last {
            // SAFETY: MADV_DONTNEED on a read-only file mapping: the pages are dropped and
            // refilled from the file on the next access, so every byte reads the same before
            // and after (the map is never written through). The range is inside the map and
            // page-aligned (the map itself starts on a page; 4 KiB divides every page size
            // Linux uses).
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first) };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}
