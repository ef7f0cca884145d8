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
//!    ignores it unless asked.
//! 2. Channels: `C = 1` takes the luma, by ITU-R 601-2 like PIL's `convert("L")` (a grayscale
//!    image is used as is); `C = 3` takes RGB (grayscale is replicated). Alpha is dropped, not
//!    composited, like PIL's `convert("RGB")`.
//! 3. Size: an image of the same aspect ratio as `H × W` is resized to exactly `H × W`.
//!    Otherwise it is resized, keeping its aspect ratio, to the smallest size that covers
//!    `H × W` (for a square input, the shorter side becomes `H`, the longer is truncated like
//!    torchvision computes it), then the center `H × W` is cropped (offsets rounded like
//!    torchvision's `CenterCrop`). Nothing is stretched. Resizing is bilinear (a triangle
//!    filter, widened when shrinking, so downscaling is antialiased like PIL's).
//! 4. Scale to `[0, 1]` (divide by 255), then `(x - mean[c]) / std[c]` when the spec gives
//!    mean and std (one value for all channels, or one per channel).

use std::io::Cursor;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageBuffer, ImageError, ImageFormat, ImageReader, Pixel};
use ndarray::{ArrayD, IxDyn};

use super::{IoError, read_file, show_shape};
use crate::layer_graph::InputInfo;

/// Loads `path` as input `input` of a model: `[C, H, W]` f32, resized, cropped and normalized.
pub fn load_image(path: impl AsRef<Path>, input: &InputInfo) -> Result<ArrayD<f32>, IoError> {
    let path = path.as_ref();
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
        fit(&g, tw, th).into_raw()
    } else {
        let rgb = img.to_rgb8();
        fit(&rgb, tw, th).into_raw()
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
    let bytes = read_file(path)?;
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
    ImageReader::with_format(Cursor::new(&bytes), format)
        .decode()
        .map_err(|e| {
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
        })
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

/// Resizes to cover `tw × th` keeping the aspect ratio, then crops the center.
fn fit<P>(
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    tw: u32,
    th: u32,
) -> ImageBuffer<P, Vec<P::Subpixel>>
where
    P: Pixel + 'static,
{
    let (w, h) = img.dimensions();
    let (rw, rh) = cover_size(w, h, tw, th);
    let resized = if (rw, rh) == (w, h) {
        img.clone()
    } else {
        imageops::resize(img, rw, rh, FilterType::Triangle)
    };
    if (rw, rh) == (tw, th) {
        return resized;
    }
    let left = crop_offset(rw - tw);
    let top = crop_offset(rh - th);
    imageops::crop_imm(&resized, left, top, tw, th).to_image()
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
    fn crop_offsets_round_half_even() {
        assert_eq!(crop_offset(0), 0);
        assert_eq!(crop_offset(1), 0);
        assert_eq!(crop_offset(2), 1);
        assert_eq!(crop_offset(3), 2);
        assert_eq!(crop_offset(5), 2);
        assert_eq!(crop_offset(74), 37);
    }
}
