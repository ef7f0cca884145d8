//! Images as model inputs.
//!
//! In: a PNG or JPEG file and the model input it feeds ([`InputInfo`]: shape `[C, H, W]`,
//! optional per-channel mean and std). Out: an `ArrayD<f32>` of shape `[C, H, W]`, ready to
//! stack into a batch.
//!
//! The steps are torchvision's usual `Resize(size) → CenterCrop(H, W) → ToTensor() →
//! Normalize(mean, std)` on a PIL image, so a model trained with that pipeline sees the same
//! kind of input:
//!
//! 1. Decode (8-bit; 16-bit images are scaled to 8 bits). EXIF orientation is ignored, as PIL
//!    ignores it unless asked. The size in the header is checked first: at most
//!    [`MAX_SIDE`] pixels a side and [`MAX_DECODED`] bytes decoded (the file itself is read
//!    through [`super::read_limited`], at most 64 MiB).
//! 2. Channels: `C = 1` takes the luma, by ITU-R 601-2 like PIL's `convert("L")` (a grayscale
//!    image is used as is); `C = 3` takes RGB (grayscale is replicated). Alpha is dropped, not
//!    composited, like PIL's `convert("RGB")`.
//! 3. Size: an image of the same aspect ratio as `H × W` is resized to exactly `H × W`.
//!    Otherwise it is resized, keeping its aspect ratio, to the smallest size that covers
//!    `H × W` (for a square input, the shorter side becomes `H`, the longer is truncated like
//!    torchvision computes it), then the center `H × W` is cropped (offsets rounded like
//!    torchvision's `CenterCrop`). Nothing is stretched. Resizing is bilinear (a triangle
//!    filter, widened when shrinking, so downscaling is antialiased like PIL's). An image of
//!    an absurd aspect ratio (16 times the target's or more) has the part that survives the
//!    crop cut out before it is scaled, so no resize holds more than 1 GiB ([`fit`]).
//!    [`load_image_stretched`] (detection data) resizes to exactly `H × W` instead, whatever
//!    the aspect ratio, and crops nothing.
//! 4. Scale to `[0, 1]` (divide by 255), then `(x - mean[c]) / std[c]` when the spec gives
//!    mean and std (one value for all channels, or one per channel).

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{
    DynamicImage, GrayImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits, Pixel,
};
use ndarray::{ArrayD, IxDyn};

use super::read::show_bytes;
use super::{IoError, Kind, read_limited, show_shape};
use crate::layer_graph::InputInfo;

/// The longest side of an image netc decodes (JPEG's own limit, applied to PNG too).
pub const MAX_SIDE: u32 = 65_535;
/// The most bytes a decoded image may take (the `image` crate's default allocation limit).
pub const MAX_DECODED: u64 = 512 << 20;
/// The most bytes a resize may hold at once (see [`plan`]).
const MAX_RESIZE_BYTES: u64 = 1 << 30;
/// How much larger than the target (in area) the resized image may be before the crop is cut
/// out first (see [`fit`]): 16 is an aspect ratio 16 times the target's.
const MAX_COVER_RATIO: u64 = 16;

/// Loads `path` as input `input` of a model: `[C, H, W]` f32, resized, cropped and normalized.
pub fn load_image(path: impl AsRef<Path>, input: &InputInfo) -> Result<ArrayD<f32>, IoError> {
    load(path.as_ref(), input, false)
}

/// Loads `path` as [`load_image`] does, but resized to exactly the input's `H × W` whatever
/// its aspect ratio, without a crop: stretched, as Darknet resizes detection images, so
/// coordinates given as fractions of the image (YOLO boxes) hold unchanged.
pub fn load_image_stretched(
    path: impl AsRef<Path>,
    input: &InputInfo,
) -> Result<ArrayD<f32>, IoError> {
    load(path.as_ref(), input, true)
}

fn load(path: &Path, input: &InputInfo, stretch: bool) -> Result<ArrayD<f32>, IoError> {
    let [c, h, w] = match input.shape.as_slice() {
        &[c @ (1 | 3), h, w] if h > 0 && w > 0 => [c, h, w],
        _ => {
            return Err(IoError::new(
                path,
                format!(
                    "input `{}` has shape {}; an image gives [1, H, W] (grayscale) or [3, H, W] (RGB)",
                    input.name,
                    show_shape(&input.shape)
                ),
            ));
        }
    };
    let (mean, std) = norm_params(path, input, c)?;
    let (Ok(th), Ok(tw)) = (u32::try_from(h), u32::try_from(w)) else {
        return Err(IoError::new(
            path,
            "the input size is too large for an image",
        ));
    };
    let img = decode(path)?;
    let pixels: Vec<u8> = if c == 1 {
        let g = to_luma(&img);
        let fitted = if stretch {
            stretch_to(&g, tw, th)
        } else {
            fit(&g, tw, th)
        };
        fitted.map_err(|m| IoError::new(path, m))?.into_raw()
    } else {
        let rgb = img.to_rgb8();
        let fitted = if stretch {
            stretch_to(&rgb, tw, th)
        } else {
            fit(&rgb, tw, th)
        };
        fitted.map_err(|m| IoError::new(path, m))?.into_raw()
    };
    // Interleaved HWC bytes → planar CHW floats.
    let plane = h * w;
    let mut out = vec![0f32; c * plane];
    for (i, &p) in pixels.iter().enumerate() {
        let ch = i % c;
        let x = p as f32 / 255.0;
        out[ch * plane + i / c] = (x - mean[ch]) / std[ch];
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&[c, h, w]), out).expect("sizes match"))
}

/// The width and height of the PNG or JPEG `path`, from its header (checked as [`load_image`]
/// checks it: at most [`MAX_SIDE`] a side and [`MAX_DECODED`] bytes decoded).
pub fn image_size(path: impl AsRef<Path>) -> Result<(u32, u32), IoError> {
    let path = path.as_ref();
    let (decoder, _) = open_decoder(path)?;
    Ok(decoder.dimensions())
}

/// Per-channel mean and std (0 and 1 when not given).
fn norm_params(path: &Path, input: &InputInfo, c: usize) -> Result<(Vec<f32>, Vec<f32>), IoError> {
    let expand = |v: &[f64], default: f32, what: &str| -> Result<Vec<f32>, IoError> {
        match v.len() {
            0 => Ok(vec![default; c]),
            1 => Ok(vec![v[0] as f32; c]),
            n if n == c => Ok(v.iter().map(|&x| x as f32).collect()),
            n => Err(IoError::new(
                path,
                format!(
                    "input `{}` has {c} channels but {n} {what} values",
                    input.name
                ),
            )),
        }
    };
    let mean = expand(&input.mean, 0.0, "mean")?;
    let std = expand(&input.std, 1.0, "std")?;
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(IoError::new(
            path,
            format!("input `{}` has a std of zero or not finite", input.name),
        ));
    }
    Ok((mean, std))
}

fn decode(path: &Path) -> Result<DynamicImage, IoError> {
    let (decoder, explain) = open_decoder(path)?;
    DynamicImage::from_decoder(decoder).map_err(explain)
}

/// The decoder of `path` with its size checked, and the function that explains its errors.
#[allow(clippy::type_complexity)]
fn open_decoder(
    path: &Path,
) -> Result<(impl ImageDecoder, impl Fn(ImageError) -> IoError + '_), IoError> {
    let bytes = read_limited(path, Kind::Image)?;
    let format = match image::guess_format(&bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Ok(f) => {
            return Err(IoError::new(
                path,
                format!(
                    "a {} image; netc reads PNG and JPEG",
                    f.extensions_str().first().unwrap_or(&"?").to_uppercase()
                ),
            ));
        }
        Err(_) => {
            let what = if bytes.is_empty() {
                "the file is empty"
            } else {
                "its contents are not PNG or JPEG"
            };
            return Err(IoError::new(path, format!("not an image: {what}")));
        }
    };
    let name = if format == ImageFormat::Png {
        "PNG"
    } else {
        "JPEG"
    };
    let explain = move |e: ImageError| {
        let msg = match &e {
            ImageError::Limits(_) => format!("the {name} image is too large to decode: {e}"),
            ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                format!("corrupt or truncated {name} image: the file ends too early")
            }
            ImageError::Unsupported(_) => format!("unsupported {name} variant: {e}"),
            _ => {
                // The decoder's own words, without its "Format error decoding Png:" prefix.
                let text = e.to_string();
                let text = text.split_once(": ").map_or(text.as_str(), |(_, t)| t);
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                format!("corrupt or truncated {name} image: {text}")
            }
        };
        IoError::new(path, msg)
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The decoder's own allocations are bounded; the image's size is checked here (to say
    // what it is) from the header, before a pixel is decoded.
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(explain)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || decoder.total_bytes() > MAX_DECODED {
        return Err(IoError::new(
            path,
            format!(
                "the {name} image is {w}×{h} pixels ({} decoded), too large: netc decodes \
                 images of at most {MAX_SIDE} pixels a side and {} decoded",
                show_bytes(decoder.total_bytes()),
                show_bytes(MAX_DECODED)
            ),
        ));
    }
    Ok((decoder, explain))
}

/// Luma by ITU-R 601-2 with PIL's integer arithmetic; grayscale images are used directly.
fn to_luma(img: &DynamicImage) -> GrayImage {
    if !img.color().has_color() {
        return img.to_luma8();
    }
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let data = rgb
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0;
            ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
        })
        .collect();
    GrayImage::from_raw(w, h, data).expect("sizes match")
}

/// Resizes to cover `tw × th` keeping the aspect ratio, then crops the center, as [`plan`]
/// says.
fn fit<P>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    tw: u32,
    th: u32,
) -> Result<ImageBuffer<P, Vec<P::Subpixel>>, String>
where
    P: Pixel + 'static,
{
    let (w, h) = img.dimensions();
    Ok(match plan(w, h, tw, th, P::CHANNEL_COUNT as u64)? {
        Plan::Same => img.clone(),
        Plan::Crop { x, y } => imageops::crop_imm(img, x, y, tw, th).to_image(),
        Plan::Resize { rw, rh, x, y } => {
            let resized = imageops::resize(img, rw, rh, FilterType::Triangle);
            if (rw, rh) == (tw, th) {
                resized
            } else {
                imageops::crop_imm(&resized, x, y, tw, th).to_image()
            }
        }
        Plan::CutFirst { x, y, cw, ch } => {
            let region = imageops::crop_imm(img, x, y, cw, ch).to_image();
            imageops::resize(&region, tw, th, FilterType::Triangle)
        }
    })
}

/// Resizes to exactly `tw × th` (bilinear, antialiased like [`fit`]), whatever the aspect
/// ratio; refused when the resize would hold more than [`MAX_RESIZE_BYTES`] at once.
fn stretch_to<P>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    tw: u32,
    th: u32,
) -> Result<ImageBuffer<P, Vec<P::Subpixel>>, String>
where
    P: Pixel + 'static,
{
    let (w, h) = img.dimensions();
    if (w, h) == (tw, th) {
        return Ok(img.clone());
    }
    if resize_bytes(w, tw, th, P::CHANNEL_COUNT as u64) > MAX_RESIZE_BYTES {
        return Err(format!(
            "resizing the {w}×{h} image to the input's {tw}×{th} would take more than {} at once",
            show_bytes(MAX_RESIZE_BYTES)
        ));
    }
    Ok(imageops::resize(img, tw, th, FilterType::Triangle))
}

/// How [`fit`] makes a `w × h` image of `channels` bytes per pixel into `tw × th`.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// It is already that size.
    Same,
    /// No resize: crop at `(x, y)`.
    Crop { x: u32, y: u32 },
    /// Resize to `rw × rh`, then crop at `(x, y)` (torchvision's way).
    Resize { rw: u32, rh: u32, x: u32, y: u32 },
    /// Cut out the `cw × ch` region at `(x, y)` that survives the crop, then resize it.
    CutFirst { x: u32, y: u32, cw: u32, ch: u32 },
}

/// The whole image is resized, then cropped, as torchvision does, unless that would make an
/// image much larger than the target ([`MAX_COVER_RATIO`] times its area) or hold more than
/// [`MAX_RESIZE_BYTES`] at once (an absurd aspect ratio: 60,000 × 1 into 28 × 28 would be
/// resized to 1,680,000 × 28 for 28 columns of it). Then only the part of the image that
/// survives the center crop is cut out first (rounded outwards to whole pixels) and scaled
/// straight to `tw × th`: the same region, sampled a little differently at its edges. If even
/// that would hold too much, the error names both sizes.
fn plan(w: u32, h: u32, tw: u32, th: u32, channels: u64) -> Result<Plan, String> {
    let (rw, rh) = cover_size(w, h, tw, th);
    let (x, y) = (crop_offset(rw - tw), crop_offset(rh - th));
    if (rw, rh) == (w, h) {
        return Ok(if (w, h) == (tw, th) {
            Plan::Same
        } else {
            Plan::Crop { x, y }
        });
    }
    if rw as u64 * rh as u64 <= MAX_COVER_RATIO * (tw as u64 * th as u64)
        && resize_bytes(w, rw, rh, channels) <= MAX_RESIZE_BYTES
    {
        return Ok(Plan::Resize { rw, rh, x, y });
    }
    // The source pixels under the crop window [x, x + tw) × [y, y + th) of the resized image.
    let span = |off: u32, len: u32, full: u32, resized: u32| -> (u32, u32) {
        let (off, len, full, resized) = (off as u64, len as u64, full as u64, resized as u64);
        let start = (off * full / resized).min(full - 1);
        let end = ((off + len) * full)
            .div_ceil(resized)
            .clamp(start + 1, full);
        (start as u32, (end - start) as u32)
    };
    let (sx, cw) = span(x, tw, w, rw);
    let (sy, ch) = span(y, th, h, rh);
    if resize_bytes(cw, tw, th, channels) > MAX_RESIZE_BYTES {
        return Err(format!(
            "resizing the {w}×{h} image to the input's {tw}×{th} would take more than {} at once",
            show_bytes(MAX_RESIZE_BYTES)
        ));
    }
    Ok(Plan::CutFirst {
        x: sx,
        y: sy,
        cw,
        ch,
    })
}

/// The bytes `imageops::resize` holds to resize an image `w` wide to `rw × rh`: its vertical
/// pass's `w × rh` RGBA f32 intermediate and the `rw × rh` result.
fn resize_bytes(w: u32, rw: u32, rh: u32, channels: u64) -> u64 {
    w as u64 * rh as u64 * 16 + rw as u64 * rh as u64 * channels
}

/// The resized size: exactly the target when the aspect ratios agree; otherwise the side
/// that binds becomes the target's and the other is scaled and truncated (as torchvision's
/// `Resize` computes it), never below the target's.
fn cover_size(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
    let (w64, h64, tw64, th64) = (w as u64, h as u64, tw as u64, th as u64);
    if w64 * th64 == h64 * tw64 {
        return (tw, th);
    }
    if tw64 * h64 >= th64 * w64 {
        // Width binds: the image is relatively taller than the target.
        let rh = (tw64 * h64 / w64).max(th64);
        (tw, rh.min(u32::MAX as u64) as u32)
    } else {
        let rw = (th64 * w64 / h64).max(tw64);
        (rw.min(u32::MAX as u64) as u32, th)
    }
}

/// `int(round(d / 2))` with Python's round-half-to-even, as torchvision's `CenterCrop`.
fn crop_offset(d: u32) -> u32 {
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover_sizes() {
        // Same aspect: exact.
        assert_eq!(cover_size(64, 64, 28, 28), (28, 28));
        assert_eq!(cover_size(100, 50, 20, 10), (20, 10));
        // Landscape into a square: the height binds, the width is truncated.
        assert_eq!(cover_size(500, 375, 224, 224), (298, 224));
        // Portrait into a square.
        assert_eq!(cover_size(375, 500, 224, 224), (224, 298));
        // Non-square target.
        assert_eq!(cover_size(100, 100, 20, 10), (20, 20));
    }

    #[test]
    fn absurd_aspect_ratios_are_cropped_before_scaling() {
        // 60,000 × 1 into 28 × 28 would be resized to 1,680,000 × 28 (47 M pixels) for 28
        // columns of it. Cut first, it is the 1 × 1 region at the middle.
        let img = GrayImage::from_fn(60_000, 1, |x, _| {
            image::Luma([if (29_990..30_010).contains(&x) {
                200
            } else {
                7
            }])
        });
        let out = fit(&img, 28, 28).unwrap();
        assert_eq!(out.dimensions(), (28, 28));
        assert!(
            out.pixels().all(|p| p.0[0] == 200),
            "{:?}",
            out.get_pixel(0, 0)
        );

        // At a ratio just past the bound, cutting first agrees with resizing the whole image
        // (the exact path, affordable at this size) up to the filter's edge effects.
        let img = GrayImage::from_fn(2000, 100, |x, y| {
            image::Luma([((x * 255 / 1999 + y) % 256) as u8])
        });
        let (rw, rh) = cover_size(2000, 100, 28, 28);
        assert!(rw as u64 * rh as u64 > MAX_COVER_RATIO * 28 * 28);
        let whole = imageops::resize(&img, rw, rh, FilterType::Triangle);
        let exact = imageops::crop_imm(&whole, crop_offset(rw - 28), 0, 28, 28).to_image();
        let cut = fit(&img, 28, 28).unwrap();
        let worst = exact
            .pixels()
            .zip(cut.pixels())
            .map(|(a, b)| (a.0[0] as i32 - b.0[0] as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 2, "{worst}");
    }

    #[test]
    fn resize_plans_stay_bounded() {
        // Ordinary photos: torchvision's resize then crop.
        assert_eq!(
            plan(500, 375, 224, 224, 3),
            Ok(Plan::Resize {
                rw: 298,
                rh: 224,
                x: 37,
                y: 0
            })
        );
        // 10,000,000 × 1 into 28 × 28 (were it decoded): a 1 × 1 cut, not 280,000,000 × 28.
        assert_eq!(
            plan(10_000_000, 1, 28, 28, 3),
            Ok(Plan::CutFirst {
                x: 4_999_999,
                y: 0,
                cw: 2,
                ch: 1
            })
        );
        // A huge image into a large input: the vertical pass alone would hold
        // 65,535 × 1100 × 16 bytes, and no part of the image can be cut away.
        let e = plan(65_535, 65_535, 1100, 1100, 1).unwrap_err();
        assert!(e.contains("65535×65535") && e.contains("1100×1100"), "{e}");
    }

    #[test]
    fn crop_offsets_round_half_even() {
        assert_eq!(crop_offset(0), 0);
        assert_eq!(crop_offset(1), 0);
        assert_eq!(crop_offset(2), 1);
        assert_eq!(crop_offset(3), 2);
        assert_eq!(crop_offset(5), 2);
        assert_eq!(crop_offset(74), 37);
    }
}
