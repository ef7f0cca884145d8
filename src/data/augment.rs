//! Random augmentation of one training sample: draw the parameters, then transform.
//!
//! In: one sample as planar `[C, H, W]` f32 values *before* normalization (pixel / 255 for
//! byte data, so in `[0, 1]`; the stored values for float data), the spec's [`Augment`] list
//! and the sample's own [`Rng`] stream. Out: the augmented sample, same shape, still
//! unnormalized: the loader normalizes afterwards, as torchvision applies its random
//! transforms to the image before `Normalize`.
//!
//! Each augmentation is two steps: [`draw`] takes its random parameters from the stream
//! (the same distributions as torchvision's `get_params`, from our generator, not torch's),
//! giving a [`Step`] of explicit parameters; [`Step::apply`] runs the pure transforms of
//! [`super::transform`], which match torchvision's functionals. The augmentations run in the
//! order listed, each drawing in that order, so a sample's augmentation depends only on
//! (seed, epoch, sample index), never on threads or batch composition. An augmentation whose
//! ranges make it the identity draws nothing.
//!
//! - `mirror(p)`, `vflip(p)`: `RandomHorizontalFlip(p)`, `RandomVerticalFlip(p)`: flip
//!   when `u < p`, `u` uniform in `[0, 1)`.
//! - `random_crop(size, pad)`: `RandomCrop(size, padding=pad)`: zero-pad every side, crop
//!   `size` at a uniform offset (top, then left). The loader must yield the model's input
//!   shape, so a `size` other than the input's is then resized back to it (bilinear,
//!   antialiased): a crop-and-zoom.
//! - `random_resized_crop(scale, ratio)`: `RandomResizedCrop(input size, scale, ratio,
//!   antialias=True)` (torchvision's default): ten tries of an area fraction uniform in
//!   `scale` and a log-uniform aspect ratio, then the centre-crop fallback.
//! - `rotate(d)`: `RandomRotation(d, BILINEAR, fill=0)`: an angle uniform in `[-d, d]`,
//!   counter-clockwise about the centre.
//! - `affine(degrees, translate, scale, shear)`: `RandomAffine(..., BILINEAR, fill=0)`:
//!   angle uniform in `[-degrees, degrees]`, translation `round(u · t · size)` pixels with
//!   `u` uniform in `[-1, 1]`, scale uniform in its range, shear x (then y) uniform in theirs.
//! - `color_shift(brightness, contrast, saturation, hue)` (also spelt `color_jitter`):
//!   `ColorJitter`: a random order of the four (a shuffle, as torchvision's `randperm(4)`),
//!   then factors uniform in `[max(0, 1 - v), 1 + v]` (hue: a shift uniform in `[-h, h]`);
//!   a value of 0 leaves that property alone. Saturation and hue need 3 channels (they do
//!   nothing on 1); contrast on other images uses the mean of all values.
//! - `pca_lighting(std)`: AlexNet's lighting: three `alpha ~ N(0, std)` (Box–Muller), then
//!   [`transform::pca_lighting`]. Needs 3 channels (the spec checks).
//!
//! For byte data the color blends clamp to `[0, 1]` as torchvision clamps float images;
//! float data, whose range is unknown, are not clamped. PCA lighting is never clamped (as
//! the AlexNet/fb.resnet.torch reference).

use super::rng::Rng;
use super::transform::{self, AffineParams};
use crate::train_config::Augment;

/// One color adjustment with its drawn factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorOp {
    Brightness(f64),
    Contrast(f64),
    Saturation(f64),
    Hue(f64),
}

/// One augmentation with its random parameters drawn: what [`Step::apply`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing (a flip not taken, an identity range).
    Keep,
    HFlip,
    VFlip,
    /// [`transform::pad_crop`] to `size`, then [`transform::resize`] back when it differs.
    PadCrop {
        pad: usize,
        top: usize,
        left: usize,
        size: (usize, usize),
    },
    /// [`transform::resized_crop`] of this window back to the image's size.
    ResizedCrop {
        top: usize,
        left: usize,
        size: (usize, usize),
    },
    Affine(AffineParams),
    /// Color adjustments, in this order.
    Color(Vec<ColorOp>),
    /// PCA lighting with these alphas.
    Lighting([f64; 3]),
}

/// Applies `augs` in order to `img` (`[C, H, W]`, unnormalized). `clamp` keeps color-shifted
/// values in `[0, 1]` (for byte data).
pub fn apply(augs: &[Augment], img: &mut Vec<f32>, shape: [usize; 3], clamp: bool, rng: &mut Rng) {
    for a in augs {
        draw(a, shape, rng).apply(img, shape, clamp);
    }
}

/// [`apply`], also mapping the image's annotated objects through each geometric step
/// ([`super::augment_boxes::map_objects`]); the same random draws as [`apply`].
pub fn apply_with_objects(
    augs: &[Augment],
    img: &mut Vec<f32>,
    shape: [usize; 3],
    clamp: bool,
    rng: &mut Rng,
    objects: &mut Vec<crate::detect::Object>,
) {
    for a in augs {
        let step = draw(a, shape, rng);
        step.apply(img, shape, clamp);
        super::augment_boxes::map_objects(&step, objects, shape[1], shape[2]);
    }
}

/// A standard normal value (Box–Muller from two uniforms).
fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.uniform(); // in (0, 1]
    let u2 = rng.uniform();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A uniform value in `[lo, hi]`, or `lo` without drawing when the range is empty.
fn between(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo { rng.uniform_in(lo, hi) } else { lo }
}

/// Draws the parameters of `aug` for an image of `shape` from `rng`.
pub fn draw(aug: &Augment, [_, h, w]: [usize; 3], rng: &mut Rng) -> Step {
    match *aug {
        Augment::Mirror { p } => {
            if rng.uniform() < p {
                Step::HFlip
            } else {
                Step::Keep
            }
        }
        Augment::VFlip { p } => {
            if rng.uniform() < p {
                Step::VFlip
            } else {
                Step::Keep
            }
        }
        Augment::RandomCrop { pad, size } => {
            let (th, tw) = size.map(|[a, b]| (a, b)).unwrap_or((h, w));
            let (ph, pw) = (h.saturating_add(2 * pad), w.saturating_add(2 * pad));
            let (th, tw) = (th.min(ph), tw.min(pw));
            if (th, tw) == (ph, pw) && (th, tw) == (h, w) {
                return Step::Keep;
            }
            let top = rng.below((ph - th) as u64 + 1) as usize;
            let left = rng.below((pw - tw) as u64 + 1) as usize;
            Step::PadCrop {
                pad,
                top,
                left,
                size: (th, tw),
            }
        }
        Augment::RandomResizedCrop { scale, ratio } => {
            let (top, left, ch, cw) = resized_crop_window(rng, h, w, scale, ratio);
            if (ch, cw) == (h, w) {
                Step::Keep
            } else {
                Step::ResizedCrop {
                    top,
                    left,
                    size: (ch, cw),
                }
            }
        }
        Augment::Rotate { degrees } => {
            let d = degrees.abs();
            if d > 0.0 && d.is_finite() {
                Step::Affine(AffineParams::rotation(rng.uniform_in(-d, d)))
            } else {
                Step::Keep
            }
        }
        Augment::Affine {
            degrees,
            translate,
            scale,
            shear,
        } => {
            let d = degrees.abs();
            let angle = between(rng, -d, d);
            let mut t = [0.0; 2];
            for (k, size) in [w, h].into_iter().enumerate() {
                let m = translate[k] * size as f64;
                t[k] = between(rng, -m, m).round_ties_even();
            }
            let s = between(rng, scale[0], scale[1]);
            let sx = between(rng, shear[0], shear[1]);
            let sy = between(rng, shear[2], shear[3]);
            Step::Affine(AffineParams {
                angle,
                translate: t,
                scale: s,
                shear: [sx, sy],
            })
        }
        Augment::ColorShift {
            brightness,
            contrast,
            saturation,
            hue,
        } => {
            let mut order = [0usize, 1, 2, 3];
            rng.shuffle(&mut order);
            let factor = |rng: &mut Rng, v: f64| {
                let v = v.abs();
                (v > 0.0 && v.is_finite()).then(|| rng.uniform_in((1.0 - v).max(0.0), 1.0 + v))
            };
            let b = factor(rng, brightness).map(ColorOp::Brightness);
            let c = factor(rng, contrast).map(ColorOp::Contrast);
            let s = factor(rng, saturation).map(ColorOp::Saturation);
            let hv = hue.abs().min(0.5);
            let hh = (hv > 0.0).then(|| ColorOp::Hue(rng.uniform_in(-hv, hv)));
            let ops = [b, c, s, hh];
            Step::Color(order.iter().filter_map(|&i| ops[i]).collect())
        }
        Augment::PcaLighting { std } => {
            if std > 0.0 && std.is_finite() {
                Step::Lighting([0; 3].map(|_| std * normal(rng)))
            } else {
                Step::Keep
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params` for an `h × w` image: (top, left, height,
/// width) of the window.
pub fn resized_crop_window(
    rng: &mut Rng,
    h: usize,
    w: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * between(rng, scale[0], scale[1]);
        let aspect = between(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round_ties_even();
        let ch = (target / aspect).sqrt().round_ties_even();
        if cw > 0.0 && ch > 0.0 && cw <= w as f64 && ch <= h as f64 {
            let (ch, cw) = (ch as usize, cw as usize);
            let top = rng.below((h - ch) as u64 + 1) as usize;
            let left = rng.below((w - cw) as u64 + 1) as usize;
            return (top, left, ch, cw);
        }
    }
    // Fallback: the central crop of the nearest allowed aspect ratio.
    let in_ratio = w as f64 / h.max(1) as f64;
    let (lo, hi) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (ch, cw) = if in_ratio < lo {
        (((w as f64 / lo).round_ties_even() as usize).min(h), w)
    } else if in_ratio > hi {
        (h, ((h as f64 * hi).round_ties_even() as usize).min(w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

impl Step {
    /// Transforms `img` (`[C, H, W]`) with these parameters; the shape stays.
    pub fn apply(&self, img: &mut Vec<f32>, shape: [usize; 3], clamp: bool) {
        let [c, h, w] = shape;
        match self {
            Step::Keep => {}
            Step::HFlip => transform::hflip(img, shape),
            Step::VFlip => transform::vflip(img, shape),
            &Step::PadCrop {
                pad,
                top,
                left,
                size,
            } => {
                let out = transform::pad_crop(img, shape, pad, (top, left), size);
                *img = transform::resize(&out, [c, size.0, size.1], (h, w), true);
            }
            &Step::ResizedCrop { top, left, size } => {
                *img = transform::resized_crop(img, shape, (top, left), size, (h, w), true);
            }
            Step::Affine(p) => *img = transform::affine(img, shape, p),
            Step::Color(ops) => {
                for op in ops {
                    match *op {
                        ColorOp::Brightness(f) => transform::brightness(img, f, clamp),
                        ColorOp::Contrast(f) => transform::contrast(img, shape, f, clamp),
                        ColorOp::Saturation(f) => transform::saturation(img, shape, f, clamp),
                        ColorOp::Hue(f) => transform::hue(img, shape, f),
                    }
                }
            }
            Step::Lighting(alpha) => transform::pca_lighting(img, shape, *alpha),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transform::{hflip, pad_crop, rotate};

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
            Augment::VFlip { p: 0.0 },
            Augment::RandomCrop { pad: 0, size: None },
            Augment::RandomResizedCrop {
                scale: [1.0, 1.0],
                ratio: [1.4, 1.4],
            },
            Augment::Affine {
                degrees: 0.0,
                translate: [0.0; 2],
                scale: [1.0; 2],
                shear: [0.0; 4],
            },
            Augment::PcaLighting { std: 0.0 },
            Augment::Rotate { degrees: 0.0 },
            Augment::ColorShift {
                brightness: 0.0,
                contrast: 0.0,
                saturation: 0.0,
                hue: 0.0,
            },
        ];
        for seed in 0..20 {
            let mut x = img.clone();
            apply(&augs, &mut x, shape, true, &mut Rng::new(seed));
            assert_eq!(x, img);
        }
        assert_eq!(rotate(&img, shape, 0.0), img);
        assert_eq!(pad_crop(&img, shape, 3, (3, 3), (5, 7)), img);
    }

    #[test]
    fn mirror_twice_is_identity_and_p1_always_flips() {
        let shape = [2, 3, 4];
        let img = ramp(shape);
        let mut x = img.clone();
        hflip(&mut x, shape);
        assert_ne!(x, img);
        assert_eq!(x[0], img[3]);
        hflip(&mut x, shape);
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
        hflip(&mut z, shape);
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
                let out = pad_crop(&img, shape, pad, (top, left), (h, w));
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
                &[Augment::RandomCrop { pad: 1, size: None }],
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
    fn color_draws_are_bounded_and_in_a_random_order() {
        let aug = Augment::ColorShift {
            brightness: 0.4,
            contrast: 1.5,
            saturation: 0.2,
            hue: 0.1,
        };
        let mut firsts = std::collections::HashSet::new();
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let Step::Color(ops) = draw(&aug, [3, 4, 4], &mut rng) else {
                panic!("not a color step")
            };
            assert_eq!(ops.len(), 4);
            for op in &ops {
                match *op {
                    ColorOp::Brightness(f) => assert!((0.6..1.4).contains(&f), "{f}"),
                    ColorOp::Contrast(f) => assert!((0.0..2.5).contains(&f), "{f}"),
                    ColorOp::Saturation(f) => assert!((0.8..1.2).contains(&f), "{f}"),
                    ColorOp::Hue(f) => assert!((-0.1..0.1).contains(&f), "{f}"),
                }
            }
            firsts.insert(std::mem::discriminant(&ops[0]));
        }
        assert_eq!(firsts.len(), 4, "every adjustment comes first sometimes");
        let none = Augment::ColorShift {
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            hue: 0.0,
        };
        assert_eq!(draw(&none, [3, 4, 4], &mut rng), Step::Color(vec![]));
    }

    #[test]
    fn resized_crop_windows_fit_and_respect_the_ranges() {
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (top, left, h, w) = resized_crop_window(&mut rng, 13, 17, [0.3, 0.9], [0.75, 1.33]);
            assert!(h >= 1 && w >= 1 && top + h <= 13 && left + w <= 17);
            let area = (h * w) as f64 / (13.0 * 17.0);
            // Rounding each side moves the area a little outside the drawn range.
            assert!((0.2..=1.0).contains(&area), "{area}");
        }
        // No window of this ratio fits a tall image: the fallback's central crop.
        assert_eq!(
            resized_crop_window(&mut rng, 20, 4, [0.9, 1.0], [3.0, 4.0]),
            (9, 0, 1, 4)
        );
    }

    #[test]
    fn affine_draws_follow_random_affine() {
        let aug = Augment::Affine {
            degrees: 10.0,
            translate: [0.2, 0.1],
            scale: [0.8, 1.2],
            shear: [-5.0, 5.0, 2.0, 3.0],
        };
        let mut rng = Rng::new(9);
        let mut seen_tx = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let Step::Affine(p) = draw(&aug, [1, 10, 20], &mut rng) else {
                panic!("not affine")
            };
            assert!((-10.0..10.0).contains(&p.angle));
            // Whole pixels, at most 0.2 · 20 across and 0.1 · 10 down.
            assert!(p.translate.iter().all(|t| t.fract() == 0.0));
            assert!(p.translate[0].abs() <= 4.0 && p.translate[1].abs() <= 1.0);
            seen_tx.insert(p.translate[0] as i64);
            assert!((0.8..1.2).contains(&p.scale));
            assert!((-5.0..5.0).contains(&p.shear[0]) && (2.0..3.0).contains(&p.shear[1]));
        }
        assert_eq!(seen_tx.len(), 9, "{seen_tx:?}");
    }

    #[test]
    fn lighting_draws_are_normal_with_the_given_std() {
        let mut rng = Rng::new(11);
        let n = 20_000;
        let mut sum = [0.0; 3];
        let mut sq = [0.0; 3];
        for _ in 0..n {
            let Step::Lighting(a) = draw(&Augment::PcaLighting { std: 0.1 }, [3, 1, 1], &mut rng)
            else {
                panic!("not lighting")
            };
            for k in 0..3 {
                sum[k] += a[k];
                sq[k] += a[k] * a[k];
            }
        }
        for k in 0..3 {
            let mean = sum[k] / n as f64;
            let sd = (sq[k] / n as f64 - mean * mean).sqrt();
            assert!(mean.abs() < 0.003, "{mean}");
            assert!((sd - 0.1).abs() < 0.003, "{sd}");
        }
    }

    #[test]
    fn crops_of_another_size_come_back_at_the_input_size() {
        let shape = [3, 8, 10];
        let img = ramp(shape);
        let aug = Augment::RandomCrop {
            pad: 2,
            size: Some([5, 6]),
        };
        let mut rng = Rng::new(0);
        for _ in 0..20 {
            let step = draw(&aug, shape, &mut rng);
            let Step::PadCrop {
                top, left, size, ..
            } = step
            else {
                panic!("{step:?}")
            };
            assert_eq!(size, (5, 6));
            assert!(top <= 12 - 5 && left <= 14 - 6);
            let mut x = img.clone();
            step.apply(&mut x, shape, true);
            assert_eq!(x.len(), img.len());
        }
    }
}
