//! Host kernels: data movement and rare ops done in plain Rust.

use crate::fuse::HostOp;
use crate::fuse::kernel::Window;

/// Runs a host op. `ins` are the inputs with their shapes; `out` the output buffer;
/// `random_step` selects the random masks' stream (see [`crate::graph::step_seed`]).
pub fn run_host(
    op: &HostOp,
    ins: &[(&[f32], &[usize])],
    out: &mut [f32],
    out_shape: &[usize],
    random_step: u64,
) -> Result<(), String> {
    match op {
        HostOp::Concat { axis } => {
            let outer: usize = out_shape[..*axis].iter().product();
            let out_inner: usize = out_shape[*axis..].iter().product();
            let mut col = 0;
            for (data, shape) in ins {
                let inner: usize = shape[*axis..].iter().product();
                for o in 0..outer {
                    out[o * out_inner + col..o * out_inner + col + inner]
                        .copy_from_slice(&data[o * inner..(o + 1) * inner]);
                }
                col += inner;
            }
            Ok(())
        }
        HostOp::Slice { axis, start, end } => {
            let (data, shape) = ins[0];
            let outer: usize = shape[..*axis].iter().product();
            slice_rows((*axis, *start, *end), (data, shape), out, 0..outer);
            Ok(())
        }
        HostOp::Permute { perm } => {
            let (data, shape) = ins[0];
            let r = shape.len();
            // A rotation of the axes ([k.., ..k]) is the transpose of a rows × cols matrix.
            if let Some(k) = (1..r).find(|&k| perm.iter().copied().eq((k..r).chain(0..k))) {
                let rows: usize = shape[..k].iter().product();
                let cols: usize = shape[k..].iter().product();
                transpose(data, rows, cols, out);
                return Ok(());
            }
            let mut in_strides = vec![1usize; r];
            for i in (0..r.saturating_sub(1)).rev() {
                in_strides[i] = in_strides[i + 1] * shape[i + 1];
            }
            let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
            let mut idx = vec![0usize; r];
            for o in out.iter_mut() {
                let src: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
                *o = data[src];
                for d in (0..r).rev() {
                    idx[d] += 1;
                    if idx[d] < out_shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            Ok(())
        }
        HostOp::AdaptiveAvgPool { output } => {
            let (data, shape) = ins[0];
            let (h, w) = (shape[2], shape[3]);
            let planes = shape[0] * shape[1];
            let [oh, ow] = *output;
            for p in 0..planes {
                let plane = &data[p * h * w..(p + 1) * h * w];
                for i in 0..oh {
                    let (h0, h1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                    for j in 0..ow {
                        let (w0, w1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                        let mut s = 0.0f32;
                        for y in h0..h1 {
                            for x in w0..w1 {
                                s += plane[y * w + x];
                            }
                        }
                        out[(p * oh + i) * ow + j] = s / ((h1 - h0) * (w1 - w0)) as f32;
                    }
                }
            }
            Ok(())
        }
        HostOp::Pad {
            axis,
            before,
            after,
        } => {
            let (data, shape) = ins[0];
            let outer: usize = shape[..*axis].iter().product();
            pad_rows((*axis, *before, *after), (data, shape), out, 0..outer);
            Ok(())
        }
        HostOp::PoolBackward { window, relu } => {
            pool_backward((window, *relu), ins[0], ins[1], out);
            Ok(())
        }
        HostOp::MaxPool(win) => {
            let (_, xs) = ins[0];
            let planes = xs[0] * xs[1];
            max_pool_planes(win, ins[0], (out, out_shape), 0..planes);
            Ok(())
        }
        HostOp::AdaptiveAvgPoolBackward => {
            let (dy, dshape) = ins[0];
            let (h, w) = (out_shape[2], out_shape[3]);
            let (oh, ow) = (dshape[2], dshape[3]);
            let planes = out_shape[0] * out_shape[1];
            out.fill(0.0);
            for p in 0..planes {
                let plane = &mut out[p * h * w..(p + 1) * h * w];
                for i in 0..oh {
                    let (h0, h1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                    for j in 0..ow {
                        let (w0, w1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                        let share = dy[(p * oh + i) * ow + j] / ((h1 - h0) * (w1 - w0)) as f32;
                        for y in h0..h1 {
                            for x in w0..w1 {
                                plane[y * w + x] += share;
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        HostOp::Conv2dBackwardData(..) | HostOp::Conv2dBackwardWeight(_) => {
            Err("convolution gradients run on the thread pool, not as host ops".to_string())
        }
        HostOp::RandomMask { p, seed } => {
            // The reference interpreter's definition, bit for bit, at this run's step.
            let seed = crate::graph::step_seed(*seed, random_step);
            for (i, o) in out.iter_mut().enumerate() {
                let u = (crate::reference::ops::splitmix64(seed, i as u64) >> 40) as f32
                    / (1u32 << 24) as f32;
                *o = if u >= *p { 1.0 } else { 0.0 };
            }
            Ok(())
        }
    }
}

/// `out[j·rows + i] = data[i·cols + j]`: a `rows × cols` matrix transposed, in 16 × 16
/// blocks (AVX-512 register transposes where the CPU has it; else element by element within
/// each block, which keeps both sides' cache lines in use).
fn transpose(data: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const B: usize = 16;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            let (ib, jb) = ((rows - i0).min(B), (cols - j0).min(B));
            #[cfg(target_arch = "x86_64")]
            if crate::runtime::sgemm::available() {
                // SAFETY: AVX-512F present; the block's rows and columns are inside both.
                unsafe { transpose_block_avx512(data, (rows, cols), (i0, j0), (ib, jb), out) };
                continue;
            }
            for i in i0..i0 + ib {
                for j in j0..j0 + jb {
                    out[j * rows + i] = data[i * cols + j];
                }
            }
        }
    }
}

/// One block of [`transpose`]: rows `i0..i0 + ib`, columns `j0..j0 + jb` (at most 16 each).
///
/// # Safety
/// AVX-512F present; the block lies inside the `rows × cols` matrix `data` and `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block_avx512(
    data: &[f32],
    (rows, cols): (usize, usize),
    (i0, j0): (usize, usize),
    (ib, jb): (usize, usize),
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (load, store) = (
        crate::runtime::sgemm::lane_mask(0, jb as isize),
        crate::runtime::sgemm::lane_mask(0, ib as isize),
    );
    let mut r = [_mm512_setzero_ps(); 16];
    for (i, v) in r.iter_mut().enumerate().take(ib) {
        // SAFETY: columns j0..j0 + jb of row i0 + i.
        *v = unsafe { _mm512_maskz_loadu_ps(load, data.as_ptr().add((i0 + i) * cols + j0)) };
    }
    let t = crate::runtime::sgemm::transpose16(r);
    for (j, v) in t.iter().enumerate().take(jb) {
        // SAFETY: rows i0..i0 + ib of out's row j0 + j.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add((j0 + j) * rows + i0), store, *v) };
    }
}

/// The gradient of a pooling window kernel: `dx` from the input `x` and the output gradient
/// `dy`. Max pooling routes each output's gradient to the tap the forward pass chose (the first
/// strictly largest, or a NaN); average pooling spreads it over the window's cells inside the
/// input with the forward divisor (PyTorch's rules, as in the reference interpreter). With
/// `win.1` (max pooling of a ReLU's output), only to chosen taps that are not zero: the
/// ReLU's gradient `x != 0 ? dx : 0` at once (PyTorch's `threshold_backward`: a NaN tap
/// passes its gradient).
pub fn pool_backward(
    win: (&Window, bool),
    (x, xs): (&[f32], &[usize]),
    (dy, dys): (&[f32], &[usize]),
    dx: &mut [f32],
) {
    let planes = xs[0] * xs[1];
    pool_backward_planes(win, x, xs, dy, dys, dx, 0..planes);
}

/// `Slice { axis, start, end }` of `x` for the outer indices `rows` (the product of the axes
/// before `axis`) only; `out` holds just those rows of the result, so threads can split them.
pub fn slice_rows(
    (axis, start, end): (usize, usize, usize),
    (data, shape): (&[f32], &[usize]),
    out: &mut [f32],
    rows: std::ops::Range<usize>,
) {
    let inner: usize = shape[axis + 1..].iter().product();
    let len = (end - start) * inner;
    let run = shape[axis] * inner;
    let src = &data[start * inner..];
    let first = rows.start;
    let count = rows.len();
    // A cropped kernel's taps: a few floats out of every row, hundreds of thousands of rows.
    // Fixed-length copies (and gathers for single floats) instead of a loop per row.
    match len {
        1 => gather_rows::<1>(out, src, run, first, count),
        2 => gather_rows::<2>(out, src, run, first, count),
        3 => gather_rows::<3>(out, src, run, first, count),
        4 => gather_rows::<4>(out, src, run, first, count),
        6 => gather_rows::<6>(out, src, run, first, count),
        _ => {
            for (o, dst) in rows.zip(out.chunks_exact_mut(len)) {
                copy_short(dst, &src[o * run..o * run + len]);
            }
        }
    }
}

/// `out[r·L..(r+1)·L] = src[(first + r)·run..][..L]` for `count` rows `r`.
#[inline(always)]
fn gather_rows<const L: usize>(
    out: &mut [f32],
    src: &[f32],
    run: usize,
    first: usize,
    count: usize,
) {
    if count == 0 {
        return;
    }
    let out = &mut out[..count * L];
    let src = &src[first * run..];
    #[cfg(target_arch = "x86_64")]
    if L == 1 && run <= (i32::MAX as usize) / 16 && super::sgemm::available() {
        // SAFETY: AVX-512F is present; row r's float lies at r·run, inside `src`.
        unsafe { gather_singles(out, src, run) };
        return;
    }
    for (r, dst) in out.chunks_exact_mut(L).enumerate() {
        let s: &[f32; L] = src[r * run..r * run + L].try_into().unwrap();
        dst.copy_from_slice(s);
    }
}

/// `out[r] = src[r·run]`, sixteen rows per AVX-512 gather.
///
/// # Safety
/// AVX-512F present; `src` holds `(out.len() - 1)·run + 1` floats; `16·run` fits an `i32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_singles(out: &mut [f32], src: &[f32], run: usize) {
    use std::arch::x86_64::*;
    let n = out.len();
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(run as i32),
    );
    let mut r = 0;
    while r + 16 <= n {
        // SAFETY: rows r..r+16 lie inside `src` (contract); lanes r..r+16 of `out`.
        unsafe {
            let v = _mm512_i32gather_ps::<4>(idx, src.as_ptr().add(r * run));
            _mm512_storeu_ps(out.as_mut_ptr().add(r), v);
        }
        r += 16;
    }
    for (k, o) in out[r..].iter_mut().enumerate() {
        *o = src[(r + k) * run];
    }
}

/// `Pad { axis, before, after }` of `x` for the outer indices `rows` only, like
/// [`slice_rows`].
pub fn pad_rows(
    (axis, before, after): (usize, usize, usize),
    (data, shape): (&[f32], &[usize]),
    out: &mut [f32],
    rows: std::ops::Range<usize>,
) {
    let inner: usize = shape[axis + 1..].iter().product();
    let n = shape[axis];
    let out_len = (n + before + after) * inner;
    let len = n * inner;
    let (b, e) = (before * inner, before * inner + len);
    if out_len <= 16 {
        // A kernel's taps (9 floats, say) per row, mostly padding (a cropped kernel's
        // gradient): zero a chunk of rows at memset speed, then place each row's few values
        // while the chunk is still in L1 (one pass over memory, not two).
        const CHUNK: usize = 512;
        let first = rows.start;
        let out = &mut out[..rows.len() * out_len];
        for (ci, chunk) in out.chunks_mut(CHUNK * out_len).enumerate() {
            chunk.fill(0.0);
            let o0 = first + ci * CHUNK;
            let src = &data[o0 * len..];
            if len == 1 {
                for (r, dst) in chunk.chunks_exact_mut(out_len).enumerate() {
                    dst[b] = src[r];
                }
            } else {
                for (r, dst) in chunk.chunks_exact_mut(out_len).enumerate() {
                    dst[b..e].copy_from_slice(&src[r * len..(r + 1) * len]);
                }
            }
        }
        return;
    }
    for (o, dst) in rows.zip(out.chunks_exact_mut(out_len)) {
        let (head, rest) = dst.split_at_mut(b);
        let (mid, tail) = rest.split_at_mut(len);
        head.iter_mut().for_each(|v| *v = 0.0);
        copy_short(mid, &data[o * len..(o + 1) * len]);
        tail.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// `dst.copy_from_slice(src)`, without a `memcpy` call for the short runs that slicing and
/// padding kernel taps produce (one or three floats, hundreds of thousands of times).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    if dst.len() <= 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// The valid taps `lo..hi` of a window starting at `start` (may be negative) with `k` taps
/// `d` apart over `n` cells.
fn tap_range(start: isize, k: usize, d: usize, n: usize) -> (usize, usize) {
    let d = d as isize;
    let lo = if start < 0 { (-start + d - 1) / d } else { 0 };
    let hi = if start >= n as isize {
        0
    } else {
        ((n as isize - 1 - start) / d + 1).min(k as isize)
    };
    (lo as usize, (hi.max(lo)) as usize)
}

/// [`pool_backward`] for planes `range` only: `x` and `dy` are the whole tensors, `dx` holds
/// just the planes in `range` (so threads can split the planes).
#[allow(clippy::too_many_arguments)]
pub fn pool_backward_planes(
    win: (&Window, bool),
    x: &[f32],
    xs: &[usize],
    dy: &[f32],
    dys: &[usize],
    dx: &mut [f32],
    range: std::ops::Range<usize>,
) {
    pool_backward_body(win, x, xs, dy, dys, dx, range);
}

/// Per output column of a pooling window: where the window starts (`ox·SW - PL`) and which
/// taps fall inside the input (`lo..hi`); and the contiguous run `inner_lo..inner_hi` of
/// output columns whose windows lie wholly inside the input horizontally (windows move right
/// as the column grows).
fn window_columns(win: &Window, w: usize, ow: usize) -> (Vec<(isize, usize, usize)>, usize, usize) {
    let [_, kw] = win.kernel;
    let cols: Vec<(isize, usize, usize)> = (0..ow)
        .map(|ox| {
            let x0 = (ox * win.stride[1]) as isize - win.padding[2] as isize;
            let (lo, hi) = tap_range(x0, kw, win.dilation[1], w);
            (x0, lo, hi)
        })
        .collect();
    let inside = |&(_, lo, hi): &(isize, usize, usize)| lo == 0 && hi == kw;
    let inner_lo = cols.iter().position(inside).unwrap_or(ow);
    let inner_hi = inner_lo + cols[inner_lo..].iter().take_while(|c| inside(c)).count();
    (cols, inner_lo, inner_hi)
}

/// Max pooling forward for planes `range` (of `N·C`): `x` is the whole input `[N, C, H, W]`,
/// `out` just those planes of the output `[N, C, OH, OW]`. Each output is its window's first
/// strictly largest tap, or NaN when a tap is NaN (PyTorch's rule; taps in the padding do not
/// count). Output columns whose windows lie wholly inside the input are done 16 at a time
/// with AVX-512 (one masked load, even-lane permute or gather per tap), the edges one by one.
pub fn max_pool_planes(
    win: &Window,
    (x, xs): (&[f32], &[usize]),
    (out, ys): (&mut [f32], &[usize]),
    range: std::ops::Range<usize>,
) {
    let (h, w) = (xs[2], xs[3]);
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let pt = win.padding[0];
    let [dh, dw] = win.dilation;
    let (oh, ow) = (ys[2], ys[3]);
    let (cols, inner_lo, inner_hi) = window_columns(win, w, ow);
    let simd = crate::runtime::sgemm::available();
    #[cfg(target_arch = "x86_64")]
    if simd && same_size_stride1(win, (h, w), (oh, ow)) {
        // SAFETY: AVX-512F present; the checks above.
        unsafe { max_pool_same_avx512(win, (x, h, w), out, range) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd && small_planes(win, (h, w), (oh, ow)) {
        let t = PlaneTaps::new(win, (h, w), (oh, ow));
        for p in range.clone() {
            let q = p - range.start;
            let xp = &x[p * h * w..(p + 1) * h * w];
            // SAFETY: AVX-512F present; the tables address floats inside one plane.
            unsafe { max_small_plane_avx512(&t, xp, &mut out[q * oh * ow..(q + 1) * oh * ow]) };
        }
        return;
    }
    let first = range.start;
    for p in range {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let q = p - first;
        let op = &mut out[q * oh * ow..(q + 1) * oh * ow];
        for oy in 0..oh {
            let y0 = (oy * sh) as isize - pt as isize;
            let (ky0, ky1) = tap_range(y0, kh, dh, h);
            let orow = &mut op[oy * ow..(oy + 1) * ow];
            let mut ox = 0;
            while ox < ow {
                if ox == inner_lo && ky1 > ky0 && simd {
                    let base = (y0 + (ky0 * dh) as isize) as usize * w + cols[ox].0 as usize;
                    let taps = (ky1 - ky0, dh * w, kw, dw);
                    // SAFETY: AVX-512F is present (`simd`); every tap of these windows lies
                    // inside the plane (interior columns, valid rows).
                    unsafe { max_row_avx512(xp, taps, base, sw, &mut orow[inner_lo..inner_hi]) };
                    ox = inner_hi;
                    continue;
                }
                let (x0, kx0, kx1) = cols[ox];
                let mut best = f32::NEG_INFINITY;
                for ky in ky0..ky1 {
                    let row = (y0 + (ky * dh) as isize) as usize * w;
                    for kx in kx0..kx1 {
                        let v = xp[row + (x0 + (kx * dw) as isize) as usize];
                        if v > best || v.is_nan() {
                            best = v;
                        }
                    }
                }
                orow[ox] = best;
                ox += 1;
            }
        }
    }
}

/// Stride 1, output the size of the input (a "same" pooling, GoogLeNet's 3×3 pad-1 branch),
/// on planes of at most 4096 floats: [`max_pool_same_avx512`] applies.
fn same_size_stride1(win: &Window, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> bool {
    win.stride == [1, 1]
        && (oh, ow) == (h, w)
        && h * w <= 4096
        && win.kernel[0] * win.kernel[1] <= 64
}

/// [`max_pool_planes`] for [`same_size_stride1`] windows: output pixel `p` of a plane reads
/// input `p + (ky·dh - pt)·w + kx·dw - pl` for each tap, so 16 consecutive outputs (across
/// rows) are one masked load per tap, the mask (taps inside the image) computed once per call
/// for each tap and chunk of 16; no per-row or edge-window work (on 14×14 planes the scalar
/// edge windows took most of the time).
///
/// # Safety
/// AVX-512F present; `x` holds the planes of `range`, `out` their outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_same_avx512(
    win: &Window,
    (x, h, w): (&[f32], usize, usize),
    out: &mut [f32],
    range: std::ops::Range<usize>,
) {
    use std::arch::x86_64::*;
    let plane = h * w;
    let chunks = plane.div_ceil(16);
    let [kh, kw] = win.kernel;
    let [dh, dw] = win.dilation;
    let (pt, pl) = (win.padding[0] as isize, win.padding[2] as isize);
    // Per tap (row-major, the order ties are broken in) its offset and per chunk its mask.
    let mut taps: Vec<(isize, Vec<u16>)> = Vec::with_capacity(kh * kw);
    for ky in 0..kh {
        for kx in 0..kw {
            let (oy, ox) = ((ky * dh) as isize - pt, (kx * dw) as isize - pl);
            let masks = (0..chunks)
                .map(|k| {
                    (0..16).fold(0u16, |m, l| {
                        let p = 16 * k + l;
                        let (y, xx) = ((p / w) as isize + oy, (p % w) as isize + ox);
                        let inside =
                            p < plane && y >= 0 && y < h as isize && xx >= 0 && xx < w as isize;
                        m | ((inside as u16) << l)
                    })
                })
                .collect();
            taps.push((oy * w as isize + ox, masks));
        }
    }
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let first = range.start;
    for pidx in range {
        let xp = x[pidx * plane..(pidx + 1) * plane].as_ptr();
        let op = out[(pidx - first) * plane..(pidx - first + 1) * plane].as_mut_ptr();
        for k in 0..chunks {
            let mut b = ninf;
            for (off, masks) in &taps {
                // SAFETY: only lanes whose tap lies inside the plane are read.
                let v = unsafe {
                    _mm512_mask_loadu_ps(ninf, masks[k], xp.wrapping_offset(16 * k as isize + off))
                };
                let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                b = _mm512_mask_mov_ps(b, take, v);
            }
            let store = super::sgemm::lane_mask(0, (plane - 16 * k) as isize);
            // SAFETY: outputs 16k.. of the plane, `store` of them.
            unsafe { _mm512_mask_storeu_ps(op.add(16 * k), store, b) };
        }
    }
}

/// [`max_pool_planes`]' interior run: `out[j]` = the largest of the taps at `base + j·s +
/// r·row_stride + kx·dw` (`r < rows`, `kx < kw`), NaN if any is NaN.
///
/// # Safety
/// AVX-512F present; every such tap is inside `xp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_row_avx512(
    xp: &[f32],
    (rows, row_stride, kw, dw): (usize, usize, usize, usize),
    base: usize,
    s: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = out.len();
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let step = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(s as i32));
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut j = 0;
    while j < n {
        let cnt = (n - j).min(16);
        let m = (0xffffu32 >> (16 - cnt)) as __mmask16;
        // Stride 2: source positions 0..=2(cnt-1) split over two masked loads.
        let need = 2 * cnt - 1;
        let lo2 = (0xffffu32 >> (16 - need.min(16))) as __mmask16;
        let hi2 = if need > 16 {
            (0xffffu32 >> (32 - need)) as __mmask16
        } else {
            0
        };
        let mut b = _mm512_set1_ps(f32::NEG_INFINITY);
        for r in 0..rows {
            for kx in 0..kw {
                // SAFETY: the masked lanes read taps of windows j..j+cnt, inside xp by the
                // contract; masked-off lanes are not read.
                let v = unsafe {
                    let p = xp.as_ptr().add(base + r * row_stride + kx * dw + j * s);
                    match s {
                        1 => _mm512_maskz_loadu_ps(m, p),
                        2 => {
                            let a = _mm512_maskz_loadu_ps(lo2, p);
                            let c = _mm512_maskz_loadu_ps(hi2, p.add(16));
                            _mm512_permutex2var_ps(a, even, c)
                        }
                        _ => _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, step, p),
                    }
                };
                let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                b = _mm512_mask_mov_ps(b, take, v);
            }
        }
        // SAFETY: lanes j..j+cnt of out.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), m, b) };
        j += cnt;
    }
}

/// Stand-in off x86-64 (never called: `sgemm::available()` is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn max_row_avx512(
    _: &[f32],
    _: (usize, usize, usize, usize),
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!()
}

/// Output columns of max windows handled together: their best values and taps live in two
/// small arrays that the tap loops sweep as vectors. A multiple of 8 (AVX2 lanes).
const RUN: usize = 64;

/// For the max windows `0..n` of one output row (`S` input columns apart, all inside the
/// input horizontally) whose taps start at `base` in `xp`, rows `row_stride` apart: sets
/// `best`/`arg` to each window's largest tap and its index, taking taps in PyTorch's order
/// (row by row; the first strictly largest, or a NaN, wins).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn max_run<const S: usize>(
    xp: &[f32],
    rows: usize,
    row_stride: usize,
    kw: usize,
    dw: usize,
    base: usize,
    best: &mut [f32; RUN],
    arg: &mut [u32; RUN],
    n: usize,
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        done = unsafe { max_run_avx2::<S>(xp, rows, row_stride, kw, dw, base, best, arg, n) };
    }
    let taps = (rows, row_stride, kw, dw);
    max_windows(xp, taps, base, S, (best, arg), done.min(n)..n);
}

/// [`max_run`]'s windows `js`, one at a time, for any stride `s` between windows.
fn max_windows(
    xp: &[f32],
    (rows, row_stride, kw, dw): (usize, usize, usize, usize),
    base: usize,
    s: usize,
    (best, arg): (&mut [f32; RUN], &mut [u32; RUN]),
    js: std::ops::Range<usize>,
) {
    for j in js {
        let (mut b, mut a) = (f32::NEG_INFINITY, u32::MAX);
        for r in 0..rows {
            for kx in 0..kw {
                let i = base + r * row_stride + kx * dw + j * s;
                let v = xp[i];
                if v > b || v.is_nan() {
                    (b, a) = (v, i as u32);
                }
            }
        }
        (best[j], arg[j]) = (b, a);
    }
}

/// [`max_run`] eight windows at a time with AVX2 compare-and-blend (the data decides every
/// select, so branches would mispredict half the time). Returns how many windows it did (may
/// exceed `n`): all groups of eight whose loads stay inside `xp`.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn max_run_avx2<const S: usize>(
    xp: &[f32],
    rows: usize,
    row_stride: usize,
    kw: usize,
    dw: usize,
    base: usize,
    best: &mut [f32; RUN],
    arg: &mut [u32; RUN],
    n: usize,
) -> usize {
    use std::arch::x86_64::*;
    let last_tap = (rows - 1) * row_stride + (kw - 1) * dw;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let step = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(S as i32));
    let mut j = 0;
    // Eight windows read 8·S floats from each tap's start.
    // The last group may be partial: its extra lanes read past the row (into later rows or
    // planes, never past `xp`) and land in `best`/`arg` beyond `n`, where nobody looks.
    while j < n && base + j * S + last_tap + 8 * S <= xp.len() {
        let mut b = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut a = _mm256_set1_epi32(-1);
        for r in 0..rows {
            for kx in 0..kw {
                let first = base + r * row_stride + kx * dw + j * S;
                // SAFETY: first + 8·S <= xp.len() by the loop condition (first is at most
                // base + j·S + last_tap).
                let v = unsafe {
                    let p = xp.as_ptr().add(first);
                    if S == 1 {
                        _mm256_loadu_ps(p)
                    } else if S == 2 {
                        // Even elements of 16: [a0 a2 b0 b2 | a4 a6 b4 b6] → lanes in order.
                        let lo = _mm256_loadu_ps(p);
                        let hi = _mm256_loadu_ps(p.add(8));
                        let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                            even,
                        )))
                    } else {
                        _mm256_i32gather_ps::<4>(p, step)
                    }
                };
                let idx = _mm256_add_epi32(_mm256_set1_epi32(first as i32), step);
                let take = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(v, b),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
                );
                b = _mm256_blendv_ps(b, v, take);
                a = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(a),
                    _mm256_castsi256_ps(idx),
                    take,
                ));
            }
        }
        // SAFETY: j < n <= RUN and both are multiples of 8, so j + 8 <= RUN: both stores
        // stay inside the arrays.
        unsafe {
            _mm256_storeu_ps(best.as_mut_ptr().add(j), b);
            _mm256_storeu_si256(arg.as_mut_ptr().add(j) as *mut __m256i, a);
        }
        j += 8;
    }
    j
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pool_backward_body(
    (win, relu): (&Window, bool),
    x: &[f32],
    xs: &[usize],
    dy: &[f32],
    dys: &[usize],
    dx: &mut [f32],
    range: std::ops::Range<usize>,
) {
    let (h, w) = (xs[2], xs[3]);
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let [pt, pb, _, pr] = win.padding;
    let [dh, dw] = win.dilation;
    let (oh, ow) = (dys[2], dys[3]);
    // Per output row / column: where the window starts and which taps fall inside the input.
    let rows: Vec<(isize, usize, usize)> = (0..oh)
        .map(|oy| {
            let y0 = (oy * sh) as isize - pt as isize;
            let (lo, hi) = tap_range(y0, kh, dh, h);
            (y0, lo, hi)
        })
        .collect();
    #[cfg(target_arch = "x86_64")]
    if win.max && crate::runtime::sgemm::available() && small_planes(win, (h, w), (oh, ow)) {
        let t = PlaneTaps::new(win, (h, w), (oh, ow));
        for p in range.clone() {
            let q = p - range.start;
            let (xp, dyp) = (
                &x[p * h * w..(p + 1) * h * w],
                &dy[p * oh * ow..(p + 1) * oh * ow],
            );
            let dxp = &mut dx[q * h * w..(q + 1) * h * w];
            // SAFETY: AVX-512F present; the tables address floats inside one plane.
            unsafe { max_grad_small_plane_avx512(&t, relu, xp, dyp, dxp) };
        }
        return;
    }
    let (cols, inner_lo, inner_hi) = window_columns(win, w, ow);
    let first = range.start;
    let mut best = [0f32; RUN];
    let mut arg = [0u32; RUN];
    // Interior runs as AVX-512 vectors end to end (choice and scatter) where they apply.
    let vector_run = win.max
        && (sw == 1 || sw == 2)
        && dw == 1
        && kh * kw <= 64
        && crate::runtime::sgemm::available();
    // Windows apart (none shares an input float with another): their taps' gradients are
    // stored, not added to what is there.
    let fresh = kw <= sw && (kh - 1) * dh < sh;
    // Windows that tile the plane (each float in exactly one, every row an interior run):
    // the runs store every float, so the plane needs no zeroing first.
    let tiles = vector_run
        && win.kernel == win.stride
        && win.padding == [0; 4]
        && win.dilation == [1, 1]
        && oh * sh == h
        && ow * sw == w;
    for p in range {
        let xp = &x[p * h * w..(p + 1) * h * w];
        // The vector sweeps may read past the plane (results unused): up to the tensor's end.
        let xrest = &x[p * h * w..];
        let dyp = &dy[p * oh * ow..(p + 1) * oh * ow];
        let q = p - first;
        let dxp = &mut dx[q * h * w..(q + 1) * h * w];
        if !tiles {
            dxp.fill(0.0);
        }
        for (oy, &(y0, ky0, ky1)) in rows.iter().enumerate() {
            let dyr = &dyp[oy * ow..(oy + 1) * ow];
            let mut ox = 0;
            while ox < ow {
                if win.max && ox == inner_lo && ky1 > ky0 && vector_run {
                    let base = (y0 + (ky0 * dh) as isize) as usize * w + cols[inner_lo].0 as usize;
                    let taps = (ky1 - ky0, dh * w, kw);
                    let dys = &dyr[inner_lo..inner_hi];
                    // SAFETY: AVX-512F present (`vector_run`); every tap of these windows lies
                    // inside the plane (interior columns, valid rows); stride 1 or 2.
                    unsafe { max_grad_run_avx512(xp, dxp, taps, base, (sw, relu, fresh), dys) };
                    ox = inner_hi;
                    continue;
                }
                if win.max && ox == inner_lo && ky1 > ky0 {
                    // A run of interior windows: taps swept as vectors across the run.
                    let mut at = inner_lo;
                    while at < inner_hi {
                        let n = (inner_hi - at).min(RUN);
                        // Row r of the window is input row y0 + (ky0 + r)·dh, taps from column x0.
                        let base = (y0 + (ky0 * dh) as isize) as usize * w + cols[at].0 as usize;
                        let (rows, rs) = (ky1 - ky0, dh * w);
                        let (b, a) = (&mut best, &mut arg);
                        match sw {
                            1 => max_run::<1>(xrest, rows, rs, kw, dw, base, b, a, n),
                            2 => max_run::<2>(xrest, rows, rs, kw, dw, base, b, a, n),
                            3 => max_run::<3>(xrest, rows, rs, kw, dw, base, b, a, n),
                            _ => max_windows(xp, (rows, rs, kw, dw), base, sw, (b, a), 0..n),
                        }
                        for (&a, &d) in arg[..n].iter().zip(&dyr[at..at + n]) {
                            if a != u32::MAX && (!relu || xp[a as usize] != 0.0) {
                                dxp[a as usize] += d;
                            }
                        }
                        at += n;
                    }
                    ox = inner_hi;
                    continue;
                }
                let (x0, kx0, kx1) = cols[ox];
                let d = dyr[ox];
                if win.max {
                    // The forward pass's choice: the first strictly largest tap, or a NaN.
                    let mut best = f32::NEG_INFINITY;
                    let mut at = usize::MAX;
                    for ky in ky0..ky1 {
                        let row = (y0 + (ky * dh) as isize) as usize * w;
                        for kx in kx0..kx1 {
                            let i = row + (x0 + (kx * dw) as isize) as usize;
                            let v = xp[i];
                            let take = (v > best) | v.is_nan();
                            best = if take { v } else { best };
                            at = if take { i } else { at };
                        }
                    }
                    if at != usize::MAX && (!relu || xp[at] != 0.0) {
                        dxp[at] += d;
                    }
                } else {
                    let y_end = (y0 + kh as isize).min((h + pb) as isize);
                    let x_end = (x0 + kw as isize).min((w + pr) as isize);
                    let pool = ((y_end - y0) * (x_end - x0)) as usize;
                    let (ya, yb) = (y0.max(0) as usize, (y_end.min(h as isize).max(0)) as usize);
                    let (xa, xb) = (x0.max(0) as usize, (x_end.min(w as isize).max(0)) as usize);
                    let divisor = if win.count_include_pad {
                        pool
                    } else {
                        (yb.saturating_sub(ya)) * (xb.saturating_sub(xa))
                    };
                    let share = d / divisor as f32;
                    for iy in ya..yb {
                        for ix in xa..xb {
                            dxp[iy * w + ix] += share;
                        }
                    }
                }
                ox += 1;
            }
        }
    }
}

/// The gradient of one run of interior max windows of an output row: window `j < dy.len()`
/// has its taps at `base + j·s + r·row_stride + kx` (`r < rows`, `kx < kw`) in the plane
/// `xp`, and `dx[tap] += dy[j]` for its chosen tap (the first strictly largest, or the last
/// NaN, as [`pool_backward_body`]'s scalar windows), only where that tap is not zero with
/// `relu` (a NaN tap passes). Sixteen windows per vector: the choice as a tap number per lane, then per tap the
/// lanes that chose it added into `dx` (at stride 2 spread to every other float by a
/// two-source permute, the taps `kx` and `kx + 1` of a row in one pass). Taps are added with
/// `kx` descending, so a float two windows share gets the left window's gradient first, the
/// order of the scalar loop (the same bits). With `fresh`, no other window adds to the run's
/// taps (windows that neither overlap nor touch in `dx`, as 2×2 pooling at stride 2): the
/// gradients are stored, not added (see [`add_lanes`]).
///
/// # Safety
/// AVX-512F present; `s` is 1 or 2; every tap of the run lies inside `xp` and `dx` (planes
/// of the same size), zero with `fresh`; at most 64 taps per window.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_grad_run_avx512(
    xp: &[f32],
    dx: &mut [f32],
    (rows, row_stride, kw): (usize, usize, usize),
    base: usize,
    (s, relu, fresh): (usize, bool, bool),
    dy: &[f32],
) {
    use std::arch::x86_64::*;
    let n = dy.len();
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // Lane l of `a` to lane 2l, of `b` to lane 2l + 1: the low and high 16 of 32.
    let lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi_idx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let zero = _mm512_setzero_ps();
    let mask = |len: usize| super::sgemm::lane_mask(0, len as isize);
    let (xs, dxs) = (xp.as_ptr(), dx.as_mut_ptr());
    let mut j = 0;
    while j < n {
        let cnt = (n - j).min(16);
        let m = mask(cnt);
        let need = s * (cnt - 1) + 1;
        let (lo2, hi2) = (mask(need), mask(need.saturating_sub(16)));
        let mut b = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut t = _mm512_set1_epi32(-1);
        for r in 0..rows {
            for kx in 0..kw {
                // SAFETY: the masked lanes read taps of windows j..j + cnt, inside xp.
                let v = unsafe {
                    let p = xs.add(base + r * row_stride + kx + j * s);
                    if s == 1 {
                        _mm512_maskz_loadu_ps(m, p)
                    } else {
                        let a = _mm512_maskz_loadu_ps(lo2, p);
                        let c = _mm512_maskz_loadu_ps(hi2, p.add(16));
                        _mm512_permutex2var_ps(a, even, c)
                    }
                };
                let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b)
                    | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                b = _mm512_mask_mov_ps(b, take, v);
                t = _mm512_mask_mov_epi32(t, take, _mm512_set1_epi32((r * kw + kx) as i32));
            }
        }
        let mut ok = m & _mm512_cmpneq_epi32_mask(t, _mm512_set1_epi32(-1));
        if relu {
            ok &= _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(b, zero);
        }
        // SAFETY: lanes j..j + cnt of dy.
        let d = unsafe { _mm512_maskz_loadu_ps(m, dy.as_ptr().add(j)) };
        for r in 0..rows {
            let row = base + r * row_stride + j * s;
            if s == 1 {
                for kx in (0..kw).rev() {
                    // SAFETY: taps of the run, inside dx.
                    unsafe {
                        add_lanes(dxs.add(row + kx), chosen(d, t, ok, r * kw + kx), cnt, fresh)
                    };
                }
                continue;
            }
            // Stride 2: tap kx of window j' is float 2j' + kx of the row; taps kx and kx + 1
            // interleave (kx even), taps alone are spread with zeros in the odd lanes.
            let mut kx = kw;
            while kx > 0 {
                let (k0, pair) = if kx >= 2 && kx % 2 == 0 {
                    (kx - 2, true)
                } else {
                    (kx - 1, false)
                };
                let a = chosen(d, t, ok, r * kw + k0);
                let c = if pair {
                    chosen(d, t, ok, r * kw + k0 + 1)
                } else {
                    zero
                };
                let len = 2 * cnt - usize::from(!pair);
                // SAFETY: floats 0..len from tap k0 of window j: taps of the run, inside dx.
                unsafe {
                    let p = dxs.add(row + k0);
                    add_lanes(p, _mm512_permutex2var_ps(a, lo_idx, c), len.min(16), fresh);
                    if len > 16 {
                        add_lanes(
                            p.add(16),
                            _mm512_permutex2var_ps(a, hi_idx, c),
                            len - 16,
                            fresh,
                        );
                    }
                }
                kx = k0;
            }
        }
        j += cnt;
    }
}

/// Max pooling of small planes (output rows of at most 7 pixels, at most 256 outputs, at
/// most 16 taps): the per-row vector forms would fill few lanes and spend their time on
/// per-row setup (LeNet-5's second pooling, 10×10 -> 5×5), so [`PlaneTaps`] runs 16 outputs
/// of the flattened plane per vector, whatever their rows, reading each tap by a gather.
#[cfg(target_arch = "x86_64")]
fn small_planes(win: &Window, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> bool {
    let [kh, kw] = win.kernel;
    win.max && ow <= 7 && oh * ow <= 256 && kh * kw <= 16 && h * w <= 1 << 20 && ow > 0 && oh > 0
}

/// Per chunk of 16 outputs of a plane (row-major over the whole plane) and per tap (row-major:
/// the order ties are broken in), the index of each lane's input float and the lanes whose tap
/// lies inside the input; and whether every input float belongs to exactly one window
/// (windows tile the input: the gradient is then stored, not added, and covers the plane).
#[cfg(target_arch = "x86_64")]
struct PlaneTaps {
    chunks: Vec<(u16, Vec<(std::arch::x86_64::__m512i, u16)>)>,
    tiles: bool,
}

#[cfg(target_arch = "x86_64")]
impl PlaneTaps {
    fn new(win: &Window, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> PlaneTaps {
        let [kh, kw] = win.kernel;
        let [sh, sw] = win.stride;
        let [dh, dw] = win.dilation;
        let (pt, pl) = (win.padding[0] as isize, win.padding[2] as isize);
        let outputs = oh * ow;
        let chunks = (0..outputs.div_ceil(16))
            .map(|k| {
                let lanes = super::sgemm::lane_mask(0, (outputs - 16 * k) as isize);
                let taps = (0..kh * kw)
                    .map(|t| {
                        let (ky, kx) = (t / kw, t % kw);
                        let mut idx = [0i32; 16];
                        let mut mask = 0u16;
                        for (l, at) in idx.iter_mut().enumerate() {
                            let p = 16 * k + l;
                            if p >= outputs {
                                continue;
                            }
                            let iy = ((p / ow) * sh + ky * dh) as isize - pt;
                            let ix = ((p % ow) * sw + kx * dw) as isize - pl;
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                *at = (iy as usize * w + ix as usize) as i32;
                                mask |= 1 << l;
                            }
                        }
                        // SAFETY: 16 i32 are 64 bytes, read unaligned.
                        let v =
                            unsafe { std::arch::x86_64::_mm512_loadu_si512(idx.as_ptr().cast()) };
                        (v, mask)
                    })
                    .collect();
                (lanes, taps)
            })
            .collect();
        let tiles = win.padding == [0; 4]
            && win.dilation == [1, 1]
            && win.kernel == win.stride
            && oh * sh == h
            && ow * sw == w;
        PlaneTaps { chunks, tiles }
    }
}

/// [`max_pool_planes`] of one small plane ([`small_planes`]): each output the first strictly
/// largest tap inside the input, or a NaN.
///
/// # Safety
/// AVX-512F present; `t` built for this geometry; `xp` one input plane, `out` its outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_small_plane_avx512(t: &PlaneTaps, xp: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    for (k, (lanes, taps)) in t.chunks.iter().enumerate() {
        let mut b = ninf;
        for &(idx, m) in taps {
            // SAFETY: the lanes in m index floats inside the plane.
            let v = unsafe { _mm512_mask_i32gather_ps::<4>(ninf, m, idx, xp.as_ptr()) };
            let take = (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b)
                | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v))
                & m;
            b = _mm512_mask_mov_ps(b, take, v);
        }
        // SAFETY: outputs 16k.. of the plane, `lanes` of them.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(16 * k), *lanes, b) };
    }
}

/// [`pool_backward_planes`] of one small max-pooled plane ([`small_planes`]): each output's
/// gradient to the tap it chose (with `relu`, only a nonzero one). Taps are added in
/// descending order, so a float several windows share gets their gradients in output order
/// (the scalar loop's bits); where windows tile the input, every float is stored once, so no
/// zeroing first.
///
/// # Safety
/// AVX-512F present; `t` built for this geometry; `xp`, `dx` one input plane, `dy` its
/// output gradient.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_grad_small_plane_avx512(
    t: &PlaneTaps,
    relu: bool,
    xp: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    use std::arch::x86_64::*;
    if !t.tiles {
        dx.fill(0.0);
    }
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let zero = _mm512_setzero_ps();
    let none = _mm512_set1_epi32(-1);
    for (k, (lanes, taps)) in t.chunks.iter().enumerate() {
        let mut b = ninf;
        let mut chosen = none;
        for (ti, &(idx, m)) in taps.iter().enumerate() {
            // SAFETY: the lanes in m index floats inside the plane.
            let v = unsafe { _mm512_mask_i32gather_ps::<4>(ninf, m, idx, xp.as_ptr()) };
            let take = (_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, b)
                | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v))
                & m;
            b = _mm512_mask_mov_ps(b, take, v);
            chosen = _mm512_mask_mov_epi32(chosen, take, _mm512_set1_epi32(ti as i32));
        }
        let mut ok = *lanes & _mm512_cmpneq_epi32_mask(chosen, none);
        if relu {
            ok &= _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(b, zero);
        }
        // SAFETY: outputs 16k.. of the plane's gradient, `lanes` of them.
        let d = unsafe { _mm512_maskz_loadu_ps(*lanes, dy.as_ptr().add(16 * k)) };
        for (ti, &(idx, m)) in taps.iter().enumerate().rev() {
            let sel = ok & _mm512_cmpeq_epi32_mask(chosen, _mm512_set1_epi32(ti as i32));
            let base = dx.as_mut_ptr();
            if t.tiles {
                // Every tap's float belongs to this window alone: `0 + d` where chosen, else 0.
                let v = _mm512_add_ps(_mm512_maskz_mov_ps(sel, d), zero);
                // SAFETY: the lanes in m index floats inside the plane.
                unsafe { _mm512_mask_i32scatter_ps::<4>(base, m & *lanes, idx, v) };
            } else if sel != 0 {
                // SAFETY: as above; within one tap the lanes' floats are distinct.
                unsafe {
                    let old = _mm512_mask_i32gather_ps::<4>(zero, sel, idx, base);
                    _mm512_mask_i32scatter_ps::<4>(base, sel, idx, _mm512_add_ps(old, d));
                }
            }
        }
    }
}

/// The lanes of `d` whose window chose tap `tap` (and are in `ok`), zero elsewhere.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn chosen(
    d: std::arch::x86_64::__m512,
    t: std::arch::x86_64::__m512i,
    ok: std::arch::x86_64::__mmask16,
    tap: usize,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    _mm512_maskz_mov_ps(
        ok & _mm512_cmpeq_epi32_mask(t, _mm512_set1_epi32(tap as i32)),
        d,
    )
}

/// `p[0..len] += v[0..len]` (`len <= 16`); with `fresh`, `p`'s floats are known to be zero
/// (nothing else adds to them), so they are not loaded: a load right after a masked store to
/// the same floats cannot take its value from the store buffer and waits for the store.
///
/// # Safety
/// AVX-512F present; `p` valid for `len` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn add_lanes(p: *mut f32, v: std::arch::x86_64::__m512, len: usize, fresh: bool) {
    use std::arch::x86_64::*;
    let m = super::sgemm::lane_mask(0, len as isize);
    // `0 + v`, as the scalar loop's `+=` into zeroed floats gives (-0 becomes +0).
    let old = if fresh {
        _mm512_setzero_ps()
    } else {
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    };
    // SAFETY: lanes 0..len of p (contract).
    unsafe { _mm512_mask_storeu_ps(p, m, _mm512_add_ps(old, v)) };
}

/// Stand-in off x86-64 (never called: `sgemm::available()` is false there).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn max_grad_run_avx512(
    _: &[f32],
    _: &mut [f32],
    _: (usize, usize, usize),
    _: usize,
    _: (usize, bool, bool),
    _: &[f32],
) {
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift32.
    struct Rng(u32);

    impl Rng {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }
    }

    /// Slices and pads of `[outer, n, inner]` tensors (short rows: the fixed-length copies,
    /// the single-float gathers, the chunked zero-and-place pads; and long rows), whole and
    /// split into row ranges at odd points, against index arithmetic.
    #[test]
    fn slices_and_pads_match_the_definition() {
        let mut rng = Rng(0x2545_f491);
        let cases = [
            (1037, 9, 1, 4, 5),
            (1037, 3, 3, 1, 3),
            (700, 3, 2, 0, 2),
            (333, 3, 2, 1, 3),
            (1201, 9, 1, 0, 1),
            (5, 40, 7, 3, 31),
            (17, 1, 1, 0, 1),
        ];
        for &(outer, n, inner, start, end) in &cases {
            let shape = [outer, n, inner];
            let x: Vec<f32> = (0..outer * n * inner).map(|_| rng.next() as f32).collect();
            let len = (end - start) * inner;
            let sliced = want_slice(&x, &shape, start, end);
            let cut = 1 + rng.below(outer);
            for mid in [outer, cut] {
                let mut got = vec![f32::NAN; outer * len];
                for r in [0..mid, mid..outer] {
                    let at = r.start * len..r.end * len;
                    slice_rows((1, start, end), (&x, &shape), &mut got[at], r);
                }
                assert_eq!(got, sliced, "slice {:?}", (outer, n, inner, start, end));
            }
            // Pad the slice back with (start, n - end) zeros: zero outside the kept rows.
            let sshape = [outer, end - start, inner];
            let pad = (1, start, n - end);
            let want: Vec<f32> = (0..outer * n * inner)
                .map(|i| {
                    let t = i / inner % n;
                    if t >= start && t < end { x[i] } else { 0.0 }
                })
                .collect();
            for mid in [outer, cut] {
                let mut got = vec![f32::NAN; outer * n * inner];
                for r in [0..mid, mid..outer] {
                    let at = r.start * n * inner..r.end * n * inner;
                    pad_rows(pad, (&sliced, &sshape), &mut got[at], r);
                }
                assert_eq!(got, want, "pad {:?}", (outer, n, inner, start, end));
            }
        }
    }

    fn want_slice(x: &[f32], shape: &[usize; 3], start: usize, end: usize) -> Vec<f32> {
        let [outer, n, inner] = *shape;
        (0..outer)
            .flat_map(|o| x[(o * n + start) * inner..(o * n + end) * inner].to_vec())
            .collect()
    }

    /// A max pooling window with symmetric padding and its output size.
    fn max_window(
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        (ph, pw): (usize, usize),
        ceil: bool,
    ) -> (Window, usize, usize) {
        let oh = crate::graph::pool_out(h, [ph, ph], kh, sh, dh, ceil);
        let ow = crate::graph::pool_out(w, [pw, pw], kw, sw, dw, ceil);
        let win = Window {
            max: true,
            count_include_pad: false,
            in_hw: [h, w],
            kernel: [kh, kw],
            stride: [sh, sw],
            padding: [ph, ph, pw, pw],
            dilation: [dh, dw],
        };
        (win, oh, ow)
    }

    /// Max pooling by its definition: the first strictly largest tap inside the input, NaN
    /// if any tap is NaN.
    fn reference(win: &Window, x: &[f32], xs: &[usize], ys: &[usize]) -> Vec<f32> {
        let (h, w, oh, ow) = (xs[2], xs[3], ys[2], ys[3]);
        let mut out = Vec::new();
        for p in 0..xs[0] * xs[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..win.kernel[0] {
                        for kx in 0..win.kernel[1] {
                            let iy = (oy * win.stride[0] + ky * win.dilation[0]) as isize
                                - win.padding[0] as isize;
                            let ix = (ox * win.stride[1] + kx * win.dilation[1]) as isize
                                - win.padding[2] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let v = x[(p * h + iy as usize) * w + ix as usize];
                            if v > best || v.is_nan() {
                                best = v;
                            }
                        }
                    }
                    out.push(best);
                }
            }
        }
        out
    }

    /// "Same" stride-1 poolings (the whole-plane path: 16 outputs across rows per load), odd
    /// sizes, dilation, ties and NaNs, whole and split by planes.
    #[test]
    fn same_size_max_pooling_matches_the_definition() {
        let mut rng = Rng(0x1234_5677);
        let mut seen = 0;
        for (k, d, h, w) in [
            ([3, 3], [1, 1], 14, 14),
            ([3, 3], [1, 1], 7, 9),
            ([5, 3], [1, 2], 11, 6),
            ([1, 3], [1, 1], 3, 17),
            ([3, 5], [2, 1], 20, 13),
            ([3, 3], [1, 1], 1, 1),
        ] {
            let pad = [(k[0] - 1) * d[0] / 2, (k[1] - 1) * d[1] / 2];
            let win = Window {
                max: true,
                count_include_pad: false,
                in_hw: [h, w],
                kernel: k,
                stride: [1, 1],
                padding: [pad[0], pad[0], pad[1], pad[1]],
                dilation: d,
            };
            let (n, c) = (2, 3);
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| {
                    if i % 41 == 40 {
                        f32::NAN
                    } else {
                        [-2.0, -0.0, 0.0, 1.0, 1.5, -1.0][rng.below(6)]
                    }
                })
                .collect();
            let (xs, ys) = ([n, c, h, w], [n, c, h, w]);
            seen += same_size_stride1(&win, (h, w), (h, w)) as usize;
            let want = reference(&win, &x, &xs, &ys);
            let planes = n * c;
            let mut got = vec![7.0; planes * h * w];
            let (a, b) = got.split_at_mut(2 * h * w);
            max_pool_planes(&win, (&x, &xs), (a, &ys), 0..2);
            max_pool_planes(&win, (&x, &xs), (b, &ys), 2..planes);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == r.to_bits() || (g.is_nan() && r.is_nan()),
                    "({win:?}, {xs:?}): element {i}: {g} vs {r}"
                );
            }
        }
        assert_eq!(seen, 6);
    }

    /// Odd sizes, strides 1-4 (the permute and gather paths), dilation, padding, ceil mode,
    /// ties (values from a small set) and NaNs, whole and split by planes.
    #[test]
    fn max_pooling_matches_the_definition() {
        let mut rng = Rng(0x9e37_79b9);
        let mut small = 0;
        for case in 0..200 {
            let (kh, kw) = (1 + rng.below(4), 1 + rng.below(4));
            let (sh, sw) = (1 + rng.below(4), 1 + rng.below(4));
            let (dh, dw) = (1 + rng.below(2), 1 + rng.below(2));
            let (ph, pw) = (rng.below(kh / 2 + 1), rng.below(kw / 2 + 1));
            let ceil = rng.below(2) == 1;
            let h = (kh - 1) * dh + 1 + rng.below(20);
            let w = (kw - 1) * dw + 1 + rng.below(70);
            let (n, c) = (1 + rng.below(2), 1 + rng.below(3));
            let (win, oh, ow) = max_window((h, w), (kh, kw), (sh, sw), (dh, dw), (ph, pw), ceil);
            let nan_every = if case % 3 == 0 { 37 } else { usize::MAX };
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| {
                    if i % nan_every == 36 {
                        f32::NAN
                    } else {
                        // Few distinct values, so windows often tie; -0.0 next to 0.0.
                        [-2.0, -0.0, 0.0, 1.0, 1.5, -1.0][rng.below(6)]
                    }
                })
                .collect();
            let (xs, ys) = ([n, c, h, w], [n, c, oh, ow]);
            small += small_planes(&win, (h, w), (oh, ow)) as usize;
            let want = reference(&win, &x, &xs, &ys);
            let planes = n * c;
            let mut got = vec![7.0; planes * oh * ow];
            max_pool_planes(&win, (&x, &xs), (&mut got, &ys), 0..planes);
            let mut split = vec![7.0; planes * oh * ow];
            let half = planes / 2;
            let (a, b) = split.split_at_mut(half * oh * ow);
            max_pool_planes(&win, (&x, &xs), (a, &ys), 0..half);
            max_pool_planes(&win, (&x, &xs), (b, &ys), half..planes);
            for (name, out) in [("whole", &got), ("split", &split)] {
                for (i, (g, r)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == r.to_bits() || (g.is_nan() && r.is_nan()),
                        "case {case} {name} ({win:?}, {xs:?}): element {i}: {g} vs {r}"
                    );
                }
            }
        }
        assert!(small >= 30, "only {small} small-plane cases");
    }
    /// Max pooling's gradient by its definition: each output's gradient added, in output
    /// order, to its window's first strictly largest tap (or last NaN) inside the input; with
    /// `relu` only where that tap is not zero (the graph's ReLU gradient `x != 0 ? p : 0`:
    /// a NaN tap passes).
    fn reference_grad(
        win: &Window,
        relu: bool,
        x: &[f32],
        xs: &[usize],
        dy: &[f32],
        ys: &[usize],
    ) -> Vec<f32> {
        let (h, w, oh, ow) = (xs[2], xs[3], ys[2], ys[3]);
        let mut dx = vec![0.0f32; x.len()];
        for p in 0..xs[0] * xs[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut at) = (f32::NEG_INFINITY, None);
                    for ky in 0..win.kernel[0] {
                        for kx in 0..win.kernel[1] {
                            let iy = (oy * win.stride[0] + ky * win.dilation[0]) as isize
                                - win.padding[0] as isize;
                            let ix = (ox * win.stride[1] + kx * win.dilation[1]) as isize
                                - win.padding[2] as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let i = (p * h + iy as usize) * w + ix as usize;
                            if x[i] > best || x[i].is_nan() {
                                (best, at) = (x[i], Some(i));
                            }
                        }
                    }
                    if let Some(i) = at.filter(|&i| !relu || x[i] != 0.0) {
                        dx[i] += dy[(p * oh + oy) * ow + ox];
                    }
                }
            }
        }
        dx
    }

    /// Max pooling's gradient (the AVX-512 interior runs at strides 1 and 2, the scalar edge
    /// windows and other strides), with and without the ReLU mask: odd sizes up to 90 columns
    /// (runs of several vectors and a partial one), dilation, padding, ceil mode, ties, NaNs
    /// and -inf, whole and split by planes; the same bits as the definition.
    #[test]
    fn max_pooling_gradient_matches_the_definition() {
        let mut rng = Rng(0x7f4a_7c15);
        let (mut small, mut small_tiles, mut row_tiles) = (0, 0, 0);
        for case in 0..300 {
            let (kh, kw) = (1 + rng.below(4), 1 + rng.below(4));
            let (sh, sw) = (1 + rng.below(3), 1 + rng.below(3));
            let (dh, dw) = (1 + rng.below(2), if case % 4 == 0 { 2 } else { 1 });
            let (ph, pw) = (rng.below(kh / 2 + 1), rng.below(kw / 2 + 1));
            let ceil = rng.below(2) == 1;
            let relu = rng.below(2) == 1;
            let h = (kh - 1) * dh + 1 + rng.below(12);
            let w = (kw - 1) * dw + 1 + rng.below(90);
            let (n, c) = (1 + rng.below(2), 1 + rng.below(3));
            // Every tenth case windows that tile the plane (LeNet-5's 2×2 poolings): small
            // planes (gathers) and rows of more than 7 outputs (the row runs, no zeroing).
            let (kh, kw, sh, sw, dh, dw, ph, pw, h, w) = if case % 10 == 9 {
                let k = 2 + case / 10 % 2;
                (
                    k,
                    k,
                    k,
                    k,
                    1,
                    1,
                    0,
                    0,
                    k * (1 + rng.below(8)),
                    k * (1 + rng.below(20)),
                )
            } else {
                (kh, kw, sh, sw, dh, dw, ph, pw, h, w)
            };
            let (win, oh, ow) = max_window((h, w), (kh, kw), (sh, sw), (dh, dw), (ph, pw), ceil);
            let nan_every = if case % 3 == 0 { 37 } else { usize::MAX };
            let x: Vec<f32> = (0..n * c * h * w)
                .map(|i| {
                    if i % nan_every == 36 {
                        f32::NAN
                    } else {
                        [-2.0, -0.0, 0.0, 1.0, 1.5, -1.0, f32::NEG_INFINITY][rng.below(7)]
                    }
                })
                .collect();
            let dy: Vec<f32> = (0..n * c * oh * ow)
                .map(|_| (rng.below(201) as f32 - 100.0) / 7.0)
                // -0.0 gradients: the scalar loop's `0 + d` stores +0.
                .map(|d| if d == 0.0 { -0.0 } else { d })
                .collect();
            let (xs, ys) = ([n, c, h, w], [n, c, oh, ow]);
            if small_planes(&win, (h, w), (oh, ow)) {
                small += 1;
                small_tiles += PlaneTaps::new(&win, (h, w), (oh, ow)).tiles as usize;
            } else {
                row_tiles += (case % 10 == 9 && oh * sh == h && ow * sw == w) as usize;
            }
            let want = reference_grad(&win, relu, &x, &xs, &dy, &ys);
            let planes = n * c;
            let mut got = vec![7.0; planes * h * w];
            pool_backward((&win, relu), (&x, &xs), (&dy, &ys), &mut got);
            let mut split = vec![7.0; planes * h * w];
            let half = planes / 2;
            let (a, b) = split.split_at_mut(half * h * w);
            pool_backward_planes((&win, relu), &x, &xs, &dy, &ys, a, 0..half);
            pool_backward_planes((&win, relu), &x, &xs, &dy, &ys, b, half..planes);
            for (name, out) in [("whole", &got), ("split", &split)] {
                for (i, (g, r)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == r.to_bits(),
                        "case {case} {name} relu {relu} ({win:?}, {xs:?}): element {i}: {g} vs {r}"
                    );
                }
            }
        }
        assert!(small >= 30, "only {small} small-plane cases");
        assert!(small_tiles >= 8, "only {small_tiles} small tiling cases");
        assert!(
            row_tiles >= 8,
            "only {row_tiles} tiling cases of longer rows"
        );
    }
    /// Permutes of rank 2 to 4 with odd sizes (blocks of 16 and partial ones): rotations of
    /// the axes (the blocked transpose) and other orders (the index walk), against index
    /// arithmetic.
    #[test]
    fn permutes_match_the_definition() {
        let mut rng = Rng(0x51ed_270b);
        let perms: [&[usize]; 7] = [
            &[1, 0],
            &[1, 2, 0],
            &[2, 0, 1],
            &[0, 2, 1],
            &[2, 3, 0, 1],
            &[3, 0, 1, 2],
            &[0, 3, 1, 2],
        ];
        let mut rotations = 0;
        for case in 0..60 {
            let perm = perms[case % perms.len()];
            let r = perm.len();
            let shape: Vec<usize> = (0..r)
                .map(|_| 1 + rng.below(if r == 2 { 70 } else { 9 }))
                .collect();
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut strides = vec![1usize; r];
            for i in (0..r - 1).rev() {
                strides[i] = strides[i + 1] * shape[i + 1];
            }
            let mut want = Vec::with_capacity(n);
            let mut idx = vec![0usize; r];
            for _ in 0..n {
                want.push(
                    x[idx
                        .iter()
                        .zip(perm)
                        .map(|(i, &p)| i * strides[p])
                        .sum::<usize>()],
                );
                for d in (0..r).rev() {
                    idx[d] += 1;
                    if idx[d] < out_shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            rotations += (1..r).any(|k| perm.iter().copied().eq((k..r).chain(0..k))) as usize;
            let mut got = vec![f32::NAN; n];
            let op = HostOp::Permute {
                perm: perm.to_vec(),
            };
            run_host(&op, &[(&x, &shape)], &mut got, &out_shape, 0).unwrap();
            assert_eq!(got, want, "case {case}: {shape:?} permuted {perm:?}");
        }
        assert!(rotations >= 30);
    }
}
