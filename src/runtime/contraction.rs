//! Convolution and matrix multiplication on the host.
//!
//! In: a [`ContractionKind`], pointers to the operands (the whole batch) and which images,
//! output channels or rows one task computes, and optionally a [`PostOp`] epilogue. Out: that
//! part of the result, written (never accumulated) into the output buffer, the post-op applied
//! as it is stored; the caller runs any other fused epilogue.
//!
//! Convolutions are implicit GEMMs where it pays ([`conv_implicit`]: the column matrix is read
//! from a zero-padded slab of the input through a row-offset table), else im2col in L2-sized
//! bands + GEMM (small maps: several images side by side, copied by [`im2col_batch`]'s lane
//! tables); the gradients reuse both (backward-data at stride 1 as the implicit
//! convolution of `dy` with the flipped weight, else `Wᵀ·dy` + col2im; backward-weight
//! `dy·im2col(x)ᵀ`, or with few output channels [`weight_grad_direct`]'s register sums). 3×3 stride-1 convolutions that pay for it bypass this module for
//! [`super::winograd`] (the runtime decides). The products are AVX-512 microkernels: our [`super::sgemm`] for the
//! shapes where it measured faster, the `gemm` crate's for the others.

use std::cell::RefCell;

use super::post::{Post, PostOp, copy_post};
use crate::fuse::kernel::ContractionKind;

/// Output pixels per im2col band: with a few hundred rows of K, the band stays in L2.
const BAND_PIXELS: usize = 384;

thread_local! {
    /// Per-thread im2col scratch, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread GEMM output tile for batched small images.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread flipped, transposed weight of a backward-data pass ([`flip_weight`]).
    static FLIPPED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread lane tables of [`im2col_batch`], by geometry and pack size.
    static BATCH_TABLES: RefCell<std::collections::HashMap<[usize; 14], BatchTable>> =
        RefCell::new(std::collections::HashMap::new());
}

/// `dst[m, n] = lhs[m, k] * rhs[k, n]` with explicit row and column strides (in elements).
///
/// # Safety
/// The pointers must be valid for the strided extents given.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
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
) {
    // SAFETY: forwarded.
    unsafe {
        gemm_acc(
            m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, false,
        )
    }
}

/// Whether [`gemm_acc`] takes a product of depth `k` with these column strides to
/// [`super::sgemm`] (when the CPU has AVX-512F).
fn ours(k: usize, lhs_cs: isize, rhs_cs: isize) -> bool {
    rhs_cs != 1 || (lhs_cs == 1 && k >= 64)
}

/// Like [`gemm`]; with `accumulate`, adds the product to `dst` instead of overwriting it.
///
/// Single-threaded. [`super::sgemm`] takes the products with a transposed `rhs` (convolution
/// backward-weight, dense layers) and row-major products with `k >= 64` (convolution
/// forward; ResNet-50's 64-channel 1×1 convolutions measured 12-15% faster in ours); the
/// `gemm` crate the rest (transposed `lhs`, shorter `k`), where the two measured even
/// (`cargo bench --bench sgemm`).
///
/// # Safety
/// The pointers must be valid for the strided extents given.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_acc(
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
) {
    if m == 0 || n == 0 {
        return;
    }
    if ours(k, lhs_cs, rhs_cs) {
        // SAFETY: forwarded from the caller.
        let done = unsafe {
            super::sgemm::sgemm(
                m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate,
            )
        };
        if done {
            return;
        }
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds by the caller's contract.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller; without `accumulate`, `read_dst = false` so dst's
    // contents are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `dst = post(lhs · rhs)` (a plain product without `post`): [`gemm`]'s operands as `(rows,
/// columns, depth)`, `(dst, row stride)`, `(lhs, row stride, column stride)`, `(rhs, ...)`.
/// The product is the one [`gemm`] computes (the same microkernel, so the same bits); the
/// epilogue is applied in its registers where that is [`super::sgemm`], else after it.
///
/// # Safety
/// As [`gemm`]; `post`'s pointers valid for the `m × n` elements it addresses.
unsafe fn gemm_post(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (*mut f32, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
    post: Option<Post>,
) {
    if let Some(p) = post
        && ours(k, lhs_cs, rhs_cs)
    {
        // SAFETY: forwarded.
        let done = unsafe {
            super::sgemm::sgemm_post(
                m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, p,
            )
        };
        if done {
            return;
        }
    }
    // SAFETY: forwarded.
    unsafe {
        gemm(
            m, n, k, dst, dst_rs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs,
        )
    };
    if let Some(p) = post {
        for i in 0..m {
            let d = dst.wrapping_offset(i as isize * dst_rs);
            // SAFETY: row i of the product, just written, and of the post (contract).
            unsafe { copy_post(d, 0, d, 0, (1, n), p.at(i, 0)) };
        }
    }
}

/// Output rows at least this wide take one implicit product per row ([`conv_implicit`]).
const WIDE_ROWS: usize = 64;

/// Small images run as implicit GEMMs one at a time with up to this many output channels.
const SMALL_M: usize = 24;

/// Up to this many rows, [`gemm_nt`] computes `(b · aᵀ)ᵀ` instead of `a · bᵀ`.
const FEW_ROWS: usize = 32;

/// `dst[m, n] = a[m, k] · b[n, k]ᵀ` (`a` and `b` rows contiguous, `dst` rows `dst_rs`
/// apart): a dense layer's product with its weight `b` in PyTorch's `[out, in]` layout. With
/// few rows (a small batch), the weight is the big operand and the product is memory-bound:
/// it is then computed as `(b · aᵀ)ᵀ`, so the weight is read once, in place, as the GEMM's
/// left side, only `a` is packed (transposed), and the `n × m` result is transposed into
/// `dst`. Otherwise one GEMM with `b` transposed.
///
/// # Safety
/// `a` holds `m·k` floats, `b` `n·k`, `dst` rows `0..m` of `n` floats `dst_rs` apart.
pub unsafe fn gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    a: *const f32,
    b: *const f32,
) {
    if m > FEW_ROWS || m >= n {
        // SAFETY: forwarded.
        unsafe { gemm(m, n, k, dst, dst_rs, a, k as isize, 1, b, 1, k as isize) };
        return;
    }
    if m == 1 && k >= 16 && super::sgemm::available() {
        // One row: dot products of the weight's rows with `a`, streamed at memory speed (the
        // GEMM would fill one lane of 16 per vector).
        // SAFETY: AVX-512F is present; a holds k floats, b n·k, dst n.
        unsafe { gemv_rows(n, k, dst, a, b) };
        return;
    }
    TILE.with(|t| {
        let mut tile = t.borrow_mut();
        if tile.len() < n * m {
            tile.resize(n * m, 0.0);
        }
        // SAFETY: tile holds n·m floats; b is n × k row-major, aᵀ is a read with strides
        // (1, k).
        unsafe {
            gemm(
                n,
                m,
                k,
                tile.as_mut_ptr(),
                m as isize,
                b,
                k as isize,
                1,
                a,
                1,
                k as isize,
            )
        };
        for i in 0..m {
            // SAFETY: row i of dst, n floats.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.offset(i as isize * dst_rs), n) };
            for (j, d) in row.iter_mut().enumerate() {
                *d = tile[j * m + i];
            }
        }
    });
}

/// `dst[j] = Σ_p b[j·k + p] · a[p]` for `j < n`: a dense layer at batch 1, four rows at a
/// time with 16-lane accumulators.
///
/// # Safety
/// AVX-512F present; `a` holds `k` floats, `b` `n·k`, `dst` `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gemv_rows(n: usize, k: usize, dst: *mut f32, a: *const f32, b: *const f32) {
    use std::arch::x86_64::*;
    let tail = (0xffffu32 >> ((16 - k % 16) % 16)) as __mmask16;
    let full = k / 16;
    let mut j = 0;
    while j < n {
        let cnt = (n - j).min(4);
        let mut acc = [_mm512_setzero_ps(); 4];
        for v in 0..full {
            // SAFETY: vector v of a and of rows j..j+cnt of b, inside their k floats.
            unsafe {
                let x = _mm512_loadu_ps(a.add(16 * v));
                for (r, s) in acc.iter_mut().enumerate().take(cnt) {
                    *s = _mm512_fmadd_ps(_mm512_loadu_ps(b.add((j + r) * k + 16 * v)), x, *s);
                }
            }
        }
        if !k.is_multiple_of(16) {
            // SAFETY: the masked lanes are the last k % 16 floats of each row.
            unsafe {
                let x = _mm512_maskz_loadu_ps(tail, a.add(16 * full));
                for (r, s) in acc.iter_mut().enumerate().take(cnt) {
                    let w = _mm512_maskz_loadu_ps(tail, b.add((j + r) * k + 16 * full));
                    *s = _mm512_fmadd_ps(w, x, *s);
                }
            }
        }
        for (r, s) in acc.iter().enumerate().take(cnt) {
            // SAFETY: dst holds n floats.
            unsafe { *dst.add(j + r) = _mm512_reduce_add_ps(*s) };
        }
        j += cnt;
    }
}

/// Stand-in off x86-64 (never called: `sgemm::available()` is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn gemv_rows(_: usize, _: usize, _: *mut f32, _: *const f32, _: *const f32) {
    unreachable!()
}

/// The sizes of one convolution, derived once.
#[derive(Clone)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    pt: usize,
    pl: usize,
    dh: usize,
    dw: usize,
    groups: usize,
    oh: usize,
    ow: usize,
    cg: usize,
    og: usize,
    kdim: usize,
    npix: usize,
    /// 1x1, stride 1, no padding: the input already is the im2col matrix.
    direct: bool,
}

impl Geom {
    fn new(kind: &ContractionKind) -> Geom {
        let ContractionKind::Conv2d {
            c,
            h,
            w,
            o,
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [pt, pb, pl, pr],
            dilation: [dh, dw],
            groups,
            ..
        } = *kind
        else {
            unreachable!("a convolution's geometry of a matmul")
        };
        let oh = (h + pt + pb - dh * (kh - 1) - 1) / sh + 1;
        let ow = (w + pl + pr - dw * (kw - 1) - 1) / sw + 1;
        let cg = c / groups;
        Geom {
            c,
            h,
            w,
            o,
            kh,
            kw,
            sh,
            sw,
            pt,
            pl,
            dh,
            dw,
            groups,
            oh,
            ow,
            cg,
            og: o / groups,
            kdim: cg * kh * kw,
            npix: oh * ow,
            direct: kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0,
        }
    }
}

impl Geom {
    /// The same convolution over `cg` of its (group's) input channels: what one task that
    /// splits the input channels packs and scatters.
    fn channels(&self, cg: usize) -> Geom {
        Geom {
            cg,
            kdim: cg * self.kh * self.kw,
            ..self.clone()
        }
    }
}

/// How many tasks should split one image's output rows: when there are fewer images than
/// threads and the image is large, splitting rows shares the im2col work instead of repeating
/// it per output-channel block.
pub fn row_splits(kind: &ContractionKind, n: usize, threads: usize) -> usize {
    let g = Geom::new(kind);
    if n >= threads || g.npix < 2 * BAND_PIXELS {
        return 1;
    }
    threads.div_ceil(n).min(g.oh)
}

/// How many images one task should convolve together: small feature maps are batched so the
/// GEMM sees at least a band's worth of columns, while every thread still gets a task.
pub fn images_per_task(kind: &ContractionKind, n: usize, threads: usize) -> usize {
    let g = Geom::new(kind);
    if g.npix >= BAND_PIXELS {
        return 1;
    }
    BAND_PIXELS
        .div_ceil(g.npix)
        .min(n.div_ceil(threads.max(1)))
        .max(1)
}

/// For kernel column `kj`: the input column offset of output column 0 (`kj·dw - left`), and
/// the output columns `x0..x1` whose input column lies inside the image.
fn tap_columns(g: &Geom, kj: usize) -> (isize, usize, usize) {
    let ow = g.ow;
    let off = (kj * g.dw) as isize - g.pl as isize;
    let x0 = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(g.sw)
    }
    .min(ow);
    let x1 = if (g.w as isize) <= off {
        0
    } else {
        ((g.w as isize - off - 1) as usize / g.sw + 1).min(ow)
    }
    .max(x0);
    (off, x0, x1)
}

/// Output rows `r0..r1` in bands of about [`BAND_PIXELS`] pixels, so that a band's column
/// matrix stays in L2.
fn bands(g: &Geom, r0: usize, r1: usize) -> impl Iterator<Item = (usize, usize)> {
    let rows = (BAND_PIXELS / g.ow).clamp(1, g.oh);
    (r0..r1)
        .step_by(rows)
        .map(move |y0| (y0, (y0 + rows).min(r1)))
}

/// im2col of output rows `y0..y1` of one image (group channels at `xg`) into `col`, whose rows
/// are `ld` apart, starting at column `col0`.
///
/// # Safety
/// `xg` holds `cg * h * w` floats.
unsafe fn im2col(
    g: &Geom,
    xg: *const f32,
    y0: usize,
    y1: usize,
    col: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let ow = g.ow;
    #[cfg(target_arch = "x86_64")]
    if g.sw == 1 && ow <= 64 && super::sgemm::available() {
        // SAFETY: AVX-512F present; forwarded.
        unsafe { im2col_short_rows(g, xg, (y0, y1), col, ld, col0) };
        return;
    }
    let stride2 = g.sw == 2 && super::sgemm::available();
    for ci in 0..g.cg {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let (off, x0, x1) = tap_columns(g, kj);
                for y in y0..y1 {
                    let start = row * ld + col0 + (y - y0) * ow;
                    let line = &mut col[start..start + ow];
                    let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        line.fill(0.0);
                        continue;
                    }
                    // SAFETY: row iy of channel ci is inside the image.
                    let src = unsafe {
                        std::slice::from_raw_parts(xg.add((ci * g.h + iy as usize) * g.w), g.w)
                    };
                    line[..x0].fill(0.0);
                    line[x1..].fill(0.0);
                    if x0 == x1 {
                        // No input column: `first` below could be negative.
                        continue;
                    }
                    let first = (x0 as isize * g.sw as isize + off) as usize;
                    strided_copy(&mut line[x0..x1], src, first, g.sw, stride2);
                }
            }
        }
    }
}

/// [`im2col`] at stride 1 for rows of at most 64 floats (small maps: ResNet at 32×32, LeNet):
/// each row of the column matrix is a masked load of the input row at the tap's offset (lanes
/// outside the image zero) and a masked store, instead of two fills and a copy call.
///
/// # Safety
/// As [`im2col`]; AVX-512F present; `g.sw == 1`, `g.ow <= 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn im2col_short_rows(
    g: &Geom,
    xg: *const f32,
    (y0, y1): (usize, usize),
    col: &mut [f32],
    ld: usize,
    col0: usize,
) {
    use std::arch::x86_64::*;
    let ow = g.ow;
    assert!(
        (g.cg * g.kh * g.kw).saturating_sub(1) * ld + col0 + (y1 - y0) * ow <= col.len(),
        "the column matrix holds every row"
    );
    let mask = super::sgemm::lane_mask;
    let out = col.as_mut_ptr();
    for ci in 0..g.cg {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let (off, x0, x1) = tap_columns(g, kj);
                for y in y0..y1 {
                    let dst = out.wrapping_add(row * ld + col0 + (y - y0) * ow);
                    let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                    let inside = iy >= 0 && iy < g.h as isize;
                    let src = xg.wrapping_offset(
                        (ci * g.h) as isize * g.w as isize + iy * g.w as isize + off,
                    );
                    let mut j = 0;
                    while j < ow {
                        let n = (ow - j).min(16);
                        let lanes = j as isize;
                        // Lanes x in x0..x1 read the input (inside row iy), the rest are zero.
                        let m = if inside {
                            mask(x0 as isize - lanes, x1 as isize - lanes)
                        } else {
                            0
                        };
                        // SAFETY: loaded lanes are columns x0..x1 of input row iy (inside the
                        // image, by `tap_columns`); stored lanes are row `row` of the column
                        // matrix, columns (y - y0)·ow + j.. (asserted above).
                        unsafe {
                            let v = _mm512_maskz_loadu_ps(m, src.wrapping_add(j));
                            _mm512_mask_storeu_ps(dst.add(j), mask(0, n as isize), v);
                        }
                        j += n;
                    }
                }
            }
        }
    }
}

/// im2col of `nb` consecutive images at once (image `b`'s pixel `p` in column `b·npix + p`
/// of `col`, rows `nb·npix` apart) for small maps (at most [`BAND_PIXELS`] output pixels):
/// per tap and chunk of 16 columns, a table ([`BatchTable`]) of which input float each lane
/// reads or none (zero); then each row of the column matrix is, per chunk, a masked load per
/// run of consecutive floats (a "same" convolution's rows: several output rows per vector)
/// or one gather, and a full store, instead of a masked load and store per output row of 2
/// to 8 floats. Returns `false` (and does nothing) where it does not apply: no AVX-512F,
/// larger maps, offsets past `i32`. `pack` is the number of images the table is built for
/// (every call of one convolution pass uses the same, so the table is built once per
/// thread and reused); `nb <= pack`.
///
/// # Safety
/// `x0` holds `nb` images `img_in` floats apart of `g.cg` planes `h × w` each; `col` holds
/// `kdim · nb · npix` floats.
unsafe fn im2col_batch(
    g: &Geom,
    x0: *const f32,
    img_in: usize,
    (nb, pack): (usize, usize),
    col: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if batch_tables_apply(g, img_in, (nb, pack)) {
        // SAFETY: AVX-512F present (checked); forwarded.
        with_batch_table(g, img_in, pack, |t| unsafe {
            im2col_batch_avx512(g, t, x0, nb, col)
        });
        return true;
    }
    let _ = (g, x0, img_in, nb, pack, col);
    false
}

/// Whether [`im2col_batch`]'s lane tables serve `nb` images of a pack of `pack`: small maps
/// (at most [`BAND_PIXELS`] output pixels), offsets within `i32`, AVX-512F present.
fn batch_tables_apply(g: &Geom, img_in: usize, (nb, pack): (usize, usize)) -> bool {
    g.npix <= BAND_PIXELS
        && nb <= pack
        && pack * img_in < i32::MAX as usize
        && super::sgemm::available()
}

/// Runs `f` with this thread's [`BatchTable`] for the geometry, image stride and pack size,
/// built on first use.
fn with_batch_table(g: &Geom, img_in: usize, pack: usize, f: impl FnOnce(&BatchTable)) {
    BATCH_TABLES.with(|t| {
        let mut tables = t.borrow_mut();
        let table = tables
            .entry(table_key(g, img_in, pack))
            .or_insert_with(|| BatchTable::new(g, img_in, pack));
        f(table)
    })
}

/// The inverse data movement of [`im2col_batch`]: the column matrix of `nb` consecutive
/// images (rows `nb·npix` apart) scatter-added into them, per tap and chunk of 16 columns a
/// masked load-add-store per run of consecutive floats, or a gather-add-scatter (one tap's
/// lanes never meet the same input float, so a chunk has no conflicts). Returns `false` (and
/// does nothing) where [`im2col_batch`] would, and where it measured slower than
/// [`col2im`]'s rows: stride 1 with rows of more than 4 output pixels (ResNet's 8×8 maps
/// 5% slower, LeNet-5's 5×5 gradient on 10-pixel rows 50% slower: a tap's read-modify-write
/// then partly overlaps the previous tap's, and the load waits for the store). It pays at
/// stride 2 (ResNet-18 at 32×32: 25-40%) and on 2×2 and 4×4 maps (up to 35%).
///
/// # Safety
/// `dx0` holds `nb` images `img_in` floats apart of `g.cg` planes `h × w` each, which no
/// other thread writes meanwhile; `col` holds `kdim · nb · npix` floats.
unsafe fn col2im_batch(
    g: &Geom,
    col: &[f32],
    dx0: *mut f32,
    img_in: usize,
    (nb, pack): (usize, usize),
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if (g.sh > 1 || g.sw > 1 || g.ow <= 4) && batch_tables_apply(g, img_in, (nb, pack)) {
        // SAFETY: AVX-512F present (checked); forwarded.
        with_batch_table(g, img_in, pack, |t| unsafe {
            col2im_batch_avx512(g, t, col, dx0, nb)
        });
        return true;
    }
    let _ = (g, col, dx0, img_in, nb, pack);
    false
}

/// [`col2im_batch`] on AVX-512 with its table (built for at least `nb` images).
///
/// # Safety
/// As [`col2im_batch`]; AVX-512F present; `t` built for `g` and the image stride.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn col2im_batch_avx512(g: &Geom, t: &BatchTable, col: &[f32], dx0: *mut f32, nb: usize) {
    use std::arch::x86_64::*;
    let taps = g.kh * g.kw;
    let cols = nb * g.npix;
    let chunks = cols.div_ceil(16);
    assert!(
        g.cg * taps * cols <= col.len(),
        "the column matrix holds every row"
    );
    let plane = g.h * g.w;
    for ci in 0..g.cg {
        let base = dx0.wrapping_add(ci * plane);
        for tap in 0..taps {
            let src = col[(ci * taps + tap) * cols..].as_ptr();
            let row = &t.table[tap * t.chunks..tap * t.chunks + chunks];
            for (k, c) in row.iter().enumerate() {
                let keep = super::sgemm::lane_mask(0, (cols - 16 * k) as isize);
                // SAFETY: columns 16k.. of the row, `keep` of them.
                let v = unsafe { _mm512_maskz_loadu_ps(keep, src.add(16 * k)) };
                // SAFETY: each writing lane's offset is inside image b's channel ci (checked
                // when the table was built), and b < nb by `keep`.
                if c.nruns <= RUNS {
                    for &(m, s) in &c.runs[..c.nruns] {
                        let m = m & keep;
                        let at = base.wrapping_offset(s);
                        unsafe {
                            let d = _mm512_maskz_loadu_ps(m, at);
                            _mm512_mask_storeu_ps(at, m, _mm512_add_ps(d, v));
                        }
                    }
                } else {
                    let m = c.mask & keep;
                    unsafe {
                        let idx = _mm512_loadu_si512(c.idx.as_ptr().cast());
                        let d = _mm512_mask_i32gather_ps::<4>(
                            _mm512_setzero_ps(),
                            m,
                            idx,
                            base.cast_const().cast(),
                        );
                        _mm512_mask_i32scatter_ps::<4>(base.cast(), m, idx, _mm512_add_ps(d, v));
                    }
                }
            }
        }
    }
}

/// The [`BATCH_TABLES`] key of a geometry, image stride and pack size.
fn table_key(g: &Geom, img_in: usize, pack: usize) -> [usize; 14] {
    [
        g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl, g.h, g.w, g.oh, g.ow, img_in, pack,
    ]
}

/// Most runs of consecutive floats per chunk of [`BatchTable`] read with masked loads; more
/// take a gather.
const RUNS: usize = 4;

/// One chunk of 16 columns of a tap's row in [`im2col_batch`].
#[derive(Clone, Copy)]
struct BatchChunk {
    /// Lane `l` reads `x0[idx[l]]` (an offset across images) if bit `l` of `mask` is set.
    idx: [i32; 16],
    mask: u16,
    /// The reading lanes cut into runs of consecutive floats: each run's lanes and its first
    /// float's offset minus its first lane (so lane `l` reads `x0[start + l]`).
    runs: [(u16, isize); RUNS],
    /// How many runs (more than [`RUNS`]: gather).
    nruns: usize,
}

/// The lane tables of [`im2col_batch`] for one geometry and pack size, tap-major.
struct BatchTable {
    chunks: usize,
    table: Vec<BatchChunk>,
}

impl BatchTable {
    fn new(g: &Geom, img_in: usize, nb: usize) -> BatchTable {
        let cols = nb * g.npix;
        let chunks = cols.div_ceil(16);
        let mut table = Vec::with_capacity(g.kh * g.kw * chunks);
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let mut cs = vec![
                    BatchChunk {
                        idx: [0; 16],
                        mask: 0,
                        runs: [(0, 0); RUNS],
                        nruns: 0,
                    };
                    chunks
                ];
                let mut prev: Option<(usize, isize)> = None;
                let mut j = 0;
                for b in 0..nb {
                    for y in 0..g.oh {
                        let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                        for x in 0..g.ow {
                            let ix = (x * g.sw + kj * g.dw) as isize - g.pl as isize;
                            let (k, l) = (j / 16, j % 16);
                            j += 1;
                            if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            let c = &mut cs[k];
                            let off = (b * img_in) as isize + iy * g.w as isize + ix;
                            c.idx[l] = off as i32;
                            c.mask |= 1 << l;
                            let extends = l > 0
                                && prev.is_some_and(|(pj, po)| pj + 1 == j - 1 && po + 1 == off);
                            if !extends {
                                if c.nruns < RUNS {
                                    c.runs[c.nruns] = (0, off - l as isize);
                                }
                                c.nruns += 1;
                            }
                            if c.nruns <= RUNS {
                                c.runs[c.nruns - 1].0 |= 1 << l;
                            }
                            prev = Some((j - 1, off));
                        }
                    }
                }
                table.extend(cs);
            }
        }
        BatchTable { chunks, table }
    }
}

/// [`im2col_batch`] on AVX-512 with its table (built for at least `nb` images).
///
/// # Safety
/// As [`im2col_batch`]; AVX-512F present; `t` built for `g` and the image stride.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn im2col_batch_avx512(
    g: &Geom,
    t: &BatchTable,
    x0: *const f32,
    nb: usize,
    col: &mut [f32],
) {
    use std::arch::x86_64::*;
    let taps = g.kh * g.kw;
    let cols = nb * g.npix;
    let chunks = cols.div_ceil(16);
    assert!(
        g.cg * taps * cols <= col.len(),
        "the column matrix holds every row"
    );
    let out = col.as_mut_ptr();
    let plane = g.h * g.w;
    for ci in 0..g.cg {
        let base = x0.wrapping_add(ci * plane);
        for tap in 0..taps {
            // SAFETY: row ci·taps + tap of the column matrix (asserted above).
            let dst = unsafe { out.add((ci * taps + tap) * cols) };
            let row = &t.table[tap * t.chunks..tap * t.chunks + chunks];
            for (k, c) in row.iter().enumerate() {
                // Lanes past the last image (a shorter pack than the table's) neither read
                // nor store.
                let keep = super::sgemm::lane_mask(0, (cols - 16 * k) as isize);
                let mut v = _mm512_setzero_ps();
                // SAFETY: each reading lane's offset is inside image b's channel ci (checked
                // when the table was built), and b < nb by `keep`.
                if c.nruns <= RUNS {
                    for &(m, s) in &c.runs[..c.nruns] {
                        v = unsafe { _mm512_mask_loadu_ps(v, m & keep, base.wrapping_offset(s)) };
                    }
                } else {
                    v = unsafe {
                        _mm512_mask_i32gather_ps::<4>(
                            v,
                            c.mask & keep,
                            _mm512_loadu_si512(c.idx.as_ptr().cast()),
                            base.cast(),
                        )
                    };
                }
                // SAFETY: columns 16k.. of the row, `keep` of them.
                unsafe { _mm512_mask_storeu_ps(dst.add(16 * k), keep, v) };
            }
        }
    }
}

/// `out[k] = src[first + k·s]` for every `k < out.len()`: one row of an im2col or a slab
/// phase. Stride 1 is a copy, stride 2 the AVX-512 even-lane gather when `stride2` (AVX-512F
/// present), other strides a loop.
fn strided_copy(out: &mut [f32], src: &[f32], first: usize, s: usize, stride2: bool) {
    if out.is_empty() {
        return;
    }
    if s == 1 {
        out.copy_from_slice(&src[first..first + out.len()]);
    } else if s == 2 && stride2 {
        assert!(first + 2 * (out.len() - 1) < src.len());
        // SAFETY: AVX-512F is present (`stride2`); the reads end at index
        // first + 2(len-1), inside src (asserted).
        unsafe { gather_stride2(out, src.as_ptr().add(first)) };
    } else {
        for (k, v) in out.iter_mut().enumerate() {
            *v = src[first + k * s];
        }
    }
}

/// `dst[k] = src[2k]` for every `k < dst.len()`: the even elements, 16 at a time (two
/// loads, one two-source permute), for im2col at stride 2 (ResNet's and AlexNet's first
/// convolutions), where a scalar loop took most of the packing time.
///
/// # Safety
/// AVX-512F present; `src` valid for reads at `0..=2 * (dst.len() - 1)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_stride2(dst: &mut [f32], src: *const f32) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let n = dst.len();
    let mut k = 0;
    while k < n {
        let cnt = (n - k).min(16);
        // Source positions 0..=2(cnt-1) of this block: lanes below `need` of the two halves.
        let need = 2 * cnt - 1;
        let lo = (0xffffu32 >> (16 - need.min(16))) as __mmask16;
        let hi = if need > 16 {
            (0xffffu32 >> (32 - need)) as __mmask16
        } else {
            0
        };
        // SAFETY: the masks cover only positions up to 2(k + cnt - 1), valid by the contract;
        // the store covers dst[k..k + cnt].
        unsafe {
            let p = src.add(2 * k);
            let a = _mm512_maskz_loadu_ps(lo, p);
            let b = _mm512_maskz_loadu_ps(hi, p.add(16));
            let v = _mm512_permutex2var_ps(a, even, b);
            let m = (0xffffu32 >> (16 - cnt)) as __mmask16;
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(k), m, v);
        }
        k += cnt;
    }
}

/// Stand-in off x86-64 (never called: `sgemm::available()` is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn gather_stride2(dst: &mut [f32], src: *const f32) {
    for (k, v) in dst.iter_mut().enumerate() {
        // SAFETY: as the x86-64 version.
        *v = unsafe { *src.add(2 * k) };
    }
}

/// Whether a convolution computing `m` output channels runs as an implicit GEMM
/// ([`conv_implicit`]) image by image instead of im2col + GEMM: not already a plain product,
/// AVX-512 present, and the extra columns computed per output row (`B` of `OW`) cheaper
/// than the im2col copy they save. That copy costs about as much as a GEMM with 8 output
/// channels, so it weighs more the fewer channels there are: the extra columns may cost a
/// quarter, or `8 / m` when that is more (LeNet-5's 16-channel 5×5 convolution on 10×10
/// outputs computes 14 columns per row of 10 and still gains).
fn implicit(g: &Geom, m: usize) -> bool {
    let extra = (g.kw - 1) * g.dw / g.sw;
    !g.direct && (extra * 4 <= g.ow || extra * m <= 8 * g.ow) && super::sgemm::available()
}

/// Output rows `r0..r1` of one image (group channels at `xg`), output channels `m` rows of
/// `wg` (`kdim` floats each), into `og` (rows `npix` apart), as an implicit GEMM.
///
/// Tap `ki` reads input row `y·SH + ki·DH - PT` for output row `y`; with `ki·DH = a·SH + p`
/// that is row `(y + a)·SH + p - PT`: row `y + a` of the input's row phase `p` (every SH-th
/// row from `p - PT` on). Columns likewise (`kj·DW = b·SW + q`). So per band of output rows,
/// the phases the kernel uses are copied once into a zero-padded slab, each phase a plane of
/// `rows + A` rows `WP = OW + B` floats wide (`A`, `B` the largest `a`, `b`). Row
/// `(ci, ki, kj)` of the band's column matrix is then the plane of phase `(p, q)` from
/// offset `a·WP + b` on, in "padded" pixel numbering `y·WP + x`, so the GEMM packs its panels
/// straight from the slab ([`super::sgemm::sgemm_rows`]) and no im2col copy (nine times the
/// input for 3×3) is made. At stride 1 there is one phase and the slab is the zero-padded
/// input. The `B` columns per row past the output width are computed too and dropped when the
/// band's result is copied out.
///
/// # Safety
/// As [`conv_images`]; `g` is [`implicit`].
#[allow(clippy::too_many_arguments)]
unsafe fn conv_implicit(
    g: &Geom,
    xg: *const f32,
    wg: *const f32,
    m: usize,
    og: *mut f32,
    (r0, r1): (usize, usize),
    slab: &mut Vec<f32>,
    tile: &mut Vec<f32>,
    post: Option<Post>,
) {
    let npix = g.npix;
    let sl = Slab::new(g);
    let wp = sl.wp;
    let mut rows_of = Vec::with_capacity(g.kdim);
    for (y0, y1) in bands(g, r0, r1) {
        let rows = y1 - y0;
        // SAFETY: forwarded.
        unsafe { sl.fill(g, xg, y0, rows, slab, &mut rows_of) };
        let cols = (rows - 1) * wp + g.ow;
        if wp == g.ow {
            // No extra columns (a 1×1 kernel): the band's columns are its output pixels, so
            // the product goes straight to the output.
            // SAFETY: output rows y0..y1 of the m channels (npix apart), as `fill` describes
            // the slab.
            let ran = unsafe {
                super::sgemm::sgemm_rows(
                    m,
                    cols,
                    og.add(y0 * g.ow),
                    npix as isize,
                    wg,
                    g.kdim as isize,
                    slab.as_ptr(),
                    &rows_of,
                    post.map(|p| p.at(0, y0 * g.ow)),
                )
            };
            assert!(ran, "implicit() checked AVX-512F");
            continue;
        }
        if g.ow >= WIDE_ROWS {
            // Wide rows: a product per output row straight into the output (its columns
            // shifted by the row's offset in the slab), not one per band into a scratch tile
            // copied out after (ResNet's conv1, 112 wide: 15.9-16.7 -> 14.0-14.4 ms at batch
            // 16; with 28-wide rows the per-row products were 15% slower than the copy).
            let mut shifted = rows_of.clone();
            for yy in 0..rows {
                for (d, s) in shifted.iter_mut().zip(&rows_of) {
                    *d = s + (yy * wp) as isize;
                }
                // SAFETY: output row y0 + yy of the m channels (npix apart); row yy of the
                // band's column matrix starts yy·WP further into each slab row, inside it
                // (Slab::fill).
                let ran = unsafe {
                    super::sgemm::sgemm_rows(
                        m,
                        g.ow,
                        og.add((y0 + yy) * g.ow),
                        npix as isize,
                        wg,
                        g.kdim as isize,
                        slab.as_ptr(),
                        &shifted,
                        post.map(|p| p.at(0, (y0 + yy) * g.ow)),
                    )
                };
                assert!(ran, "implicit() checked AVX-512F");
            }
            continue;
        }
        if tile.len() < m * cols {
            tile.resize(m * cols, 0.0);
        }
        // SAFETY: the rows `fill` describes lie in the slab ([`Slab::fill`]); the tile holds
        // m·cols floats.
        let ran = unsafe {
            super::sgemm::sgemm_rows(
                m,
                cols,
                tile.as_mut_ptr(),
                cols as isize,
                wg,
                g.kdim as isize,
                slab.as_ptr(),
                &rows_of,
                None,
            )
        };
        assert!(ran, "implicit() checked AVX-512F");
        for r in 0..m {
            if let Some(p) = post {
                // SAFETY: as for `copy_rows` below; the post addresses the same output rows.
                unsafe {
                    copy_post(
                        tile.as_ptr().add(r * cols),
                        wp,
                        og.add(r * npix + y0 * g.ow),
                        g.ow,
                        (rows, g.ow),
                        p.at(r, y0 * g.ow),
                    )
                };
                continue;
            }
            // SAFETY: rows y0..y0+rows of channel r (ow floats each, npix per channel) and
            // the band's rows of the tile (wp apart, ow floats each, inside m·cols).
            unsafe {
                copy_rows(
                    tile.as_ptr().add(r * cols),
                    wp,
                    og.add(r * npix + y0 * g.ow),
                    g.ow,
                    (rows, g.ow),
                )
            };
        }
    }
}

/// Copies `rows` rows of `len` floats from `src` (rows `src_rs` apart) to `dst` (rows `dst_rs`
/// apart): a band's result out of the implicit GEMM's tile. Short rows (up to 64 floats, the
/// maps of LeNet-5 or ResNet's later stages) as masked AVX-512 moves in one call, instead of
/// a `memcpy` call per row.
///
/// # Safety
/// Both regions valid for the rows given; they do not overlap.
unsafe fn copy_rows(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    (rows, len): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if len <= 64 && super::sgemm::available() {
        // SAFETY: AVX-512F is present; forwarded.
        unsafe { copy_rows_avx512(src, src_rs, dst, dst_rs, (rows, len)) };
        return;
    }
    for y in 0..rows {
        // SAFETY: row y of both, by the contract.
        unsafe { std::ptr::copy_nonoverlapping(src.add(y * src_rs), dst.add(y * dst_rs), len) };
    }
}

/// [`copy_rows`] for rows of at most 64 floats.
///
/// # Safety
/// As [`copy_rows`]; AVX-512F present; `len <= 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_rows_avx512(
    src: *const f32,
    src_rs: usize,
    dst: *mut f32,
    dst_rs: usize,
    (rows, len): (usize, usize),
) {
    use std::arch::x86_64::*;
    for y in 0..rows {
        let mut j = 0;
        while j < len {
            let n = (len - j).min(16);
            let m = (0xffffu32 >> (16 - n)) as __mmask16;
            // SAFETY: lanes j..j+n of row y of both (contract).
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, src.add(y * src_rs + j));
                _mm512_mask_storeu_ps(dst.add(y * dst_rs + j), m, v);
            }
            j += n;
        }
    }
}

/// The zero-padded input slab of an implicit GEMM ([`conv_implicit`]): which row/column phases
/// the kernel's taps read, and the slab's row width `WP = OW + B`.
struct Slab {
    /// Phase `p·SW + q` → its plane's index in the slab (`usize::MAX` if no tap reads it).
    phase: Vec<usize>,
    /// The phases read, in plane order.
    used: Vec<usize>,
    /// The largest tap offsets in phase rows / columns (`A`, `B`).
    amax: usize,
    wp: usize,
}

impl Slab {
    fn new(g: &Geom) -> Slab {
        let (sh, sw) = (g.sh, g.sw);
        let mut phase = vec![usize::MAX; sh * sw];
        let mut used = Vec::new();
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let ph = (ki * g.dh % sh) * sw + kj * g.dw % sw;
                if phase[ph] == usize::MAX {
                    phase[ph] = used.len();
                    used.push(ph);
                }
            }
        }
        Slab {
            phase,
            used,
            amax: (g.kh - 1) * g.dh / sh,
            wp: g.ow + (g.kw - 1) * g.dw / sw,
        }
    }

    /// Copies what output rows `y0..y0 + rows` read of the image at `xg` (`g.cg` channels)
    /// into `slab`: per channel and phase a plane of `rows + A` rows of `WP` floats, zero
    /// outside the image. Sets `offsets` to where row `(ci, ki, kj)` of the band's column
    /// matrix starts in the slab; that row runs `(rows - 1)·WP + OW` floats, all inside its
    /// plane, and holds output pixel `(y, x)` at `(y - y0)·WP + x`.
    ///
    /// # Safety
    /// `xg` holds `g.cg` planes of `g.h × g.w` floats.
    unsafe fn fill(
        &self,
        g: &Geom,
        xg: *const f32,
        y0: usize,
        rows: usize,
        slab: &mut Vec<f32>,
        offsets: &mut Vec<isize>,
    ) {
        let (sh, sw, wp) = (g.sh, g.sw, self.wp);
        let nph = self.used.len();
        let plane = (rows + self.amax) * wp;
        if slab.len() < g.cg * nph * plane {
            slab.resize(g.cg * nph * plane, 0.0);
        }
        let stride2 = sw == 2 && super::sgemm::available();
        for ci in 0..g.cg {
            for (pi, &ph) in self.used.iter().enumerate() {
                let (p, q) = (ph / sw, ph % sw);
                // Slab column s holds input column s·SW + q - PL: those inside the input.
                let first = (g.pl.saturating_sub(q)).div_ceil(sw).min(wp);
                let end = if g.w + g.pl > q {
                    ((g.w - 1 + g.pl - q) / sw + 1).clamp(first, wp)
                } else {
                    first
                };
                for r in 0..rows + self.amax {
                    let at = (ci * nph + pi) * plane + r * wp;
                    let line = &mut slab[at..at + wp];
                    let iy = ((y0 + r) * sh + p) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize || first == end {
                        line.fill(0.0);
                        continue;
                    }
                    // SAFETY: row iy of channel ci is inside the image.
                    let src = unsafe {
                        std::slice::from_raw_parts(xg.add((ci * g.h + iy as usize) * g.w), g.w)
                    };
                    line[..first].fill(0.0);
                    line[end..].fill(0.0);
                    let x0 = first * sw + q - g.pl;
                    strided_copy(&mut line[first..end], src, x0, sw, stride2);
                }
            }
        }
        // A row at offset a·WP + b of its plane ends at (a + rows - 1)·WP + b + OW - 1 <=
        // (rows + A - 1)·WP + WP - 1, the plane's last float.
        offsets.clear();
        for ci in 0..g.cg {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let (a, b) = (ki * g.dh / sh, kj * g.dw / sw);
                    let pi = self.phase[(ki * g.dh % sh) * sw + kj * g.dw % sw];
                    offsets.push(((ci * nph + pi) * plane + a * wp + b) as isize);
                }
            }
        }
    }
}

/// Convolves images `imgs` of a batch, output channels `o_range`:
/// `out[i][O, OH*OW] = W[O, C/g*KH*KW] * im2col(x[i])`, per group. `x` and `out` point at
/// image 0. With `post`, its epilogue is applied to every value as it is stored.
///
/// # Safety
/// `x` holds the whole input batch, `w` the whole weight, `out` the whole output batch;
/// `post`'s buffers are alive.
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv_images(
    kind: &ContractionKind,
    x: *const f32,
    w: *const f32,
    out: *mut f32,
    imgs: std::ops::Range<usize>,
    o_range: (usize, usize),
    rows: Option<(usize, usize)>,
    post: Option<&PostOp>,
) {
    let g = Geom::new(kind);
    if conv_lanes_applies(&g, o_range.1 - o_range.0) {
        // SAFETY: forwarded; AVX-512F present (applies).
        unsafe { conv_lanes(&g, (x, w, out), imgs, o_range, rows, post) };
        return;
    }
    let (npix, kdim) = (g.npix, g.kdim);
    let img_in = g.c * g.h * g.w;
    let img_out = g.o * npix;
    let nb = imgs.len();
    for grp in 0..g.groups {
        let lo = o_range.0.max(grp * g.og);
        let hi = o_range.1.min((grp + 1) * g.og);
        if lo >= hi {
            continue;
        }
        // SAFETY (all pointer arithmetic below): offsets stay inside the batch's images, the
        // weight rows lo..hi (kdim floats each) and the output rows lo..hi (npix floats each).
        let wg = unsafe { w.add(lo * kdim) };
        if nb == 1 {
            let i = imgs.start;
            let xg = unsafe { x.add(i * img_in + grp * g.cg * g.h * g.w) };
            let og = unsafe { out.add(i * img_out + lo * npix) };
            let (r0, r1) = rows.unwrap_or((0, g.oh));
            let post = post.map(|q| q.image(i, lo));
            if g.direct {
                let (p0, p1) = (r0 * g.ow, r1 * g.ow);
                unsafe {
                    gemm_post(
                        (hi - lo, p1 - p0, kdim),
                        (og.add(p0), npix as isize),
                        (wg, kdim as isize, 1),
                        (xg.add(p0), npix as isize, 1),
                        post.map(|p| p.at(0, p0)),
                    )
                };
                continue;
            }
            if implicit(&g, hi - lo) {
                SCRATCH.with(|s| {
                    TILE.with(|t| unsafe {
                        conv_implicit(
                            &g,
                            xg,
                            wg,
                            hi - lo,
                            og,
                            (r0, r1),
                            &mut s.borrow_mut(),
                            &mut t.borrow_mut(),
                            post,
                        )
                    })
                });
                continue;
            }
            // One band of output rows at a time, so the packed band stays in L2.
            SCRATCH.with(|s| {
                let mut col = s.borrow_mut();
                for (y0, y1) in bands(&g, r0, r1) {
                    let band = (y1 - y0) * g.ow;
                    if col.len() < kdim * band {
                        col.resize(kdim * band, 0.0);
                    }
                    unsafe {
                        im2col(&g, xg, y0, y1, &mut col, band, 0);
                        gemm_post(
                            (hi - lo, band, kdim),
                            (og.add(y0 * g.ow), npix as isize),
                            (wg, kdim as isize, 1),
                            (col.as_ptr(), band as isize, 1),
                            post.map(|p| p.at(0, y0 * g.ow)),
                        );
                    }
                }
            });
            continue;
        }
        if hi - lo <= SMALL_M && implicit(&g, hi - lo) {
            // Small images with few output channels: one implicit GEMM per image (the im2col
            // copy below costs as much as their product). With more channels the batched
            // im2col measured faster: its copy is cheap relative to the product, and one
            // image's product has few columns (AlexNet's 13×13 maps: 246 -> 265 GFLOP/s; a
            // 1×1 output would be a matrix-vector product per image).
            SCRATCH.with(|s| {
                TILE.with(|t| {
                    for i in imgs.clone() {
                        // SAFETY: image i's group channels and output rows lo..hi.
                        unsafe {
                            conv_implicit(
                                &g,
                                x.add(i * img_in + grp * g.cg * g.h * g.w),
                                wg,
                                hi - lo,
                                out.add(i * img_out + lo * npix),
                                (0, g.oh),
                                &mut s.borrow_mut(),
                                &mut t.borrow_mut(),
                                post.map(|q| q.image(i, lo)),
                            )
                        }
                    }
                })
            });
            continue;
        }
        // Several small images: pack them side by side, one GEMM, then scatter the columns.
        let cols = nb * npix;
        SCRATCH.with(|s| {
            TILE.with(|t| {
                let mut col = s.borrow_mut();
                let mut tile = t.borrow_mut();
                if col.len() < kdim * cols {
                    col.resize(kdim * cols, 0.0);
                }
                if tile.len() < (hi - lo) * cols {
                    tile.resize((hi - lo) * cols, 0.0);
                }
                let x0 = unsafe { x.add(imgs.start * img_in + grp * g.cg * g.h * g.w) };
                // SAFETY: images imgs of x, consecutive; col holds kdim·cols floats.
                let batched =
                    !g.direct && unsafe { im2col_batch(&g, x0, img_in, (nb, nb), &mut col) };
                for (b, i) in imgs.clone().enumerate() {
                    let xg = unsafe { x.add(i * img_in + grp * g.cg * g.h * g.w) };
                    if g.direct {
                        for r in 0..kdim {
                            let src = unsafe { std::slice::from_raw_parts(xg.add(r * npix), npix) };
                            col[r * cols + b * npix..r * cols + (b + 1) * npix]
                                .copy_from_slice(src);
                        }
                    } else if !batched {
                        unsafe { im2col(&g, xg, 0, g.oh, &mut col, cols, b * npix) };
                    }
                }
                unsafe {
                    gemm(
                        hi - lo,
                        cols,
                        kdim,
                        tile.as_mut_ptr(),
                        cols as isize,
                        wg,
                        kdim as isize,
                        1,
                        col.as_ptr(),
                        cols as isize,
                        1,
                    )
                };
                for (b, i) in imgs.clone().enumerate() {
                    for r in 0..hi - lo {
                        if let Some(q) = post {
                            // SAFETY: row r of this image's block of the tile, and output row
                            // lo + r of image i (npix floats each).
                            unsafe {
                                copy_post(
                                    tile.as_ptr().add(r * cols + b * npix),
                                    0,
                                    out.add(i * img_out + (lo + r) * npix),
                                    0,
                                    (1, npix),
                                    q.image(i, lo + r),
                                )
                            };
                            continue;
                        }
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out.add(i * img_out + (lo + r) * npix),
                                npix,
                            )
                        };
                        dst.copy_from_slice(&tile[r * cols + b * npix..r * cols + (b + 1) * npix]);
                    }
                }
            })
        });
    }
}

/// Scatter-adds a column matrix back into an image: the inverse data movement of [`im2col`]
/// (col2im). Columns `col0..col0 + npix` of `col` (rows `ld` apart) are added into the image
/// at `xg` (group channels).
///
/// # Safety
/// `xg` holds `cg * h * w` floats that no other thread writes meanwhile.
unsafe fn col2im(g: &Geom, col: &[f32], ld: usize, col0: usize, xg: *mut f32) {
    // SAFETY: forwarded.
    unsafe { col2im_rows(g, col, ld, col0, xg, 0, g.oh) }
}

/// [`col2im`] of output rows `y0..y1` only; column `(y - y0) * OW + x` of the band.
///
/// # Safety
/// As [`col2im`].
#[allow(clippy::too_many_arguments)]
unsafe fn col2im_rows(
    g: &Geom,
    col: &[f32],
    ld: usize,
    col0: usize,
    xg: *mut f32,
    y0: usize,
    y1: usize,
) {
    let ow = g.ow;
    for ci in 0..g.cg {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (ci * g.kh + ki) * g.kw + kj;
                let (off, x0, x1) = tap_columns(g, kj);
                if x0 == x1 {
                    continue;
                }
                for y in y0..y1 {
                    let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let start = row * ld + col0 + (y - y0) * ow;
                    let line = &col[start..start + ow];
                    // SAFETY: row iy of channel ci is inside the image.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(xg.add((ci * g.h + iy as usize) * g.w), g.w)
                    };
                    let first = (x0 as isize * g.sw as isize + off) as usize;
                    if g.sw == 1 {
                        let n = x1 - x0;
                        for (d, v) in dst[first..first + n].iter_mut().zip(&line[x0..x1]) {
                            *d += v;
                        }
                    } else {
                        let n = x1 - x0;
                        assert!(first + (n - 1) * g.sw < dst.len(), "inside the row");
                        #[cfg(target_arch = "x86_64")]
                        if g.sw == 2 && super::sgemm::available() {
                            // SAFETY: AVX-512F present; floats first, first + 2, ..,
                            // first + 2(n-1) of the row (asserted).
                            unsafe { add_stride2(dst.as_mut_ptr().add(first), &line[x0..x1]) };
                            continue;
                        }
                        for (k, v) in line[x0..x1].iter().enumerate() {
                            dst[first + k * g.sw] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst[2k] += src[k]` for every `k < src.len()` (col2im at stride 2): 16 values spread to
/// the even lanes of two vectors, added and stored under an even-lane mask.
///
/// # Safety
/// AVX-512F present; `dst` valid at `0..2·src.len() - 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_stride2(dst: *mut f32, src: &[f32]) {
    use std::arch::x86_64::*;
    let lo = _mm512_setr_epi32(0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16);
    let hi = _mm512_setr_epi32(8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16);
    let zero = _mm512_setzero_ps();
    let lane = super::sgemm::lane_mask;
    let n = src.len();
    let mut k = 0;
    while k < n {
        let m = (n - k).min(16) as isize;
        // SAFETY: m floats of src; dst's even lanes below 2m (contract).
        unsafe {
            let v = _mm512_maskz_loadu_ps(lane(0, m), src.as_ptr().add(k));
            for (h, idx) in [lo, hi].into_iter().enumerate() {
                let mask = lane(0, 2 * m - 1 - 16 * h as isize) & 0x5555;
                if mask == 0 {
                    continue;
                }
                let at = dst.add(2 * k + 16 * h);
                let d = _mm512_maskz_loadu_ps(mask, at);
                let add = _mm512_permutex2var_ps(v, idx, zero);
                _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(d, add));
            }
        }
        k += 16;
    }
}

/// The backward-data pass of a stride-1 convolution `kind` as a forward convolution, when it
/// runs as an implicit GEMM ([`implicit`]): `dx[i, c] = Σ_o conv(dy[i, o], w[o, c] flipped)`,
/// i.e. input `dy` (`O` channels, `OH×OW`), output `dx` (`C` channels, `H×W`), the same kernel
/// size, dilation and groups, and padding `(K-1)·D - P` on each side. `None` for strided
/// convolutions, plain products (1×1, unpadded), padding beyond the kernel's reach (which
/// would make the transposed padding negative) and where [`implicit`] says no.
fn backward_data_implicit(kind: &ContractionKind) -> Option<Geom> {
    let ContractionKind::Conv2d {
        n,
        c,
        o,
        kernel: [kh, kw],
        stride,
        padding: [pt, pb, pl, pr],
        dilation: [dh, dw],
        groups,
        ..
    } = *kind
    else {
        return None;
    };
    let g = Geom::new(kind);
    if stride != [1, 1] || g.direct {
        return None;
    }
    let (reach_h, reach_w) = ((kh - 1) * dh, (kw - 1) * dw);
    let padding = [
        reach_h.checked_sub(pt)?,
        reach_h.checked_sub(pb)?,
        reach_w.checked_sub(pl)?,
        reach_w.checked_sub(pr)?,
    ];
    let t = Geom::new(&ContractionKind::Conv2d {
        n,
        c: o,
        h: g.oh,
        w: g.ow,
        o: c,
        kernel: [kh, kw],
        stride: [1, 1],
        padding,
        dilation: [dh, dw],
        groups,
    });
    debug_assert_eq!((t.oh, t.ow), (g.h, g.w));
    // Extra columns up to a quarter only (as for 32 or more channels): with fewer, the extra
    // columns did not pay here (LeNet-5's conv2 gradient, 6 channels, measured even).
    implicit(&t, t.og.max(32)).then_some(t)
}

/// The weight of the transposed convolution `t` ([`backward_data_implicit`]) for its output
/// channels `c0..c1` (the original's input channels), into `dst` (resized to
/// `(c1-c0)·t.kdim`): `dst[c - c0, oo, ki, kj] = w[grp·OG + oo, c - grp·CG, KH-1-ki, KW-1-kj]`
/// for `c` in group `grp`, where `w` is the original `[O, C/g, KH, KW]` weight.
///
/// # Safety
/// `w` holds the whole original weight, `t.o · t.kdim` floats (`t.o` = C, `t.kdim` =
/// O/g·KH·KW).
unsafe fn flip_weight(t: &Geom, w: *const f32, (c0, c1): (usize, usize), dst: &mut Vec<f32>) {
    let taps = t.kh * t.kw;
    // The original's per-group sizes: t.cg = O/g, t.og = C/g.
    let (og, cg) = (t.cg, t.og);
    dst.resize((c1 - c0) * t.kdim, 0.0);
    // SAFETY: the whole original weight, by the contract.
    let w = unsafe { std::slice::from_raw_parts(w, t.o * t.kdim) };
    for c in c0..c1 {
        let (grp, ci) = (c / cg, c % cg);
        for oo in 0..og {
            let src = &w[((grp * og + oo) * cg + ci) * taps..][..taps];
            let row = &mut dst[((c - c0) * og + oo) * taps..][..taps];
            for (d, s) in row.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
}

/// The gradient of a convolution with respect to its input, for images `imgs`, input
/// channels `channels` (ungrouped convolutions; all of them with groups), written to `dx`
/// (overwritten, not accumulated). At stride 1 where [`backward_data_implicit`] applies, a
/// forward implicit GEMM ([`conv_implicit`]) of `dy` with the flipped weight; otherwise
/// `col = W_gᵀ · dy[i]_g` per group (GEMM), then col2im into `dx[i]` (which this zeroes
/// first). `dy`, `w` and `dx` point at image 0 / the whole weight.
///
/// # Safety
/// `dy` holds the whole output-gradient batch, `w` the whole weight, `dx` the whole input
/// gradient batch; no other thread touches channels `channels` of images `imgs` of `dx`.
pub unsafe fn conv_backward_data(
    kind: &ContractionKind,
    dy: *const f32,
    w: *const f32,
    dx: *mut f32,
    imgs: std::ops::Range<usize>,
    channels: (usize, usize),
) {
    let g = Geom::new(kind);
    if backward_data_direct_applies(&g) {
        // SAFETY: forwarded; AVX-512F present (applies).
        unsafe { backward_data_direct(&g, dy, w, dx, imgs, channels) };
        return;
    }
    if let Some(t) = backward_data_implicit(kind) {
        // SAFETY: forwarded.
        unsafe { conv_backward_data_implicit(&t, dy, w, dx, imgs, channels) };
        return;
    }
    let g = Geom::new(kind);
    let (npix, kdim) = (g.npix, g.kdim);
    let img_in = g.c * g.h * g.w;
    let img_out = g.o * npix;
    // Input channels c0..c1 only (ungrouped convolutions): rows c0·KH·KW.. of the column
    // matrix, which scatter into those channels of dx alone.
    let (c0, c1) = if g.groups == 1 { channels } else { (0, g.cg) };
    let sub = g.channels(c1 - c0);
    let row0 = c0 * g.kh * g.kw;
    let plane = g.h * g.w;
    let list: Vec<usize> = imgs.collect();
    if !g.direct {
        // The channels this call writes: c0..c1, or all of them with groups.
        let (f0, f1) = if g.groups == 1 { (c0, c1) } else { (0, g.c) };
        for &i in &list {
            // SAFETY: channels f0..f1 of image i of dx.
            unsafe {
                std::slice::from_raw_parts_mut(dx.add(i * img_in + f0 * plane), (f1 - f0) * plane)
            }
            .fill(0.0);
        }
    }
    // Small images are packed side by side so one GEMM covers several.
    let per_pack = if g.direct {
        1
    } else {
        BAND_PIXELS.div_ceil(npix).max(1)
    };
    for grp in 0..g.groups {
        // SAFETY (all pointer arithmetic below): inside the weight, and inside images of the
        // pack in dy and dx.
        let wg = unsafe { w.add(grp * g.og * kdim + row0) };
        if g.direct && npix == 1 && !list.is_empty() {
            // 1×1 maps (a cropped 3×3 kernel on ResNet's last stage at small inputs): all the
            // images in one product, dx[i, c] = Σ_o dy[i, o] · W[o, c], instead of one
            // matrix-vector product per image, each reading the whole weight.
            let i = list[0];
            let dyg = unsafe { dy.add(i * img_out + grp * g.og) };
            let dxg = unsafe { dx.add(i * img_in + grp * g.cg + c0) };
            unsafe {
                gemm(
                    list.len(),
                    sub.kdim,
                    g.og,
                    dxg,
                    img_in as isize,
                    dyg,
                    img_out as isize,
                    1,
                    wg,
                    kdim as isize,
                    1,
                )
            };
            continue;
        }
        for pack in list.chunks(per_pack) {
            if g.direct {
                // 1x1, stride 1: the column matrix is the input gradient itself.
                let i = pack[0];
                let dyg = unsafe { dy.add(i * img_out + grp * g.og * npix) };
                let dxg = unsafe { dx.add(i * img_in + grp * g.cg * plane + c0 * plane) };
                unsafe {
                    gemm(
                        sub.kdim,
                        npix,
                        g.og,
                        dxg,
                        npix as isize,
                        wg,
                        1,
                        kdim as isize,
                        dyg,
                        npix as isize,
                        1,
                    )
                };
                continue;
            }
            if npix > BAND_PIXELS {
                // A large image: one band of output rows at a time, so the column matrix
                // stays in L2 (as the forward pass does).
                let i = pack[0];
                let dyg = unsafe { dy.add(i * img_out + grp * g.og * npix) };
                let dxg = unsafe { dx.add(i * img_in + grp * g.cg * plane + c0 * plane) };
                SCRATCH.with(|s| {
                    let mut col = s.borrow_mut();
                    for (y0, y1) in bands(&g, 0, g.oh) {
                        let band = (y1 - y0) * g.ow;
                        if col.len() < sub.kdim * band {
                            col.resize(sub.kdim * band, 0.0);
                        }
                        unsafe {
                            gemm(
                                sub.kdim,
                                band,
                                g.og,
                                col.as_mut_ptr(),
                                band as isize,
                                wg,
                                1,
                                kdim as isize,
                                dyg.add(y0 * g.ow),
                                npix as isize,
                                1,
                            );
                            col2im_rows(&sub, &col, band, 0, dxg, y0, y1);
                        }
                    }
                });
                continue;
            }
            let cols = pack.len() * npix;
            SCRATCH.with(|s| {
                TILE.with(|t| {
                    let mut col = s.borrow_mut();
                    let mut dyp = t.borrow_mut();
                    if col.len() < sub.kdim * cols {
                        col.resize(sub.kdim * cols, 0.0);
                    }
                    let (rhs, rhs_rs) = if pack.len() == 1 {
                        (
                            unsafe { dy.add(pack[0] * img_out + grp * g.og * npix) },
                            npix,
                        )
                    } else {
                        if dyp.len() < g.og * cols {
                            dyp.resize(g.og * cols, 0.0);
                        }
                        for (b, &i) in pack.iter().enumerate() {
                            let dyg = unsafe { dy.add(i * img_out + grp * g.og * npix) };
                            for r in 0..g.og {
                                let src =
                                    unsafe { std::slice::from_raw_parts(dyg.add(r * npix), npix) };
                                dyp[r * cols + b * npix..r * cols + (b + 1) * npix]
                                    .copy_from_slice(src);
                            }
                        }
                        (dyp.as_ptr(), cols)
                    };
                    // col[rows, cols] = W_gᵀ[rows] · dy_pack
                    unsafe {
                        gemm(
                            sub.kdim,
                            cols,
                            g.og,
                            col.as_mut_ptr(),
                            cols as isize,
                            wg,
                            1,
                            kdim as isize,
                            rhs,
                            rhs_rs as isize,
                            1,
                        );
                    }
                    // SAFETY: the pack's images of dx (consecutive, this call's channels);
                    // col holds sub.kdim·cols floats.
                    let dx0 = unsafe { dx.add(pack[0] * img_in + grp * g.cg * plane + c0 * plane) };
                    let pack_len = per_pack.min(list.len());
                    if !unsafe { col2im_batch(&sub, &col, dx0, img_in, (pack.len(), pack_len)) } {
                        for (b, &i) in pack.iter().enumerate() {
                            let dxg =
                                unsafe { dx.add(i * img_in + grp * g.cg * plane + c0 * plane) };
                            unsafe { col2im(&sub, &col, cols, b * npix, dxg) };
                        }
                    }
                })
            });
        }
    }
}

/// [`conv_backward_data`] as the forward convolution `t` ([`backward_data_implicit`]):
/// per image and group, output channels (dx's channels) of `channels` from `dy`'s channels
/// with the flipped weight ([`flip_weight`], once per call), whole images.
///
/// # Safety
/// As [`conv_backward_data`]; `t` is [`implicit`].
unsafe fn conv_backward_data_implicit(
    t: &Geom,
    dy: *const f32,
    w: *const f32,
    dx: *mut f32,
    imgs: std::ops::Range<usize>,
    channels: (usize, usize),
) {
    let (c0, c1) = if t.groups == 1 { channels } else { (0, t.o) };
    let img_dy = t.c * t.h * t.w;
    let img_dx = t.o * t.npix;
    FLIPPED.with(|f| {
        let mut wt = f.borrow_mut();
        // SAFETY: the whole weight, by the contract.
        unsafe { flip_weight(t, w, (c0, c1), &mut wt) };
        SCRATCH.with(|s| {
            TILE.with(|tl| {
                let (mut slab, mut tile) = (s.borrow_mut(), tl.borrow_mut());
                for i in imgs {
                    for grp in 0..t.groups {
                        let lo = c0.max(grp * t.og);
                        let hi = c1.min((grp + 1) * t.og);
                        if lo >= hi {
                            continue;
                        }
                        // SAFETY: image i's group grp channels of dy (t.cg planes of
                        // OH·OW), the flipped rows lo..hi (t.kdim floats each), and channels
                        // lo..hi of image i of dx, which this task alone writes.
                        unsafe {
                            conv_implicit(
                                t,
                                dy.add(i * img_dy + grp * t.cg * t.h * t.w),
                                wt.as_ptr().add((lo - c0) * t.kdim),
                                hi - lo,
                                dx.add(i * img_dx + lo * t.npix),
                                (0, t.oh),
                                &mut slab,
                                &mut tile,
                                None,
                            )
                        };
                    }
                }
            })
        })
    });
}

/// Whether a convolution computing `m` output channels runs as [`conv_lanes`]: 9 to 16 of
/// them (a vector's lanes, mostly filled), ungrouped, unpadded (every tap of every output
/// pixel inside the input), output rows of at most 16 pixels (LeNet-5's conv2: 16 channels,
/// rows of 10, whose GEMM form computes 14 columns per row and packs 3 panels of rows),
/// AVX-512F.
fn conv_lanes_applies(g: &Geom, m: usize) -> bool {
    let inside = g.pt == 0
        && g.pl == 0
        && (g.oh - 1) * g.sh + (g.kh - 1) * g.dh < g.h
        && (g.ow - 1) * g.sw + (g.kw - 1) * g.dw < g.w;
    g.groups == 1 && (9..=16).contains(&m) && inside && g.ow <= 16 && super::sgemm::available()
}

/// A convolution with output channels in the vector lanes: for each output row, one 16-lane
/// sum per pixel (`out[i, o, y, x]` for the channels `lo..hi`); per tap `(c, ki, kj)` one
/// load of the tap's weights for every channel (the weight transposed once per call) and a
/// broadcast of each pixel's input value, so every lane of every multiply-add is useful. The
/// sums are then transposed into the output's rows and the epilogue `post` applied as they
/// are stored (`relu?((raw + bias) + res)`, the product's own order: the same bits). Rows
/// `rows` (default all) of images `imgs` are written.
///
/// # Safety
/// As [`conv_images`]; [`conv_lanes_applies`].
unsafe fn conv_lanes(
    g: &Geom,
    (x, w, out): (*const f32, *const f32, *mut f32),
    imgs: std::ops::Range<usize>,
    (lo, hi): (usize, usize),
    rows: Option<(usize, usize)>,
    post: Option<&PostOp>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // wt[k·16 + (o - lo)] = w[o, k]: one vector of channels per tap k = (c, ki, kj).
        let mut wt = vec![0f32; g.kdim * 16];
        for o in lo..hi {
            for k in 0..g.kdim {
                // SAFETY: row o of the weight (kdim floats).
                wt[k * 16 + o - lo] = unsafe { *w.add(o * g.kdim + k) };
            }
        }
        let (r0, r1) = rows.unwrap_or((0, g.oh));
        let sweep = CONV_LANE_ROWS[g.ow - 1];
        for i in imgs {
            let post = post.map(|q| q.image(i, lo));
            for y in r0..r1 {
                // SAFETY: AVX-512F present (applies); image i of x (every tap inside), output
                // row y of channels lo..hi of image i.
                unsafe { sweep(g, (x, &wt, out), (i, lo, hi - lo, y), post) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("conv_lanes_applies needs AVX-512F");
}

/// One output row of [`conv_lanes`]: image `i`, channels `o..o + m`, row `y`, all `OW = P`
/// pixels; `post` at channel `o`, pixel 0.
#[cfg(target_arch = "x86_64")]
type LaneRows = unsafe fn(
    &Geom,
    (*const f32, &[f32], *mut f32),
    (usize, usize, usize, usize),
    Option<super::post::Post>,
);

/// [`LaneRows`] by row width `P` (1 to 16).
#[cfg(target_arch = "x86_64")]
static CONV_LANE_ROWS: [LaneRows; 16] = [
    conv_lane_row::<1>,
    conv_lane_row::<2>,
    conv_lane_row::<3>,
    conv_lane_row::<4>,
    conv_lane_row::<5>,
    conv_lane_row::<6>,
    conv_lane_row::<7>,
    conv_lane_row::<8>,
    conv_lane_row::<9>,
    conv_lane_row::<10>,
    conv_lane_row::<11>,
    conv_lane_row::<12>,
    conv_lane_row::<13>,
    conv_lane_row::<14>,
    conv_lane_row::<15>,
    conv_lane_row::<16>,
];

/// See [`LaneRows`].
///
/// # Safety
/// AVX-512F present; `x`, `out` the whole batches, `wt` [`conv_lanes`]' transposed weight;
/// `i < N`, `o + m <= O`, `y < OH`, `P == OW`; every tap inside the input; `post` valid for
/// those channels and pixels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_lane_row<const P: usize>(
    g: &Geom,
    (x, wt, out): (*const f32, &[f32], *mut f32),
    (i, o, m, y): (usize, usize, usize, usize),
    post: Option<super::post::Post>,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); P];
    let plane = g.h * g.w;
    let xi = x.wrapping_add(i * g.c * plane);
    let mut k = 0;
    for c in 0..g.c {
        for ki in 0..g.kh {
            let row = xi.wrapping_add(c * plane + (y * g.sh + ki * g.dh) * g.w);
            for kj in 0..g.kw {
                // SAFETY: tap k's 16 weights.
                let wv = unsafe { _mm512_loadu_ps(wt.as_ptr().add(k * 16)) };
                let at = row.wrapping_add(kj * g.dw);
                #[allow(clippy::needless_range_loop)]
                for p in 0..P {
                    // SAFETY: input (c, y·SH + ki·DH, p·SW + kj·DW), inside the image.
                    let v = _mm512_set1_ps(unsafe { *at.add(p * g.sw) });
                    acc[p] = _mm512_fmadd_ps(v, wv, acc[p]);
                }
                k += 1;
            }
        }
    }
    let mut r = [_mm512_setzero_ps(); 16];
    r[..P].copy_from_slice(&acc);
    let t = super::sgemm::transpose16(r);
    let lanes = super::sgemm::lane_mask(0, P as isize);
    let pix = y * g.ow;
    for (oo, &raw) in t.iter().enumerate().take(m) {
        let mut v = raw;
        if let Some(p) = post {
            // SAFETY: channel o + oo's addend and the row's residual, P floats.
            v = unsafe { super::post::post_lanes(v, p.at(oo, pix), lanes) };
        }
        let at = out.wrapping_add((i * g.o + o + oo) * g.npix + pix);
        // SAFETY: row y of channel o + oo of image i, P floats.
        unsafe { _mm512_mask_storeu_ps(at, lanes, v) };
    }
}

/// Whether a backward-data pass runs as [`backward_data_direct`]: ungrouped, stride 1, few
/// input channels (the gradient's channels: the GEMM form's column matrix then has few rows
/// per tap and the product is a thin one; the implicit form multiplies the zero padding of
/// `dy`), rows of at most 32 floats, AVX-512F. LeNet-5's conv2: 6 channels, 14-wide rows.
fn backward_data_direct_applies(g: &Geom) -> bool {
    g.groups == 1
        && g.sh == 1
        && g.sw == 1
        && g.c <= DIRECT_DATA_CHANNELS
        && g.w <= 32
        && !g.direct
        && super::sgemm::available()
}

/// Gradients with up to this many channels may take [`backward_data_direct`].
const DIRECT_DATA_CHANNELS: usize = 8;

/// Output rows of `dx` per sweep of [`backward_data_rows`].
const DATA_ROWS: usize = 2;

/// The backward-data pass without a column matrix or GEMM (stride 1):
/// `dx[i, c, y, x] = Σ_{o, ki, kj} dy[i, o, y + PT - ki·DH, x + PL - kj·DW] · w[o, c, ki, kj]`
/// over the taps whose `dy` pixel exists. Per image, block of up to 6 channels, pair of rows
/// and 16 columns of `dx`, a sweep ([`backward_data_rows`]) keeps `2 × CB` sums of 16 lanes in
/// registers; per `(o, ki, kj)` it loads the two rows' shifted `dy` (masked: zeros outside
/// `dy`) and broadcasts `CB` weights. Only kernel rows that reach `dy` for one of the two rows
/// are visited, so the zero border a transposed convolution would pad `dy` with costs
/// nothing vertically. Channels `c0..c1` of images `imgs` are written (overwritten).
///
/// # Safety
/// As [`conv_backward_data`]; [`backward_data_direct_applies`].
unsafe fn backward_data_direct(
    g: &Geom,
    dy: *const f32,
    w: *const f32,
    dx: *mut f32,
    imgs: std::ops::Range<usize>,
    (c0, c1): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::sgemm::lane_mask;
        // Per 16-column chunk of a dx row: its lanes, and per kernel column the lanes whose
        // dy column (x + PL - kj·DW) exists.
        let chunks: Vec<(u16, Vec<u16>)> = (0..g.w.div_ceil(16))
            .map(|ch| {
                let x0 = 16 * ch;
                let lanes = lane_mask(0, (g.w - x0) as isize);
                let cols = (0..g.kw)
                    .map(|kj| {
                        let off = (x0 + g.pl) as isize - (kj * g.dw) as isize;
                        lane_mask(-off, g.ow as isize - off) & lanes
                    })
                    .collect();
                (lanes, cols)
            })
            .collect();
        let cb = even_block(c1 - c0, 6);
        for i in imgs {
            for cs in (c0..c1).step_by(cb) {
                let m = cb.min(c1 - cs);
                let sweep = DATA_ROWS_SWEEPS[m - 1];
                for y0 in (0..g.h).step_by(DATA_ROWS) {
                    for (ch, (lanes, cols)) in chunks.iter().enumerate() {
                        // SAFETY: AVX-512F present (applies); image i's dy, the weight, and
                        // rows y0.. of channels cs..cs + m of image i's dx (contract).
                        unsafe { sweep(g, (dy, w, dx), (i, cs, y0, 16 * ch), (*lanes, cols)) };
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("backward_data_direct_applies needs AVX-512F");
}

/// One sweep of [`backward_data_direct`]: image `i`, channels `c..c + CB`, rows `y0..y0 + 2`
/// (those inside `dx`), columns `x0..x0 + 16` (`lanes` of them inside), with the per-kernel-
/// column masks `cols`.
#[cfg(target_arch = "x86_64")]
type DataRows = unsafe fn(
    &Geom,
    (*const f32, *const f32, *mut f32),
    (usize, usize, usize, usize),
    (u16, &[u16]),
);

/// [`DataRows`] by channels per block (1 to 6): at most 12 sums.
#[cfg(target_arch = "x86_64")]
static DATA_ROWS_SWEEPS: [DataRows; 6] = [
    backward_data_rows::<1>,
    backward_data_rows::<2>,
    backward_data_rows::<3>,
    backward_data_rows::<4>,
    backward_data_rows::<5>,
    backward_data_rows::<6>,
];

/// See [`DataRows`].
///
/// # Safety
/// AVX-512F present; `dy`, `w`, `dx` the whole batches / weight; `i < N`, `c + CB <= C`,
/// `y0 < H`, `x0 < W`; `cols` has `KW` masks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_data_rows<const CB: usize>(
    g: &Geom,
    (dy, w, dx): (*const f32, *const f32, *mut f32),
    (i, c, y0, x0): (usize, usize, usize, usize),
    (lanes, cols): (u16, &[u16]),
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); CB]; DATA_ROWS];
    let taps = g.kh * g.kw;
    let img_dy = g.o * g.npix;
    // Kernel rows reaching dy for some row of the pair: dy row y + PT - ki·DH in 0..OH.
    let reach = |y: usize, ki: usize| {
        let r = (y + g.pt) as isize - (ki * g.dh) as isize;
        (r >= 0 && r < g.oh as isize && y < g.h).then_some(r as usize)
    };
    for ki in 0..g.kh {
        let rows: [Option<usize>; DATA_ROWS] = std::array::from_fn(|r| reach(y0 + r, ki));
        if rows.iter().all(Option::is_none) {
            continue;
        }
        for o in 0..g.o {
            let dyo = dy.wrapping_add(i * img_dy + o * g.npix);
            let wo = w.wrapping_add((o * g.c + c) * taps + ki * g.kw);
            for (kj, &m) in cols.iter().enumerate() {
                let off = (x0 + g.pl) as isize - (kj * g.dw) as isize;
                let mut d = [_mm512_setzero_ps(); DATA_ROWS];
                #[allow(clippy::needless_range_loop)]
                for r in 0..DATA_ROWS {
                    if let Some(yy) = rows[r] {
                        // SAFETY: the lanes in m lie inside row yy of dy's channel o.
                        d[r] = unsafe {
                            _mm512_maskz_loadu_ps(
                                m,
                                dyo.wrapping_add(yy * g.ow).wrapping_offset(off),
                            )
                        };
                    }
                }
                #[allow(clippy::needless_range_loop)]
                for cc in 0..CB {
                    // SAFETY: w[o, c + cc, ki, kj].
                    let wv = _mm512_set1_ps(unsafe { *wo.add(cc * taps + kj) });
                    for r in 0..DATA_ROWS {
                        acc[r][cc] = _mm512_fmadd_ps(d[r], wv, acc[r][cc]);
                    }
                }
            }
        }
    }
    let img_dx = g.c * g.h * g.w;
    #[allow(clippy::needless_range_loop)]
    for r in 0..DATA_ROWS {
        if y0 + r >= g.h {
            break;
        }
        for cc in 0..CB {
            let at = dx.wrapping_add(i * img_dx + ((c + cc) * g.h + y0 + r) * g.w + x0);
            // SAFETY: the lanes of row y0 + r, columns x0.., of channel c + cc of image i.
            unsafe { _mm512_mask_storeu_ps(at, lanes, acc[r][cc]) };
        }
    }
}

/// The instances `f::<KW, B>` of a weight-gradient sweep over a 3- or 5-wide kernel, by
/// `[KW == 5][B - 1]`: blocks of `B` channels × `KW` kernel columns, at most 15 sums (KW = 3:
/// B up to 5; 5: up to 3). With more, LLVM kept some of the sums in memory through the inner
/// loop.
#[cfg(target_arch = "x86_64")]
macro_rules! by_width_and_block {
    ($f:ident) => {
        [
            &[$f::<3, 1>, $f::<3, 2>, $f::<3, 3>, $f::<3, 4>, $f::<3, 5>],
            &[$f::<5, 1>, $f::<5, 2>, $f::<5, 3>],
        ]
    };
}

/// Whether a weight gradient of `rows` output channels runs as [`weight_grad_lanes`]: 9 to
/// 16 of them (a vector's lanes, mostly filled), ungrouped, unpadded (every tap of every
/// output pixel inside the input), kernels 3 or 5 wide, where [`weight_grad_direct`] does not
/// apply (rows that fill few of their lanes, as LeNet-5's conv2: 10 of 16), AVX-512F.
fn weight_grad_lanes_applies(g: &Geom, rows: usize) -> bool {
    let inside = g.pt == 0
        && g.pl == 0
        && (g.oh - 1) * g.sh + (g.kh - 1) * g.dh < g.h
        && (g.ow - 1) * g.sw + (g.kw - 1) * g.dw < g.w;
    g.groups == 1
        && (9..=16).contains(&rows)
        && inside
        && matches!(g.kw, 3 | 5)
        && !weight_grad_direct_applies(g)
        && super::sgemm::available()
}

/// The weight gradient with output channels in the vector lanes:
/// `dw[o, c, ki, kj] = Σ_{i, y, x} x[i, c, y·SH + ki·DH, x·SW + kj·DW] · dy[i, o, y, x]`,
/// lanes `o`. Per image, `dy` is transposed into one 16-lane vector per output pixel (channels
/// `lo..hi`, zeros beyond); then per block of input channels and kernel row a sweep
/// ([`weight_grad_lane_rows`]) keeps `CB × KW` sums (15) in registers and, per output pixel,
/// loads that vector once and broadcasts the `CB × KW` input values it meets, so every lane of
/// every multiply-add is useful (the GEMM form packs an im2col of mostly short rows; the
/// pixels-in-lanes form of [`weight_grad_direct`] fills 10 of 16 lanes on LeNet-5's 10-wide
/// rows). Images are the outer loop (one image's input and `dy` stay in L1); the sums are kept
/// per sweep between images. Rows `lo..hi` and input channels `c0..c1` of `dw` are written
/// (overwritten).
///
/// # Safety
/// As [`conv_backward_weight`]; [`weight_grad_lanes_applies`].
unsafe fn weight_grad_lanes(
    g: &Geom,
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    imgs: &[usize],
    (lo, hi): (usize, usize),
    (c0, c1): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    {
        let cb = even_block(c1 - c0, if g.kw == 3 { 5 } else { 3 });
        let taps = g.kh * g.kw;
        // Sums per (input channel, kernel row, kernel column): 16 lanes of output channels.
        let mut sums = vec![0f32; (c1 - c0) * taps * 16];
        let mut dyt = vec![0f32; g.npix * 16];
        let sweeps = WEIGHT_GRAD_LANE_ROWS[(g.kw == 5) as usize];
        let (img_in, img_out) = (g.c * g.h * g.w, g.o * g.npix);
        for &i in imgs {
            // SAFETY: channels lo..hi of image i's dy; dyt holds npix·16 floats.
            unsafe {
                transpose_channels(dy.add(i * img_out + lo * g.npix), hi - lo, g.npix, &mut dyt)
            };
            for cs in (c0..c1).step_by(cb) {
                let m = cb.min(c1 - cs);
                for ki in 0..g.kh {
                    let at = ((cs - c0) * taps + ki * g.kw) * 16;
                    // SAFETY: AVX-512F present (applies); image i of x (unpadded: every tap
                    // inside); this block's sums.
                    unsafe {
                        sweeps[m - 1](
                            g,
                            x.add(i * img_in),
                            &dyt,
                            (cs, ki),
                            sums.as_mut_ptr().add(at),
                        )
                    };
                }
            }
        }
        for o in lo..hi {
            for c in c0..c1 {
                for t in 0..taps {
                    // SAFETY: row o, column c·taps + t of dw.
                    unsafe {
                        *dw.add(o * g.kdim + c * taps + t) =
                            sums[((c - c0) * taps + t) * 16 + o - lo]
                    };
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("weight_grad_lanes_applies needs AVX-512F");
}

/// `out[p·16 + r] = src[r·npix + p]` for `r < rows` (at most 16), zero for `r >= rows`: the
/// channels of one image's `dy` as one vector per pixel.
///
/// # Safety
/// AVX-512F present; `src` holds `rows` channels of `npix` floats; `out` `npix·16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_channels(src: *const f32, rows: usize, npix: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    for p0 in (0..npix).step_by(16) {
        let pn = (npix - p0).min(16);
        let mask = super::sgemm::lane_mask(0, pn as isize);
        let mut r = [_mm512_setzero_ps(); 16];
        for (ch, v) in r.iter_mut().enumerate().take(rows) {
            // SAFETY: pixels p0..p0 + pn of channel ch.
            *v = unsafe { _mm512_maskz_loadu_ps(mask, src.add(ch * npix + p0)) };
        }
        let t = super::sgemm::transpose16(r);
        for (k, v) in t.iter().enumerate().take(pn) {
            // SAFETY: pixel p0 + k's 16 floats of out.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((p0 + k) * 16), *v) };
        }
    }
}

/// One sweep of [`weight_grad_lanes`]: input channels `c..c + CB` of one image (`x` at its
/// channel 0), kernel row `ki`, adding into the sums `sums[(cc·KH·KW + kj)·16..]`.
#[cfg(target_arch = "x86_64")]
type WeightGradLaneRows = unsafe fn(&Geom, *const f32, &[f32], (usize, usize), *mut f32);

/// [`WeightGradLaneRows`] by `[KW == 5][CB - 1]`: at most 15 sums.
#[cfg(target_arch = "x86_64")]
static WEIGHT_GRAD_LANE_ROWS: [&[WeightGradLaneRows]; 2] =
    by_width_and_block!(weight_grad_lane_rows);

/// See [`WeightGradLaneRows`].
///
/// # Safety
/// AVX-512F present; `x` one image's input, every tap inside it; `c + CB <= C`, `ki < KH`;
/// `dyt` the image's transposed `dy` ([`transpose_channels`]); `sums` holds the block's
/// `CB·KH·KW·16` floats from its start.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_lane_rows<const KW: usize, const CB: usize>(
    g: &Geom,
    x: *const f32,
    dyt: &[f32],
    (c, ki): (usize, usize),
    sums: *mut f32,
) {
    use std::arch::x86_64::*;
    let taps = g.kh * g.kw;
    let mut acc = [[_mm512_setzero_ps(); KW]; CB];
    #[allow(clippy::needless_range_loop)]
    for cc in 0..CB {
        for kj in 0..KW {
            // SAFETY: sums of channel c + cc, kernel row ki, column kj.
            acc[cc][kj] = unsafe { _mm512_loadu_ps(sums.add((cc * taps + kj) * 16)) };
        }
    }
    let plane = g.h * g.w;
    for y in 0..g.oh {
        let row = x.wrapping_add(c * plane + (y * g.sh + ki * g.dh) * g.w);
        let d_row = dyt.as_ptr().wrapping_add(y * g.ow * 16);
        for xo in 0..g.ow {
            // SAFETY: pixel (y, xo)'s vector of dyt.
            let d = unsafe { _mm512_loadu_ps(d_row.add(xo * 16)) };
            let at = row.wrapping_add(xo * g.sw);
            #[allow(clippy::needless_range_loop)]
            for cc in 0..CB {
                for kj in 0..KW {
                    // SAFETY: input (c + cc, y·SH + ki·DH, xo·SW + kj·DW), inside the image.
                    let v = _mm512_set1_ps(unsafe { *at.add(cc * plane + kj * g.dw) });
                    acc[cc][kj] = _mm512_fmadd_ps(v, d, acc[cc][kj]);
                }
            }
        }
    }
    #[allow(clippy::needless_range_loop)]
    for cc in 0..CB {
        for kj in 0..KW {
            // SAFETY: as the loads above.
            unsafe { _mm512_storeu_ps(sums.add((cc * taps + kj) * 16), acc[cc][kj]) };
        }
    }
}

/// The size of the blocks that split `n` into as few blocks of at most `max` as possible, as
/// evenly as possible (at least 1): the register sweeps' channel blocks.
fn even_block(n: usize, max: usize) -> usize {
    n.div_ceil(n.div_ceil(max).max(1)).max(1)
}

/// Convolutions with up to this many output channels may take [`weight_grad_direct`].
const DIRECT_WEIGHT_CHANNELS: usize = 32;

/// Whether a weight gradient runs as [`weight_grad_direct`]: ungrouped, stride 1 along rows
/// of the input, kernels 3 or 5 wide, few output channels (the GEMM form's products are then
/// a few rows by a few columns with a long inner dimension, mostly packing and im2col), and
/// AVX-512F.
fn weight_grad_direct_applies(g: &Geom) -> bool {
    // Measured against the GEMM form (training steps at batch 64): LeNet-5's conv1 (6 output
    // channels, 28 wide rows) 0.22 -> 0.11 ms; 16 channels 3×3 on 32×32 0.57 -> 0.33; 32
    // channels 5×5 2.0 -> 1.6; but 64 channels 3×3 (ResNet-18's conv1 at 32×32) even or
    // slower, and LeNet-5's conv2 (rows 10 wide, 5/8 of the lanes) 10% slower. So: up to 32
    // output channels, rows filling at least 3/4 of their 16-lane chunks.
    let lanes = g.ow * 4 >= 3 * 16 * g.ow.div_ceil(16);
    g.groups == 1
        && g.sw == 1
        && matches!(g.kw, 3 | 5)
        && g.o <= DIRECT_WEIGHT_CHANNELS
        && lanes
        && super::sgemm::available()
}

/// The weight gradient without im2col or GEMM:
/// `dw[o, c, ki, kj] = Σ_{i, y, x} dy[i, o, y, x] · x[i, c, y·SH + ki·DH - PT, x + kj·DW - PL]`.
/// Per image, per block of up to `OB` output channels, input channel and kernel row, a sweep
/// ([`weight_grad_rows`]) holds `OB × KW` sums of 16 lanes in registers and adds 16 output
/// pixels of a row at a time (masked loads read zeros outside the input, so no padded copy is
/// made). Images are the outer loop, so one image's block of `dy` and its input stay in L1
/// across the block's sweeps (with the sweeps outermost, each reread every image from L2 and
/// ran at L2 speed); the sums are kept per sweep in a buffer between images and added up
/// across lanes at the end. Rows `lo..hi` and input channels `c0..c1` of `dw` are written
/// (overwritten).
///
/// # Safety
/// As [`conv_backward_weight`]; [`weight_grad_direct_applies`].
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_direct(
    g: &Geom,
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    imgs: &[usize],
    (lo, hi): (usize, usize),
    (c0, c1): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::sgemm::lane_mask;
        let ob = even_block(hi - lo, if g.kw == 3 { 5 } else { 3 });
        let blocks = (hi - lo).div_ceil(ob).max(1);
        let taps = g.kh * g.kw;
        // Per 16-pixel chunk of a row: the lanes inside the output row, and per kernel column
        // the lanes whose input column (x0 + l + kj·DW - PL) lies inside the input row.
        let masks: Vec<(u16, [u16; 5])> = (0..g.ow.div_ceil(16))
            .map(|ch| {
                let x0 = 16 * ch;
                let dmask = lane_mask(0, (g.ow - x0) as isize);
                let mut m = [0; 5];
                for (kj, m) in m.iter_mut().enumerate().take(g.kw) {
                    let off = (x0 + kj * g.dw) as isize - g.pl as isize;
                    *m = lane_mask(-off, g.w as isize - off) & dmask;
                }
                (dmask, m)
            })
            .collect();
        // The sums of every sweep: (block, channel, kernel row) × ob × KW × 16 lanes.
        let per_sweep = ob * g.kw * 16;
        let sweeps = blocks * (c1 - c0) * g.kh;
        let mut sums = vec![0f32; sweeps * per_sweep];
        let kernel = WEIGHT_GRAD_ROWS[(g.kw == 5) as usize];
        for &i in imgs {
            for (b, o0) in (lo..hi).step_by(ob).enumerate() {
                let m = ob.min(hi - o0);
                for c in c0..c1 {
                    for ki in 0..g.kh {
                        let sweep = (b * (c1 - c0) + c - c0) * g.kh + ki;
                        // SAFETY: AVX-512F present (applies); image i of x and dy (contract);
                        // this sweep's m·KW·16 sums.
                        unsafe {
                            kernel[m - 1](
                                g,
                                (x, dy),
                                (i, o0, c, ki),
                                &masks,
                                sums.as_mut_ptr().add(sweep * per_sweep),
                            )
                        };
                    }
                }
            }
        }
        for (b, o0) in (lo..hi).step_by(ob).enumerate() {
            for j in 0..ob.min(hi - o0) {
                for c in c0..c1 {
                    for ki in 0..g.kh {
                        let sweep = (b * (c1 - c0) + c - c0) * g.kh + ki;
                        for kj in 0..g.kw {
                            let at = sweep * per_sweep + (j * g.kw + kj) * 16;
                            let v: f32 = sums[at..at + 16].iter().sum();
                            // SAFETY: row o0 + j, column c·taps + ki·KW + kj of dw.
                            unsafe { *dw.add((o0 + j) * g.kdim + c * taps + ki * g.kw + kj) = v };
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("weight_grad_direct_applies needs AVX-512F");
}

/// One sweep of [`weight_grad_direct`]: image `i`, output channels `o0..o0 + OB`, input
/// channel `c`, kernel row `ki`, adding into the 16-lane sums `sums[(j·KW + kj)·16..]`.
#[cfg(target_arch = "x86_64")]
type WeightGradRows = unsafe fn(
    &Geom,
    (*const f32, *const f32),
    (usize, usize, usize, usize),
    &[(u16, [u16; 5])],
    *mut f32,
);

/// [`WeightGradRows`] by `[KW == 5][OB - 1]` (`by_width_and_block!`).
#[cfg(target_arch = "x86_64")]
static WEIGHT_GRAD_ROWS: [&[WeightGradRows]; 2] = by_width_and_block!(weight_grad_rows);

/// See [`WeightGradRows`]; `masks` as [`weight_grad_direct`] makes them.
///
/// # Safety
/// AVX-512F present; `x`, `dy` the whole batches; `i < N`, `o0 + OB <= O`, `c < C`,
/// `ki < KH`; `sums` holds `OB·KW·16` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_rows<const KW: usize, const OB: usize>(
    g: &Geom,
    (x, dy): (*const f32, *const f32),
    (i, o0, c, ki): (usize, usize, usize, usize),
    masks: &[(u16, [u16; 5])],
    sums: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); KW]; OB];
    #[allow(clippy::needless_range_loop)]
    for j in 0..OB {
        for kj in 0..KW {
            // SAFETY: sums holds OB·KW vectors.
            acc[j][kj] = unsafe { _mm512_loadu_ps(sums.add((j * KW + kj) * 16)) };
        }
    }
    let (img_in, img_out) = (g.c * g.h * g.w, g.o * g.npix);
    for y in 0..g.oh {
        let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        let xrow = x.wrapping_add(i * img_in + (c * g.h + iy as usize) * g.w);
        let dyrow = dy.wrapping_add(i * img_out + o0 * g.npix + y * g.ow);
        for (ch, &(dmask, xm)) in masks.iter().enumerate() {
            let x0 = 16 * ch;
            // Index loops over the constant bounds (not iterators), so that LLVM unrolls them
            // and keeps every sum in a register.
            let mut xv = [_mm512_setzero_ps(); KW];
            #[allow(clippy::needless_range_loop)]
            for kj in 0..KW {
                let off = (x0 + kj * g.dw) as isize - g.pl as isize;
                // SAFETY: the lanes in xm[kj] lie inside row iy of channel c of image i.
                xv[kj] = unsafe { _mm512_maskz_loadu_ps(xm[kj], xrow.wrapping_offset(off)) };
            }
            #[allow(clippy::needless_range_loop)]
            for j in 0..OB {
                // SAFETY: lanes below OW - x0 of row y of channel o0 + j of image i's dy.
                let d =
                    unsafe { _mm512_maskz_loadu_ps(dmask, dyrow.wrapping_add(j * g.npix + x0)) };
                for kj in 0..KW {
                    acc[j][kj] = _mm512_fmadd_ps(d, xv[kj], acc[j][kj]);
                }
            }
        }
    }
    #[allow(clippy::needless_range_loop)]
    for j in 0..OB {
        for kj in 0..KW {
            // SAFETY: sums holds OB·KW vectors.
            unsafe { _mm512_storeu_ps(sums.add((j * KW + kj) * 16), acc[j][kj]) };
        }
    }
}

/// The gradient of a convolution with respect to its weight over images `imgs`:
/// `dw_g = Σ_i dy[i]_g · im2col(x[i]_g)ᵀ`, written to `dw` (overwritten, not accumulated).
/// Small images are packed side by side so each GEMM has a long inner dimension.
///
/// # Safety
/// `x` holds the whole input batch, `dy` the whole output-gradient batch, `dw` one weight's
/// worth of floats that no other thread touches.
pub unsafe fn conv_backward_weight(
    kind: &ContractionKind,
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    imgs: std::ops::Range<usize>,
    channels: (usize, usize),
    inputs: (usize, usize),
) {
    let full = Geom::new(kind);
    let (npix, kdim) = (full.npix, full.kdim);
    let img_in = full.c * full.h * full.w;
    let img_out = full.o * npix;
    let (lo, hi) = if full.groups == 1 {
        channels
    } else {
        (0, full.o)
    };
    // Input channels c0..c1 only (ungrouped): the columns c0·KH·KW.. of dw, from those
    // channels' im2col rows alone, so threads that split the input channels share no packing.
    let (c0, c1) = if full.groups == 1 {
        inputs
    } else {
        (0, full.cg)
    };
    let taps = full.kh * full.kw;
    let g = full.channels(c1 - c0);
    let sub_k = g.kdim;
    let list: Vec<usize> = imgs.collect();
    if list.is_empty() {
        for r in lo..hi {
            // SAFETY: dw holds o * kdim floats; this call owns these columns of rows lo..hi.
            unsafe { std::slice::from_raw_parts_mut(dw.add(r * kdim + c0 * taps), sub_k) }
                .fill(0.0);
        }
    }
    if weight_grad_direct_applies(&full) {
        // SAFETY: forwarded; rows lo..hi and columns c0·taps.. of dw are this call's.
        unsafe { weight_grad_direct(&full, x, dy, dw, &list, (lo, hi), (c0, c1)) };
        return;
    }
    // The form is chosen for the whole weight, not the rows this call computes: tasks that
    // split the output channels then sum in the same order as one task.
    if weight_grad_lanes_applies(&full, full.o) {
        // SAFETY: forwarded; rows lo..hi and columns c0·taps.. of dw are this call's.
        unsafe { weight_grad_lanes(&full, x, dy, dw, &list, (lo, hi), (c0, c1)) };
        return;
    }
    // Output-channel rows of each group this call computes.
    let (r0, r1) = if full.groups == 1 {
        (lo, hi)
    } else {
        (0, full.og)
    };
    let per_pack = BAND_PIXELS.div_ceil(npix).max(1);
    let plane = full.h * full.w;
    for grp in 0..full.groups {
        let dwg = unsafe { dw.add(grp * full.og * kdim + c0 * taps) };
        for (k, pack) in list.chunks(per_pack).enumerate() {
            if npix > BAND_PIXELS && implicit(&g, full.og) {
                // A large image as an implicit GEMM per band: dw += dy_band · slabᵀ, where dy's
                // band is copied into the slab's pixel numbering (rows WP apart, zeros in the
                // extra columns, so the slab's extra columns add nothing).
                let i = pack[0];
                let xg = unsafe { x.add(i * img_in + grp * full.cg * plane + c0 * plane) };
                let dyg = unsafe { dy.add(i * img_out + grp * full.og * npix) };
                let sl = Slab::new(&g);
                let wp = sl.wp;
                SCRATCH.with(|s| {
                    TILE.with(|t| {
                        let (mut slab, mut dyp) = (s.borrow_mut(), t.borrow_mut());
                        let mut cols_of = Vec::with_capacity(sub_k);
                        for (y0, y1) in bands(&g, 0, g.oh) {
                            let rows = y1 - y0;
                            // SAFETY: image i's channels c0..c1 of x.
                            unsafe { sl.fill(&g, xg, y0, rows, &mut slab, &mut cols_of) };
                            let cols = (rows - 1) * wp + g.ow;
                            if dyp.len() < (r1 - r0) * cols {
                                dyp.resize((r1 - r0) * cols, 0.0);
                            }
                            for r in r0..r1 {
                                let row = &mut dyp[(r - r0) * cols..(r - r0 + 1) * cols];
                                for y in 0..rows {
                                    // SAFETY: row y0 + y of channel r of image i's dy.
                                    let src = unsafe {
                                        std::slice::from_raw_parts(
                                            dyg.add(r * npix + (y0 + y) * g.ow),
                                            g.ow,
                                        )
                                    };
                                    row[y * wp..y * wp + g.ow].copy_from_slice(src);
                                    if y + 1 < rows {
                                        row[y * wp + g.ow..(y + 1) * wp].fill(0.0);
                                    }
                                }
                            }
                            // SAFETY: dw rows r0..r1 of this group, columns c0·taps.. (sub_k);
                            // dyp holds (r1-r0)·cols floats; column j of the slab matrix runs
                            // `cols` floats from cols_of[j], inside the slab (Slab::fill).
                            let ran = unsafe {
                                super::sgemm::sgemm_cols(
                                    r1 - r0,
                                    cols,
                                    dwg.add(r0 * kdim),
                                    kdim as isize,
                                    dyp.as_ptr(),
                                    cols as isize,
                                    slab.as_ptr(),
                                    &cols_of,
                                    k > 0 || y0 > 0,
                                )
                            };
                            assert!(ran, "implicit() checked AVX-512F");
                        }
                    })
                });
                continue;
            }
            if npix > BAND_PIXELS {
                // A large image: bands of output rows, dy read in place (rows npix apart).
                let i = pack[0];
                let xg = unsafe { x.add(i * img_in + grp * full.cg * plane + c0 * plane) };
                let dyg = unsafe { dy.add(i * img_out + grp * full.og * npix) };
                SCRATCH.with(|s| {
                    let mut col = s.borrow_mut();
                    for (y0, y1) in bands(&g, 0, g.oh) {
                        let band = (y1 - y0) * g.ow;
                        if col.len() < sub_k * band {
                            col.resize(sub_k * band, 0.0);
                        }
                        unsafe {
                            im2col(&g, xg, y0, y1, &mut col, band, 0);
                            gemm_acc(
                                r1 - r0,
                                sub_k,
                                band,
                                dwg.add(r0 * kdim),
                                kdim as isize,
                                dyg.add(r0 * npix + y0 * g.ow),
                                npix as isize,
                                1,
                                col.as_ptr(),
                                1,
                                band as isize,
                                k > 0 || y0 > 0,
                            );
                        }
                    }
                });
                continue;
            }
            let cols = pack.len() * npix;
            SCRATCH.with(|s| {
                TILE.with(|t| {
                    let mut col = s.borrow_mut();
                    let mut dyp = t.borrow_mut();
                    if col.len() < sub_k * cols {
                        col.resize(sub_k * cols, 0.0);
                    }
                    if dyp.len() < (r1 - r0) * cols {
                        dyp.resize((r1 - r0) * cols, 0.0);
                    }
                    // SAFETY: the pack's images of x, consecutive; col holds sub_k·cols
                    // floats.
                    let batched = !g.direct
                        && unsafe {
                            im2col_batch(
                                &g,
                                x.add(pack[0] * img_in + grp * full.cg * plane + c0 * plane),
                                img_in,
                                (pack.len(), per_pack.min(list.len())),
                                &mut col,
                            )
                        };
                    for (b, &i) in pack.iter().enumerate() {
                        // SAFETY: image i's group channels of x and dy.
                        let xg = unsafe { x.add(i * img_in + grp * full.cg * plane + c0 * plane) };
                        if batched {
                        } else if g.direct {
                            for r in 0..sub_k {
                                let src =
                                    unsafe { std::slice::from_raw_parts(xg.add(r * npix), npix) };
                                col[r * cols + b * npix..r * cols + (b + 1) * npix]
                                    .copy_from_slice(src);
                            }
                        } else {
                            unsafe { im2col(&g, xg, 0, g.oh, &mut col, cols, b * npix) };
                        }
                        let dyg = unsafe { dy.add(i * img_out + grp * full.og * npix) };
                        for r in r0..r1 {
                            let src =
                                unsafe { std::slice::from_raw_parts(dyg.add(r * npix), npix) };
                            let q = r - r0;
                            dyp[q * cols + b * npix..q * cols + (b + 1) * npix]
                                .copy_from_slice(src);
                        }
                    }
                    // dw_g[rows, kdim] += dyp[rows, cols] · col[kdim, cols]ᵀ
                    unsafe {
                        gemm_acc(
                            r1 - r0,
                            sub_k,
                            cols,
                            dwg.add(r0 * kdim),
                            kdim as isize,
                            dyp.as_ptr(),
                            cols as isize,
                            1,
                            col.as_ptr(),
                            1,
                            cols as isize,
                            // The first pack writes, the others add.
                            k > 0,
                        )
                    };
                })
            });
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// xorshift32 in [-1, 1).
    pub(in crate::runtime) struct Rng(pub(in crate::runtime) u32);

    impl Rng {
        pub(in crate::runtime) fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            (self.0 as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32
        }
        fn below(&mut self, n: usize) -> usize {
            ((self.next() as f64 + 1.0) / 2.0 * n as f64) as usize % n
        }
    }

    /// The convolution by its definition, in f64: `out[i, o, y, x]`.
    fn reference(kind: &ContractionKind, x: &[f32], w: &[f32]) -> Vec<f64> {
        let ContractionKind::Conv2d { n, .. } = *kind else {
            unreachable!()
        };
        let g = Geom::new(kind);
        let mut out = vec![0.0f64; n * g.o * g.npix];
        for i in 0..n {
            for o in 0..g.o {
                let grp = o / g.og;
                for y in 0..g.oh {
                    for xo in 0..g.ow {
                        let mut s = 0.0f64;
                        for ci in 0..g.cg {
                            let c = grp * g.cg + ci;
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                                    let ix = (xo * g.sw + kj * g.dw) as isize - g.pl as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((i * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = w[((o * g.cg + ci) * g.kh + ki) * g.kw + kj];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[(i * g.o + o) * g.npix + y * g.ow + xo] = s;
                    }
                }
            }
        }
        out
    }

    /// The epilogue `relu?((raw + bias[o]) + res)` (parts as `parts` says) of a convolution's
    /// output, recognized from its loop kernel.
    fn test_post(
        kind: &ContractionKind,
        (bias, res, relu): (bool, bool, bool),
        b: *const f32,
        r: *const f32,
    ) -> PostOp {
        use crate::fuse::kernel::Scalar;
        use crate::graph::{BinaryOp, UnaryOp};
        let g = Geom::new(kind);
        // Loads first, the raw one last and the residual added with the chain on the right.
        let mut program = vec![Scalar::Load(1), Scalar::Load(2), Scalar::Load(0)];
        let mut cur = 2;
        if bias {
            program.push(Scalar::Binary(BinaryOp::Add, cur, 0));
            cur = program.len() - 1;
        }
        if res {
            program.push(Scalar::Binary(BinaryOp::Add, 1, cur));
            cur = program.len() - 1;
        }
        if relu {
            program.push(Scalar::Unary(UnaryOp::Relu, cur));
        }
        let k = super::super::post::epilogue_kernel([kind_n(kind), g.o, g.oh, g.ow], program);
        PostOp::recognize(&k, &[std::ptr::null(), b, r, std::ptr::null()])
            .expect("the chain is recognized")
    }

    /// Run `r` of [`convolutions_match_the_definition`] (whole, by channel blocks, by row
    /// blocks) with the epilogue `op`.
    #[allow(clippy::too_many_arguments)]
    fn run_post(
        kind: &ContractionKind,
        op: &PostOp,
        x: &[f32],
        wt: &[f32],
        out: &mut [f32],
        r: usize,
        (split, rows): (usize, usize),
    ) {
        let g = Geom::new(kind);
        let n = kind_n(kind);
        let conv = |out: &mut [f32], imgs, o_range, rows| unsafe {
            conv_images(
                kind,
                x.as_ptr(),
                wt.as_ptr(),
                out.as_mut_ptr(),
                imgs,
                o_range,
                rows,
                Some(op),
            )
        };
        match r {
            0 => conv(out, 0..n, (0, g.o), None),
            1 => {
                for i in 0..n {
                    for o_range in [(0, split), (split, g.o)] {
                        conv(out, i..i + 1, o_range, None);
                    }
                }
            }
            _ => {
                for i in 0..n {
                    for rr in [(0, rows), (rows, g.oh)] {
                        conv(out, i..i + 1, (0, g.o), Some(rr));
                    }
                }
            }
        }
    }

    /// Random geometries with odd sizes, strides 1-4 (the implicit GEMM's phases), asymmetric
    /// padding, dilation and groups; each run whole, by output-channel blocks and by row
    /// splits, against [`reference`].
    #[test]
    fn convolutions_match_the_definition() {
        let mut rng = Rng(0x2545_f491);
        let (mut implicit_seen, mut strided_seen, mut direct_seen) = (0, 0, 0);
        let (mut wide_seen, mut lanes_seen) = (0, 0);
        for case in 0..150 {
            let groups = [1, 1, 1, 2, 3][rng.below(5)];
            // Every 15th case from the fourth the lanes form's shape: 9 to 16 output channels,
            // ungrouped, unpadded, output rows of at most 16.
            let lanes_case = case % 15 == 3;
            let groups = if lanes_case { 1 } else { groups };
            let c = groups * (1 + rng.below(5));
            // Up to 24 output channels the GEMM reads the slab in place, above it packs it.
            let o = groups * [1 + rng.below(9), 25 + rng.below(8)][rng.below(2)];
            let kh = 1 + rng.below(5);
            let kw = 1 + rng.below(5);
            let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
            let (sh, sw) = ([1, 1, 2, 3][rng.below(4)], [1, 1, 2, 3, 4][rng.below(5)]);
            let padding = [rng.below(4), rng.below(4), rng.below(4), rng.below(4)];
            // Every 15th case a plain 1×1 product (the direct path), the next a strided 1×1
            // one (the implicit GEMM storing straight to the output).
            let (kh, kw, sh, sw, padding) = match case % 15 {
                0 => (1, 1, 1, 1, [0; 4]),
                1 => (1, 1, 2, 2, [0; 4]),
                3 => (kh, kw, sh, sw, [0; 4]),
                _ => (kh, kw, sh, sw, padding),
            };
            let o = if lanes_case { 9 + rng.below(8) } else { o };
            let h = (kh - 1) * dh + 1 + rng.below(40);
            let w = (kw - 1) * dw + 1 + rng.below(if lanes_case { 15 * sw + 1 } else { 60 });
            // Every 15th case from the third rows at least WIDE_ROWS wide.
            let w = if case % 15 == 2 {
                w + WIDE_ROWS * sw
            } else {
                w
            };
            let n = 1 + rng.below(3);
            let kind = ContractionKind::Conv2d {
                n,
                c,
                h,
                w,
                o,
                kernel: [kh, kw],
                stride: [sh, sw],
                padding,
                dilation: [dh, dw],
                groups,
            };
            let g = Geom::new(&kind);
            direct_seen += g.direct as usize;
            lanes_seen += conv_lanes_applies(&g, o) as usize;
            implicit_seen += implicit(&g, o) as usize;
            wide_seen +=
                (implicit(&g, o) && g.ow >= WIDE_ROWS && Slab::new(&g).wp != g.ow) as usize;
            strided_seen += (implicit(&g, o) && sh * sw > 1) as usize;
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.next()).collect();
            let wt: Vec<f32> = (0..o * g.kdim).map(|_| rng.next()).collect();
            let want = reference(&kind, &x, &wt);
            let out_len = n * o * g.npix;
            let split = o / 2;
            let rows = g.oh / 2;
            type Run<'a> = &'a dyn Fn(&mut [f32]);
            let runs: [Run; 3] = [
                // All images at once (the batched small-image path when they are small).
                &|out| unsafe {
                    conv_images(
                        &kind,
                        x.as_ptr(),
                        wt.as_ptr(),
                        out.as_mut_ptr(),
                        0..n,
                        (0, o),
                        None,
                        None,
                    )
                },
                // One image at a time, output channels in two blocks.
                &|out| {
                    for i in 0..n {
                        for r in [(0, split), (split, o)] {
                            unsafe {
                                conv_images(
                                    &kind,
                                    x.as_ptr(),
                                    wt.as_ptr(),
                                    out.as_mut_ptr(),
                                    i..i + 1,
                                    r,
                                    None,
                                    None,
                                )
                            }
                        }
                    }
                },
                // One image at a time, output rows in two blocks.
                &|out| {
                    for i in 0..n {
                        for r in [(0, rows), (rows, g.oh)] {
                            unsafe {
                                conv_images(
                                    &kind,
                                    x.as_ptr(),
                                    wt.as_ptr(),
                                    out.as_mut_ptr(),
                                    i..i + 1,
                                    (0, o),
                                    Some(r),
                                    None,
                                )
                            }
                        }
                    }
                },
            ];
            for (r, run) in runs.iter().enumerate() {
                let mut out = vec![f32::NAN; out_len];
                run(&mut out);
                for (j, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    let tol = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "case {case} run {r} ({kind:?}): element {j}: {got} vs {want}"
                    );
                }
            }
            // The same runs with an epilogue applied as the product is stored: bit for bit
            // the same run's raw product followed by the epilogue.
            let (bias, res, relu) = (rng.below(2) == 1, rng.below(2) == 1, rng.below(2) == 1);
            let b: Vec<f32> = (0..o).map(|_| rng.next()).collect();
            let mut rv: Vec<f32> = (0..out_len).map(|_| rng.next()).collect();
            // Values the ReLU must keep (NaN, -0: PyTorch's relu) and exact zeros of raw +
            // bias + res; `Post::value` is `UnaryOp::Relu`'s definition.
            rv[out_len / 2] = f32::NAN;
            if out_len > 2 {
                rv[1] = -0.0;
            }
            if out_len > 3 {
                rv[2] = f32::NEG_INFINITY;
                rv[out_len - 1] = f32::INFINITY;
            }
            let op = test_post(&kind, (bias, res, relu), b.as_ptr(), rv.as_ptr());
            for (r, run) in runs.iter().enumerate() {
                let mut raw = vec![f32::NAN; out_len];
                run(&mut raw);
                let expect: Vec<f32> = (0..out_len)
                    .map(|j| {
                        let ch = j / g.npix % o;
                        op.image(0, 0)
                            .value(raw[j], bias.then_some(b[ch]), res.then_some(rv[j]))
                    })
                    .collect();
                let mut out = vec![f32::NAN; out_len];
                run_post(&kind, &op, &x, &wt, &mut out, r, (split, rows));
                for (j, (&got, &want)) in out.iter().zip(&expect).enumerate() {
                    assert!(
                        got.to_bits() == want.to_bits(),
                        "case {case} run {r} post ({bias}, {res}, {relu}) ({kind:?}): element \
                         {j}: {got} vs {want}"
                    );
                }
            }
        }
        assert!(direct_seen >= 10, "only {direct_seen} direct cases");
        if super::super::sgemm::available() {
            assert!(implicit_seen >= 30, "only {implicit_seen} implicit cases");
            assert!(wide_seen >= 5, "only {wide_seen} wide-row implicit cases");
            assert!(lanes_seen >= 8, "only {lanes_seen} lanes cases");
            assert!(
                strided_seen >= 15,
                "only {strided_seen} strided implicit cases"
            );
        }
    }

    /// A random small convolution for the batched im2col/col2im tests (kernels up to 5×5,
    /// strides up to 3, dilation, asymmetric padding, up to 4 channels, maps up to 12 past the
    /// kernel's reach) with one output channel, and a pack size at least its batch.
    fn random_small_conv(rng: &mut Rng) -> (ContractionKind, usize) {
        let (kh, kw) = (1 + rng.below(5), 1 + rng.below(5));
        let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
        let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
        let padding = [rng.below(4), rng.below(4), rng.below(4), rng.below(4)];
        let h = (kh - 1) * dh + 1 + rng.below(12);
        let w = (kw - 1) * dw + 1 + rng.below(12);
        let c = 1 + rng.below(4);
        let pack = 1 + rng.below(6);
        let n = 1 + rng.below(pack);
        let kind = ContractionKind::Conv2d {
            n,
            c,
            h,
            w,
            o: 1,
            kernel: [kh, kw],
            stride: [sh, sw],
            padding,
            dilation: [dh, dw],
            groups: 1,
        };
        (kind, pack)
    }

    /// The batch size of a convolution.
    fn kind_n(kind: &ContractionKind) -> usize {
        match *kind {
            ContractionKind::Conv2d { n, .. } => n,
            ContractionKind::MatMul { batch, .. } => batch,
        }
    }

    /// The batched im2col of small maps ([`im2col_batch`]) against [`im2col`] image by
    /// image: random kernels, strides, dilations, asymmetric padding and odd sizes, packs
    /// shorter than the table's (the last pack of a pass), with both the masked-run and the
    /// gather lanes taken.
    #[test]
    fn batched_im2col_matches_per_image() {
        if !super::super::sgemm::available() {
            return;
        }
        let mut rng = Rng(0x0bad_cafe);
        let (mut gathers, mut runs) = (0, 0);
        for case in 0..300 {
            let (kind, pack) = random_small_conv(&mut rng);
            let g = Geom::new(&kind);
            if g.npix > BAND_PIXELS {
                continue;
            }
            let (nb, img_in) = (kind_n(&kind), g.c * g.h * g.w);
            let x: Vec<f32> = (0..nb * img_in).map(|_| rng.next()).collect();
            let cols = nb * g.npix;
            let mut want = vec![f32::NAN; g.kdim * cols];
            for b in 0..nb {
                unsafe {
                    im2col(
                        &g,
                        x.as_ptr().add(b * img_in),
                        0,
                        g.oh,
                        &mut want,
                        cols,
                        b * g.npix,
                    )
                };
            }
            let mut got = vec![f32::NAN; g.kdim * cols];
            assert!(unsafe { im2col_batch(&g, x.as_ptr(), img_in, (nb, pack), &mut got) });
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "case {case}: {kind:?}, pack {pack}"
            );
            let t = BatchTable::new(&g, img_in, pack);
            gathers += t.table.iter().filter(|c| c.nruns > RUNS).count();
            runs += t
                .table
                .iter()
                .filter(|c| (1..=RUNS).contains(&c.nruns))
                .count();
        }
        assert!(
            gathers > 100 && runs > 100,
            "gathers {gathers}, runs {runs}"
        );
    }

    /// The batched col2im ([`col2im_batch`]) against [`col2im`] image by image, adding into
    /// random values: random kernels, strides, dilations, asymmetric padding, odd sizes and
    /// packs shorter than the table's; bit for bit (the taps are added in the same order).
    #[test]
    fn batched_col2im_matches_per_image() {
        if !super::super::sgemm::available() {
            return;
        }
        let mut rng = Rng(0x5eed_1234);
        let (mut ran, mut gathers) = (0, 0);
        for case in 0..400 {
            let (kind, pack) = random_small_conv(&mut rng);
            let g = Geom::new(&kind);
            let (nb, img_in) = (kind_n(&kind), g.c * g.h * g.w);
            let cols = nb * g.npix;
            let colm: Vec<f32> = (0..g.kdim * cols).map(|_| rng.next()).collect();
            let dx: Vec<f32> = (0..nb * img_in).map(|_| rng.next()).collect();
            let mut want = dx.clone();
            for b in 0..nb {
                unsafe {
                    col2im(
                        &g,
                        &colm,
                        cols,
                        b * g.npix,
                        want.as_mut_ptr().add(b * img_in),
                    )
                };
            }
            let mut got = dx.clone();
            if !unsafe { col2im_batch(&g, &colm, got.as_mut_ptr(), img_in, (nb, pack)) } {
                continue;
            }
            ran += 1;
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "case {case}: {kind:?}, pack {pack}"
            );
            let t = BatchTable::new(&g, img_in, pack);
            gathers += t.table.iter().filter(|c| c.nruns > RUNS).count();
        }
        assert!(ran > 150 && gathers > 100, "ran {ran}, gathers {gathers}");
    }

    /// `a · bᵀ` with few rows (the transposed product) and many, odd sizes, against the
    /// definition; dst rows wider than n keep their extra columns.
    #[test]
    fn dense_products_match_the_definition() {
        let mut rng = Rng(0x1234_5679);
        for (m, n, k) in [
            (1, 7, 5),
            (1, 300, 129),
            (1, 1000, 512),
            (1, 6, 16),
            (1, 3, 33),
            (3, 1000, 77),
            (16, 513, 300),
            (31, 64, 1),
            (32, 33, 40),
            (33, 100, 17),
            (50, 20, 9),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let ld = n + 3;
            let mut dst = vec![9.0f32; m * ld];
            // SAFETY: a is m·k, b n·k, dst m rows of ld floats.
            unsafe {
                gemm_nt(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    ld as isize,
                    a.as_ptr(),
                    b.as_ptr(),
                )
            };
            for i in 0..m {
                for j in 0..ld {
                    let got = dst[i * ld + j];
                    if j >= n {
                        assert_eq!(got, 9.0, "{m}x{n}x{k}: padding column {j} of row {i}");
                        continue;
                    }
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                        .sum();
                    assert!(
                        (got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{m}x{n}x{k}: ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The input gradient by its definition, in f64: `dx[i, c, y, x] = Σ w[o, c, ki, kj] ·
    /// dy[i, o, oy, ox]` over the taps with `y = oy·SH + ki·DH - PT`, `x = ox·SW + kj·DW - PL`.
    fn reference_backward_data(kind: &ContractionKind, dy: &[f32], w: &[f32]) -> Vec<f64> {
        let ContractionKind::Conv2d { n, .. } = *kind else {
            unreachable!()
        };
        let g = Geom::new(kind);
        let mut dx = vec![0.0f64; n * g.c * g.h * g.w];
        for i in 0..n {
            for o in 0..g.o {
                let grp = o / g.og;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let d = dy[((i * g.o + o) * g.oh + oy) * g.ow + ox] as f64;
                        for ci in 0..g.cg {
                            let c = grp * g.cg + ci;
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let y = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                                    let x = (ox * g.sw + kj * g.dw) as isize - g.pl as isize;
                                    if y < 0 || x < 0 || y >= g.h as isize || x >= g.w as isize {
                                        continue;
                                    }
                                    let wv = w[((o * g.cg + ci) * g.kh + ki) * g.kw + kj] as f64;
                                    dx[((i * g.c + c) * g.h + y as usize) * g.w + x as usize] +=
                                        wv * d;
                                }
                            }
                        }
                    }
                }
            }
        }
        dx
    }

    /// Random geometries, stride 1 (few channels and rows of at most 32: the direct sweeps of
    /// [`backward_data_direct`]; else the implicit GEMM of the flipped weight where
    /// [`backward_data_implicit`] applies) and stride 2 (col2im), with odd sizes, asymmetric
    /// padding (some beyond the kernel's reach), dilation, groups and several images; each
    /// run whole, one image at a time and, without groups, by input-channel blocks, into a
    /// NaN-filled `dx` (so every element must be written), against
    /// [`reference_backward_data`].
    #[test]
    fn backward_data_matches_the_definition() {
        let mut rng = Rng(0x9e37_79b9);
        let (mut implicit_seen, mut split_seen, mut beyond_reach) = (0, 0, 0);
        let (mut direct_seen, mut direct_blocks) = (0, 0);
        for case in 0..120 {
            let groups = [1, 1, 1, 2, 3][rng.below(5)];
            let c = groups * (1 + rng.below(if case % 2 == 0 { 6 } else { 14 }));
            let o = groups * (1 + rng.below(9));
            let kh = 1 + rng.below(5);
            let kw = 1 + rng.below(5);
            let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
            let stride = if case % 4 == 3 { 2 } else { 1 };
            let padding = [rng.below(4), rng.below(4), rng.below(4), rng.below(4)];
            // Every eighth case large enough at stride 2 for the banded GEMM + col2im (more
            // than BAND_PIXELS output pixels).
            let big = if case % 8 == 7 { 40 } else { 0 };
            let h = (kh - 1) * dh + 1 + big + rng.below(30);
            let w = (kw - 1) * dw + 1 + big + rng.below(50);
            let n = 1 + rng.below(3);
            let kind = ContractionKind::Conv2d {
                n,
                c,
                h,
                w,
                o,
                kernel: [kh, kw],
                stride: [stride, stride],
                padding,
                dilation: [dh, dw],
                groups,
            };
            let g = Geom::new(&kind);
            let direct = backward_data_direct_applies(&g);
            direct_seen += direct as usize;
            // Two channel blocks or two 16-column chunks per row.
            direct_blocks += (direct && (c > 6 || w > 16)) as usize;
            let new_path = !direct && backward_data_implicit(&kind).is_some();
            implicit_seen += new_path as usize;
            split_seen += (new_path && groups == 1 && c >= 2) as usize;
            beyond_reach += (stride == 1
                && (padding[0].max(padding[1]) > (kh - 1) * dh
                    || padding[2].max(padding[3]) > (kw - 1) * dw))
                as usize;
            let dy: Vec<f32> = (0..n * o * g.npix).map(|_| rng.next()).collect();
            let wt: Vec<f32> = (0..o * g.kdim).map(|_| rng.next()).collect();
            let want = reference_backward_data(&kind, &dy, &wt);
            let split = c / 2;
            type Run<'a> = &'a dyn Fn(&mut [f32]);
            // SAFETY (the three runs): dy, the weight and dx hold the whole batch, weight and
            // input gradient of `kind`.
            let whole: Run = &|dx| unsafe {
                conv_backward_data(
                    &kind,
                    dy.as_ptr(),
                    wt.as_ptr(),
                    dx.as_mut_ptr(),
                    0..n,
                    (0, c),
                )
            };
            let per_image: Run = &|dx| {
                for i in 0..n {
                    unsafe {
                        conv_backward_data(
                            &kind,
                            dy.as_ptr(),
                            wt.as_ptr(),
                            dx.as_mut_ptr(),
                            i..i + 1,
                            (0, c),
                        )
                    }
                }
            };
            let by_channels: Run = &|dx| {
                for r in [(0, split), (split, c)].into_iter().filter(|(a, b)| a < b) {
                    unsafe {
                        conv_backward_data(
                            &kind,
                            dy.as_ptr(),
                            wt.as_ptr(),
                            dx.as_mut_ptr(),
                            0..n,
                            r,
                        )
                    }
                }
            };
            let runs: &[Run] = if groups == 1 {
                &[whole, per_image, by_channels]
            } else {
                &[whole, per_image]
            };
            for (r, run) in runs.iter().enumerate() {
                let mut dx = vec![f32::NAN; want.len()];
                run(&mut dx);
                for (j, (&got, &want)) in dx.iter().zip(&want).enumerate() {
                    let tol = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "case {case} run {r} ({kind:?}, direct {direct}, implicit {new_path}): \
                         element {j}: {got} vs {want}"
                    );
                }
            }
        }
        assert!(
            beyond_reach >= 5,
            "only {beyond_reach} cases pad beyond the reach"
        );
        if super::super::sgemm::available() {
            assert!(direct_seen >= 15, "only {direct_seen} direct cases");
            assert!(
                direct_blocks >= 5,
                "only {direct_blocks} direct multi-block cases"
            );
            assert!(implicit_seen >= 15, "only {implicit_seen} implicit cases");
            assert!(
                split_seen >= 5,
                "only {split_seen} implicit channel-split cases"
            );
        }
    }

    /// The weight gradient by its definition, in f64: `dw[o, ci, ki, kj] = Σ_{i, y, x}
    /// dy[i, o, y, x] · x[i, grp·CG + ci, y·SH + ki·DH - PT, x·SW + kj·DW - PL]`.
    fn reference_backward_weight(kind: &ContractionKind, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let ContractionKind::Conv2d { n, .. } = *kind else {
            unreachable!()
        };
        let g = Geom::new(kind);
        let mut dw = vec![0.0f64; g.o * g.kdim];
        for i in 0..n {
            for o in 0..g.o {
                let grp = o / g.og;
                for y in 0..g.oh {
                    for xo in 0..g.ow {
                        let d = dy[(i * g.o + o) * g.npix + y * g.ow + xo] as f64;
                        for ci in 0..g.cg {
                            for ki in 0..g.kh {
                                for kj in 0..g.kw {
                                    let iy = (y * g.sh + ki * g.dh) as isize - g.pt as isize;
                                    let ix = (xo * g.sw + kj * g.dw) as isize - g.pl as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((i * g.c + grp * g.cg + ci) * g.h + iy as usize)
                                        * g.w
                                        + ix as usize];
                                    dw[((o * g.cg + ci) * g.kh + ki) * g.kw + kj] += d * xv as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        dw
    }

    /// Weight gradients of large maps (the banded paths: implicit GEMM and im2col) and small
    /// ones (images packed side by side), strides 1-3, asymmetric padding, dilation, groups;
    /// whole, by output-channel blocks and by input-channel blocks, against the definition.
    #[test]
    fn backward_weight_matches_the_definition() {
        let mut rng = Rng(0x6c07_8965);
        let (mut implicit_seen, mut direct_seen, mut lanes_seen) = (0, 0, 0);
        for case in 0..96 {
            let groups = [1, 1, 1, 2][rng.below(4)];
            let c = groups * (1 + rng.below(5));
            let o = groups * (1 + rng.below(9));
            let kh = 1 + rng.below(4);
            let kw = 1 + rng.below(5);
            let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
            let (sh, sw) = ([1, 1, 2, 3][rng.below(4)], [1, 1, 2, 3][rng.below(4)]);
            let padding = [rng.below(3), rng.below(3), rng.below(3), rng.below(3)];
            // Every 8th case the direct form's shape (3 or 5 wide, stride 1 along rows, up to
            // 17 output channels: partial blocks of sums), with rows of 16·k + 12..16 pixels.
            let (groups, c, o, kw, sw) = if case % 8 == 5 {
                (1, c / groups, 1 + rng.below(17), [3, 5][case / 8 % 2], 1)
            } else {
                (groups, c, o, kw, sw)
            };
            // Every 8th case the lanes form's shape: 9 to 16 output channels, unpadded, 3 or 5
            // wide, up to 8 input channels (partial blocks), short rows (10 wide: LeNet-5's
            // conv2) or any stride.
            let lanes_case = case % 8 == 1;
            let (c, o, kw, padding) = if lanes_case {
                (
                    1 + rng.below(8),
                    9 + rng.below(8),
                    [3, 5][case / 8 % 2],
                    [0; 4],
                )
            } else {
                (c, o, kw, padding)
            };
            let groups = if lanes_case { 1 } else { groups };
            // Mostly large maps (more than a band of output pixels).
            let big = case % 4 != 3;
            let h = (kh - 1) * dh
                + 1
                + if big {
                    20 + rng.below(30)
                } else {
                    rng.below(10)
                };
            let w = if lanes_case {
                (kw - 1) * dw + 10 + rng.below(12)
            } else if case % 8 == 5 {
                // Output rows 16·k + 12..=16 wide.
                16 * rng.below(3) + 12 + rng.below(5) + (kw - 1) * dw - padding[2] - padding[3]
            } else {
                (kw - 1) * dw
                    + 1
                    + if big {
                        30 + rng.below(40)
                    } else {
                        rng.below(10)
                    }
            };
            let n = 1 + rng.below(3);
            let kind = ContractionKind::Conv2d {
                n,
                c,
                h,
                w,
                o,
                kernel: [kh, kw],
                stride: [sh, sw],
                padding,
                dilation: [dh, dw],
                groups,
            };
            let g = Geom::new(&kind);
            let direct = weight_grad_direct_applies(&g);
            direct_seen += direct as usize;
            lanes_seen += weight_grad_lanes_applies(&g, o) as usize;
            implicit_seen += (!direct && g.npix > BAND_PIXELS && implicit(&g, o)) as usize;
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.next()).collect();
            let dy: Vec<f32> = (0..n * o * g.npix).map(|_| rng.next()).collect();
            let want = reference_backward_weight(&kind, &x, &dy);
            let (so, sc) = (o / 2, c / 2);
            // (output channels, input channels) of one call.
            type Block = ((usize, usize), (usize, usize));
            let blocks: Vec<Block> = if groups == 1 {
                vec![
                    ((0, o), (0, c)),
                    ((0, so), (0, c)),
                    ((so, o), (0, c)),
                    ((0, o), (0, sc)),
                    ((0, o), (sc, c)),
                ]
            } else {
                vec![((0, o), (0, c))]
            };
            // Whole (the first block alone), then by output channels, then by input channels.
            let runs: Vec<&[Block]> = if groups == 1 {
                vec![&blocks[0..1], &blocks[1..3], &blocks[3..5]]
            } else {
                vec![&blocks[0..1]]
            };
            for (r, run) in runs.iter().enumerate() {
                let mut got = vec![f32::NAN; want.len()];
                for &(outs, ins) in run.iter() {
                    if outs.0 >= outs.1 || ins.0 >= ins.1 {
                        continue;
                    }
                    // SAFETY: x, dy and dw hold the whole batch / weight of `kind`; blocks
                    // are disjoint.
                    unsafe {
                        conv_backward_weight(
                            &kind,
                            x.as_ptr(),
                            dy.as_ptr(),
                            got.as_mut_ptr(),
                            0..n,
                            outs,
                            ins,
                        )
                    };
                }
                for (j, (&gv, &wv)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-4 * (1.0 + wv.abs());
                    assert!(
                        (gv as f64 - wv).abs() <= tol,
                        "case {case} run {r} ({kind:?}): element {j}: {gv} vs {wv}"
                    );
                }
            }
        }
        if super::super::sgemm::available() {
            assert!(implicit_seen >= 20, "only {implicit_seen} implicit cases");
            assert!(direct_seen >= 12, "only {direct_seen} direct cases");
            assert!(lanes_seen >= 8, "only {lanes_seen} lanes cases");
        }
    }
}
