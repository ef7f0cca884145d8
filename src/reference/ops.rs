//! One function per primitive op, written as plainly as possible.
//!
//! Every function takes arrays of any memory layout (it indexes them logically) and returns a
//! new array in standard (row-major) layout. Shapes are assumed consistent: callers check them
//! with [`super::check_node`] first; a mismatch here panics.

use ndarray::{ArrayD, Dimension, Ix3, IxDyn};

use super::Real;
use crate::graph::{BinaryOp, PoolOp, ReduceOp, UnaryOp};

/// `Op::Scalar`: a tensor of shape `[]` holding `value` (widened exactly to `T`).
pub fn scalar<T: Real>(value: f32) -> ArrayD<T> {
    ArrayD::from_elem(IxDyn(&[]), T::from_f32(value))
}

/// `Op::Tensor`: the constant `data`, row-major, with shape `shape`.
pub fn tensor<T: Real>(data: &[f32], shape: &[usize]) -> ArrayD<T> {
    let values = data.iter().map(|&v| T::from_f32(v)).collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("data length matches the shape")
}

/// The input position read by window tap `k` of output position `out`, or None when it falls
/// in the padding: `out * stride + k * dilation - pad`, if inside `0..n`.
fn tap(
    out: usize,
    stride: usize,
    k: usize,
    dilation: usize,
    pad: usize,
    n: usize,
) -> Option<usize> {
    (out * stride + k * dilation)
        .checked_sub(pad)
        .filter(|&i| i < n)
}

/// `Op::Conv2d`, PyTorch's `F.conv2d` without bias: a cross-correlation (the kernel is not
/// flipped) with zero padding.
///
/// `x` is `[N, C, H, W]`, `w` is `[O, C/groups, KH, KW]`, `padding` is `[top, bottom, left,
/// right]`. Output channel `o` belongs to group `g = o / (O/groups)` and sees input channels
/// `g*C/groups .. (g+1)*C/groups`:
///
/// `out[n, o, y, x] = Σ_{c, ky, kx} in[n, g*C/groups + c, y*sh + ky*dh - top, x*sw + kx*dw - left]
///                    * w[o, c, ky, kx]`,
///
/// where reads outside the input are 0. `OH = (H + top + bottom - dh*(KH-1) - 1) / sh + 1`,
/// likewise `OW`.
pub fn conv2d<T: Real>(
    x: &ArrayD<T>,
    w: &ArrayD<T>,
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
) -> ArrayD<T> {
    let (n, h, wd) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let out_per_group = o / groups;
    let oh = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
    let ow = (wd + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
    let mut out = ArrayD::from_elem(IxDyn(&[n, o, oh, ow]), T::ZERO);
    for b in 0..n {
        for oc in 0..o {
            let g = oc / out_per_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = T::ZERO;
                    for c in 0..cg {
                        for ky in 0..kh {
                            let Some(iy) = tap(oy, stride[0], ky, dilation[0], padding[0], h)
                            else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(ix) = tap(ox, stride[1], kx, dilation[1], padding[2], wd)
                                else {
                                    continue;
                                };
                                acc += x[[b, g * cg + c, iy, ix]] * w[[oc, c, ky, kx]];
                            }
                        }
                    }
                    out[[b, oc, oy, ox]] = acc;
                }
            }
        }
    }
    out
}

/// `Op::MatMul`: `a[.., M, K] @ b[.., K, N] -> [.., M, N]`; with `transpose_b`, `b` is
/// `[.., N, K]` and the product is `a @ bᵀ` (PyTorch's `F.linear` layout). The leading (batch)
/// dimensions of `a` and `b` are equal (no broadcasting); each batch entry is multiplied on
/// its own: `out[.., i, j] = Σ_k a[.., i, k] * b[.., k, j]`.
pub fn matmul<T: Real>(a: &ArrayD<T>, b: &ArrayD<T>, transpose_b: bool) -> ArrayD<T> {
    let r = a.ndim();
    let batch_shape = &a.shape()[..r - 2];
    let batch: usize = batch_shape.iter().product();
    let (m, k) = (a.shape()[r - 2], a.shape()[r - 1]);
    let n = if transpose_b {
        b.shape()[r - 2]
    } else {
        b.shape()[r - 1]
    };
    // Flattening the batch dimensions row-major keeps every batch entry's [M, K] block intact.
    let a3 = a.to_shape((batch, m, k)).expect("a is [.., M, K]");
    let b3 = b
        .to_shape((batch, b.shape()[r - 2], b.shape()[r - 1]))
        .expect("b is [.., K, N] or [.., N, K]");
    let mut out = ndarray::Array::from_elem((batch, m, n), T::ZERO);
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut acc = T::ZERO;
                for kk in 0..k {
                    let bv = if transpose_b {
                        b3[[bi, j, kk]]
                    } else {
                        b3[[bi, kk, j]]
                    };
                    acc += a3[[bi, i, kk]] * bv;
                }
                out[[bi, i, j]] = acc;
            }
        }
    }
    let mut shape = batch_shape.to_vec();
    shape.extend([m, n]);
    out.into_dimensionality::<Ix3>()
        .expect("rank 3")
        .into_shape_with_order(IxDyn(&shape))
        .expect("same number of elements")
}

/// `Op::Unary`: `u.apply` on every element, computed in f64 and rounded to `T`.
pub fn unary<T: Real>(u: UnaryOp, x: &ArrayD<T>) -> ArrayD<T> {
    x.mapv(|v| T::from_f64(u.apply(v.to_f64())))
}

/// The index into an input of shape `shape` that NumPy broadcasting reads for output index
/// `out_idx`: shapes are aligned at the right, and a dimension of size 1 always reads index 0.
fn broadcast_index(out_idx: &[usize], shape: &[usize]) -> Vec<usize> {
    let offset = out_idx.len() - shape.len();
    (0..shape.len())
        .map(|i| {
            if shape[i] == 1 {
                0
            } else {
                out_idx[offset + i]
            }
        })
        .collect()
}

/// `Op::Binary`: `op.apply(a, b)` elementwise (in f64, rounded to `T`) with NumPy
/// broadcasting: `out[i] = op(a[bcast(i)], b[bcast(i)])`.
pub fn binary<T: Real>(
    op: BinaryOp,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    out_shape: &[usize],
) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        let i = idx.slice();
        let av = a[broadcast_index(i, a.shape()).as_slice()];
        let bv = b[broadcast_index(i, b.shape()).as_slice()];
        T::from_f64(op.apply(av.to_f64(), bv.to_f64()))
    })
}

/// `Op::Select`: `cond != 0 ? a : b` elementwise, all three broadcast like NumPy
/// (PyTorch's `torch.where(cond != 0, a, b)`). A NaN condition counts as true (it is not 0).
pub fn select<T: Real>(
    cond: &ArrayD<T>,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    out_shape: &[usize],
) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        let i = idx.slice();
        let c = cond[broadcast_index(i, cond.shape()).as_slice()];
        if c != T::ZERO {
            a[broadcast_index(i, a.shape()).as_slice()]
        } else {
            b[broadcast_index(i, b.shape()).as_slice()]
        }
    })
}

/// `Op::Reduce`: sum, max or mean over `axes`, which are kept with size 1 (PyTorch's
/// `keepdim=True`). Sums run over the reduced elements in row-major order. Max propagates NaN
/// (like `torch.amax`); the max of nothing is -inf. Mean is the sum divided by the number of
/// reduced elements. Repeated axes count once; no axes is the identity.
pub fn reduce<T: Real>(op: ReduceOp, axes: &[usize], x: &ArrayD<T>) -> ArrayD<T> {
    let mut out_shape = x.shape().to_vec();
    let mut window = vec![1; x.ndim()];
    for &a in axes {
        out_shape[a] = 1;
        window[a] = x.shape()[a];
    }
    let count: usize = window.iter().product();
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let base = idx.slice();
        let mut acc = match op {
            ReduceOp::Max => T::NEG_INFINITY,
            ReduceOp::Sum | ReduceOp::Mean => T::ZERO,
        };
        for w in ndarray::indices(IxDyn(&window)) {
            let src: Vec<usize> = base.iter().zip(w.slice()).map(|(a, b)| a + b).collect();
            let v = x[src.as_slice()];
            match op {
                ReduceOp::Sum | ReduceOp::Mean => acc += v,
                ReduceOp::Max => {
                    if v > acc || v.is_nan() {
                        acc = v;
                    }
                }
            }
        }
        match op {
            ReduceOp::Mean => acc / T::from_usize(count),
            ReduceOp::Sum | ReduceOp::Max => acc,
        }
    })
}

/// `Op::Pool` over the last two dimensions of `x[N, C, H, W]`; `padding` is `[top, bottom,
/// left, right]`, and `out_shape` (from [`crate::graph::pool_out`], which implements ceil
/// mode) says how many windows there are. Window `(oy, ox)` starts at
/// `(oy*sh - top, ox*sw - left)`.
///
/// - **Max** (`F.max_pool2d`): the largest input value among the taps
///   `(start + ky*dh, start + kx*dw)` that lie inside the input; padding is -inf, i.e. never
///   selected. NaN propagates. A window with no tap inside the input gives -inf.
/// - **Avg** (`F.avg_pool2d`, no dilation): the sum of the window's cells inside the input,
///   divided by a count computed exactly as PyTorch does, per axis:
///   `hstart = oy*sh - top`, `hend = min(hstart + KH, H + bottom)`,
///   `pool_h = hend - hstart` (before clipping), then `hstart = max(hstart, 0)`,
///   `hend = min(hend, H)`. The divisor is `pool_h * pool_w` with `count_include_pad`
///   (padding counts, but ceil mode's cells past the bottom/right padding do not), else the
///   clipped area `(hend - hstart) * (wend - wstart)` (0/0 = NaN if a window holds no input
///   cell, which PyTorch's padding limits rule out).
pub fn pool<T: Real>(
    op: PoolOp,
    x: &ArrayD<T>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    out_shape: &[usize],
) -> ArrayD<T> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let mut out = ArrayD::from_elem(IxDyn(out_shape), T::ZERO);
    for b in 0..out_shape[0] {
        for c in 0..out_shape[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    out[[b, c, oy, ox]] = match op {
                        PoolOp::Max => {
                            let mut best = T::NEG_INFINITY;
                            for ky in 0..kernel[0] {
                                let Some(iy) = tap(oy, stride[0], ky, dilation[0], padding[0], h)
                                else {
                                    continue;
                                };
                                for kx in 0..kernel[1] {
                                    let Some(ix) =
                                        tap(ox, stride[1], kx, dilation[1], padding[2], w)
                                    else {
                                        continue;
                                    };
                                    let v = x[[b, c, iy, ix]];
                                    if v > best || v.is_nan() {
                                        best = v;
                                    }
                                }
                            }
                            best
                        }
                        PoolOp::Avg { count_include_pad } => {
                            let (y0, y1, pool_h) =
                                avg_window(oy, stride[0], kernel[0], padding[0], padding[1], h);
                            let (x0, x1, pool_w) =
                                avg_window(ox, stride[1], kernel[1], padding[2], padding[3], w);
                            let mut sum = T::ZERO;
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    sum += x[[b, c, iy, ix]];
                                }
                            }
                            let divisor = if count_include_pad {
                                pool_h * pool_w
                            } else {
                                (y1 - y0) * (x1 - x0)
                            };
                            sum / T::from_usize(divisor)
                        }
                    };
                }
            }
        }
    }
    out
}

/// PyTorch's average-pooling window along one axis: the clipped input range `start..end` and
/// the pool size counted before clipping (cells inside `[-pad_before, n + pad_after)`).
fn avg_window(
    o: usize,
    stride: usize,
    k: usize,
    pad_before: usize,
    pad_after: usize,
    n: usize,
) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad_before as isize;
    let end = (start + k as isize).min((n + pad_after) as isize);
    let pool_size = (end - start) as usize;
    let start = start.max(0) as usize;
    let end = (end.min(n as isize).max(0) as usize).max(start);
    (start, end, pool_size)
}

/// `Op::AdaptiveAvgPool`, PyTorch's `F.adaptive_avg_pool2d` on `x[N, C, H, W]`: output cell
/// `(i, j)` is the mean of rows `floor(i*H/OH) .. ceil((i+1)*H/OH)` and columns
/// `floor(j*W/OW) .. ceil((j+1)*W/OW)`.
pub fn adaptive_avg_pool<T: Real>(x: &ArrayD<T>, output: [usize; 2]) -> ArrayD<T> {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let [oh, ow] = output;
    let mut out = ArrayD::from_elem(IxDyn(&[n, c, oh, ow]), T::ZERO);
    for b in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                let (y0, y1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                for j in 0..ow {
                    let (x0, x1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                    let mut sum = T::ZERO;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            sum += x[[b, ch, iy, ix]];
                        }
                    }
                    out[[b, ch, i, j]] = sum / T::from_usize((y1 - y0) * (x1 - x0));
                }
            }
        }
    }
    out
}

/// `Op::Reshape`: the same elements in row-major order, with shape `out_shape`
/// (`torch.reshape`).
pub fn reshape<T: Real>(x: &ArrayD<T>, out_shape: &[usize]) -> ArrayD<T> {
    let values: Vec<T> = x.iter().copied().collect(); // logical (row-major) order
    ArrayD::from_shape_vec(IxDyn(out_shape), values).expect("same number of elements")
}

/// `Op::Permute` (`torch.permute`): `out.shape[i] = x.shape[perm[i]]` and
/// `out[i_0, .., i_r] = x[j]` with `j[perm[d]] = i_d`.
pub fn permute<T: Real>(x: &ArrayD<T>, perm: &[usize]) -> ArrayD<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = vec![0; perm.len()];
        for (d, &p) in perm.iter().enumerate() {
            src[p] = idx[d];
        }
        x[src.as_slice()]
    })
}

/// `Op::Concat` (`torch.cat`): the inputs one after another along `axis`; all other
/// dimensions are equal.
pub fn concat<T: Real>(xs: &[&ArrayD<T>], axis: usize) -> ArrayD<T> {
    let mut out_shape = xs[0].shape().to_vec();
    out_shape[axis] = xs.iter().map(|x| x.shape()[axis]).sum();
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = idx.slice().to_vec();
        for x in xs {
            if src[axis] < x.shape()[axis] {
                return x[src.as_slice()];
            }
            src[axis] -= x.shape()[axis];
        }
        unreachable!("the index is inside one of the inputs")
    })
}

/// `Op::Slice`: `x[.., start..end, ..]` along `axis` (`torch.narrow(x, axis, start,
/// end - start)`).
pub fn slice<T: Real>(x: &ArrayD<T>, axis: usize, start: usize, end: usize) -> ArrayD<T> {
    let mut out_shape = x.shape().to_vec();
    out_shape[axis] = end - start;
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = idx.slice().to_vec();
        src[axis] += start;
        x[src.as_slice()]
    })
}

/// The `i`-th output (counting from 0) of a SplitMix64 generator seeded with `seed`: a
/// counter-based generator, so any element's value can be computed on its own.
pub fn splitmix64(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `Op::RandomMask`, netc's definition (every backend must reproduce it bit for bit): the
/// element with row-major index `i` draws `u = (splitmix64(seed, i) >> 40) / 2^24`, a
/// uniform value in `[0, 1)` on a 2^-24 grid (exact in f32), and the mask is `1` when
/// `u >= p` (kept, probability `1 - p` up to rounding of `p` to the grid) and `0` otherwise.
/// `p = 0` keeps everything, `p = 1` drops everything. The mask is not scaled.
pub fn random_mask<T: Real>(shape: &[usize], p: f32, seed: u64) -> ArrayD<T> {
    let numel: usize = shape.iter().product();
    let values = (0..numel as u64)
        .map(|i| {
            let u = (splitmix64(seed, i) >> 40) as f32 / (1u32 << 24) as f32;
            if u >= p { T::ONE } else { T::ZERO }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).expect("numel values")
}

/// `Op::Expand`: `x` broadcast to `out_shape` (NumPy rules).
pub fn expand<T: Real>(x: &ArrayD<T>, out_shape: &[usize]) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(out_shape), |idx| {
        x[broadcast_index(idx.slice(), x.shape()).as_slice()]
    })
}

/// `Op::Pad`: `before` zeros, then `x`, then `after` zeros along `axis`.
pub fn pad<T: Real>(x: &ArrayD<T>, axis: usize, before: usize, after: usize) -> ArrayD<T> {
    let mut out_shape = x.shape().to_vec();
    out_shape[axis] += before + after;
    let n = x.shape()[axis];
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = idx.slice().to_vec();
        if src[axis] < before || src[axis] >= before + n {
            return T::ZERO;
        }
        src[axis] -= before;
        x[src.as_slice()]
    })
}

/// `Op::Conv2dBackwardData`: the gradient of [`conv2d`] with respect to its input, written
/// as the forward sum read backwards: every product `x[.., iy, ix] * w[o, c, ky, kx]` of the
/// forward pass adds `dy[n, o, oy, ox] * w[o, c, ky, kx]` to `dx[n, g*C/groups + c, iy, ix]`.
pub fn conv2d_backward_data<T: Real>(
    dy: &ArrayD<T>,
    w: &ArrayD<T>,
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    x_shape: &[usize],
) -> ArrayD<T> {
    let (n, h, wd) = (x_shape[0], x_shape[2], x_shape[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let out_per_group = o / groups;
    let mut dx = ArrayD::from_elem(IxDyn(x_shape), T::ZERO);
    for b in 0..n {
        for oc in 0..o {
            let g = oc / out_per_group;
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[[b, oc, oy, ox]];
                    for c in 0..cg {
                        for ky in 0..kh {
                            let Some(iy) = tap(oy, stride[0], ky, dilation[0], padding[0], h)
                            else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(ix) = tap(ox, stride[1], kx, dilation[1], padding[2], wd)
                                else {
                                    continue;
                                };
                                dx[[b, g * cg + c, iy, ix]] += d * w[[oc, c, ky, kx]];
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// `Op::Conv2dBackwardWeight`: the gradient of [`conv2d`] with respect to its weight:
/// `dw[o, c, ky, kx] = Σ_{n, oy, ox} dy[n, o, oy, ox] * x[n, g*C/groups + c, iy, ix]` over the
/// taps inside the input (the same index map as the forward pass).
pub fn conv2d_backward_weight<T: Real>(
    x: &ArrayD<T>,
    dy: &ArrayD<T>,
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    w_shape: &[usize],
) -> ArrayD<T> {
    let (n, h, wd) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w_shape[0], w_shape[1], w_shape[2], w_shape[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let out_per_group = o / groups;
    let mut dw = ArrayD::from_elem(IxDyn(w_shape), T::ZERO);
    for oc in 0..o {
        let g = oc / out_per_group;
        for c in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let mut acc = T::ZERO;
                    for b in 0..n {
                        for oy in 0..oh {
                            let Some(iy) = tap(oy, stride[0], ky, dilation[0], padding[0], h)
                            else {
                                continue;
                            };
                            for ox in 0..ow {
                                let Some(ix) = tap(ox, stride[1], kx, dilation[1], padding[2], wd)
                                else {
                                    continue;
                                };
                                acc += dy[[b, oc, oy, ox]] * x[[b, g * cg + c, iy, ix]];
                            }
                        }
                    }
                    dw[[oc, c, ky, kx]] = acc;
                }
            }
        }
    }
    dw
}

/// `Op::PoolBackward`: the gradient of [`pool`] with respect to its input. Max pooling adds
/// each output's gradient to the tap the forward pass chose: the first largest in row-major
/// order (PyTorch's choice on ties), or the last NaN; average pooling adds
/// `dy / divisor` to every cell of the clipped window, with the forward pass's divisor.
#[allow(clippy::too_many_arguments)]
pub fn pool_backward<T: Real>(
    op: PoolOp,
    x: &ArrayD<T>,
    dy: &ArrayD<T>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
    dilation: [usize; 2],
) -> ArrayD<T> {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let mut dx = ArrayD::from_elem(IxDyn(x.shape()), T::ZERO);
    for b in 0..x.shape()[0] {
        for c in 0..x.shape()[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[[b, c, oy, ox]];
                    match op {
                        PoolOp::Max => {
                            let mut best: Option<(T, usize, usize)> = None;
                            for ky in 0..kernel[0] {
                                let Some(iy) = tap(oy, stride[0], ky, dilation[0], padding[0], h)
                                else {
                                    continue;
                                };
                                for kx in 0..kernel[1] {
                                    let Some(ix) =
                                        tap(ox, stride[1], kx, dilation[1], padding[2], w)
                                    else {
                                        continue;
                                    };
                                    let v = x[[b, c, iy, ix]];
                                    // The forward pass's rule: strictly larger, or NaN.
                                    let bv = best.map_or(T::NEG_INFINITY, |(bv, _, _)| bv);
                                    if v > bv || v.is_nan() {
                                        best = Some((v, iy, ix));
                                    }
                                }
                            }
                            if let Some((_, iy, ix)) = best {
                                dx[[b, c, iy, ix]] += d;
                            }
                        }
                        PoolOp::Avg { count_include_pad } => {
                            let (y0, y1, pool_h) =
                                avg_window(oy, stride[0], kernel[0], padding[0], padding[1], h);
                            let (x0, x1, pool_w) =
                                avg_window(ox, stride[1], kernel[1], padding[2], padding[3], w);
                            let divisor = if count_include_pad {
                                pool_h * pool_w
                            } else {
                                (y1 - y0) * (x1 - x0)
                            };
                            let share = d / T::from_usize(divisor);
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    dx[[b, c, iy, ix]] += share;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// `Op::AdaptiveAvgPoolBackward`: the gradient of [`adaptive_avg_pool`]: every cell of output
/// window `(i, j)` receives `dy[.., i, j] / window area`.
pub fn adaptive_avg_pool_backward<T: Real>(dy: &ArrayD<T>, x_shape: &[usize]) -> ArrayD<T> {
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let mut dx = ArrayD::from_elem(IxDyn(x_shape), T::ZERO);
    for b in 0..x_shape[0] {
        for ch in 0..x_shape[1] {
            for i in 0..oh {
                let (y0, y1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                for j in 0..ow {
                    let (x0, x1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                    let share = dy[[b, ch, i, j]] / T::from_usize((y1 - y0) * (x1 - x0));
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            dx[[b, ch, iy, ix]] += share;
                        }
                    }
                }
            }
        }
    }
    dx
}
