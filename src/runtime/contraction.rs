//! Convolution and matrix multiplication: packing (im2col) in Rust, the core in the `gemm`
//! crate's AVX-512 microkernels, the fused epilogue in generated code on each output tile.

use std::cell::RefCell;

use crate::fuse::kernel::ContractionKind;

/// Output pixels per im2col band: with a few hundred rows of K, the band stays in L2.
const BAND_PIXELS: usize = 384;

thread_local! {
    /// Per-thread im2col scratch, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: in bounds by the caller's contract.
                unsafe { *dst.offset(i as isize * dst_rs + j as isize) = 0.0 };
            }
        }
        return;
    }
    // SAFETY: forwarded from the caller; `read_dst = false` so dst's contents are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// One image of a convolution: `out[O, OH*OW] = W[O, C/g*KH*KW] * im2col(x[C, H, W])`, per
/// group. `x`, `w` and `out` point at this image's data.
///
/// # Safety
/// `x` holds `c*h*w` floats, `w` the whole weight, `out` `o*oh*ow` floats.
pub unsafe fn conv_image(
    kind: &ContractionKind,
    x: *const f32,
    w: *const f32,
    out: *mut f32,
    o_range: (usize, usize),
) {
    let ContractionKind::Conv2d {
        c,
        h,
        w: wd,
        o,
        kernel: [kh, kw],
        stride: [sh, sw],
        padding: [pt, _pb, pl, _pr],
        dilation: [dh, dw],
        groups,
        ..
    } = *kind
    else {
        unreachable!("conv_image on a matmul")
    };
    let oh = (h + kind_pad(kind, 0) - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + kind_pad(kind, 1) - dw * (kw - 1) - 1) / sw + 1;
    let cg = c / groups;
    let og = o / groups;
    let kdim = cg * kh * kw;
    let npix = oh * ow;
    let direct = kh == 1
        && kw == 1
        && sh == 1
        && sw == 1
        && pt == 0
        && pl == 0
        && kind_pad(kind, 0) == 0
        && kind_pad(kind, 1) == 0;
    for g in 0..groups {
        // Output channels of this group within the requested range.
        let lo = o_range.0.max(g * og);
        let hi = o_range.1.min((g + 1) * og);
        if lo >= hi {
            continue;
        }
        // SAFETY: offsets stay inside this image's input (group g's channels).
        let xg = unsafe { x.add(g * cg * h * wd) };
        let run = |col: *const f32| {
            // SAFETY: the weight rows lo..hi each hold kdim floats; out rows lo..hi hold npix.
            unsafe {
                gemm(
                    hi - lo,
                    npix,
                    kdim,
                    out.add(lo * npix),
                    npix as isize,
                    w.add(lo * kdim),
                    kdim as isize,
                    1,
                    col,
                    npix as isize,
                    1,
                )
            }
        };
        if direct {
            run(xg);
            continue;
        }
        // im2col one band of output rows at a time, so the packed band stays in L2 while the
        // GEMM reads it.
        let rows_per_band = (BAND_PIXELS / ow).clamp(1, oh);
        SCRATCH.with(|s| {
            let mut col = s.borrow_mut();
            let mut y0 = 0;
            while y0 < oh {
                let y1 = (y0 + rows_per_band).min(oh);
                let band = (y1 - y0) * ow;
                if col.len() < kdim * band {
                    col.resize(kdim * band, 0.0);
                }
                for ci in 0..cg {
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let row = (ci * kh + ki) * kw + kj;
                            let dst = &mut col[row * band..(row + 1) * band];
                            // Output columns whose input column is inside the image.
                            let off = (kj * dw) as isize - pl as isize;
                            let x0 = if off >= 0 {
                                0
                            } else {
                                ((-off) as usize).div_ceil(sw)
                            }
                            .min(ow);
                            let x1 = if (wd as isize) <= off {
                                0
                            } else {
                                ((wd as isize - off - 1) as usize / sw + 1).min(ow)
                            }
                            .max(x0);
                            for y in y0..y1 {
                                let iy = (y * sh + ki * dh) as isize - pt as isize;
                                let line = &mut dst[(y - y0) * ow..(y - y0 + 1) * ow];
                                if iy < 0 || iy >= h as isize {
                                    line.fill(0.0);
                                    continue;
                                }
                                // SAFETY: row iy of channel ci is inside the image.
                                let src = unsafe {
                                    std::slice::from_raw_parts(
                                        xg.add((ci * h + iy as usize) * wd),
                                        wd,
                                    )
                                };
                                line[..x0].fill(0.0);
                                line[x1..].fill(0.0);
                                let first = (x0 as isize * sw as isize + off) as usize;
                                if sw == 1 {
                                    line[x0..x1].copy_from_slice(&src[first..first + (x1 - x0)]);
                                } else {
                                    for (k, v) in line[x0..x1].iter_mut().enumerate() {
                                        *v = src[first + k * sw];
                                    }
                                }
                            }
                        }
                    }
                }
                // SAFETY: weight rows lo..hi hold kdim floats; output rows lo..hi hold npix
                // floats, of which this band writes columns y0*ow..y1*ow.
                unsafe {
                    gemm(
                        hi - lo,
                        band,
                        kdim,
                        out.add(lo * npix + y0 * ow),
                        npix as isize,
                        w.add(lo * kdim),
                        kdim as isize,
                        1,
                        col.as_ptr(),
                        band as isize,
                        1,
                    )
                };
                y0 = y1;
            }
        });
    }
}

/// Total padding along spatial axis `axis` (0 = height, 1 = width).
fn kind_pad(kind: &ContractionKind, axis: usize) -> usize {
    match kind {
        ContractionKind::Conv2d { padding, .. } => padding[2 * axis] + padding[2 * axis + 1],
        ContractionKind::MatMul { .. } => 0,
    }
}
