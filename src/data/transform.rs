//! Image transforms with explicit parameters: the pixel half of augmentation.
//!
//! In: one image as planar `[C, H, W]` f32 values (unnormalized: `[0, 1]` for byte data) and
//! the transform's parameters, already drawn. Out: the transformed image. Nothing here is
//! random; [`super::augment`] draws the parameters and calls these. Each function computes
//! what torchvision's tensor functional of the same name computes on a float image (checked
//! within 1/255 per pixel on stored cases, `tests/augment_torchvision.rs`):
//!
//! - [`hflip`], [`vflip`]: `F.hflip`, `F.vflip`.
//! - [`pad_crop`]: `F.crop(F.pad(img, pad, fill=0), top, left, h, w)`.
//! - [`resize`]: `F.resize(img, [h, w], BILINEAR, antialias)`: PyTorch's bilinear
//!   interpolation (`align_corners=False`); with `antialias` its triangle filter widened by
//!   the scale when shrinking (as PIL), which is the same as plain bilinear when enlarging.
//! - [`resized_crop`]: `F.resized_crop` (crop inside the image, then [`resize`]).
//! - [`affine`]: `F.affine(img, angle, translate, scale, shear, BILINEAR, fill=0)`: the
//!   inverse map of torchvision's `_get_inverse_affine_matrix` about the image centre
//!   `((W-1)/2, (H-1)/2)`, bilinear sampling with zeros outside, then torchvision's fill
//!   mask (each output times the weight of its taps inside the image). Angles in degrees,
//!   clockwise as torchvision's `affine`; [`rotate`] is `F.rotate` (counter-clockwise).
//! - [`brightness`], [`contrast`], [`saturation`], [`hue`]: `F.adjust_*`; the blends clamp
//!   to `[0, 1]` when `clamp` is set (torchvision always clamps float images; float data of
//!   unknown range are not clamped). Saturation and hue leave 1-channel images alone.
//! - [`pca_lighting`]: AlexNet's lighting noise as fb.resnet.torch's `Lighting`: channel `i`
//!   plus `Σ_j eigvec[i][j] · alpha[j] · eigval[j]` with ImageNet's RGB eigen-decomposition
//!   ([`PCA_EIGVAL`], [`PCA_EIGVEC`]); not clamped (as the reference).

/// ImageNet's RGB covariance eigenvalues (AlexNet; fb.resnet.torch's `pca.eigval`).
pub const PCA_EIGVAL: [f64; 3] = [0.2175, 0.0188, 0.0045];
/// The matching eigenvectors, one per column (fb.resnet.torch's `pca.eigvec`).
pub const PCA_EIGVEC: [[f64; 3]; 3] = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
];

/// Flips the columns of every row of every channel, in place.
pub fn hflip(img: &mut [f32], [_, _, w]: [usize; 3]) {
    if w == 0 {
        return;
    }
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Flips the rows of every channel, in place.
pub fn vflip(img: &mut [f32], [_, h, w]: [usize; 3]) {
    if h * w == 0 {
        return;
    }
    for plane in img.chunks_exact_mut(h * w) {
        for y in 0..h / 2 {
            let (a, b) = plane.split_at_mut((h - 1 - y) * w);
            a[y * w..(y + 1) * w].swap_with_slice(&mut b[..w]);
        }
    }
}

/// The `out_h × out_w` window at (`top`, `left`) of the image zero-padded by `pad` on every
/// side: output `(y, x)` is input `(y + top - pad, x + left - pad)`, or 0 outside the image.
pub fn pad_crop(
    img: &[f32],
    [c, h, w]: [usize; 3],
    pad: usize,
    (top, left): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; c * out_h * out_w];
    let dy = top as i64 - pad as i64;
    let dx = left as i64 - pad as i64;
    for ch in 0..c {
        for y in 0..out_h {
            let sy = y as i64 + dy;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            let src = &img[(ch * h + sy as usize) * w..][..w];
            let dst = &mut out[(ch * out_h + y) * out_w..][..out_w];
            for (x, o) in dst.iter_mut().enumerate() {
                let sx = x as i64 + dx;
                if sx >= 0 && sx < w as i64 {
                    *o = src[sx as usize];
                }
            }
        }
    }
    out
}

/// One output position's taps along one axis: (first input index, weights).
struct Taps {
    start: usize,
    weights: Vec<f64>,
}

/// PyTorch's bilinear taps from `n_in` to `n_out` samples (`align_corners=False`).
fn taps(n_in: usize, n_out: usize, antialias: bool) -> Vec<Taps> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|i| {
            if antialias {
                // aten's `_compute_indices_weights_aa` with the triangle filter.
                let support = if scale >= 1.0 { scale } else { 1.0 };
                let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
                let centre = scale * (i as f64 + 0.5);
                let lo = ((centre - support + 0.5) as i64).max(0) as usize;
                let hi = ((centre + support + 0.5) as i64).min(n_in as i64).max(0) as usize;
                let mut weights: Vec<f64> = (lo..hi.max(lo))
                    .map(|j| (1.0 - ((j as f64 - centre + 0.5) * inv).abs()).max(0.0))
                    .collect();
                let total: f64 = weights.iter().sum();
                if total != 0.0 {
                    weights.iter_mut().for_each(|w| *w /= total);
                }
                Taps { start: lo, weights }
            } else {
                // aten's `upsample_bilinear2d`: the source clamped at 0, the right tap at the edge.
                let src = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(n_in - 1);
                let l1 = if i0 < n_in - 1 { src - i0 as f64 } else { 0.0 };
                Taps {
                    start: i0,
                    weights: if i0 < n_in - 1 {
                        vec![1.0 - l1, l1]
                    } else {
                        vec![1.0]
                    },
                }
            }
        })
        .collect()
}

/// The image resized to `out_h × out_w` by bilinear interpolation (see the module doc).
/// An empty image or size gives zeros.
pub fn resize(
    img: &[f32],
    [c, h, w]: [usize; 3],
    (out_h, out_w): (usize, usize),
    antialias: bool,
) -> Vec<f32> {
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return vec![0.0; c * out_h * out_w];
    }
    if (h, w) == (out_h, out_w) {
        return img.to_vec();
    }
    let (ty, tx) = (taps(h, out_h, antialias), taps(w, out_w, antialias));
    // Rows first (width), then columns (height), as aten's separable pass.
    let mut mid = vec![0f64; c * h * out_w];
    for ch in 0..c {
        for y in 0..h {
            let src = &img[(ch * h + y) * w..][..w];
            for (x, t) in tx.iter().enumerate() {
                mid[(ch * h + y) * out_w + x] = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * src[t.start + k] as f64)
                    .sum();
            }
        }
    }
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        for (y, t) in ty.iter().enumerate() {
            for x in 0..out_w {
                let v: f64 = t
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * mid[(ch * h + t.start + k) * out_w + x])
                    .sum();
                out[(ch * out_h + y) * out_w + x] = v as f32;
            }
        }
    }
    out
}

/// The `crop_h × crop_w` window at (`top`, `left`) (inside the image), resized to
/// `out_h × out_w`.
pub fn resized_crop(
    img: &[f32],
    shape: [usize; 3],
    (top, left): (usize, usize),
    (crop_h, crop_w): (usize, usize),
    out: (usize, usize),
    antialias: bool,
) -> Vec<f32> {
    let c = shape[0];
    let cropped = pad_crop(img, shape, 0, (top, left), (crop_h, crop_w));
    resize(&cropped, [c, crop_h, crop_w], out, antialias)
}

/// Parameters of [`affine`]: rotation (degrees, clockwise), translation (pixels, x then y),
/// scale, and shear (degrees, x then y), as `F.affine` takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineParams {
    pub angle: f64,
    pub translate: [f64; 2],
    pub scale: f64,
    pub shear: [f64; 2],
}

impl AffineParams {
    /// A pure rotation, counter-clockwise as `F.rotate`.
    pub fn rotation(degrees: f64) -> AffineParams {
        AffineParams {
            angle: -degrees,
            translate: [0.0; 2],
            scale: 1.0,
            shear: [0.0; 2],
        }
    }

    /// torchvision's `_get_inverse_affine_matrix` with the centre at the origin: the map
    /// from output to input coordinates (relative to the image centre), row-major 2×3.
    pub fn inverse_matrix(&self) -> [f64; 6] {
        let rot = self.angle.to_radians();
        let (sx, sy) = (self.shear[0].to_radians(), self.shear[1].to_radians());
        let [tx, ty] = self.translate;
        let a = (rot - sy).cos() / sy.cos();
        let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
        let c = (rot - sy).sin() / sy.cos();
        let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
        let mut m = [d, -b, 0.0, -c, a, 0.0].map(|x| x / self.scale);
        m[2] += m[0] * -tx + m[1] * -ty;
        m[5] += m[3] * -tx + m[4] * -ty;
        m
    }
}

/// The image under the affine map `p`, bilinear, zero fill, with torchvision's fill mask.
pub fn affine(img: &[f32], [c, h, w]: [usize; 3], p: &AffineParams) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    let m = p.inverse_matrix();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let plane = h * w;
    let mut taps: [(usize, f64); 4] = [(0, 0.0); 4];
    for oy in 0..h {
        for ox in 0..w {
            let (x, y) = (ox as f64 - cx, oy as f64 - cy);
            let ix = m[0] * x + m[1] * y + m[2] + cx;
            let iy = m[3] * x + m[4] * y + m[5] + cy;
            if !(ix.is_finite() && iy.is_finite()) {
                continue;
            }
            let (x0, y0) = (ix.floor(), iy.floor());
            let (fx, fy) = (ix - x0, iy - y0);
            let mut n = 0;
            let mut mask = 0.0;
            for (dy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
                for (dx, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
                    let (sx, sy) = (x0 + dx, y0 + dy);
                    let wt = wx * wy;
                    if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 && wt > 0.0 {
                        taps[n] = (sy as usize * w + sx as usize, wt);
                        n += 1;
                        mask += wt;
                    }
                }
            }
            for ch in 0..c {
                let src = &img[ch * plane..(ch + 1) * plane];
                let v: f64 = taps[..n].iter().map(|&(i, wt)| wt * src[i] as f64).sum();
                out[ch * plane + oy * w + ox] = (v * mask) as f32;
            }
        }
    }
    out
}

/// The image rotated counter-clockwise by `degrees` about its centre (`F.rotate`).
pub fn rotate(img: &[f32], shape: [usize; 3], degrees: f64) -> Vec<f32> {
    affine(img, shape, &AffineParams::rotation(degrees))
}

/// `img = f·img + (1 - f)·other(i)`, clamped to `[0, 1]` when asked (torchvision's `_blend`).
fn blend_with(img: &mut [f32], other: impl Fn(usize) -> f32, f: f32, clamp: bool) {
    for (i, x) in img.iter_mut().enumerate() {
        let v = f * *x + (1.0 - f) * other(i);
        *x = if clamp { v.clamp(0.0, 1.0) } else { v };
    }
}

/// One grayscale plane: ITU-R 601 luma for 3 channels (torchvision's weights), the channel
/// for 1, the mean of the channels otherwise.
pub fn grayscale(img: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
    let plane = h * w;
    if c == 3 {
        (0..plane)
            .map(|i| 0.2989 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i])
            .collect()
    } else if c == 0 {
        Vec::new()
    } else {
        (0..plane)
            .map(|i| (0..c).map(|ch| img[ch * plane + i]).sum::<f32>() / c as f32)
            .collect()
    }
}

/// `F.adjust_brightness`: the values times `f`.
pub fn brightness(img: &mut [f32], f: f64, clamp: bool) {
    blend_with(img, |_| 0.0, f as f32, clamp);
}

/// `F.adjust_contrast`: a blend with the mean of the grayscale image.
pub fn contrast(img: &mut [f32], shape: [usize; 3], f: f64, clamp: bool) {
    let g = grayscale(img, shape);
    let mean = if g.is_empty() {
        0.0
    } else {
        (g.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64) as f32
    };
    blend_with(img, |_| mean, f as f32, clamp);
}

/// `F.adjust_saturation`: a blend of each pixel with its grayscale value (3 channels only).
pub fn saturation(img: &mut [f32], shape: [usize; 3], f: f64, clamp: bool) {
    if shape[0] != 3 {
        return;
    }
    let g = grayscale(img, shape);
    let plane = shape[1] * shape[2];
    blend_with(img, |i| g[i % plane], f as f32, clamp);
}

/// `F.adjust_hue`: the hue shifted by `f` turns (in `[-0.5, 0.5]`) through torchvision's
/// RGB → HSV → RGB (3 channels only).
pub fn hue(img: &mut [f32], [c, h, w]: [usize; 3], f: f64) {
    if c != 3 {
        return;
    }
    let plane = h * w;
    let f = f as f32;
    for i in 0..plane {
        let (r, g, b) = (img[i], img[plane + i], img[2 * plane + i]);
        // torchvision's `_rgb2hsv`.
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let div = if eqc { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let hh = if maxc == r {
            bc - gc
        } else if maxc == g {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let hh = (hh / 6.0 + 1.0) % 1.0;
        // Shift (Python's `%`: the result has the divisor's sign), then `_hsv2rgb`.
        let hh = (hh + f).rem_euclid(1.0);
        let v = maxc;
        let k = (hh * 6.0).floor();
        let fr = hh * 6.0 - k;
        let p = (v * (1.0 - s)).clamp(0.0, 1.0);
        let q = (v * (1.0 - s * fr)).clamp(0.0, 1.0);
        let t = (v * (1.0 - s * (1.0 - fr))).clamp(0.0, 1.0);
        let (r2, g2, b2) = match (k as i32).rem_euclid(6) {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        img[i] = r2;
        img[plane + i] = g2;
        img[2 * plane + i] = b2;
    }
}

/// AlexNet's PCA lighting with the three drawn `alpha`s (3 channels; other images are left
/// alone, and the spec refuses them).
pub fn pca_lighting(img: &mut [f32], [c, h, w]: [usize; 3], alpha: [f64; 3]) {
    if c != 3 {
        return;
    }
    let plane = h * w;
    for (ch, row) in PCA_EIGVEC.iter().enumerate() {
        let shift: f64 = (0..3).map(|j| row[j] * alpha[j] * PCA_EIGVAL[j]).sum();
        for x in &mut img[ch * plane..(ch + 1) * plane] {
            *x += shift as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: [usize; 3]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn antialiasing_changes_nothing_when_enlarging() {
        let shape = [2, 5, 7];
        let img = ramp(shape);
        for out in [(5, 7), (9, 7), (5, 20), (13, 11)] {
            let a = resize(&img, shape, out, true);
            let b = resize(&img, shape, out, false);
            assert!(
                a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
                "{out:?}"
            );
        }
        // Shrinking with antialiasing: the triangle filter widened to 2 input pixels each
        // side, weights normalized (a constant stays constant).
        let a = resize(&img, [1, 4, 4], (2, 2), true);
        let (w0, w1, w2) = (0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75);
        let row = |y: usize| w0 * img[y * 4] + w1 * img[y * 4 + 1] + w2 * img[y * 4 + 2];
        let want = w0 * row(0) + w1 * row(1) + w2 * row(2);
        assert!((a[0] - want).abs() < 1e-6, "{} vs {want}", a[0]);
        let ones = resize(&[1.0; 35], [1, 5, 7], (2, 3), true);
        assert!(ones.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{ones:?}");
    }

    #[test]
    fn flips_twice_are_the_identity() {
        for shape in [[3, 5, 4], [1, 1, 1], [2, 4, 3]] {
            let img = ramp(shape);
            let mut x = img.clone();
            vflip(&mut x, shape);
            if shape[1] > 1 {
                assert_ne!(x, img);
            }
            vflip(&mut x, shape);
            hflip(&mut x, shape);
            hflip(&mut x, shape);
            assert_eq!(x, img);
        }
    }

    #[test]
    fn empty_images_do_not_panic() {
        let shape = [3, 0, 4];
        let mut x: Vec<f32> = vec![];
        hflip(&mut x, shape);
        vflip(&mut x, shape);
        assert!(resize(&x, shape, (3, 3), true).iter().all(|&v| v == 0.0));
        assert!(affine(&x, shape, &AffineParams::rotation(30.0)).is_empty());
        hue(&mut x, shape, 0.2);
        contrast(&mut x, shape, 0.5, true);
    }
}
