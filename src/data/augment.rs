//! Random augmentation of one training sample.
//!
//! In: one sample as planar `[C, H, W]` f32 values *before* normalization (pixel / 255 for
//! byte data, so in `[0, 1]`; the stored values for float data), the spec's [`Augment`] list
//! and the sample's own [`Rng`] stream. Out: the augmented sample, same shape, still
//! unnormalized: the loader normalizes afterwards, as torchvision applies its random
//! transforms to the image before `Normalize`.
//!
//! The augmentations run in the order the spec lists them; each draws its random numbers
//! from the sample's stream in that order, so a sample's augmentation depends only on
//! (seed, epoch, sample index), never on threads or batch composition. Semantics follow
//! torchvision's tensor transforms:
//!
//! - `mirror(p)`: `RandomHorizontalFlip(p)`: flip the columns when `u < p`, `u` uniform in
//!   `[0, 1)`.
//! - `random_crop(pad)`: `RandomCrop(size, padding=pad)`: zero-pad every side by `pad`, then
//!   crop `H × W` at a uniform offset (top, then left, each in `0..=2·pad`).
//! - `rotate(d)`: `RandomRotation(d, interpolation=BILINEAR, fill=0)`: an angle uniform in
//!   `[-d, d]` degrees, counter-clockwise, about the image centre `((W-1)/2, (H-1)/2)`,
//!   bilinear sampling of the source (samples outside the image count as 0). Like torchvision,
//!   each output is then multiplied by the bilinear weight of the taps that fell inside the
//!   image (its fill mask), so edges fade to the fill value 0.
//! - `color_shift(brightness, contrast, saturation)`: `ColorJitter` with factors uniform in
//!   `[max(0, 1 - v), 1 + v]`, applied in the fixed order brightness, contrast, saturation
//!   (torchvision shuffles the order per sample; a fixed one is simpler to reason about); a
//!   value of 0 leaves that property alone and draws nothing. Brightness scales the values;
//!   contrast blends with the mean of the grayscale image (0.2989 R + 0.587 G + 0.114 B; the
//!   mean of all values when there are not 3 channels); saturation blends each pixel with its
//!   grayscale value and does nothing on 1-channel images. For byte data each result is
//!   clamped to `[0, 1]` as torchvision clamps float images; float data, whose range is
//!   unknown, are not clamped.

use super::rng::Rng;
use crate::train_config::Augment;

/// Applies `augs` in order to `img` (`[C, H, W]`, unnormalized). `clamp` keeps color-shifted
/// values in `[0, 1]` (for byte data).
pub fn apply(augs: &[Augment], img: &mut Vec<f32>, shape: [usize; 3], clamp: bool, rng: &mut Rng) {
    for a in augs {
        match *a {
            Augment::Mirror { p } => {
                if rng.uniform() < p {
                    mirror(img, shape);
                }
            }
            Augment::RandomCrop { pad } => {
                if pad > 0 {
                    let span = (pad as u64).saturating_mul(2).saturating_add(1);
                    let top = rng.below(span) as usize;
                    let left = rng.below(span) as usize;
                    *img = crop(img, shape, pad, top, left);
                }
            }
            Augment::Rotate { degrees } => {
                let d = degrees.abs();
                if d > 0.0 && d.is_finite() {
                    let angle = rng.uniform_in(-d, d);
                    *img = rotate(img, shape, angle);
                }
            }
            Augment::ColorShift {
                brightness,
                contrast,
                saturation,
            } => {
                let f = color_factors(rng, brightness, contrast, saturation);
                color_shift(img, shape, f, clamp);
            }
        }
    }
}

/// Flips the columns of every row of every channel.
pub fn mirror(img: &mut [f32], [_, _, w]: [usize; 3]) {
    if w == 0 {
        return;
    }
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// The `H × W` window at (`top`, `left`) of the image zero-padded by `pad` on every side:
/// output `(y, x)` is input `(y + top - pad, x + left - pad)`, or 0 outside the image.
pub fn crop(img: &[f32], [c, h, w]: [usize; 3], pad: usize, top: usize, left: usize) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    let dy = top as i64 - pad as i64;
    let dx = left as i64 - pad as i64;
    for ch in 0..c {
        for y in 0..h {
            let sy = y as i64 + dy;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for x in 0..w {
                let sx = x as i64 + dx;
                if sx >= 0 && sx < w as i64 {
                    out[(ch * h + y) * w + x] = img[(ch * h + sy as usize) * w + sx as usize];
                }
            }
        }
    }
    out
}

/// The image rotated counter-clockwise by `degrees` about its centre, bilinear, zero fill,
/// with torchvision's fill mask (see the module doc).
pub fn rotate(img: &[f32], [c, h, w]: [usize; 3], degrees: f64) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let plane = h * w;
    let mut taps: [(usize, f64); 4] = [(0, 0.0); 4];
    for oy in 0..h {
        for ox in 0..w {
            let (x, y) = (ox as f64 - cx, oy as f64 - cy);
            let ix = cos * x - sin * y + cx;
            let iy = sin * x + cos * y + cy;
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

/// Color jitter factors (brightness, contrast, saturation), each uniform in
/// `[max(0, 1 - v), 1 + v]`, or `None` (and nothing drawn) when `v` is 0.
pub fn color_factors(
    rng: &mut Rng,
    brightness: f64,
    contrast: f64,
    saturation: f64,
) -> [Option<f64>; 3] {
    [brightness, contrast, saturation].map(|v| {
        let v = v.abs();
        (v > 0.0 && v.is_finite()).then(|| rng.uniform_in((1.0 - v).max(0.0), 1.0 + v))
    })
}

/// Applies the color jitter `factors` (brightness, contrast, saturation) in that order.
pub fn color_shift(img: &mut [f32], shape: [usize; 3], factors: [Option<f64>; 3], clamp: bool) {
    let [b, c, s] = factors;
    if let Some(f) = b {
        blend_with(img, |_| 0.0, f as f32, clamp);
    }
    if let Some(f) = c {
        let g = grayscale(img, shape);
        let mean = if g.is_empty() {
            0.0
        } else {
            (g.iter().map(|&x| x as f64).sum::<f64>() / g.len() as f64) as f32
        };
        blend_with(img, |_| mean, f as f32, clamp);
    }
    if let Some(f) = s
        && shape[0] == 3
    {
        let g = grayscale(img, shape);
        let plane = shape[1] * shape[2];
        blend_with(img, |i| g[i % plane], f as f32, clamp);
    }
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
fn grayscale(img: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: [usize; 3]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    #[test]
    fn identities() {
        let shape = [3, 5, 7];
        let img = ramp(shape);
        let augs = [
            Augment::Mirror { p: 0.0 },
            Augment::RandomCrop { pad: 0 },
            Augment::Rotate { degrees: 0.0 },
            Augment::ColorShift {
                brightness: 0.0,
                contrast: 0.0,
                saturation: 0.0,
            },
        ];
        for seed in 0..20 {
            let mut x = img.clone();
            apply(&augs, &mut x, shape, true, &mut Rng::new(seed));
            assert_eq!(x, img);
        }
        assert_eq!(rotate(&img, shape, 0.0), img);
        assert_eq!(crop(&img, shape, 3, 3, 3), img);
    }

    #[test]
    fn mirror_twice_is_identity_and_p1_always_flips() {
        let shape = [2, 3, 4];
        let img = ramp(shape);
        let mut x = img.clone();
        mirror(&mut x, shape);
        assert_ne!(x, img);
        assert_eq!(x[0], img[3]);
        mirror(&mut x, shape);
        assert_eq!(x, img);
        let mut y = img.clone();
        apply(
            &[Augment::Mirror { p: 1.0 }],
            &mut y,
            shape,
            true,
            &mut Rng::new(1),
        );
        let mut z = img.clone();
        mirror(&mut z, shape);
        assert_eq!(y, z);
    }

    #[test]
    fn crop_is_a_shifted_copy() {
        let shape = [2, 6, 5];
        let [c, h, w] = shape;
        let img = ramp(shape);
        let pad = 2;
        for top in 0..=2 * pad {
            for left in 0..=2 * pad {
                let out = crop(&img, shape, pad, top, left);
                assert_eq!(out.len(), img.len());
                let (dy, dx) = (top as i64 - pad as i64, left as i64 - pad as i64);
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) = (y as i64 + dy, x as i64 + dx);
                            let want = if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx)
                            {
                                img[(ch * h + sy as usize) * w + sx as usize]
                            } else {
                                0.0
                            };
                            assert_eq!(out[(ch * h + y) * w + x], want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn random_crop_offsets_cover_the_range() {
        let shape = [1, 4, 4];
        let img = vec![1.0; 16];
        let mut zeros_seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let mut x = img.clone();
            apply(
                &[Augment::RandomCrop { pad: 1 }],
                &mut x,
                shape,
                true,
                &mut Rng::from_words(&[i]),
            );
            zeros_seen.insert(x.iter().filter(|&&v| v == 0.0).count());
        }
        // Offsets (0,0) ... (2,2): 0 zeros at the centre, 4 on an edge, 7 at a corner.
        assert_eq!(zeros_seen.into_iter().collect::<Vec<_>>(), vec![0, 4, 7]);
    }

    #[test]
    fn rotate_90_is_transpose_then_flip() {
        for n in [4, 5] {
            let shape = [2, n, n];
            let img = ramp(shape);
            let out = rotate(&img, shape, 90.0);
            // Counter-clockwise: out[r][c] = in[c][n-1-r] (numpy's rot90).
            for ch in 0..2 {
                for r in 0..n {
                    for c in 0..n {
                        let want = img[(ch * n + c) * n + (n - 1 - r)];
                        let got = out[(ch * n + r) * n + c];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "n={n} ({r},{c}): {got} vs {want}"
                        );
                    }
                }
            }
            // Four quarter turns come back.
            let mut x = img.clone();
            for _ in 0..4 {
                x = rotate(&x, shape, 90.0);
            }
            assert!(x.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-5));
        }
    }

    #[test]
    fn rotate_180_on_odd_image() {
        let shape = [1, 3, 3];
        let img = ramp(shape);
        let out = rotate(&img, shape, 180.0);
        let mut want = img.clone();
        want.reverse();
        assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn rotate_small_angle_fades_corners_and_keeps_centre() {
        let shape = [1, 9, 9];
        let img = vec![1.0; 81];
        let out = rotate(&img, shape, 10.0);
        assert!((out[4 * 9 + 4] - 1.0).abs() < 1e-6);
        assert!(out[0] < 1.0);
        assert!(out.iter().all(|&v| (0.0..=1.0 + 1e-6).contains(&v)));
    }

    #[test]
    fn color_factors_are_bounded() {
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let [b, c, s] = color_factors(&mut rng, 0.4, 1.5, 0.2);
            let (b, c, s) = (b.unwrap(), c.unwrap(), s.unwrap());
            assert!((0.6..1.4).contains(&b), "{b}");
            assert!((0.0..2.5).contains(&c), "{c}");
            assert!((0.8..1.2).contains(&s), "{s}");
        }
        assert_eq!(color_factors(&mut rng, 0.0, 0.0, 0.0), [None, None, None]);
    }

    #[test]
    fn color_shift_semantics() {
        // Brightness scales and clamps.
        let shape = [1, 1, 3];
        let mut x = vec![0.2, 0.5, 0.8];
        color_shift(&mut x, shape, [Some(1.5), None, None], true);
        assert!(
            x.iter()
                .zip([0.3, 0.75, 1.0])
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{x:?}"
        );
        // Contrast 0 gives the mean everywhere.
        let mut x = vec![0.2, 0.5, 0.8];
        color_shift(&mut x, shape, [None, Some(0.0), None], true);
        assert!(x.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        // Saturation 0 gives grayscale on RGB and does nothing on one channel.
        let shape3 = [3, 1, 1];
        let mut x = vec![1.0, 0.0, 0.0];
        color_shift(&mut x, shape3, [None, None, Some(0.0)], true);
        assert!(x.iter().all(|&v| (v - 0.2989).abs() < 1e-6), "{x:?}");
        let mut x = vec![0.2, 0.5, 0.8];
        color_shift(&mut x, shape, [None, None, Some(0.0)], true);
        assert_eq!(x, vec![0.2, 0.5, 0.8]);
        // Float data are not clamped.
        let mut x = vec![-2.0, 3.0];
        color_shift(&mut x, [1, 1, 2], [Some(2.0), None, None], false);
        assert_eq!(x, vec![-4.0, 6.0]);
    }
}
