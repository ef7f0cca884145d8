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
            let inner: usize = shape[axis + 1..].iter().product();
            let len = (end - start) * inner;
            for o in 0..outer {
                let src = (o * shape[*axis] + start) * inner;
                out[o * len..(o + 1) * len].copy_from_slice(&data[src..src + len]);
            }
            Ok(())
        }
        HostOp::Permute { perm } => {
            let (data, shape) = ins[0];
            let r = shape.len();
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
            let inner: usize = shape[axis + 1..].iter().product();
            let n = shape[*axis];
            let out_len = (n + before + after) * inner;
            for o in 0..outer {
                let dst = &mut out[o * out_len..(o + 1) * out_len];
                dst[..before * inner].fill(0.0);
                dst[before * inner..(before + n) * inner]
                    .copy_from_slice(&data[o * n * inner..(o + 1) * n * inner]);
                dst[(before + n) * inner..].fill(0.0);
            }
            Ok(())
        }
        HostOp::PoolBackward(win) => {
            pool_backward(win, ins[0], ins[1], out);
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
        HostOp::Conv2dBackwardData(_) | HostOp::Conv2dBackwardWeight(_) => {
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

/// The gradient of a pooling window kernel: `dx` from the input `x` and the output gradient
/// `dy`. Max pooling routes each output's gradient to the tap the forward pass chose (the first
/// strictly largest, or a NaN); average pooling spreads it over the window's cells inside the
/// input with the forward divisor (PyTorch's rules, as in the reference interpreter).
pub fn pool_backward(
    win: &Window,
    (x, xs): (&[f32], &[usize]),
    (dy, dys): (&[f32], &[usize]),
    dx: &mut [f32],
) {
    let planes = xs[0] * xs[1];
    pool_backward_planes(win, x, xs, dy, dys, dx, 0..planes);
}

/// Max-pool windows at `bases` (their top-left taps), `T` taps at `offsets` each: the index of
/// each window's chosen tap (the first strictly largest, or a NaN). Independent select chains,
/// so one window's compare-select latency overlaps the others'.
#[inline(always)]
fn argmax_lanes<const T: usize>(
    xp: &[f32],
    bases: &[usize; 4],
    offsets: Option<[usize; T]>,
) -> [usize; 4] {
    let Some(offsets) = offsets else {
        return [usize::MAX; 4];
    };
    let mut best = [f32::NEG_INFINITY; 4];
    let mut at = [usize::MAX; 4];
    for o in offsets {
        for j in 0..4 {
            let i = bases[j] + o;
            let v = xp[i];
            let take = (v > best[j]) | v.is_nan();
            best[j] = if take { v } else { best[j] };
            at[j] = if take { i } else { at[j] };
        }
    }
    at
}

/// [`argmax_lanes`] for any number of taps.
fn argmax_lanes_dyn(xp: &[f32], bases: &[usize; 4], offsets: &[usize]) -> [usize; 4] {
    let mut best = [f32::NEG_INFINITY; 4];
    let mut at = [usize::MAX; 4];
    for &o in offsets {
        for j in 0..4 {
            let i = bases[j] + o;
            let v = xp[i];
            let take = (v > best[j]) | v.is_nan();
            best[j] = if take { v } else { best[j] };
            at[j] = if take { i } else { at[j] };
        }
    }
    at
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
    win: &Window,
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
    let [pt, pb, pl, pr] = win.padding;
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
    let cols: Vec<(isize, usize, usize)> = (0..ow)
        .map(|ox| {
            let x0 = (ox * sw) as isize - pl as isize;
            let (lo, hi) = tap_range(x0, kw, dw, w);
            (x0, lo, hi)
        })
        .collect();
    const LANES: usize = 4;
    let interior: Vec<bool> = cols.iter().map(|&(_, lo, hi)| hi - lo == kw).collect();
    // Tap offsets of a window that lies wholly inside the input.
    let offsets: Vec<usize> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| ky * dh * w + kx * dw))
        .collect();
    let first = range.start;
    for p in range {
        let xp = &x[p * h * w..(p + 1) * h * w];
        let dyp = &dy[p * oh * ow..(p + 1) * oh * ow];
        let q = p - first;
        let dxp = &mut dx[q * h * w..(q + 1) * h * w];
        dxp.fill(0.0);
        for (oy, &(y0, ky0, ky1)) in rows.iter().enumerate() {
            let mut ox = 0;
            while ox < ow {
                let (x0, kx0, kx1) = cols[ox];
                if win.max
                    && ky1 - ky0 == kh
                    && ox + LANES <= ow
                    && interior[ox..ox + LANES].iter().all(|&i| i)
                {
                    // Several interior windows side by side: independent select chains, so
                    // the compare-select latency of one window overlaps the others'.
                    let mut bases = [0usize; LANES];
                    for (j, b) in bases.iter_mut().enumerate() {
                        *b = y0 as usize * w + cols[ox + j].0 as usize;
                    }
                    // The usual window sizes get code with the taps unrolled.
                    let at = match (kh, kw) {
                        (2, 2) => argmax_lanes::<4>(xp, &bases, offsets[..4].try_into().ok()),
                        (3, 3) => argmax_lanes::<9>(xp, &bases, offsets[..9].try_into().ok()),
                        _ => argmax_lanes_dyn(xp, &bases, &offsets),
                    };
                    for (j, &a) in at.iter().enumerate() {
                        if a != usize::MAX {
                            dxp[a] += dyp[oy * ow + ox + j];
                        }
                    }
                    ox += LANES;
                    continue;
                }
                let d = dyp[oy * ow + ox];
                if win.max && ky1 - ky0 == kh && kx1 - kx0 == kw {
                    // An interior window: fixed tap offsets from its corner.
                    let base = y0 as usize * w + x0 as usize;
                    let taps = &xp[base..base + offsets[offsets.len() - 1] + 1];
                    let mut best = f32::NEG_INFINITY;
                    let mut at = usize::MAX;
                    for &o in &offsets {
                        let v = taps[o];
                        let take = (v > best) | v.is_nan();
                        best = if take { v } else { best };
                        at = if take { o } else { at };
                    }
                    if at != usize::MAX {
                        dxp[base + at] += d;
                    }
                } else if win.max {
                    // The forward pass's choice: the first strictly largest tap, or a NaN.
                    // Written without branches on the data (selects), which are unpredictable.
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
                    if at != usize::MAX {
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
