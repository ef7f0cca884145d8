//! A synthetic detection dataset made from the bundled Fashion-MNIST: objects pasted at random
//! positions and scales onto plain or noisy backgrounds.
//!
//! In: a [`SynthConfig`] (image size, sample counts, objects per image, background, seed) and
//! the source objects (the bundled subset, [`super::bundled`]: training images are composed from
//! its training split, test images from its test split, so no object is shared). Out: a
//! [`Split`] of byte images `[C, H, W]` with [`super::Dataset::objects`] filled, Fashion-MNIST's
//! class names, and each sample's label the class of its first object.
//!
//! One image: the background (plain black, or each pixel uniform in `0..=`[`NOISE_MAX`]), then
//! `min..=max` objects, each a random source image scaled by a factor in
//! [`SCALE_MIN`]`..`[`SCALE_MAX`] (bilinear) to a square of 17–45 px (at most the image's
//! size) placed at a random position inside the image, and drawn as the maximum of it and
//! what is there (so overlapping objects blend rather than hide each other). Its box is tight:
//! the bounding box of the scaled object's nonzero pixels, not its square. A placement whose
//! box overlaps an earlier one's by more than [`MAX_IOU`] is drawn again (up to
//! [`ATTEMPTS`] times, then the object is left out), so objects overlap often but stay
//! recognizable.
//!
//! Deterministic: image `i` of a split draws everything from its own stream
//! `[seed, TAG, split, i]` ([`super::rng`]), so the data depend on the seed alone, not on the
//! order or number of threads that make them.

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};

use super::rng::Rng;
use super::{DataError, Dataset, Pixels, Split, bundled::CLASS_NAMES};
use crate::detect::Object;
use crate::layer_graph::InputInfo;

const TAG_DETECTION: u64 = 0x4445_5445_4354_5331; // "DETECTS1"

/// The smallest and largest scale of a 28-pixel object.
pub const SCALE_MIN: f64 = 0.6;
pub const SCALE_MAX: f64 = 1.6;
/// The brightest pixel of a noisy background.
pub const NOISE_MAX: u8 = 80;
/// The most an object's box may overlap an earlier one's (intersection over union).
pub const MAX_IOU: f32 = 0.35;
/// Placements tried per object.
pub const ATTEMPTS: usize = 20;
/// The side of a source object.
const SOURCE: usize = 28;

/// What an image's background is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// Black.
    Plain,
    /// Each pixel uniform in `0..=NOISE_MAX`.
    Noise,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Channels: 1 (gray) or 3 (the gray image in each channel).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub train: usize,
    pub test: usize,
    /// Objects per image, `min..=max` (uniform).
    pub min_objects: usize,
    pub max_objects: usize,
    pub background: Background,
    pub seed: u64,
}

impl Default for SynthConfig {
    /// The default split (`data: detection`): 2,000 training and 400 test images, 1×96×96,
    /// 1–4 objects each, plain background, seed 0.
    fn default() -> SynthConfig {
        SynthConfig {
            channels: 1,
            height: 96,
            width: 96,
            train: 2000,
            test: 400,
            min_objects: 1,
            max_objects: 4,
            background: Background::Plain,
            seed: 0,
        }
    }
}

/// The largest side of a generated image.
pub const MAX_SIDE: usize = 4096;
/// The most objects per image.
pub const MAX_OBJECTS: usize = 64;
/// The most bytes of pixels a generated split may take.
pub const MAX_BYTES: u64 = 4 << 30;

impl SynthConfig {
    /// Checks the configuration: sizes within bounds, `min ≤ max` objects.
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::general(m));
        if !matches!(self.channels, 1 | 3) {
            return bad(format!(
                "synthetic detection images have 1 or 3 channels, not {}",
                self.channels
            ));
        }
        if !(8..=MAX_SIDE).contains(&self.height) || !(8..=MAX_SIDE).contains(&self.width) {
            return bad(format!(
                "the image size {}×{} is out of range: each side 8–{MAX_SIDE}",
                self.height, self.width
            ));
        }
        if self.min_objects > self.max_objects || self.max_objects > MAX_OBJECTS {
            return bad(format!(
                "objects per image {}..{} is out of range: min ≤ max ≤ {MAX_OBJECTS}",
                self.min_objects, self.max_objects
            ));
        }
        if self.train == 0 || self.test == 0 {
            return bad("the training and test sets need at least one image each".into());
        }
        let bytes = (self.train as u64 + self.test as u64)
            .saturating_mul((self.channels * self.height * self.width) as u64);
        if bytes > MAX_BYTES {
            return bad(format!(
                "{} images of {}×{}×{} take {}, more than the {} netc generates at once",
                self.train + self.test,
                self.channels,
                self.height,
                self.width,
                crate::io::read::show_bytes(bytes),
                crate::io::read::show_bytes(MAX_BYTES)
            ));
        }
        Ok(())
    }
}

/// Generates the split `cfg` describes from the bundled Fashion-MNIST.
pub fn generate(cfg: &SynthConfig) -> Result<Split, DataError> {
    cfg.check()?;
    let source = super::bundled()?;
    let name = format!(
        "detection (synthetic, {}×{}, seed {})",
        cfg.height, cfg.width, cfg.seed
    );
    Ok(Split {
        train: compose_set(cfg, &source.train, 0, cfg.train, format!("{name} train"))?,
        test: compose_set(cfg, &source.test, 1, cfg.test, format!("{name} test"))?,
    })
}

/// The default split for the model input `input` (`data: detection`): [`SynthConfig`]'s
/// defaults at the input's channels, height and width.
pub fn default_split(input: &InputInfo) -> Result<Split, DataError> {
    let &[channels, height, width] = input.shape.as_slice() else {
        return Err(DataError::general(format!(
            "the synthetic detection data are images; the model's input `{}` is {}",
            input.name,
            crate::io::show_shape(&input.shape)
        )));
    };
    generate(&SynthConfig {
        channels,
        height,
        width,
        ..SynthConfig::default()
    })
}

/// The localization split for `input` (`data: localization`): as [`default_split`], but each
/// image holds at most one object (0 or 1, about half each: the course's localization task,
/// where `object` says whether there is one).
pub fn localization_split(input: &InputInfo) -> Result<Split, DataError> {
    let &[channels, height, width] = input.shape.as_slice() else {
        return Err(DataError::general(format!(
            "the synthetic localization data are images; the model's input `{}` is {}",
            input.name,
            crate::io::show_shape(&input.shape)
        )));
    };
    generate(&SynthConfig {
        channels,
        height,
        width,
        min_objects: 0,
        max_objects: 1,
        ..SynthConfig::default()
    })
}

fn compose_set(
    cfg: &SynthConfig,
    source: &Dataset,
    split: u64,
    count: usize,
    name: String,
) -> Result<Dataset, DataError> {
    let Pixels::U8(src) = &source.pixels else {
        return Err(DataError::general(format!(
            "{} is not byte images",
            source.name
        )));
    };
    if source.sample_shape != [1, SOURCE, SOURCE] || source.is_empty() {
        return Err(DataError::general(format!(
            "{} is not 28×28 gray images",
            source.name
        )));
    }
    let plane = cfg.height * cfg.width;
    let mut pixels = Vec::with_capacity(count * cfg.channels * plane);
    let mut labels = Vec::with_capacity(count);
    let mut objects = Vec::with_capacity(count);
    for i in 0..count {
        let mut rng = Rng::from_words(&[cfg.seed, TAG_DETECTION, split, i as u64]);
        let (img, objs) = compose(cfg, src, &source.labels, &mut rng);
        for _ in 0..cfg.channels {
            pixels.extend_from_slice(&img);
        }
        labels.push(objs.first().map_or(0, |o| o.class as i64));
        objects.push(objs);
    }
    let names: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    Ok(Dataset {
        name,
        sample_shape: vec![cfg.channels, cfg.height, cfg.width],
        pixels: Pixels::U8(pixels),
        labels,
        classes: names.len(),
        class_names: names,
        fields: Vec::new(),
        objects,
    })
}

/// One image (`height × width` bytes) and its objects, from `rng`.
fn compose(
    cfg: &SynthConfig,
    src: &[u8],
    src_labels: &[i64],
    rng: &mut Rng,
) -> (Vec<u8>, Vec<Object>) {
    let (h, w) = (cfg.height, cfg.width);
    let mut img: Vec<u8> = match cfg.background {
        Background::Plain => vec![0; h * w],
        Background::Noise => (0..h * w)
            .map(|_| rng.below(NOISE_MAX as u64 + 1) as u8)
            .collect(),
    };
    let span = (cfg.max_objects - cfg.min_objects) as u64;
    let n = cfg.min_objects + rng.below(span + 1) as usize;
    let n_src = src_labels.len() as u64;
    let mut boxes: Vec<[usize; 4]> = Vec::with_capacity(n);
    let mut objects = Vec::with_capacity(n);
    for _ in 0..n {
        for _ in 0..ATTEMPTS {
            let k = rng.below(n_src) as usize;
            let scale = rng.uniform_in(SCALE_MIN, SCALE_MAX);
            let side = ((SOURCE as f64 * scale).round() as usize).clamp(1, h.min(w));
            let y0 = rng.below((h - side + 1) as u64) as usize;
            let x0 = rng.below((w - side + 1) as u64) as usize;
            let obj = scaled(&src[k * SOURCE * SOURCE..(k + 1) * SOURCE * SOURCE], side);
            let Some([bx1, by1, bx2, by2]) = tight_box(&obj, side) else {
                continue;
            };
            let b = [x0 + bx1, y0 + by1, x0 + bx2, y0 + by2];
            if boxes.iter().any(|o| iou(o, &b) > MAX_IOU) {
                continue;
            }
            for (r, row) in obj.chunks_exact(side).enumerate() {
                let dst = &mut img[(y0 + r) * w + x0..(y0 + r) * w + x0 + side];
                for (d, &s) in dst.iter_mut().zip(row) {
                    *d = (*d).max(s);
                }
            }
            boxes.push(b);
            let (fw, fh) = (w as f32, h as f32);
            objects.push(Object {
                class: src_labels[k] as usize,
                cx: (b[0] + b[2]) as f32 / 2.0 / fw,
                cy: (b[1] + b[3]) as f32 / 2.0 / fh,
                w: (b[2] - b[0]) as f32 / fw,
                h: (b[3] - b[1]) as f32 / fh,
                landmarks: Vec::new(),
            });
            break;
        }
    }
    (img, objects)
}

/// The 28×28 source `src` scaled to `side × side` (bilinear, antialiased when shrinking).
fn scaled(src: &[u8], side: usize) -> Vec<u8> {
    if side == SOURCE {
        return src.to_vec();
    }
    let g = GrayImage::from_fn(SOURCE as u32, SOURCE as u32, |x, y| {
        Luma([src[y as usize * SOURCE + x as usize]])
    });
    imageops::resize(&g, side as u32, side as u32, FilterType::Triangle).into_raw()
}

/// The pixel box `[x1, y1, x2, y2)` (ends exclusive) of the nonzero pixels of a `side`-wide
/// square, `None` when all are zero.
fn tight_box(obj: &[u8], side: usize) -> Option<[usize; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for (i, &p) in obj.iter().enumerate() {
        if p == 0 {
            continue;
        }
        let (x, y) = (i % side, i / side);
        b = Some(match b {
            None => [x, y, x + 1, y + 1],
            Some([x1, y1, x2, y2]) => [x1.min(x), y1.min(y), x2.max(x + 1), y2.max(y + 1)],
        });
    }
    b
}

/// Intersection over union of two pixel boxes with exclusive ends.
fn iou(a: &[usize; 4], b: &[usize; 4]) -> f32 {
    let iw = a[2].min(b[2]).saturating_sub(a[0].max(b[0]));
    let ih = a[3].min(b[3]).saturating_sub(a[1].max(b[1]));
    let inter = (iw * ih) as f32;
    let area = |r: &[usize; 4]| ((r[2] - r[0]) * (r[3] - r[1])) as f32;
    inter / (area(a) + area(b) - inter)
}
