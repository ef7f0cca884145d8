//! A single-threaded f32 matrix product for x86-64 with AVX-512 (BLIS-style).
//!
//! In: `m`, `n`, `k`; `dst` (`m × n`, rows `dst_rs` apart, columns contiguous); `lhs`
//! (`m × k`) and `rhs` (`k × n`), each with any row and column strides (so transposed
//! operands need no copy); and `accumulate`. Out: `dst = lhs · rhs`, or `dst += lhs · rhs`
//! with `accumulate`. [`sgemm`] returns `false` without touching anything when the CPU lacks
//! AVX-512F (the caller then uses another implementation).
//!
//! How (BLIS-style): `rhs` is packed in blocks of [`KC`] rows × [`NC`] columns (a block stays
//! in L2), cut into panels [`NR`] = 64 columns wide; for each panel of [`MR`] = 6 rows of `lhs`
//! (which stays in L1), a microkernel sweeps across the block, keeping a 6 × 64 tile of the
//! result in 24 zmm registers over the whole slice of `k`: per step, one broadcast of `lhs`
//! per row and four vectors of `rhs`. Column edges use masked loads and stores and a kernel
//! with fewer vectors; row edges a kernel with fewer rows. `lhs` is read in place when its rows
//! are contiguous (else packed one panel at a time); with few rows, `rhs` is read in place too
//! (when its columns are contiguous), since packing it would cost more than the product;
//! [`sgemm_in_place`] always reads it in place, for operands already laid out for it.
//! Packing buffers are thread-local and reused across calls.

use std::cell::RefCell;

pub use super::post::Post;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the register tile.
const MR: usize = 6;
/// Vectors of 16 floats per row of the register tile.
const NV: usize = 4;
/// Columns of the register tile.
const NR: usize = NV * 16;
/// Most steps of `k` per packed slice (slices are of even length): a panel of `lhs`,
/// `MR × KC` floats, stays in L1, and the tile of `dst` is read and written once per slice.
const KC: usize = 512;
/// Most steps of `k` per slice when `rhs` has few columns.
const KC_MAX: usize = 16384;
/// Most columns of `rhs` per packed block: `KC × NC` floats (1 MiB) stay in L2.
const NC: usize = 512;
/// Panels of `lhs` packed together when it must be packed.
const PACK_PANELS: usize = 8;
/// Up to this many rows, `rhs` is read in place rather than packed.
const DIRECT_ROWS: usize = 4 * MR;

/// 64-byte aligned storage, so packed panels start on a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Per-thread packing buffers (a panel of lhs, a block of rhs), reused across calls.
    static PACK: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A buffer of at least `len` floats, 64-byte aligned.
fn reserve(buf: &mut Vec<Line>, len: usize) -> *mut f32 {
    let lines = len.div_ceil(16);
    if buf.len() < lines {
        buf.resize(lines, Line([0.0; 16]));
    }
    buf.as_mut_ptr().cast()
}

/// The mask with lanes `lo..hi` (clamped to `0..16`) set: the lanes of one 16-float vector
/// that fall inside a range, for masked loads and stores at edges.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn lane_mask(lo: isize, hi: isize) -> __mmask16 {
    let (lo, hi) = (lo.clamp(0, 16), hi.clamp(0, 16));
    if hi <= lo {
        return 0;
    }
    ((0xffffu32 >> (16 - (hi - lo))) << lo) as __mmask16
}

/// Whether the CPU has AVX-512F (checked once; `std` caches the answer).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` with `accumulate`) on AVX-512; returns `false`
/// and does nothing when the CPU lacks AVX-512F.
///
/// # Safety
/// `dst` must be valid for writes at `i * dst_rs + j`, `lhs` for reads at
/// `i * lhs_rs + p * lhs_cs` and `rhs` at `p * rhs_rs + j * rhs_cs`, for all `i < m`,
/// `j < n`, `p < k`; `dst` must not overlap the operands.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    accumulate: bool,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        run(
            (m, n, k),
            (dst, dst_rs),
            (lhs, lhs_rs, lhs_cs),
            rhs,
            RhsAt::RowStride(rhs_rs),
            rhs_cs,
            accumulate,
            false,
            None,
        )
    }
}

/// `dst = post(lhs · rhs)`: [`sgemm`] (without accumulating) with the epilogue `post` applied
/// to each tile of the result as it is stored for the last time ([`super::post`]), its row
/// `i`, column `j` the result's. Returns `false` and does nothing without AVX-512F.
///
/// # Safety
/// As [`sgemm`]; `post`'s pointers valid for the `m × n` elements it addresses.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_post(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    post: Post,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        run(
            (m, n, k),
            (dst, dst_rs),
            (lhs, lhs_rs, lhs_cs),
            rhs,
            RhsAt::RowStride(rhs_rs),
            rhs_cs,
            false,
            false,
            Some(post),
        )
    }
}

/// `dst = lhs · rhs` where row `p` of `rhs` starts at `rhs + rhs_rows[p]` (columns
/// contiguous): a convolution's column matrix read straight from a zero-padded input, each
/// row a shifted window of it, so no im2col copy is made. `lhs` rows are `lhs_rs` apart with
/// contiguous columns; `k = rhs_rows.len()`. Returns `false` and does nothing without
/// AVX-512F. With `post`, that epilogue is applied as in [`sgemm_post`].
///
/// # Safety
/// `dst` valid for writes at `i * dst_rs + j`, `lhs` for reads at `i * lhs_rs + p` and `rhs`
/// at `rhs_rows[p] + j`, for all `i < m`, `j < n`, `p < k`; `dst` must not overlap them;
/// `post`'s pointers valid for the elements it addresses.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_rows(
    m: usize,
    n: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_rows: &[isize],
    post: Option<Post>,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        run(
            (m, n, rhs_rows.len()),
            (dst, dst_rs),
            (lhs, lhs_rs, 1),
            rhs,
            RhsAt::RowTable(rhs_rows),
            1,
            false,
            false,
            post,
        )
    }
}

/// `dst (+)= lhs · rhs` where column `j` of `rhs` starts at `rhs + rhs_cols[j]` and runs
/// down contiguous rows: the transposed column matrix of a convolution's weight gradient,
/// read from a zero-padded input slab. `lhs` rows are `lhs_rs` apart with contiguous columns;
/// `n = rhs_cols.len()`. Returns `false` and does nothing without AVX-512F.
///
/// # Safety
/// `dst` valid for writes (and reads with `accumulate`) at `i * dst_rs + j`, `lhs` for reads
/// at `i * lhs_rs + p` and `rhs` at `rhs_cols[j] + p`, for all `i < m`, `j < n`, `p < k`;
/// `dst` must not overlap them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_cols(
    m: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cols: &[isize],
    accumulate: bool,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        run(
            (m, rhs_cols.len(), k),
            (dst, dst_rs),
            (lhs, lhs_rs, 1),
            rhs,
            RhsAt::ColumnTable(rhs_cols),
            0,
            accumulate,
            false,
            None,
        )
    }
}

/// The entry points' common part: `false` without AVX-512F; empty products and `k = 0`
/// (zeroing `dst` unless accumulating) handled here; the rest to [`drive`].
///
/// # Safety
/// As [`sgemm`], with `rhs` addressed as `rows` says.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    rhs: *const f32,
    rows: RhsAt,
    rhs_cs: isize,
    accumulate: bool,
    in_place: bool,
    post: Option<Post>,
) -> bool {
    if !available() {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row i of dst, n floats, by the caller's contract.
                unsafe { std::slice::from_raw_parts_mut(dst.offset(i as isize * dst_rs), n) }
                    .fill(0.0);
            }
        }
        if let Some(p) = post {
            for i in 0..m {
                let d = dst.wrapping_offset(i as isize * dst_rs);
                // SAFETY: row i of dst and of the post (contract).
                unsafe { super::post::copy_post(d, 0, d, 0, (1, n), p.at(i, 0)) };
            }
        }
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (checked above); the extents are the caller's contract.
    unsafe {
        drive(
            m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rows, rhs_cs, accumulate, in_place,
            post,
        );
    }
    true
}

/// `dst = lhs · rhs` with `rhs` (`k × n`, rows `rhs_rs` apart, columns contiguous) read in
/// place, never packed: for operands laid out for it by the caller, e.g. the Winograd
/// convolution's transformed tiles, whose rows are short and already in L2. `lhs` rows are
/// `lhs_rs` apart with contiguous columns. Returns `false` and does nothing without AVX-512F.
///
/// # Safety
/// `dst` valid for writes at `i * dst_rs + j`, `lhs` for reads at `i * lhs_rs + p` and `rhs`
/// at `p * rhs_rs + j`, for all `i < m`, `j < n`, `p < k`; `dst` must not overlap them.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_in_place(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_rs: isize,
) -> bool {
    // SAFETY: forwarded.
    unsafe {
        run(
            (m, n, k),
            (dst, dst_rs),
            (lhs, lhs_rs, 1),
            rhs,
            RhsAt::RowStride(rhs_rs),
            1,
            false,
            true,
            None,
        )
    }
}

/// How `rhs` is addressed: row `p` at `p · stride` (columns `cs` apart), row `p` at
/// `table[p]` (columns contiguous), or column `j` at `table[j]` (rows contiguous).
#[derive(Clone, Copy)]
enum RhsAt<'a> {
    RowStride(isize),
    RowTable(&'a [isize]),
    ColumnTable(&'a [isize]),
}

/// Where a microkernel reads and writes: `a` (`R` rows `a_rs` apart, steps of `k` `a_cs`
/// apart), `b` (rows `b_rs` apart, columns contiguous), the `dst` tile (rows `dst_rs` apart),
/// the lanes of the last vector, and whether to add to `dst`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    /// With a row table (kernel `TABLE`): row `p` of `b` is at `b + b_rows[p]`.
    b_rows: *const isize,
    dst: *mut f32,
    dst_rs: isize,
    mask: __mmask16,
    load: bool,
    /// The epilogue applied before storing (on the last slice of `k` only), at this tile.
    post: Option<Post>,
}

/// A microkernel: `kc` steps of `k` on one [`Tile`].
#[cfg(target_arch = "x86_64")]
type Kernel = unsafe fn(usize, &Tile);

/// `dst[R × 16·V] (+)= a · b` over `kc` steps of `k`; lanes of the last vector outside
/// `mask` are not written to `dst`, nor read from `b` with `MASK_B` (`b` read in place;
/// packed panels are zero-padded to whole vectors and loaded without a mask).
///
/// # Safety
/// AVX-512F present; every element of `a`, `b` and `dst` the tile addresses is valid
/// (for `b` without `MASK_B`: whole vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const V: usize, const MASK_B: bool, const TABLE: bool>(
    kc: usize,
    t: &Tile,
) {
    // With `load`, the sums start from dst (the earlier slices of k, or what `accumulate`
    // adds to), so every element is one chain of multiply-adds over `k` in order, however
    // `k`, the rows and the columns are cut into slices, tiles and tasks (the result does
    // not depend on the thread count).
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if t.load {
        for (i, row) in acc.iter_mut().enumerate() {
            for (v, c) in row.iter_mut().enumerate() {
                // SAFETY: lanes of row i of the tile (the last vector masked).
                *c = unsafe {
                    _mm512_maskz_loadu_ps(
                        if v + 1 == V { t.mask } else { 0xffff },
                        t.dst.offset(i as isize * t.dst_rs).add(16 * v),
                    )
                };
            }
        }
    }
    let (mut a, mut b) = (t.a, t.b);
    let mut rows = t.b_rows;
    let (a_rs, a_cs, b_rs, mask) = (t.a_rs, t.a_cs, t.b_rs, t.mask);
    // One step of k: a row of b times a column of a, into the tile.
    macro_rules! step {
        () => {
            if TABLE {
                // SAFETY: one table entry per step, kc in all.
                unsafe {
                    b = t.b.offset(*rows);
                    rows = rows.add(1);
                }
            }
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                // SAFETY: lanes of this row of b inside the tile (the last vector masked).
                *x = unsafe {
                    if MASK_B && v + 1 == V {
                        _mm512_maskz_loadu_ps(mask, b.add(16 * v))
                    } else {
                        _mm512_loadu_ps(b.add(16 * v))
                    }
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: row i of a at this step.
                let ai = _mm512_set1_ps(unsafe { *a.offset(i as isize * a_rs) });
                for (c, x) in row.iter_mut().zip(&bv) {
                    *c = _mm512_fmadd_ps(ai, *x, *c);
                }
            }
            // SAFETY: the next step (one past the end after the last, never read).
            unsafe {
                a = a.offset(a_cs);
                if !TABLE {
                    b = b.offset(b_rs);
                }
            }
        };
    }
    // The last steps run after the tile of dst is prefetched, as it is read and written next.
    let last = kc.min(16);
    let mut p = 0;
    while p + 4 <= kc - last {
        step!();
        step!();
        step!();
        step!();
        p += 4;
    }
    while p < kc - last {
        step!();
        p += 1;
    }
    for i in 0..R {
        for v in 0..V {
            // SAFETY: a prefetch never faults.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(t.dst.offset(i as isize * t.dst_rs).add(16 * v).cast())
            };
        }
    }
    for _ in 0..last {
        step!();
    }
    // The epilogue, if any (on the last slice of k): `relu?((acc + bias) + res)`, the
    // operations of [`super::post::Post::value`] on 16 lanes (ReLU is `maxps(0, x)`, whose
    // second operand wins for NaN and two zeros, as there). One short loop per part: LLVM
    // unrolls each fully, so the accumulators stay in registers (one loop doing all parts was
    // not unrolled, and then the tile lived in memory through the whole product).
    if let Some(post) = t.post {
        if !post.bias.is_null() {
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: row i's bias (the post addresses the tile's rows).
                let b = _mm512_set1_ps(unsafe { *post.bias.offset(i as isize * post.bias_rs) });
                for c in row.iter_mut() {
                    *c = _mm512_add_ps(*c, b);
                }
            }
        }
        if !post.res.is_null() {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, c) in row.iter_mut().enumerate() {
                    // SAFETY: lanes of row i of the residual (the last vector masked).
                    let r = unsafe { post.res.offset(i as isize * post.res_rs).add(16 * v) };
                    *c = _mm512_add_ps(*c, unsafe {
                        _mm512_maskz_loadu_ps(if v + 1 == V { mask } else { 0xffff }, r)
                    });
                }
            }
        }
        if post.relu {
            let zero = _mm512_setzero_ps();
            for row in acc.iter_mut() {
                for c in row.iter_mut() {
                    *c = _mm512_max_ps(zero, *c);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, c) in row.iter().enumerate() {
            // SAFETY: lanes of row i of the tile (the last vector masked).
            unsafe {
                let m = if v + 1 == V { mask } else { 0xffff };
                _mm512_mask_storeu_ps(t.dst.offset(i as isize * t.dst_rs).add(16 * v), m, *c)
            };
        }
    }
}

/// The kernel table: one row per row count, one column per vector count.
#[cfg(target_arch = "x86_64")]
macro_rules! kernels {
    ($m:literal $t:literal [$($r:literal)*] $v:tt) => {
        [$(kernels!(@row $m $t $r $v)),*]
    };
    (@row $m:literal $t:literal $r:literal [$($v:literal)*]) => {
        [$(kernel::<$r, $v, $m, $t> as Kernel),*]
    };
}

/// Kernels by `[b packed / in place / in place by row table][rows - 1][vectors - 1]`.
#[cfg(target_arch = "x86_64")]
static KERNELS: [[[Kernel; NV]; MR]; 3] = [
    kernels!(false false [1 2 3 4 5 6] [1 2 3 4]),
    kernels!(true false [1 2 3 4 5 6] [1 2 3 4]),
    kernels!(true true [1 2 3 4 5 6] [1 2 3 4]),
];

/// Packs rows `0..mc` and columns `0..kc` of `a` into panels of [`MR`] rows: panel `q` starts
/// at `q · MR · kc` and holds `r = min(MR, mc - q·MR)` floats per column.
///
/// # Safety
/// AVX-512F present; `a` valid at `i * rs + p * cs`; `out` holds `mc · kc` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_lhs(mc: usize, kc: usize, a: *const f32, rs: isize, cs: isize, out: *mut f32) {
    let panels = mc.div_ceil(MR);
    // SAFETY: panel q of out, rows q·MR.. of a.
    unsafe {
        if rs == 1 {
            // Columns are contiguous: each step reads one stretch of `mc` floats (whole cache
            // lines) and hands it out to the panels.
            for p in 0..kc {
                let src = a.offset(p as isize * cs);
                for q in 0..panels {
                    let r = MR.min(mc - q * MR);
                    let mask = (0xffffu32 >> (16 - r)) as __mmask16;
                    let x = _mm512_maskz_loadu_ps(mask, src.add(q * MR));
                    _mm512_mask_storeu_ps(out.add(q * MR * kc + p * r), mask, x);
                }
            }
        } else {
            for q in 0..panels {
                let r = MR.min(mc - q * MR);
                let o = out.add(q * MR * kc);
                let a = a.offset((q * MR) as isize * rs);
                for p in 0..kc {
                    let src = a.offset(p as isize * cs);
                    for i in 0..r {
                        *o.add(p * r + i) = *src.offset(i as isize * rs);
                    }
                }
            }
        }
    }
}

/// Transposes a 16 × 16 block held as 16 vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved, then pairs of pairs: in each 128-bit lane l of u[4g + c],
    // rows 4g..4g+4 at column 4l + c.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (t0, t1, t2, t3) = (
            _mm512_castps_pd(t[4 * g]),
            _mm512_castps_pd(t[4 * g + 1]),
            _mm512_castps_pd(t[4 * g + 2]),
            _mm512_castps_pd(t[4 * g + 3]),
        );
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // A 4 × 4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let s0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let s1 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
        let s2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let s3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(s0, s2);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(s1, s3);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(s0, s2);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(s1, s3);
    }
    out
}

/// Packs rows `0..kc` and columns `0..nc` of `b` into panels of [`NR`] columns: panel `q`
/// starts at `q · NR · kc` and holds `w` floats per row, `w` = `NR` or, for the last panel,
/// its width rounded up to 16 (zero-filled). Row `p` of `b` starts at `p · rs` or, with a
/// [`RhsAt::RowTable`] (`kc` entries, columns contiguous), at `table[p]`; with [`RhsAt::ColumnTable`]
/// (`nc` entries, rows contiguous) column `j` starts at `table[j]`.
///
/// # Safety
/// AVX-512F present; `b` valid at (row start) `+ j * cs`; `out` holds `kc · nc` rounded up
/// to 16 floats per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_rhs(kc: usize, nc: usize, b: *const f32, rows: RhsAt, cs: isize, out: *mut f32) {
    for q in 0..nc.div_ceil(NR) {
        let width = NR.min(nc - q * NR);
        let w = width.div_ceil(16) * 16;
        // SAFETY: panel q of out, columns q·NR.. of b.
        unsafe {
            let o = out.add(q * NR * kc);
            let b = b.offset((q * NR) as isize * cs);
            if let RhsAt::RowTable(table) = rows {
                for (p, &off) in table.iter().enumerate() {
                    let src = b.offset(off);
                    let dst = o.add(p * w);
                    for j in (0..width).step_by(16) {
                        let mask = (0xffffu32 >> (16 - (width - j).min(16))) as __mmask16;
                        _mm512_storeu_ps(dst.add(j), _mm512_maskz_loadu_ps(mask, src.add(j)));
                    }
                }
                continue;
            }
            if let RhsAt::ColumnTable(cols) = rows {
                // Column j starts at cols[j] (this block's): 16 × 16 blocks transposed in
                // registers.
                for j0 in (0..width).step_by(16) {
                    let jn = (width - j0).min(16);
                    for p0 in (0..kc).step_by(16) {
                        let pn = (kc - p0).min(16);
                        let mask = (0xffffu32 >> (16 - pn)) as __mmask16;
                        let mut r = [_mm512_setzero_ps(); 16];
                        for (i, x) in r.iter_mut().enumerate().take(jn) {
                            *x = _mm512_maskz_loadu_ps(
                                mask,
                                b.offset(cols[q * NR + j0 + i]).add(p0),
                            );
                        }
                        let t = transpose16(r);
                        for (i, x) in t.iter().enumerate().take(pn) {
                            _mm512_storeu_ps(o.add((p0 + i) * w + j0), *x);
                        }
                    }
                }
                continue;
            }
            let rs = match rows {
                RhsAt::RowStride(rs) => rs,
                RhsAt::RowTable(_) | RhsAt::ColumnTable(_) => unreachable!("handled above"),
            };
            if cs == 1 {
                for p in 0..kc {
                    let src = b.offset(p as isize * rs);
                    let dst = o.add(p * w);
                    for j in (0..width).step_by(16) {
                        let mask = (0xffffu32 >> (16 - (width - j).min(16))) as __mmask16;
                        _mm512_storeu_ps(dst.add(j), _mm512_maskz_loadu_ps(mask, src.add(j)));
                    }
                }
            } else if rs == 1 {
                // Columns are contiguous: 16 × 16 blocks transposed in registers.
                for j0 in (0..width).step_by(16) {
                    let jn = (width - j0).min(16);
                    for p0 in (0..kc).step_by(16) {
                        let pn = (kc - p0).min(16);
                        let mask = (0xffffu32 >> (16 - pn)) as __mmask16;
                        let mut r = [_mm512_setzero_ps(); 16];
                        for (i, x) in r.iter_mut().enumerate().take(jn) {
                            *x = _mm512_maskz_loadu_ps(
                                mask,
                                b.offset((j0 + i) as isize * cs).add(p0),
                            );
                        }
                        let t = transpose16(r);
                        for (i, x) in t.iter().enumerate().take(pn) {
                            _mm512_storeu_ps(o.add((p0 + i) * w + j0), *x);
                        }
                    }
                }
            } else {
                for p in 0..kc {
                    let src = b.offset(p as isize * rs);
                    for j in 0..w {
                        *o.add(p * w + j) = if j < width {
                            *src.offset(j as isize * cs)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// The blocked loops of [`sgemm`]: for each block of [`NC`] columns and [`KC`] steps of `k`,
/// pack that block of `rhs` (it stays in L2), then for each panel of [`MR`] rows of `lhs`
/// (in L1, packed if its columns are not contiguous) sweep the microkernel across the block.
///
/// # Safety
/// As [`sgemm`], with AVX-512F present and `m, n, k > 0`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn drive(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rows: RhsAt,
    rhs_cs: isize,
    accumulate: bool,
    in_place: bool,
    post: Option<Post>,
) {
    // rhs in place with few rows (rows evenly apart, or by the row table); lhs in place
    // when its rows are contiguous.
    let (rhs_rs, table) = match rhs_rows {
        RhsAt::RowStride(rs) => (rs, false),
        RhsAt::RowTable(_) => (0, true),
        RhsAt::ColumnTable(_) => (1, false),
    };
    let direct =
        (in_place || m <= DIRECT_ROWS) && rhs_cs == 1 && !matches!(rhs_rows, RhsAt::ColumnTable(_));
    let pack_a = lhs_cs != 1;
    // Blocks of even size: k = 600 is two slices of 300, not 512 + 88.
    let even =
        |len: usize, max: usize, unit: usize| len.div_ceil(len.div_ceil(max)).div_ceil(unit) * unit;
    // Few columns (a dense layer at a small batch): longer slices of k, up to a block of
    // rhs the size of a full one, so each row of lhs streams from memory in one long run the
    // hardware prefetcher follows, rather than in 2 KiB pieces.
    let kc_max = KC.max(KC * NC / n.next_multiple_of(16)).min(KC_MAX);
    let kcb = even(k, kc_max, 1);
    let ncb = even(n, NC, NR);
    PACK.with(|bufs| {
        let (abuf, bbuf) = &mut *bufs.borrow_mut();
        let apack = if pack_a {
            reserve(abuf, PACK_PANELS * MR * kcb)
        } else {
            std::ptr::null_mut()
        };
        let bpack = if direct {
            std::ptr::null_mut()
        } else {
            reserve(bbuf, kcb * ncb.min(n).div_ceil(16) * 16)
        };
        for jc in (0..n).step_by(ncb) {
            let nc = ncb.min(n - jc);
            for pc in (0..k).step_by(kcb) {
                let kc = kcb.min(k - pc);
                let load = accumulate || pc > 0;
                // Addresses are computed with wrapping arithmetic (safe); they stay inside the
                // operands by the caller's contract, and inside the buffers sized above.
                let b = rhs.wrapping_offset(pc as isize * rhs_rs + jc as isize * rhs_cs);
                if !direct {
                    let rows = match rhs_rows {
                        RhsAt::RowStride(rs) => RhsAt::RowStride(rs),
                        RhsAt::RowTable(t) => RhsAt::RowTable(&t[pc..pc + kc]),
                        RhsAt::ColumnTable(t) => RhsAt::ColumnTable(&t[jc..jc + nc]),
                    };
                    // SAFETY: this block of rhs is valid; bpack holds kc rows of nc rounded up
                    // to 16 floats.
                    unsafe { pack_rhs(kc, nc, b, rows, rhs_cs, bpack) };
                }
                for ir in 0..m.div_ceil(MR) {
                    let r = MR.min(m - ir * MR);
                    let (a, a_rs, a_cs) = if pack_a {
                        // A group of panels is packed at once, so whole cache lines are read.
                        let (g, first) = (ir % PACK_PANELS, ir - ir % PACK_PANELS);
                        if g == 0 {
                            let rows = (PACK_PANELS * MR).min(m - first * MR);
                            let a = lhs.wrapping_offset(
                                (first * MR) as isize * lhs_rs + pc as isize * lhs_cs,
                            );
                            // SAFETY: these rows and columns of lhs are valid; apack holds
                            // PACK_PANELS · MR · kcb floats.
                            unsafe { pack_lhs(rows, kc, a, lhs_rs, lhs_cs, apack) };
                        }
                        (apack.wrapping_add(g * MR * kc) as *const f32, 1, r as isize)
                    } else {
                        let a =
                            lhs.wrapping_offset((ir * MR) as isize * lhs_rs + pc as isize * lhs_cs);
                        (a, lhs_rs, 1)
                    };
                    for jr in 0..nc.div_ceil(NR) {
                        let width = NR.min(nc - jr * NR);
                        let v = width.div_ceil(16);
                        let mask = (0xffffu32 >> (v * 16 - width)) as __mmask16;
                        let b_rows = match rhs_rows {
                            RhsAt::RowTable(t) if direct => t[pc..].as_ptr(),
                            _ => std::ptr::null(),
                        };
                        let (b, b_rs) = if direct {
                            (b.wrapping_add(jr * NR), rhs_rs)
                        } else {
                            (
                                bpack.wrapping_add(jr * NR * kc) as *const f32,
                                (v * 16) as isize,
                            )
                        };
                        let tile = Tile {
                            a,
                            a_rs,
                            a_cs,
                            b,
                            b_rs,
                            b_rows,
                            dst: dst.wrapping_offset(
                                (ir * MR) as isize * dst_rs + (jc + jr * NR) as isize,
                            ),
                            dst_rs,
                            mask,
                            load,
                            post: post
                                .filter(|_| pc + kc == k)
                                .map(|p| p.at(ir * MR, jc + jr * NR)),
                        };
                        let kind = if direct { 1 + table as usize } else { 0 };
                        // SAFETY: the tile addresses r rows and `width` columns of dst, the
                        // matching rows of a and columns of b, kc steps deep: all valid.
                        unsafe { KERNELS[kind][r - 1][v - 1](kc, &tile) };
                    }
                }
            }
        }
    });
}
