//! How a sum over many items (a weight gradient's images or Winograd tiles) is cut into
//! partial sums: from the shapes alone, never from the thread count, so the partial sums and
//! the order they are added in are the same at any `--threads` and the result is the same
//! bits (README, "Determinism").
//!
//! In: the number of items, the multiply-adds per item, the floats of one partial sum, and
//! (for [`parts`]) the thread count. Out: [`Chunks`] (items per partial sum, how many), and
//! how many disjoint pieces of the result each chunk's task is cut into so that the tasks
//! keep every thread busy. Cutting the result (output or input channels) never changes a
//! sum's order; cutting the items does, which is why only the shapes choose that.

/// Multiply-adds one partial sum should cover at least: adding a partial costs one pass over
/// the gradient, well under 1% of a chunk's products at this size.
const CHUNK_MACS: usize = 1 << 24;

/// At most this many partial sums.
const MAX_CHUNKS: usize = 16;

/// At most this many floats in all partial sums (32 MiB), so large weights take fewer chunks.
const MAX_PARTIAL_FLOATS: usize = 1 << 23;

/// Items `i * per .. (i + 1) * per` (the last one shorter) form partial sum `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunks {
    pub per: usize,
    pub count: usize,
}

impl Chunks {
    /// The items of chunk `i`.
    pub fn range(&self, i: usize, items: usize) -> std::ops::Range<usize> {
        (i * self.per).min(items)..((i + 1) * self.per).min(items)
    }
}

/// The chunks of `items` items of `macs` multiply-adds each, with partial sums of `len`
/// floats: each chunk at least [`CHUNK_MACS`], a power of two of them where the items allow
/// (so they divide evenly over power-of-two thread counts), at most [`MAX_CHUNKS`] and
/// [`MAX_PARTIAL_FLOATS`] in all.
pub fn chunks(items: usize, macs: usize, len: usize) -> Chunks {
    let items = items.max(1);
    let by_work = items.saturating_mul(macs.max(1)) / CHUNK_MACS;
    let by_memory = MAX_PARTIAL_FLOATS / len.max(1);
    let most = by_work.min(by_memory).min(MAX_CHUNKS).min(items).max(1);
    // The largest power of two not above `most`.
    let want = 1usize << most.ilog2();
    let per = items.div_ceil(want);
    Chunks {
        per,
        count: items.div_ceil(per),
    }
}

/// The most floats the partial sums of one reduction with partial sums of `len` floats can
/// hold, whatever the items ([`chunks`]' bounds): what the memory budget counts.
pub fn most_partial_floats(len: usize) -> usize {
    MAX_CHUNKS
        .saturating_mul(len)
        .min(MAX_PARTIAL_FLOATS.max(len))
}

/// Into how many pieces (of at most `most`) each of `chunks` tasks is cut so that the
/// `chunks × pieces` tasks divide evenly over `threads` (none with one thread; none when
/// there are many chunks per thread anyway).
pub fn parts(chunks: usize, threads: usize, most: usize) -> usize {
    if threads <= 1 || chunks >= 4 * threads {
        return 1;
    }
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    (threads / gcd(chunks.max(1), threads)).clamp(1, most.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_depend_on_the_shapes_and_cover_every_item() {
        // Little work: one chunk.
        assert_eq!(chunks(64, 1000, 150), Chunks { per: 64, count: 1 });
        // Much work: a power of two of chunks, at most one per item and MAX_CHUNKS.
        assert_eq!(chunks(8, 1 << 27, 9408), Chunks { per: 1, count: 8 });
        assert_eq!(chunks(100, 1 << 27, 10), Chunks { per: 7, count: 15 });
        assert_eq!(chunks(5, 1 << 27, 10).count, 3);
        // Large partial sums: fewer chunks.
        assert_eq!(chunks(64, 1 << 27, 1 << 22).count, 2);
        for (items, macs, len) in [(1, 0, 0), (7, 1 << 30, 1), (33, 1 << 20, 1 << 24)] {
            let c = chunks(items, macs, len);
            let covered: usize = (0..c.count).map(|i| c.range(i, items).len()).sum();
            assert_eq!(covered, items);
            assert!((0..c.count).all(|i| !c.range(i, items).is_empty()));
        }
    }

    #[test]
    fn parts_fill_the_threads_evenly() {
        assert_eq!(parts(1, 1, 64), 1);
        assert_eq!(parts(1, 4, 64), 4);
        assert_eq!(parts(2, 4, 64), 2);
        assert_eq!(parts(4, 2, 64), 1);
        assert_eq!(parts(4, 3, 64), 3);
        assert_eq!(parts(3, 2, 64), 2);
        assert_eq!(parts(1, 8, 6), 6);
        assert_eq!(parts(16, 3, 64), 1);
    }
}
